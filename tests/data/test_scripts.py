"""The data scripts run as their --help says."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from segdcn.data.synthetic import SyntheticConfig
from tests.fixtures import SCRIPTS, script_main, write_ade20k, write_folder

DATA_SCRIPTS = [
    "prepare_voc",
    "prepare_cityscapes",
    "prepare_folder",
    "prepare_ade20k",
    "make_synthetic",
    "check_dataset",
    "bench_data",
]


@pytest.mark.parametrize("name", DATA_SCRIPTS)
def test_help(name):
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / f"{name}.py"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout and f"python scripts/{name}.py" in result.stdout


def test_make_synthetic_cli(tmp_path, capsys):
    args = ["--out", str(tmp_path), "--seed", "1", "--num-train", "6", "--num-val", "2", "--image-size", "48"]
    assert script_main("make_synthetic")(args + ["--max-extent", "40", "--workers", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "wrote 6 train + 2 val images of 48 px" in out and "ellipse" in out
    assert len(list((tmp_path / "VOCdevkit/VOC2012/JPEGImages").glob("*.jpg"))) == 8
    # main() reads every SyntheticConfig field from its option; the harder ones reach the written config
    harder = ["--max-rotation", "20", "--max-aspect", "1.4", "--warp", "0.05", "--no-flat", "--background", "any"]
    assert script_main("make_synthetic")(args + ["--max-extent", "40", "--workers", "1", "--no-progress"] + harder) == 0
    written = json.loads((tmp_path / "synthetic.json").read_text())["config"]
    expected = SyntheticConfig(
        seed=1,
        num_train=6,
        num_val=2,
        image_size=48,
        max_extent=40,
        max_rotation=20,
        max_aspect=1.4,
        warp=0.05,
        flat=False,
        background="any",
    )
    assert written == dataclasses.asdict(expected)
    with pytest.raises(SystemExit):  # a bad value is refused by name
        script_main("make_synthetic")(["--out", str(tmp_path), "--min-extent", "1"])
    assert "min_extent" in capsys.readouterr().err


def test_bench_data_prints_images_per_second(capsys):
    args = ["--num-images", "16", "--image-size", "48", "--batch-size", "4", "--batches", "3", "--warmup", "1"]
    assert script_main("bench_data")(args + ["--workers", "0,1"]) == 0
    out = capsys.readouterr().out
    rates = [float(line.split(":")[-1].split()[0]) for line in out.splitlines() if "images/s" in line]
    assert len(rates) == 4 and all(rate > 0 for rate in rates)


@pytest.mark.parametrize("dataset", ["folder", "ade20k"])
def test_bench_data_times_a_folder_or_ade20k_root(dataset, tmp_path, capsys):
    root = write_folder(tmp_path).root if dataset == "folder" else write_ade20k(tmp_path).root
    args = ["--dataset", dataset, "--root", str(root), "--batch-size", "2", "--batches", "2", "--warmup", "1"]
    assert script_main("bench_data")(args + ["--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{dataset} train: ") and f"at {root}" in out
    rates = [float(line.split(":")[-1].split()[0]) for line in out.splitlines() if "images/s" in line]
    assert len(rates) == 3 and all(rate > 0 for rate in rates)
