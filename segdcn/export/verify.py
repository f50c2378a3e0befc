"""Checking an exported file against the PyTorch model it came from, on random inputs.

The difference is judged relative to the scale of the model's output (largest |logit|): an
elementwise relative error explodes where logits cross zero, which says nothing about the file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from segdcn.export.errors import ExportVerificationError
from segdcn.export.shapes import random_input

log = logging.getLogger(__name__)


@dataclass
class Difference:
    """The largest difference between the exported file and PyTorch at one input shape."""

    shape: tuple[int, ...]
    max_abs: float
    max_rel: float  # max_abs / max |PyTorch output|

    def as_dict(self) -> dict:
        return {**asdict(self), "shape": list(self.shape)}


def compare(
    what: str,
    reference: Callable[[torch.Tensor], torch.Tensor],
    exported: Callable[[torch.Tensor], torch.Tensor],
    shapes: Sequence[Sequence[int]],
    tolerance: float,
) -> list[Difference]:
    """Runs both on a random input of each shape, prints the largest difference and raises
    ExportVerificationError above `tolerance` (relative) or on an output of another shape."""
    differences = []
    for index, shape in enumerate(shapes):
        x = random_input(shape, seed=index)
        with torch.no_grad():
            expected = reference(x).float()
        got = exported(x).float()
        size = "x".join(str(v) for v in shape)
        if got.shape != expected.shape:
            raise ExportVerificationError(
                f"{what}: output shape {tuple(got.shape)} at input {size}; PyTorch gives {tuple(expected.shape)}"
            )
        max_abs = float((got - expected).abs().max())
        scale = float(expected.abs().max())
        max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
        differences.append(Difference(tuple(int(v) for v in shape), max_abs, max_rel))
        print(f"{what} vs PyTorch at input {size}: largest difference {max_abs:.3g} (relative {max_rel:.3g})")
        if not max_rel <= tolerance:  # also catches NaN
            raise ExportVerificationError(
                f"{what}: largest difference to PyTorch at input {size} is {max_abs:.3g}, relative {max_rel:.3g} "
                f"to the output's scale {scale:.3g}; expected at most {tolerance:g} (export.tolerance)"
            )
    return differences
