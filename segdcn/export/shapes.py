"""The input shapes of an export: its dynamic dimensions, the example it is traced with, the sizes it is checked at.

A DeepLab takes any batch and any height and width above its output stride (each stride-2 layer must
leave more than one row and column: torch.export proves its graph for exactly that range). The example
batch is 2, because torch.export fixes a dimension whose example size is 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

EXAMPLE_BATCH = 2


def min_input_size(model: torch.nn.Module) -> int:
    """The smallest height and width the exported program accepts."""
    return int(getattr(model, "output_stride", 32)) + 1


def dynamic_input_shapes(model: torch.nn.Module) -> tuple[dict[int, torch.export.Dim], ...]:
    """dynamic_shapes for forward(image): batch, height and width free (named as in the metadata)."""
    low = min_input_size(model)
    dims = {
        0: torch.export.Dim("batch", min=1),
        2: torch.export.Dim("height", min=low),
        3: torch.export.Dim("width", min=low),
    }
    return (dims,)


def check_shapes(size: Sequence[int], model: torch.nn.Module) -> list[tuple[int, int, int, int]]:
    """Two input shapes for checking an exported file: the example's and one of another batch, height and
    width (3/4 of the height, 5/4 of the width, odd), so that a file fixed to the example's shape fails."""
    height, width = (int(v) for v in size)
    low = min_input_size(model)
    other = (max(low, 3 * height // 4) | 1, max(low, 5 * width // 4) | 1)
    return [(EXAMPLE_BATCH, 3, height, width), (1, 3, *other)]


def random_input(shape: Sequence[int], seed: int = 0) -> torch.Tensor:
    """A normalised-looking random image batch (float32, N(0, 1)), the same for a given seed."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator)
