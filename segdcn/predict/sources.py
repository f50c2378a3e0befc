"""What segdcn-predict runs: a checkpoint of segdcn-train in PyTorch, or an ONNX file of segdcn-export in
onnxruntime. Both give a callable (NCHW float32 images -> logits) and the same metadata dictionary, so
everything after this point treats them alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from segdcn.export.errors import ExportConfigError


@dataclass
class Source:
    model: Any  # images [N, 3, H, W] -> logits [N, C, H, W]
    metadata: dict[str, Any]
    device: torch.device
    description: str


def from_checkpoint(path: str | os.PathLike, device: torch.device) -> Source:
    """A checkpoint's model in eval mode, described as segdcn-export would describe it."""
    from segdcn.export.exporter import load_trained_model
    from segdcn.export.metadata import model_metadata

    model, train_cfg, iteration = load_trained_model(path, device)  # errors name the file
    metadata = model_metadata(train_cfg, checkpoint=str(path), iteration=iteration)
    return Source(model, metadata, device, f"checkpoint {path}")


def from_onnx(path: str | os.PathLike, threads: int | None = None) -> Source:
    """An ONNX file with its metadata JSON (MetadataError, naming the expected file, without one)."""
    from segdcn.export.metadata import read_metadata
    from segdcn.export.onnx import OnnxRunner

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"onnx={path}: no such file")
    metadata = read_metadata(path)
    runner = OnnxRunner(path, input_name=metadata["input"]["name"], threads=threads)
    return Source(runner, metadata, torch.device("cpu"), f"ONNX file {path} (onnxruntime)")


def open_source(ckpt: str | None, onnx: str | None, device: str = "auto", threads: int | None = None) -> Source:
    """Exactly one of ckpt=<checkpoint> and onnx=<file.onnx>."""
    if (ckpt is None) == (onnx is None):
        raise ExportConfigError(
            "give exactly one model: ckpt=<run dir>/checkpoints/best.pt or onnx=<file>.onnx (from segdcn-export)"
        )
    if ckpt is not None:
        if Path(ckpt).suffix == ".onnx":
            raise ExportConfigError(f"ckpt={ckpt} is an ONNX file; pass it as onnx={ckpt}")
        from segdcn.eval import resolve_device

        return from_checkpoint(ckpt, resolve_device(device))
    return from_onnx(onnx, threads)
