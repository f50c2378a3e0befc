"""segdcn-export: ONNX files with DeformConv nodes checked in onnxruntime, torch.export programs, their
metadata JSON, the W&B artifact (offline, read back from the run file), and the errors.

Tiny DeepLabs (ResNet-18, 32-channel head, two deformable layers with random offsets) keep each export
to seconds. Every ONNX file is run for real in onnxruntime at two input sizes, one file for both.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

from segdcn.config import compose
from segdcn.data.labels import SYNTHETIC
from segdcn.engine.checkpoint import CheckpointError, model_from_checkpoint, save_checkpoint
from segdcn.export import ExportConfigError, ExportVerificationError, export_model, read_metadata
from segdcn.export.app import run as export_run
from segdcn.export.artifact import log_model_artifact
from segdcn.export.exporter import load_trained_model
from segdcn.export.onnx import OnnxRunner, check_onnx
from segdcn.export.shapes import random_input
from tests.helpers import offline_wandb, run_python
from tests.model_files import train_config, write_checkpoint
from tests.wandb_records import read_records

SIZES = [(2, 3, 64, 64), (1, 3, 41, 87)]  # one file, two input sizes (and batches)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {
        "dcn_v1": write_checkpoint(root / "v1.pt"),
        "dcn_v2": write_checkpoint(root / "v2.pt", "model.dcn.modulated=true", seed=1),
        "torchvision_v2": write_checkpoint(
            root / "tv.pt", "model.dcn.modulated=true", "model.dcn.impl=torchvision", seed=2
        ),
    }


@pytest.fixture(scope="module")
def cli_export(checkpoints, tmp_path_factory) -> tuple[Path, str]:
    """`python -m segdcn.export ckpt=<DCNv1> format=all export.wandb=true`, once for the module."""
    out = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as monkeypatch:
        offline_wandb(monkeypatch, tmp_path_factory.mktemp("wandb_home"))
        result = run_python(
            "-m",
            "segdcn.export",
            f"ckpt={checkpoints['dcn_v1']}",
            "format=all",
            f"out={out}",
            "name=tiny",
            "export.wandb=true",
            f"hydra.run.dir={out / 'run'}",
            timeout=400,
        )
    assert result.returncode == 0, result.stderr[-4000:]
    return out, result.stdout


def pytorch_model(checkpoint: Path) -> torch.nn.Module:
    model, _ = model_from_checkpoint(checkpoint)
    return model.eval()


def deform_conv_nodes(path: Path) -> list[onnx.NodeProto]:
    return [node for node in onnx.load(str(path)).graph.node if node.op_type == "DeformConv"]


def assert_onnx_matches(path: Path, model: torch.nn.Module, tolerance: float = 1e-4) -> None:
    """One ONNX file in onnxruntime against PyTorch at two input sizes (and batches)."""
    runner = OnnxRunner(path)
    for seed, shape in enumerate(SIZES):
        x = random_input(shape, seed=100 + seed)
        with torch.no_grad():
            expected = model(x)
        got = runner(x)
        assert got.shape == expected.shape == (shape[0], model.head.score.out_channels, *shape[2:])
        scale = expected.abs().max()
        assert (got - expected).abs().max() <= tolerance * scale, f"{path.name} at {shape}"


# ---- the command ----


def test_cli_writes_checked_onnx_and_program_with_metadata_and_artifact(cli_export, checkpoints):
    out, stdout = cli_export
    onnx_file, program_file = out / "tiny.onnx", out / "tiny.pt2"
    for path in (onnx_file, program_file, out / "tiny.onnx.json", out / "tiny.pt2.json"):
        assert path.is_file(), path
    # the command ran each file against PyTorch and printed the largest difference at both check shapes
    assert stdout.count("ONNX tiny.onnx in onnxruntime vs PyTorch at input") == 2
    assert stdout.count("program tiny.pt2 (torch.export.load) vs PyTorch at input") == 2
    assert "largest difference" in stdout

    model = pytorch_model(checkpoints["dcn_v1"])
    nodes = deform_conv_nodes(onnx_file)
    assert len(nodes) == 2 and all(len(node.input) < 5 or not node.input[4] for node in nodes)  # DCNv1: no mask
    proto = onnx.load(str(onnx_file), load_external_data=False)
    assert proto.ir_version <= 13 and proto.opset_import[0].version >= 19
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert_onnx_matches(onnx_file, model)

    # the program reloads in this process and matches at shapes other than the traced one
    import segdcn.ops  # noqa: F401 - registers torch.ops.segdcn for the loaded program

    loaded = torch.export.load(str(program_file)).module()
    for shape in [(3, 3, 40, 56), (1, 3, 65, 33)]:
        x = random_input(shape, seed=7)
        with torch.no_grad():
            assert torch.allclose(loaded(x), model(x), rtol=1e-5, atol=1e-6)

    meta = json.loads((out / "tiny.onnx.json").read_text())
    assert meta == read_metadata(onnx_file)
    assert meta["format"] == "onnx" and meta["file"] == "tiny.onnx" and meta["onnx"]["opset"] == 19
    assert meta["classes"] == list(SYNTHETIC.names)
    assert meta["palette"] == [list(c) for c in SYNTHETIC.colors]
    assert meta["input"]["normalization"] == {
        "scale": 1 / 255,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    assert meta["input"]["layout"] == "NCHW" and meta["input"]["name"] == proto.graph.input[0].name
    assert meta["input"]["window"] == [64, 64] and meta["label_ids"] is None
    assert meta["config"]["model.dcn.layers"] == 2 and meta["config"]["dataset.name"] == "synthetic"
    assert meta["segdcn_version"] == segdcn.__version__
    checked = meta["verification"]["differences"]
    assert len(checked) == 2 and all(d["max_rel"] <= 1e-4 for d in checked)
    assert json.loads((out / "tiny.pt2.json").read_text())["format"] == "torch_export"

    # export.wandb=true: one offline run holding a `model` artifact with the four files
    (run_file,) = out.glob("wandb/offline-run-*/run-*.wandb")
    artifacts = [r.artifact for r in read_records(run_file) if r.WhichOneof("record_type") == "artifact"]
    assert len(artifacts) == 1 and artifacts[0].type == "model" and artifacts[0].name == "tiny"
    assert sorted(e.path for e in artifacts[0].manifest.contents) == [
        "tiny.onnx",
        "tiny.onnx.json",
        "tiny.pt2",
        "tiny.pt2.json",
    ]


@pytest.mark.parametrize("which", ["dcn_v2", "torchvision_v2"])
def test_modulated_deformable_layers_export_with_masks(which, checkpoints, tmp_path):
    """DCNv2 on segdcn's op and on torchvision's (model.dcn.impl=torchvision) both become DeformConv with a mask."""
    model, train_cfg, _ = load_trained_model(checkpoints[which])
    (result,) = export_model(model, train_cfg, tmp_path, formats=["onnx"], name=which, verify=False)
    nodes = deform_conv_nodes(result.path)
    assert len(nodes) == 2 and all(len(node.input) == 5 and node.input[4] for node in nodes)
    assert_onnx_matches(result.path, model)


def test_the_active_wandb_run_gets_the_artifact(cli_export, tmp_path, wandb_env):
    """A process with a W&B run (a notebook, a training script) logs the files to it; no run is started."""
    import wandb

    out, _ = cli_export
    files = [out / "tiny.onnx", out / "tiny.onnx.json"]
    run = wandb.init(project="segdcn", dir=str(tmp_path), mode="offline")  # sets wandb.run
    try:
        info = log_model_artifact(files, "tiny onnx", {"dataset": "synthetic"}, out_dir=tmp_path / "unused")
    finally:
        run.finish()
    assert info["run_id"] == run.id and info["name"] == "tiny-onnx"
    assert not (tmp_path / "unused").exists()
    (run_file,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    (artifact,) = [r.artifact for r in read_records(run_file) if r.WhichOneof("record_type") == "artifact"]
    assert artifact.type == "model" and sorted(e.path for e in artifact.manifest.contents) == [
        "tiny.onnx",
        "tiny.onnx.json",
    ]
    assert log_model_artifact(files, "tiny", {}, out_dir=tmp_path / "unused") is None  # no run, not asked for one


# ---- errors ----


def export_cfg(*overrides: str):
    return compose("export", overrides)


def test_unknown_format_is_named_by_the_command(checkpoints, tmp_path):
    result = run_python("-m", "segdcn.export", f"ckpt={checkpoints['dcn_v1']}", "format=tflite", f"out={tmp_path}")
    assert result.returncode != 0
    assert "format='tflite': expected one of onnx, torch_export, all" in result.stderr
    assert not list(tmp_path.iterdir())


def test_checkpoint_that_does_not_match_its_config(tmp_path):
    """Weights of a plain DeepLab under a config with two deformable layers: the error names the file and keys."""
    from omegaconf import OmegaConf

    from segdcn.models import build_model

    plain = build_model(train_config("model.dcn.layers=0").model, 6)
    state = {"model": plain.state_dict(), "config": OmegaConf.to_yaml(train_config()), "segdcn_version": "0.1.0"}
    path = save_checkpoint(tmp_path / "mismatch.pt", state)
    with pytest.raises(
        CheckpointError, match=r"mismatch\.pt: weights do not match.*missing in the checkpoint: .*conv_offset"
    ):
        export_run(export_cfg(f"ckpt={path}", f"out={tmp_path / 'out'}"), tmp_path / "run")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("export.opset=17", r"export.opset=17; expected 19\.\.\d+ \(DeformConv exists from opset 19"),
        ("export.input_size=[8,64]", r"export.input_size is \[8, 64\]; expected \[height, width\], each at least 9"),
    ],
)
def test_bad_export_settings(override, message, checkpoints, tmp_path):
    with pytest.raises(ExportConfigError, match=message):
        export_run(export_cfg(f"ckpt={checkpoints['dcn_v1']}", "format=onnx", override), tmp_path)


def test_a_file_that_differs_from_pytorch_fails_its_check(cli_export, checkpoints):
    out, _ = cli_export
    model = pytorch_model(checkpoints["dcn_v1"])
    with torch.no_grad():
        model.head.score.weight.mul_(1.01)  # what the file computes is no longer this model
    with pytest.raises(ExportVerificationError, match=r"tiny\.onnx.*relative .* expected at most 0\.0001"):
        check_onnx(out / "tiny.onnx", model, SIZES[:1], tolerance=1e-4)
