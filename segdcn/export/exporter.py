"""Exporting a trained model to files, each checked against PyTorch and described by its metadata JSON.

    results = export_model(model, train_cfg, "exports", formats=["onnx", "torch_export"])
    results[0].path, results[0].metadata_path, results[0].differences

A file's metadata JSON is written only after the file passed its check, so a file that computes
something else is left without one, and segdcn-predict refuses it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from segdcn.export.errors import ExportConfigError, ExportVerificationError
from segdcn.export.metadata import model_metadata, write_metadata
from segdcn.export.shapes import check_shapes, min_input_size
from segdcn.export.verify import Difference

log = logging.getLogger(__name__)

SUFFIXES = {"onnx": ".onnx", "torch_export": ".pt2"}
FORMAT_CHOICES = (*SUFFIXES, "all")


def resolve_formats(format: str) -> list[str]:
    """format=onnx|torch_export|all as the list of formats to write."""
    if format == "all":
        return list(SUFFIXES)
    if format not in SUFFIXES:
        raise ExportConfigError(
            f"format={format!r} is not an export format; expected one of {', '.join(FORMAT_CHOICES)}"
        )
    return [format]


def default_name(model: torch.nn.Module, train_cfg: DictConfig) -> str:
    """deeplab-<backbone>-dcn<N>[-v2]-<dataset>, e.g. deeplab-resnet101-dcn3-voc_aug."""
    from segdcn.models.dcn import deformable_layers

    backbone = OmegaConf.select(train_cfg, "model.backbone.name", default="resnet")
    dcn = f"dcn{len(deformable_layers(model))}"
    if OmegaConf.select(train_cfg, "model.dcn.modulated", default=False):
        dcn += "-v2"
    return f"deeplab-{backbone}-{dcn}-{train_cfg.dataset.name}"


def example_size(train_cfg: DictConfig, model: torch.nn.Module, size: Sequence[int] | None) -> tuple[int, int]:
    """The (height, width) the export traces and checks at: `size`, else the training crop."""
    if size is None:
        size = OmegaConf.select(train_cfg, "dataset.train.crop_size", default=None) or (321, 321)
        key = "the training crop (dataset.train.crop_size)"
    else:
        key = "export.input_size"
    values = [int(v) for v in size]
    low = min_input_size(model)
    if len(values) != 2 or min(values) < low:
        raise ExportConfigError(
            f"{key} is {list(size)}; expected [height, width], each at least {low} (output stride + 1)"
        )
    return values[0], values[1]


def load_trained_model(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """(model in eval mode, its training config, the checkpoint's iteration) from a checkpoint of segdcn-train.

    Errors name the file: missing, unreadable, not a segdcn checkpoint, or weights that do not fit the
    model its config describes (the keys that differ).
    """
    from segdcn.engine.checkpoint import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(path)
    model, train_cfg = model_from_checkpoint(ckpt, device, path=path)
    return model.eval(), train_cfg, ckpt.get("iteration")


@dataclass
class ExportResult:
    format: str
    path: Path
    metadata_path: Path
    differences: list[Difference] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


def export_model(
    model: torch.nn.Module,
    train_cfg: DictConfig,
    out_dir: str | os.PathLike,
    *,
    formats: Sequence[str] = ("onnx", "torch_export"),
    name: str | None = None,
    size: Sequence[int] | None = None,
    opset: int = 19,
    tolerance: float = 1e-4,
    verify: bool = True,
    checkpoint: str | None = None,
    iteration: int | None = None,
) -> list[ExportResult]:
    """Writes `model` (trained with `train_cfg`) in each format to `out_dir/<name><suffix>`, checks each file
    against the model at two input shapes (unless `verify` is false) and writes its metadata JSON."""
    from segdcn.export.onnx import check_onnx, export_onnx
    from segdcn.export.program import check_program, export_program

    for format in formats:
        resolve_formats(format)
    model = model.eval().cpu()
    size = example_size(train_cfg, model, size)
    name = name or default_name(model, train_cfg)
    out_dir = Path(out_dir)
    base = model_metadata(train_cfg, checkpoint=checkpoint, iteration=iteration)
    shapes = check_shapes(size, model)
    results = []
    for format in formats:
        path = out_dir / f"{name}{SUFFIXES[format]}"
        log.info("exporting %s to %s", format, path)
        with torch.no_grad():
            if format == "onnx":
                export_onnx(model, path, size, opset)
                details = {"opset": opset}
            else:
                export_program(model, path, size)
                details = {"load": "import segdcn.ops; torch.export.load(path).module()"}
        differences = []
        if verify:
            check = check_onnx if format == "onnx" else check_program
            try:
                differences = check(path, model, shapes, tolerance)
            except ExportVerificationError as error:
                raise ExportVerificationError(f"{error}; {path} is left without metadata for inspection") from error
        metadata = {
            **base,
            "format": format,
            format: details,
            "verification": {"tolerance": tolerance, "differences": [d.as_dict() for d in differences]}
            if verify
            else None,
        }
        metadata_path = write_metadata(path, metadata)
        results.append(ExportResult(format, path, metadata_path, differences, metadata))
    return results
