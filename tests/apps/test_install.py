"""segdcn as a wheel: built (CPU-only extension), installed non-editable into a folder of its own, and its
four apps run from a folder outside the checkout, as a user of `pip install segdcn` would run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

# The wheel compiles the extension again (about two minutes on 2 cores in a fresh clone).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A CPU-only wheel of the working tree, installed with --target (no dependencies: the venv has them)."""
    base = tmp_path_factory.mktemp("wheel")
    env = dict(os.environ, SEGDCN_CUDA="0", MAX_JOBS=os.environ.get("MAX_JOBS", "2"))
    build = [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", str(ROOT), "-w", str(base)]
    result = subprocess.run(build, capture_output=True, text=True, env=env, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = base.glob("segdcn-*.whl")
    target = base / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)]
    result = subprocess.run(install, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return target


def app(target: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """A console script of the installed copy, run in `cwd` with only that copy importable as segdcn."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(target), WANDB_MODE="disabled", PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run([str(target / "bin" / args[0]), *args[1:]], capture_output=True, text=True, cwd=cwd,
                            env=env, timeout=900)  # fmt: skip
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_the_wheel_ships_the_configs_and_its_apps_run_outside_the_checkout(installed, synthetic_set, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    data = synthetic_set()

    where = subprocess.run(
        [sys.executable, "-c", "import segdcn, segdcn.config, segdcn.ops; print(segdcn.__file__);"
         "print(segdcn.config.CONF_DIR); print(segdcn.ops.build_info()['native']); print(segdcn.__version__)"],
        capture_output=True, text=True, cwd=elsewhere, env=dict(os.environ, PYTHONPATH=str(installed)), timeout=300,
    )  # fmt: skip
    module, conf, native, version = where.stdout.split()
    assert Path(module).is_relative_to(installed) and Path(conf) == installed / "segdcn" / "conf"
    assert native == "True" and (installed / "segdcn" / "conf" / "experiment" / "paper_voc.yaml").is_file()
    assert (installed / "segdcn" / "data" / "ade20k150.csv").is_file()  # package data: ADE20K's class table
    assert (installed / f"segdcn-{version}.dist-info").is_dir()  # the version of segdcn/__init__.py

    job = app(installed, elsewhere, "segdcn-train", "--cfg", "job", "experiment=paper_voc")
    assert "experiment: paper_voc" in job.stdout and "pretrained: imagenet" in job.stdout

    run = tmp_path / "run"
    app(
        installed, elsewhere, "segdcn-train", f"dataset.root={data}", "model.head.channels=16",
        "model.backbone.width=16", "model.dcn.layers=1", "dataset.train.crop_size=[32,32]", "trainer.max_iters=2",
        "trainer.batch_size=2", "trainer.num_workers=0", "eval.num_workers=0", "trainer.progress=false",
        "trainer.device=cpu", "logger=none", f"hydra.run.dir={run}",
    )  # fmt: skip
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "summary.json").is_file()

    evaluated = app(
        installed, elsewhere, "segdcn-eval", f"ckpt={run / 'checkpoints' / 'last.pt'}", "device=cpu",
        "progress=false", "eval.num_workers=0", f"hydra.run.dir={tmp_path / 'eval'}",
    )  # fmt: skip
    assert "mIoU" in evaluated.stdout and (tmp_path / "eval" / "summary.json").is_file()

    exported = tmp_path / "export"
    app(
        installed, elsewhere, "segdcn-export", f"ckpt={run / 'checkpoints' / 'last.pt'}", "format=onnx",
        f"out={exported}", "name=tiny", f"hydra.run.dir={tmp_path / 'export_run'}",
    )  # fmt: skip
    assert (exported / "tiny.onnx").is_file()

    image = sorted((data / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))[0]
    app(
        installed, elsewhere, "segdcn-predict", f"onnx={exported / 'tiny.onnx'}", f"input={image}",
        f"out={tmp_path / 'predicted'}", "progress=false", f"hydra.run.dir={tmp_path / 'predict_run'}",
    )  # fmt: skip
    assert (tmp_path / "predicted" / "labels" / f"{image.stem}.png").is_file()
    assert not list(elsewhere.iterdir())  # every output went where the keys said
