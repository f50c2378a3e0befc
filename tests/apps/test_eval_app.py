"""segdcn-eval from the command line on a checkpoint in segdcn-train's format."""

from __future__ import annotations

import json
import re

import pytest
import torch
from omegaconf import OmegaConf

import segdcn
from segdcn.config import ConfigError, compose
from segdcn.data import build_dataset
from segdcn.engine.checkpoint import model_from_checkpoint, save_checkpoint
from segdcn.engine.evaluate import evaluate
from segdcn.eval import EvalConfigError, run
from segdcn.models import build_model
from tests.helpers import run_python


def write_checkpoint(path, train_overrides: list[str]):
    """A tiny randomly initialised DeepLab-R18 of conf/train.yaml (with `train_overrides`), saved as
    segdcn-train saves it: model weights and the resolved config as YAML."""
    cfg = compose("train", ["model=deeplab_r18", "model.head.channels=32", *train_overrides])
    torch.manual_seed(0)
    model = build_model(OmegaConf.to_container(cfg.model, resolve=True), cfg.dataset.num_classes)
    state = {
        "model": model.state_dict(),
        "config": OmegaConf.to_yaml(cfg, resolve=True),
        "iteration": 7,
        "segdcn_version": segdcn.__version__,
    }
    return save_checkpoint(path, state)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, synthetic_set):
    """A checkpoint whose config names a dataset root that does not exist, so the evaluations must override it."""
    tmp = tmp_path_factory.mktemp("eval_app")
    root = synthetic_set(image_size=40, num_train=1, num_val=3, max_extent=40)
    path = write_checkpoint(tmp / "run" / "checkpoints" / "best.pt", ["dataset=synthetic", "dataset.root=/moved/away"])
    return path, root


def in_process_miou(path, root) -> float:
    model, cfg = model_from_checkpoint(path)
    dataset = build_dataset(OmegaConf.merge(cfg.dataset, {"root": str(root)}), "val")
    eval_cfg = OmegaConf.merge(cfg.eval, {"num_workers": 0})
    return evaluate(model, dataset, eval_cfg, device="cpu", num_classes=6, progress=False).metrics["miou"]


def test_segdcn_eval_cli_writes_summary_equal_to_evaluate(checkpoint, tmp_path):
    path, root = checkpoint
    run_dir = tmp_path / "eval_run"
    result = run_python(
        "-m", "segdcn.eval", f"ckpt={path}", f"dataset.root={root}", f"hydra.run.dir={run_dir}",
        "eval.num_workers=0", "progress=false", "device=cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["miou"] == pytest.approx(in_process_miou(path, root), abs=1e-9)
    assert list(summary["per_class_iou"]) == ["background", "ellipse", "rectangle", "triangle", "star", "cross"]
    assert summary["num_images"] == 3 and summary["iteration"] == 7 and summary["official"] is None
    assert summary["dataset"] == {"name": "synthetic", "root": str(root), "split": "val"}
    assert 0 <= summary["pixel_acc"] <= 1
    assert "mIoU" in result.stdout and "background" in result.stdout  # the printed table
    assert (run_dir / "config.yaml").is_file()


def test_missing_checkpoint_names_the_file(tmp_path):
    missing = tmp_path / "nowhere" / "best.pt"
    result = run_python("-m", "segdcn.eval", f"ckpt={missing}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert f"checkpoint {missing}: no such file" in result.stderr


def compose_eval(overrides: list[str]):
    return compose("eval", overrides)


def test_dataset_group_replaces_the_checkpoints_dataset_and_settings_are_checked(checkpoint, tmp_path):
    path, root = checkpoint
    common = [f"ckpt={path}", "eval.num_workers=0", "progress=false", "device=cpu", "eval.max_images=2"]
    cfg = compose_eval([*common, "dataset=synthetic", f"dataset.root={root}"])
    summary = run(cfg, tmp_path / "group", "synthetic", ["root"])
    assert summary["num_images"] == 2 and summary["dataset"]["root"] == str(root)

    with pytest.raises(EvalConfigError, match="eval.official=true .* synthetic"):
        run(compose_eval([*common, "eval.official=true", f"dataset.root={root}"]), tmp_path / "o", None, ["root"])
    with pytest.raises(ConfigError, match=r"eval.mode='tiles': expected one of whole, slide"):
        run(compose_eval([*common, "eval.mode=tiles"]), tmp_path / "m", None, [])
    with pytest.raises(ConfigError, match=r"offset_images=-1: expected 0 or more \(images; 0: no offset"):
        run(compose_eval([*common, "offset_images=-1"]), tmp_path / "i", None, [])
    with pytest.raises(EvalConfigError, match="predicts 6 classes .* voc_aug has 21"):
        run(compose_eval([*common, "dataset=voc_aug"]), tmp_path / "v", "voc_aug", [])


def test_unreadable_checkpoint_names_the_file(tmp_path):
    from segdcn.engine.checkpoint import CheckpointError

    broken = tmp_path / "last.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {broken}: ")):
        run(compose_eval([f"ckpt={broken}", "device=cpu"]), tmp_path / "run", None, [])


def test_weights_that_do_not_fit_their_config_name_the_file(tmp_path):
    from segdcn.engine.checkpoint import CheckpointError

    path = write_checkpoint(tmp_path / "best.pt", ["dataset=synthetic"])
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"] = ckpt["config"].replace("layers: 0", "layers: 2")  # the weights have no offset convs
    save_checkpoint(path, ckpt)
    with pytest.raises(
        CheckpointError, match=re.escape(f"checkpoint {path}: weights do not match") + ".*missing in the checkpoint"
    ):
        run(compose_eval([f"ckpt={path}", "device=cpu"]), tmp_path / "run", None, [])
