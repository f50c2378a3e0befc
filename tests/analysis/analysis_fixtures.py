"""A short synthetic sweep for the analysis tests (tests/analysis/test_analysis.py, test_notebooks.py).

One `segdcn-train -m model.dcn.layers=0,3` sweep (the layout of `make demo`: one folder per job with
summary.json, config.yaml and checkpoints/) of 2 iterations each on 64 px images, a tiny ResNet-18
DeepLab (head 32 channels), built once per test session whichever module asks first.
"""

from __future__ import annotations

import json
from pathlib import Path

from segdcn.data import generate_synthetic
from segdcn.data.synthetic import SyntheticConfig
from tests.helpers import run_python

_BUILT: dict[str, Path] = {}


def short_sweep(tmp_path_factory) -> Path:
    """The sweep directory (jobs 0: no deformable layer, 1: three), built on first use."""
    if "sweep" in _BUILT:
        return _BUILT["sweep"]
    root = tmp_path_factory.mktemp("analysis")
    data = root / "data"
    generate_synthetic(
        data,
        SyntheticConfig(image_size=64, num_train=4, num_val=2, min_extent=6, max_extent=48),
        workers=1,
        progress=False,
    )
    sweep = root / "runs"
    result = run_python(
        "-m",
        "segdcn.train",
        "-m",
        f"dataset.root={data}",
        "dataset.train.crop_size=[64,64]",
        "model=deeplab_r18",
        "model.head.channels=32",
        "model.dcn.layers=0,3",
        "trainer.max_iters=2",
        "trainer.batch_size=2",
        "trainer.num_workers=0",
        "trainer.eval_every=0",
        "trainer.progress=false",
        "eval.num_workers=0",
        "logger=none",
        f"hydra.sweep.dir={sweep}",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    _BUILT["sweep"] = sweep
    _BUILT["data"] = data
    return sweep


def deformable_run(sweep: Path) -> Path:
    """The job with three deformable layers."""
    for summary in sorted(sweep.glob("*/summary.json")):
        if json.loads(summary.read_text())["config"]["model.dcn.layers"] == 3:
            return summary.parent
    raise AssertionError(f"no run with model.dcn.layers=3 in {sweep}")
