"""The documentation: README.md and docs/**/*.md link only to files and headings inside the repository,
and every command of the README's quickstart runs (on a tiny synthetic set, in a temporary folder)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

BIN = Path(sys.executable).parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
QUICKSTART_MARK = "<!-- quickstart"

# Appended to the quickstart's commands so that they finish in seconds: a 12-image set, 2 iterations.
TINY = {
    "make_synthetic.py": ["--num-train", "8", "--num-val", "4", "--workers", "1", "--no-progress"],
    "segdcn-train": [
        "trainer.max_iters=2",
        "trainer.batch_size=2",
        "trainer.num_workers=0",
        "trainer.checkpoint_every=0",
        "logger=none",
        "model.head.channels=16",
    ],
    "segdcn-eval": ["progress=false"],
    "segdcn-predict": ["progress=false"],
}

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`+[^`]*`+")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks and with inline code removed."""
    lines, in_code = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            in_code = not in_code
            continue
        if not in_code:
            lines.append((number, INLINE_CODE.sub("", line)))
    return lines


def github_anchor(heading: str) -> str:
    """GitHub's id for a heading: markup and punctuation dropped, lowercase, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    text = path.read_text(encoding="utf-8")
    in_code = False
    for line in text.splitlines():
        if FENCE.match(line):
            in_code = not in_code
            continue
        match = None if in_code else HEADING.match(line)
        if match:
            anchor = github_anchor(match.group(2))
            count = seen.get(anchor, 0)
            seen[anchor] = count + 1
            result.add(anchor if count == 0 else f"{anchor}-{count}")
    return result


def link_problems(page: Path) -> list[str]:
    problems = []
    text = page.read_text(encoding="utf-8")
    name = page.relative_to(ROOT)
    for number, line in prose_lines(text):
        if re.search(r"\bhttps?://", line) or re.search(r"<[a-z]+:[^>]*>", line):
            problems.append(f"{name}:{number}: a link outside the repository: {line.strip()}")
        for target in LINK.findall(line):
            where = f"{name}:{number}: ({target})"
            if not target:
                problems.append(f"{where}: empty link")
                continue
            if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
                problems.append(f"{where}: points outside the repository")
                continue
            file_part, _, anchor = target.partition("#")
            dest = (page.parent / file_part).resolve() if file_part else page.resolve()
            if dest != ROOT and ROOT not in dest.parents:
                problems.append(f"{where}: leaves the repository")
            elif not dest.exists():
                problems.append(f"{where}: no such file {dest.relative_to(ROOT)}")
            elif anchor:
                if dest.suffix != ".md" or not dest.is_file():
                    problems.append(f"{where}: an anchor into a file that is not Markdown")
                elif anchor not in anchors(dest):
                    problems.append(f"{where}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    return problems


def test_pages_exist():
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert {"README.md", "docs/index.md", "docs/install.md", "docs/configuration.md"} <= names
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    unlisted = [
        p.name for p in PAGES if p.parent == ROOT / "docs" and p.name != "index.md" and f"]({p.name})" not in index
    ]
    assert not unlisted, f"docs/index.md does not list {unlisted}"


def test_github_anchor_rules():
    assert github_anchor("The synthetic shapes set (`dataset=synthetic`, the demo's data)") == (
        "the-synthetic-shapes-set-datasetsynthetic-the-demos-data"
    )
    assert github_anchor("A lab's own config folder") == "a-labs-own-config-folder"
    assert github_anchor("Export and prediction") == "export-and-prediction"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_resolve_inside_the_repository(page):
    problems = link_problems(page)
    assert not problems, "\n".join(problems)


def block_commands(page: Path, mark: str) -> list[list[str]]:
    """The commands of the fenced block right after the comment `mark` (e.g. `<!-- quickstart`) in `page`."""
    lines = page.read_text(encoding="utf-8").splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().startswith(mark)), None)
    assert start is not None, f"{page.name} has no {mark} -->"
    assert FENCE.match(lines[start + 1]), f"the {mark} --> comment must stand right before a fenced block"
    end = next(i for i in range(start + 2, len(lines)) if FENCE.match(lines[i]))
    script = "\n".join(lines[start + 2 : end]).replace("\\\n", " ")
    return [words for line in script.splitlines() if (words := shlex.split(line, comments=True))]


def quickstart_commands() -> list[list[str]]:
    return block_commands(ROOT / "README.md", QUICKSTART_MARK)


def runnable(words: list[str], tiny: dict[str, list[str]] = TINY) -> list[str]:
    """A page's command as an argument list: the installed console scripts, the repository's scripts/,
    with the `tiny` overrides appended."""
    program, *args = words
    if program.startswith("segdcn-"):
        assert (BIN / program).exists(), f"no console script {program} in {BIN}"
        return [str(BIN / program), *args, *tiny.get(program, [])]
    assert program == "python" and args and args[0].startswith("scripts/"), (
        f"a tested block may only run segdcn-* and python scripts/...: {shlex.join(words)}"
    )
    script = ROOT / args[0]
    assert script.is_file(), f"no {args[0]}"
    return [sys.executable, str(script), *args[1:], *tiny.get(script.name, [])]


def test_quickstart_has_each_step():
    commands = [shlex.join(words) for words in quickstart_commands()]
    for step in ("make_synthetic.py", "segdcn-train ", "segdcn-train -m", "ablation_table.py", "segdcn-export"):
        assert any(step in command for command in commands), f"the quickstart lacks {step}"
    assert any("segdcn-predict" in command for command in commands)


def command_env() -> dict[str, str]:
    """The environment the tested blocks run in: this checkout's segdcn and console scripts, W&B off."""
    return dict(
        os.environ,
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=str(ROOT),
        WANDB_MODE="disabled",
        HYDRA_FULL_ERROR="1",
        OMP_NUM_THREADS="1",
    )


@pytest.mark.slow  # every command of the README's quickstart: about a minute on 2 cores
def test_quickstart_runs(tmp_path):
    env = command_env()
    for words in quickstart_commands():
        command = runnable(words)
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{shlex.join(words)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        outputs = dict(arg.split("=", 1) for arg in words[1:] if "=" in arg and not arg.startswith("-"))
        if words[0] == "segdcn-predict":
            images = list((tmp_path / outputs["input"]).rglob("*.jpg"))
            labels = list((tmp_path / outputs["out"] / "labels").rglob("*.png"))
            assert images and len(labels) == len(images), f"{shlex.join(words)}: {len(labels)} label images"
        if words[0] == "segdcn-export":
            assert (tmp_path / outputs["out"] / f"{outputs['name']}.onnx.json").is_file()
        if len(words) > 1 and words[1].endswith("ablation_table.py"):
            assert (tmp_path / words[2] / "ablation_table1.md").is_file()
