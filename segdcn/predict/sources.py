"""What segdcn-predict runs: a checkpoint of segdcn-train in PyTorch, or a file of segdcn-export: an ONNX
file in onnxruntime or a torch.export program (.pt2). Each gives a callable (NCHW float32 images ->
logits) and the same metadata dictionary, so everything after this point treats them alike.
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


def from_program(path: str | os.PathLike) -> Source:
    """A torch.export program with its metadata JSON. It runs where it was exported: on the CPU."""
    from segdcn.export.metadata import read_metadata
    from segdcn.export.program import load_program

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"program={path}: no such file")
    metadata = read_metadata(path)
    return Source(load_program(path), metadata, torch.device("cpu"), f"torch.export program {path}")


# the key each kind of model file is given with, by its suffix
KEY_OF_SUFFIX = {".onnx": "onnx", ".pt2": "program"}


def open_source(
    ckpt: str | None,
    onnx: str | None,
    device: str = "auto",
    threads: int | None = None,
    program: str | None = None,
) -> Source:
    """Exactly one of ckpt=<checkpoint>, onnx=<file.onnx> and program=<file.pt2>."""
    given = {key: path for key, path in (("ckpt", ckpt), ("onnx", onnx), ("program", program)) if path is not None}
    if len(given) != 1:
        raise ExportConfigError(
            "give exactly one model: ckpt=<run dir>/checkpoints/best.pt, or from segdcn-export onnx=<file>.onnx "
            f"or program=<file>.pt2 (got {', '.join(given) or 'none'})"
        )
    ((key, path),) = given.items()
    expected = KEY_OF_SUFFIX.get(Path(path).suffix, key)
    if expected != key:
        kind = {"onnx": "an ONNX file", "program": "a torch.export program"}[expected]
        raise ExportConfigError(f"{key}={path} is {kind}; pass it as {expected}={path}")
    if key == "ckpt":
        from segdcn.engine.device import resolve_device

        return from_checkpoint(path, resolve_device(device))
    if key == "onnx":
        return from_onnx(path, threads)
    return from_program(path)
