"""Where a measured result came from: the command, the commit, the date, the machine, the library versions.

    info = provenance()                                   # sys.argv; or provenance(["scripts/x.py", "--a", "1"])
    write_results("docs/results/bench_ops.md", "CPU op benchmark", markdown, info)

The tools that measure (scripts/ablation_table.py, receptive_field_stats.py, bench_ops.py,
bench_model.py, bench_data.py) write their tables through `write_results` when given `--results FILE`:
a Markdown file with the title, a provenance block, then the table, replaced atomically. `make demo`
and `make bench` write docs/results/ this way; those files are never edited by hand.

No torch import at module level: the packages are imported for their versions only when provenance()
asks (the tools have most of them imported already).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from segdcn.atomic import replace_atomically

ROOT = Path(__file__).resolve().parents[1]  # the checkout, when segdcn runs from one
RESULTS_DIR = "docs/results"  # generated files; a change there does not make the commit "dirty"
PACKAGES = ("segdcn", "torch", "torchvision", "numpy", "onnxruntime")


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command as typed: `python scripts/bench_ops.py --threads 1,2` (a script, or -c, is shown run
    by `python`; a console script such as segdcn-train by its name). Default: sys.argv."""
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return "python"
    program, rest = argv[0], argv[1:]
    path = Path(program)
    if path.is_absolute():
        try:
            program = str(path.relative_to(Path.cwd()))
        except ValueError:
            pass
    if program == "-c" or program.endswith(".py"):
        words = ["python", program]
    else:
        words = [Path(program).name]
    return shlex.join(words + rest)


def tool_argv(script: str, argv: Sequence[str] | None) -> list[str]:
    """The command line of a tool's main(argv): sys.argv when argv is None (run from the shell), else
    `script` (its __file__) and argv (called in-process, as the tests do)."""
    return list(sys.argv) if argv is None else [script, *argv]


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def git_commit() -> str:
    """HEAD of the checkout segdcn runs from, with `-dirty` when tracked files outside docs/results/
    differ from it (an earlier tool of the same `make demo` rewrites files there); `unknown` outside one."""
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return "unknown"
    changes = _git("status", "--porcelain", "--untracked-files=no", "--", ".", f":(exclude){RESULTS_DIR}")
    return commit + ("-dirty" if changes else "")


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo ('model name'), else platform.processor() or the architecture."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def package_version(name: str) -> str | None:
    """The module's own __version__ (torch's carries its build, e.g. 2.14.1+cu130; its distribution
    metadata may not), imported here on demand; else the installed distribution's; None: not installed."""
    try:
        version = getattr(importlib.import_module(name), "__version__", None)
    except Exception:  # not installed, or broken: the metadata may still say which version is there
        version = None
    if isinstance(version, str):
        return version
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def provenance(argv: Sequence[str] | None = None, packages: Iterable[str] = ()) -> dict[str, Any]:
    """command, commit, date (UTC ISO), machine (cores, cpu, platform) and versions (python, PACKAGES and
    `packages`; an absent package is None). `argv` is the whole command line, program first (default sys.argv)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in dict.fromkeys([*PACKAGES, *packages]):
        versions[name] = package_version(name)
    return {
        "command": command_line(argv),
        "commit": git_commit(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "cpu": cpu_model(), "platform": platform.platform()},
        "versions": versions,
    }


def provenance_markdown(info: dict[str, Any]) -> str:
    """The provenance block: one bullet each for command, commit, date, machine, versions and any other key."""
    machine = info.get("machine") or {}
    versions = ", ".join(f"{name} {version}" for name, version in (info.get("versions") or {}).items() if version)
    lines = [
        f"- command: `{info.get('command')}`",
        f"- commit: `{info.get('commit')}`",
        f"- date: {info.get('date')}",
        f"- machine: {machine.get('cores')} cores, {machine.get('cpu')}, {machine.get('platform')}",
        f"- versions: {versions}",
    ]
    known = {"command", "commit", "date", "machine", "versions"}
    lines += [f"- {key}: {value}" for key, value in info.items() if key not in known]
    return "\n".join(lines) + "\n"


def add_results_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """The tools' `--results FILE` option."""
    parser.add_argument(
        "--results", type=Path, metavar="FILE", help=f"also write {what} as Markdown with its provenance to FILE"
    )


class Transcript:
    """What a tool prints, kept for --results: `emit` prints a block (a line, or a table's lines) and
    records it; `markdown()` is the blocks with blank lines between them (a Markdown table ends at one)."""

    def __init__(self) -> None:
        self.blocks: list[str] = []

    def emit(self, text: str) -> None:
        print(text)
        self.blocks.append(text)

    def markdown(self) -> str:
        return "\n\n".join(block.strip("\n") for block in self.blocks) + "\n"


def _write_text(path: Path, text: str) -> None:
    replace_atomically(path, lambda handle: handle.write(text.encode("utf-8")))


def write_results(
    path: str | Path,
    title: str,
    body_markdown: str,
    info: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> list[Path]:
    """Writes `path`: `# title`, a line saying it is generated, the provenance block (`info`, default
    provenance() of this process), then `body_markdown`; atomically, parent folders made. With `data`,
    also the JSON sidecar (same stem, .json): {"provenance": info, **data}. Returns the paths written."""
    path = Path(path)
    info = provenance() if info is None else info
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (
        f"# {title}\n\n"
        "Written by the command below; do not edit by hand (docs/results/README.md).\n\n"
        f"{provenance_markdown(info)}\n"
        f"{body_markdown.rstrip()}\n"
    )
    _write_text(path, text)
    written = [path]
    if data is not None:
        sidecar = path.with_suffix(".json")
        _write_text(sidecar, json.dumps({"provenance": info, **data}, indent=2, default=str) + "\n")
        written.append(sidecar)
    return written


def write_tool_results(
    path: str | Path, script: str, argv: Sequence[str] | None, title: str, body_markdown: str, data=None
) -> list[Path]:
    """A tool's --results: write_results under the provenance of its command line (tool_argv of its
    __file__ and main's argv), then a line naming the files written."""
    written = write_results(path, title, body_markdown, provenance(tool_argv(script, argv)), data)
    print("wrote " + ", ".join(map(str, written)))
    return written
