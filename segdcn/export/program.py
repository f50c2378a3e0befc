"""torch.export: the model as an ExportedProgram (.pt2) with dynamic batch, height and width.

    path = export_program(model, "exports/model.pt2", size=(321, 321))
    module = load_program(path)          # torch.export.load(path).module(): call it like the model

The program calls torch.ops.segdcn.deform_conv2d (or torchvision's op), so the process that loads it
imports segdcn.ops (and torchvision) first; load_program does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from segdcn.export.files import written_atomically
from segdcn.export.shapes import EXAMPLE_BATCH, dynamic_input_shapes, random_input
from segdcn.export.verify import Difference, compare


def export_program(model: torch.nn.Module, path: str | os.PathLike, size: Sequence[int]) -> Path:
    """Writes torch.export.export(model) at an example input of `size` = (height, width) to `path`."""
    example = random_input((EXAMPLE_BATCH, 3, *size))
    program = torch.export.export(model, (example,), dynamic_shapes=dynamic_input_shapes(model))
    path = Path(path)
    with written_atomically(path) as staged:
        torch.export.save(program, staged)
    return path


def load_program(path: str | os.PathLike) -> torch.nn.Module:
    """The saved program as a callable module, its custom ops registered first."""
    import torchvision  # noqa: F401 - registers torch.ops.torchvision (model.dcn.impl=torchvision)

    import segdcn.ops  # noqa: F401 - registers torch.ops.segdcn

    return torch.export.load(str(path)).module()


def check_program(
    path: str | os.PathLike, model: torch.nn.Module, shapes: Sequence[Sequence[int]], tolerance: float
) -> list[Difference]:
    """The reloaded program against `model` at each input shape (see segdcn.export.verify.compare)."""
    loaded = load_program(path)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return loaded(x)

    return compare(f"program {Path(path).name} (torch.export.load)", model, run, shapes, tolerance)
