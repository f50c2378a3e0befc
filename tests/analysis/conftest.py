"""A short synthetic sweep for the analysis tests (test_analysis.py, test_notebooks.py).

One `segdcn-train -m model.dcn.layers=0,3` sweep (the layout of `make demo`: one folder per job with
summary.json, config.yaml and checkpoints/) of 2 iterations each on the session's small synthetic set
(64 px images), a tiny ResNet-18 DeepLab (head 32 channels), built once per test session.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_python


@pytest.fixture(scope="session")
def short_sweep(synthetic_set, tmp_path_factory) -> Path:
    """The sweep directory (jobs 0: no deformable layer, 1: three)."""
    sweep = tmp_path_factory.mktemp("analysis") / "runs"
    result = run_python(
        "-m",
        "segdcn.train",
        "-m",
        f"dataset.root={synthetic_set('small')}",
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
    return sweep
