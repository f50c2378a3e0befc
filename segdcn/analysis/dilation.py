"""Effective dilation: the mean distance between adjacent sampling locations of a filter (Table 2).

For a kh x kw filter the adjacent pairs are the kh * (kw - 1) horizontally and (kh - 1) * kw
vertically neighbouring taps (12 for 3x3). Distances are in pixels of the layer's input map, so a
plain conv with dilation d, or a deformable one with zero offsets, gives exactly d. The position term
of the sampling locations cancels in the differences, so only the grid d * (i, j) and the offsets
matter: stride and padding do not. With several offset groups, the G filters' values are averaged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .capture import OffsetRecord


def adjacent_pairs(kernel_size: tuple[int, int]) -> int:
    kh, kw = kernel_size
    return kh * (kw - 1) + (kh - 1) * kw


def effective_dilation(record: OffsetRecord) -> Tensor:
    """[N, out_h, out_w] float64: the effective dilation of the filter at every output position."""
    pairs = adjacent_pairs(record.kernel_size)
    if pairs == 0:
        raise ValueError(f"{record.name}: a {record.kernel_size} kernel has no adjacent taps")
    (kh, kw), (dh, dw) = record.kernel_size, record.dilation
    offsets = record.offset_pairs().double()  # [N, G, kh, kw, 2, H, W]
    i, j = torch.meshgrid(torch.arange(kh) * dh, torch.arange(kw) * dw, indexing="ij")
    grid = torch.stack([i, j], dim=-1).double()[None, None, :, :, :, None, None]  # [1, 1, kh, kw, 2, 1, 1]
    locations = offsets + grid
    horizontal = (locations[:, :, :, 1:] - locations[:, :, :, :-1]).norm(dim=4)  # [N, G, kh, kw-1, H, W]
    vertical = (locations[:, :, 1:] - locations[:, :, :-1]).norm(dim=4)  # [N, G, kh-1, kw, H, W]
    total = horizontal.sum(dim=(2, 3)) + vertical.sum(dim=(2, 3))  # [N, G, H, W]
    return (total / pairs).mean(dim=1)
