"""Where a deformable layer samples, and where a stack of them samples on the image.

Coordinates are (y, x), in the order of the offsets' (dy, dx) pairs. Output position p of a layer
with stride s, padding pad and dilation d reads tap (i, j) of its kernel at input-map position

    s * p - pad + d * (i, j) + offset(p, tap)                                (the paper's Eq. 2)

(segdcn.ops.deform_conv2d, torchvision's convention). To follow an activation back through stacked
deformable layers (the paper's Figures 5-7), each sampling location of a later layer becomes an
"activation" of the layer before: a fractional position on that layer's output map, whose offsets
are read by bilinear interpolation of the offset field (the op reads features the same way), with
positions beyond the map clamped to its border. Three stacked 3x3 layers give 9 + 81 + 729 points.
Maps are carried over through image coordinates (position j of a stride-s map is image pixel s * j),
so layers at different strides, and ordinary layers between the deformable ones, are accounted for;
the ordinary layers' own footprints are not traced, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .capture import OffsetRecord


def kernel_grid(record: OffsetRecord) -> Tensor:
    """[kh * kw, 2]: the regular grid d * (i, j) of the taps, row-major (the offsets' tap order)."""
    (kh, kw), (dh, dw) = record.kernel_size, record.dilation
    i, j = torch.meshgrid(torch.arange(kh), torch.arange(kw), indexing="ij")
    return torch.stack([i.reshape(-1) * dh, j.reshape(-1) * dw], dim=1).double()


def offsets_at(record: OffsetRecord, positions: Tensor, batch: int = 0) -> Tensor:
    """[P, G * kh * kw, 2]: the offsets (dy, dx) at positions [P, 2] (y, x) of the output map.

    Integer positions read the field itself; fractional ones interpolate it bilinearly; positions
    beyond the map take the nearest border value.
    """
    if not 0 <= batch < record.offset.shape[0]:
        raise IndexError(f"batch index {batch} out of range for {record.offset.shape[0]} recorded images")
    field = record.offset[batch].double()  # [2 * G * K, H, W]
    height, width = field.shape[-2:]
    y = positions[:, 0].double().clamp(0, height - 1)
    x = positions[:, 1].double().clamp(0, width - 1)
    y0, x0 = y.floor().long(), x.floor().long()
    y1, x1 = (y0 + 1).clamp(max=height - 1), (x0 + 1).clamp(max=width - 1)
    wy, wx = (y - y0)[:, None], (x - x0)[:, None]
    values = (
        field[:, y0, x0].T * (1 - wy) * (1 - wx)
        + field[:, y0, x1].T * (1 - wy) * wx
        + field[:, y1, x0].T * wy * (1 - wx)
        + field[:, y1, x1].T * wy * wx
    )  # [P, 2 * G * K]
    return values.reshape(len(positions), -1, 2)


def sampling_locations(record: OffsetRecord, positions: Tensor, batch: int = 0) -> Tensor:
    """[P, G * kh * kw, 2]: where output positions [P, 2] (y, x) read the input map (input-map units)."""
    positions = positions.double().reshape(-1, 2)
    stride = torch.tensor(record.stride, dtype=torch.float64)
    padding = torch.tensor(record.padding, dtype=torch.float64)
    grid = kernel_grid(record).repeat(record.deform_groups, 1)  # the same grid for every offset group
    start = positions * stride - padding  # [P, 2]
    return start[:, None, :] + grid[None] + offsets_at(record, positions, batch)


def sampling_grid(record: OffsetRecord) -> Tensor:
    """[N, G * kh * kw, 2, out_h, out_w]: where every output position reads the input map, for every
    recorded image (input-map units; the integer positions of sampling_locations, all at once)."""
    n, _, height, width = record.offset.shape
    taps = record.deform_groups * record.taps
    grid = kernel_grid(record).repeat(record.deform_groups, 1)  # [T, 2]
    (sh, sw), (ph, pw) = record.stride, record.padding
    start_y = (torch.arange(height, dtype=torch.float64) * sh - ph).view(1, 1, height, 1)
    start_x = (torch.arange(width, dtype=torch.float64) * sw - pw).view(1, 1, 1, width)
    offsets = record.offset.double().reshape(n, taps, 2, height, width)
    y = start_y + grid[:, 0].view(1, taps, 1, 1) + offsets[:, :, 0]
    x = start_x + grid[:, 1].view(1, taps, 1, 1) + offsets[:, :, 1]
    return torch.stack([y, x], dim=2)


@dataclass
class TracedLayer:
    """The sampling locations of one layer of a trace, on the image: [M, 2] (y, x) pixels.

    `parent[m]` is the index of the point in the next (later) layer's list that sampled point m
    (for the last layer, 0: the activation).
    """

    name: str
    paper_name: str
    points: Tensor
    parent: Tensor


@dataclass
class Trace:
    """An activation of the last deformable layer and its sampling locations through the stack."""

    activation: Tensor  # [2] (y, x) image pixels, on the last layer's output grid
    layers: list[TracedLayer]  # from the last (latest) layer back to the first

    @property
    def num_points(self) -> int:
        return sum(len(layer.points) for layer in self.layers)


def snap_to_grid(record: OffsetRecord, point: Tensor) -> Tensor:
    """The output position (y, x) of `record` nearest to image point (y, x): activations exist only there."""
    position = (point.double() / record.output_stride).round()
    limits = torch.tensor(record.output_size, dtype=torch.float64) - 1
    return torch.minimum(position.clamp(min=0), limits)


def trace_sampling_locations(records: list[OffsetRecord], point: Tensor | tuple[float, float], batch: int = 0) -> Trace:
    """The activation of the last layer nearest to image point (y, x), traced back through `records`.

    records: OffsetRecords in forward order (capture_offsets); all their layers are traced.
    """
    if not records:
        raise ValueError("records is empty: capture the offsets of a model with deformable layers first")
    point = torch.as_tensor(point, dtype=torch.float64).reshape(2)
    last = records[-1]
    position = snap_to_grid(last, point)
    activation = position * last.output_stride
    image_points = activation[None]  # points of the current level, image pixels
    layers = []
    for record in reversed(records):
        positions = image_points / record.output_stride  # on this layer's output map
        locations = sampling_locations(record, positions, batch)  # [P, T, 2] on its input map
        taps = locations.shape[1]
        image_points = locations.reshape(-1, 2) * record.input_stride
        parents = torch.arange(len(positions)).repeat_interleave(taps)
        layers.append(TracedLayer(record.name, record.paper_name, image_points, parents))
    return Trace(activation=activation, layers=layers)


def trace_image_points(
    records: list[OffsetRecord], points: list[tuple[float, float]], scale: tuple[float, float] = (1.0, 1.0)
) -> list[Trace]:
    """One trace per point (y, x) of an image `scale` = (sy, sx) times the model input's size (the
    evaluation resamples through pixel centres, as F.interpolate with align_corners=False)."""
    traces = []
    for y, x in points:
        model_point = torch.tensor([(y + 0.5) / scale[0] - 0.5, (x + 0.5) / scale[1] - 0.5])
        traces.append(trace_sampling_locations(records, model_point))
    return traces
