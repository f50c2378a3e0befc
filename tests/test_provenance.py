"""segdcn.provenance and the tools' --results FILE: the command, commit, date, machine and versions above
the measured tables (issue 18: results are generated, not pasted), on tiny inputs."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import torch

import segdcn
from segdcn import provenance as prov
from tests.helpers import ROOT, load_script, run_python


def head_commit() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def assert_provenance(markdown: str, command: str) -> None:
    """The provenance block of a results file: the command as typed, the commit, date, machine, versions."""
    assert f"- command: `{command}`" in markdown
    assert f"- commit: `{head_commit()}" in markdown
    assert f"- machine: {os.cpu_count()} cores, {prov.cpu_model()}" in markdown
    assert f"torch {torch.__version__}" in markdown and f"segdcn {segdcn.__version__}" in markdown


def results_of(tmp_path: Path, name: str) -> tuple[Path, list[str]]:
    """A --results file in tmp_path and the arguments naming it."""
    path = tmp_path / "results" / name
    return path, ["--results", str(path)]


# ---- the provenance dict ----


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="not a git checkout")
def test_provenance_names_the_command_commit_date_machine_and_versions():
    info = prov.provenance(["scripts/bench_ops.py", "--threads", "1,2"], packages=["pytest", "no-such-package"])
    assert info["command"] == "python scripts/bench_ops.py --threads 1,2"
    commit = head_commit()
    assert len(commit) == 40 and info["commit"] in (commit, commit + "-dirty")
    date = datetime.fromisoformat(info["date"])
    assert date.utcoffset() == timedelta(0) and abs(datetime.now(timezone.utc) - date) < timedelta(minutes=5)
    machine = info["machine"]
    assert machine["cores"] == os.cpu_count() >= 1 and machine["cpu"] and machine["platform"]
    versions = info["versions"]
    assert versions["python"] == platform.python_version()
    assert versions["torch"] == torch.__version__ and versions["segdcn"] == segdcn.__version__
    assert versions["numpy"] and versions["pytest"] == pytest.__version__ and versions["no-such-package"] is None


def test_command_line_shows_the_interpreter_as_python(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    script = str(ROOT / "scripts" / "ablation_table.py")  # __file__ of a tool: shown relative to the folder
    assert (
        prov.command_line([script, "out dir", "--rows", "0,3"])
        == "python scripts/ablation_table.py 'out dir' --rows 0,3"
    )
    assert prov.command_line(["/venv/bin/segdcn-train", "-m", "seed=0,1"]) == "segdcn-train -m seed=0,1"
    assert prov.command_line(["-c", "x"]) == "python -c x"
    assert prov.tool_argv("scripts/x.py", ["--a"]) == ["scripts/x.py", "--a"]


def test_commit_is_unknown_outside_a_checkout(monkeypatch, tmp_path):
    monkeypatch.setattr(prov, "ROOT", tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert prov.git_commit() == "unknown"


def test_write_results_writes_title_provenance_and_body_atomically(tmp_path):
    path = tmp_path / "nested" / "table.md"
    info = prov.provenance(["scripts/bench_model.py", "--depth", "18"])
    path.parent.mkdir()
    path.write_text("old")
    written = prov.write_results(path, "A table", "| a |\n|---|\n| 1 |\n", info, data={"rows": [1]})
    assert written == [path, path.with_suffix(".json")]
    text = path.read_text()
    assert text.startswith("# A table\n") and text.endswith("| a |\n|---|\n| 1 |\n")
    assert f"- commit: `{info['commit']}`" in text and f"- date: {info['date']}" in text
    assert_provenance(text, "python scripts/bench_model.py --depth 18")
    assert json.loads(path.with_suffix(".json").read_text()) == {"provenance": info, "rows": [1]}
    assert sorted(p.name for p in path.parent.iterdir()) == ["table.json", "table.md"]  # no temporary left


# ---- the tools' --results ----


def write_run(root: Path, name: str, layers: int, seed: int, miou: float) -> None:
    """A finished run folder as the ablation table reads it: summary.json with the key config values."""
    (root / name).mkdir(parents=True)
    config = {"experiment": "demo", "dataset.name": "synthetic", "model.backbone.name": "resnet18"}
    config |= {"model.dcn.layers": layers, "seed": seed}
    (root / name / "summary.json").write_text(json.dumps({"miou": miou, "state": "finished", "config": config}))


def test_ablation_table_results(tmp_path):
    sweep = tmp_path / "sweep"
    for i, (layers, seed, miou) in enumerate([(0, 0, 0.40), (0, 1, 0.42), (3, 0, 0.45), (3, 1, 0.46)]):
        write_run(sweep, str(i), layers, seed, miou)
    path, option = results_of(tmp_path, "demo.md")
    result = run_python("scripts/ablation_table.py", str(sweep), "--rows", "0,3", *option, timeout=120)
    assert result.returncode == 0, result.stderr
    text = path.read_text()
    assert text.startswith("# Table 1 ablation: synthetic, experiment demo\n")
    assert_provenance(text, f"python scripts/ablation_table.py {sweep} --rows 0,3 --results {path}")
    table = (sweep / "ablation_table1.md").read_text()  # what it printed and wrote beside the runs
    assert table in text and "- same-seed gain, res5a,b,c: " in text and f"best run: {sweep / '3'}" in text


def test_bench_ops_results(tmp_path):
    path, option = results_of(tmp_path, "bench_ops.md")
    args = ["--shapes", "1x8x9x2", "--repeat", "1", "--rounds", "1", "--threads", "1,2", "--no-torchvision"]
    args += ["--json", str(tmp_path / "bench_ops.json"), *option]
    result = run_python("scripts/bench_ops.py", *args, timeout=120)
    assert result.returncode == 0, result.stderr
    text = path.read_text()
    assert_provenance(text, "python scripts/bench_ops.py " + " ".join(args))
    assert "| threads | shape | kind | conv_fwd ms |" in text and "| N=1 8->8 9x9 d=2 | 1 -> 2 |" in text
    assert "- small map: fwd / conv <= 1.3" in text and ("PASS" in text or "FAIL" in text)
    report = json.loads((tmp_path / "bench_ops.json").read_text())
    assert report["provenance"]["command"] == "python scripts/bench_ops.py " + " ".join(args)


def test_bench_model_and_bench_data_results(tmp_path):
    path, option = results_of(tmp_path, "bench_model.md")
    args = ["--depth", "18", "--size", "33", "--repeat", "1", "--warmup", "0", "--no-train", "--impls", "native"]
    result = run_python("scripts/bench_model.py", *args, *option, timeout=120)
    assert result.returncode == 0, result.stderr
    text = path.read_text()
    assert text.startswith("# Model benchmark: DeepLab-R18")
    assert "| dcn3_native | native |" in text and "paper, Table 4" in text
    path, option = results_of(tmp_path, "bench_data.md")
    args = ["--num-images", "8", "--batch-size", "4", "--batches", "2", "--warmup", "1", "--workers", "0"]
    result = run_python("scripts/bench_data.py", *args, *option, timeout=120)
    assert result.returncode == 0, result.stderr
    text = path.read_text()
    assert_provenance(text, "python scripts/bench_data.py " + " ".join([*args, *option]))
    assert "DataLoader, 0 workers:" in text


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory) -> Path:
    """A real 2-iteration sweep over 0 and 3 deformable layers on 4 images (a few seconds), job 1 copied
    to job 2 and the mIoUs set so that the best run (job 0) is not deformable and the best deformable is 2."""
    from segdcn.data import generate_synthetic
    from segdcn.data.synthetic import SyntheticConfig

    root = tmp_path_factory.mktemp("provenance")
    generate_synthetic(root / "data", SyntheticConfig(num_train=4, num_val=2), workers=1, progress=False)
    sweep = root / "sweep"
    overrides = ["model=deeplab_r18", "model.head.channels=16", "model.dcn.layers=0,3", "trainer.max_iters=2"]
    overrides += ["trainer.batch_size=2", "trainer.num_workers=0", "trainer.eval_every=0", "eval.num_workers=0"]
    overrides += ["trainer.progress=false", "logger=none", f"dataset.root={root / 'data'}", f"hydra.sweep.dir={sweep}"]
    result = run_python("-m", "segdcn.train", "-m", *overrides, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    shutil.copytree(sweep / "1", sweep / "2")
    for job, miou in (("0", 0.9), ("1", 0.2), ("2", 0.5)):
        summary = json.loads((sweep / job / "summary.json").read_text())
        (sweep / job / "summary.json").write_text(json.dumps(summary | {"miou": miou}))
    return sweep


def test_receptive_field_stats_picks_the_best_deformable_run(tiny_sweep, capsys):
    script = load_script("receptive_field_stats")
    assert script.best_deformable_checkpoint(str(tiny_sweep), 3) == tiny_sweep / "2" / "checkpoints" / "best.pt"
    assert script.best_deformable_checkpoint(str(tiny_sweep), None).parent.parent == tiny_sweep / "2"
    with pytest.raises(FileNotFoundError, match="no finished run with 4 deformable layers"):
        script.best_deformable_checkpoint(str(tiny_sweep), 4)


def test_receptive_field_stats_results(tiny_sweep, tmp_path):
    path, option = results_of(tmp_path, "demo_effective_dilation.md")
    args = ["--sweep", str(tiny_sweep), "--dcn-layers", "3", "--max-images", "2", "--out-dir", str(tmp_path), *option]
    result = run_python("scripts/receptive_field_stats.py", *args, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"best run with 3 deformable layers: {tiny_sweep / '2'} (mIoU 50.0)" in result.stdout
    text = path.read_text()
    assert text.startswith("# Effective dilation by object size: resnet18, synthetic val\n")
    assert_provenance(text, "python scripts/receptive_field_stats.py " + " ".join(args))
    assert (tmp_path / "effective_dilation.md").read_text() in text  # the table it wrote beside
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["checkpoint"] == str(tiny_sweep / "2" / "checkpoints" / "best.pt") and sidecar["images"] == 2
    assert sidecar["provenance"]["commit"].startswith(head_commit())


def test_receptive_field_stats_takes_a_checkpoint_or_a_sweep():
    result = run_python("scripts/receptive_field_stats.py", "--max-images", "1", timeout=120)
    assert result.returncode == 2 and "--ckpt" in result.stderr and "--sweep" in result.stderr
    result = run_python("scripts/receptive_field_stats.py", "--ckpt", "x.pt", "--dcn-layers", "3", timeout=120)
    assert result.returncode == 2 and "--dcn-layers" in result.stderr
