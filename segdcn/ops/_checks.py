"""Argument checks of the deformable ops, run before any kernel.

Errors name the argument, its shape and the shape expected, so a wrong call never
reaches the C++ code (where it would be a less helpful RuntimeError, or worse).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# require(condition, message): fails with message() where the condition is false
Require = Callable[[object, Callable[[], str]], None]


def pair(value, name: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each >= minimum."""
    if isinstance(value, torch.Tensor) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got {type(value).__name__}")
    if isinstance(value, int):
        values = (value, value)
    elif (
        isinstance(value, Sequence)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        values = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(values) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return values


def tensor(value, name: str, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, torch.Tensor):
        kind = "a torch.Tensor or None" if optional else "a torch.Tensor"
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__}")


def shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def raise_value_error(condition, message: Callable[[], str]) -> None:
    """The eager checks' `require`: a ValueError with message() where the condition fails. The fake kernels
    pass torch._check instead (a RuntimeError while tracing, with the same message)."""
    if not condition:
        raise ValueError(message())


def expect_shape(
    t: torch.Tensor, name: str, expected: Sequence[int], meaning: str, require: Require = raise_value_error
) -> None:
    want = "[" + ", ".join(str(s) for s in expected) + "]"
    require(tuple(t.shape) == tuple(expected), lambda: f"{name} must have shape {want} ({meaning}), got {shape(t)}")


def same_dtype_and_device(named: dict[str, torch.Tensor | None], reference: str) -> None:
    ref = named[reference]
    if ref.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{reference} must be a floating-point tensor, got dtype {ref.dtype}")
    for name, t in named.items():
        if t is None or name == reference:
            continue
        if t.dtype != ref.dtype:
            raise TypeError(f"{name} has dtype {t.dtype}, expected {ref.dtype} like {reference}")
        if t.device != ref.device:
            raise ValueError(f"{name} is on {t.device}, expected {ref.device} like {reference}")


@dataclass(frozen=True)
class DeformConvArgs:
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    offset_groups: int
    out_size: tuple[int, int]


def deform_conv2d_args(input, offset, weight, bias, stride, padding, dilation, mask) -> DeformConvArgs:
    """Checks a torchvision-style deform_conv2d call; infers weight and offset groups."""
    for value, name in ((input, "input"), (offset, "offset"), (weight, "weight")):
        tensor(value, name)
    tensor(bias, "bias", optional=True)
    tensor(mask, "mask", optional=True)
    stride = pair(stride, "stride", 1)
    padding = pair(padding, "padding", 0)
    dilation = pair(dilation, "dilation", 1)
    same_dtype_and_device({"input": input, "offset": offset, "weight": weight, "bias": bias, "mask": mask}, "input")

    groups, offset_groups, out_size = deform_conv2d_shapes(input, offset, weight, bias, mask, stride, padding, dilation)
    return DeformConvArgs(stride, padding, dilation, groups, offset_groups, out_size)


def deform_conv2d_shapes(
    input, offset, weight, bias, mask, stride, padding, dilation, require: Require = raise_value_error
) -> tuple[int, int, tuple[int, int]]:
    """The shape conditions of a deform_conv2d call and their messages, shared by the eager checks and the
    fake kernel (require=torch._check), so a wrong shape under torch.compile or torch.export fails with the
    eager text. Returns the weight groups, the offset groups and the output size that the shapes imply."""
    require(input.dim() == 4, lambda: f"input must be 4-D [N, C, H, W], got shape {shape(input)}")
    require(weight.dim() == 4, lambda: f"weight must be 4-D [C_out, C_in / groups, kh, kw], got shape {shape(weight)}")
    n, c_in, height, width = input.shape
    require(
        c_in != 0 and height != 0 and width != 0,
        lambda: f"input must have channels, height and width > 0, got shape {shape(input)}",
    )
    c_out, c_per_group, kh, kw = weight.shape
    require(
        c_per_group != 0 and kh != 0 and kw != 0 and c_out != 0,
        lambda: f"weight must have no empty dimension, got shape {shape(weight)}",
    )
    require(
        c_in % c_per_group == 0,
        lambda: (
            f"weight has {c_per_group} input channels per group, which does not divide the {c_in} channels of "
            f"input {shape(input)}"
        ),
    )
    groups = c_in // c_per_group
    require(
        c_out % groups == 0,
        lambda: f"weight {shape(weight)}: {c_out} output channels are not divisible by groups={groups}",
    )

    out_h = (height + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    require(
        out_h > 0 and out_w > 0,
        lambda: (
            f"input {shape(input)} is too small for a {kh}x{kw} kernel with padding={padding}, "
            f"dilation={dilation}: the output would be {out_h}x{out_w}"
        ),
    )

    taps = kh * kw
    require(
        offset.dim() == 4 and offset.shape[1] != 0 and offset.shape[1] % (2 * taps) == 0,
        lambda: f"offset must have shape [{n}, 2 * offset_groups * {kh} * {kw}, {out_h}, {out_w}], got {shape(offset)}",
    )
    offset_groups = offset.shape[1] // (2 * taps)
    require(
        c_in % offset_groups == 0,
        lambda: (
            f"offset {shape(offset)} implies offset_groups={offset_groups}, which does not divide the {c_in} "
            f"channels of input"
        ),
    )
    expect_shape(
        offset,
        "offset",
        (n, 2 * offset_groups * taps, out_h, out_w),
        "[N, 2 * offset_groups * kh * kw, out_h, out_w]",
        require,
    )
    if mask is not None:
        expect_shape(
            mask, "mask", (n, offset_groups * taps, out_h, out_w), "[N, offset_groups * kh * kw, out_h, out_w]", require
        )
    if bias is not None:
        expect_shape(bias, "bias", (c_out,), "[C_out]", require)
    return groups, offset_groups, (out_h, out_w)


@dataclass(frozen=True)
class RoiPoolArgs:
    """A checked RoI pooling call; the plain op is the position-sensitive one with 1 x 1 groups."""

    output_size: tuple[int, int]
    spatial_scale: float
    sampling_ratio: int
    gamma: float
    out_channels: int
    group_size: int  # 1 for plain pooling
    part_size: tuple[int, int]
    offset_classes: int


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    return float(value)


def _count(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_rois(rois: torch.Tensor, batch: int) -> None:
    """rois hold (batch index, x1, y1, x2, y2) rows with an integer index into the batch, finite
    coordinates and x1 <= x2, y1 <= y2. Reads the values, so it synchronises with the device."""
    if rois.shape[0] == 0 or torch.compiler.is_compiling():
        return
    index, boxes = rois[:, 0], rois[:, 1:]
    bad_index = (index < 0) | (index >= batch) | (index != index.floor())
    bad_box = ~torch.isfinite(boxes).all(1) | (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    bad = (bad_index | bad_box).nonzero()
    if bad.numel():
        k = int(bad[0, 0])
        row = [float(v) for v in rois[k].tolist()]
        if bool(bad_index[k]):
            raise ValueError(f"rois[{k}] = {row}: the batch index must be an integer in [0, {batch})")
        raise ValueError(f"rois[{k}] = {row}: the box must be finite with x1 <= x2 and y1 <= y2")


def _roi_tensors(input, rois, offset) -> None:
    tensor(input, "input")
    tensor(rois, "rois")
    tensor(offset, "offset", optional=True)
    same_dtype_and_device({"input": input, "rois": rois, "offset": offset}, "input")
    if input.dtype not in (torch.float32, torch.float64):  # the RoI kernels have no half-precision path
        raise TypeError(f"input must be float32 or float64 for RoI pooling, got {input.dtype}")
    if input.dim() != 4 or 0 in input.shape[1:]:
        raise ValueError(f"input must be 4-D [N, C, H, W] with C, H, W > 0, got shape {shape(input)}")
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f"rois must have shape [K, 5] (batch index, x1, y1, x2, y2), got {shape(rois)}")


def deform_roi_pool_args(input, rois, offset, output_size, spatial_scale, sampling_ratio, gamma) -> RoiPoolArgs:
    """Checks a deform_roi_pool call (shapes, types, and the values of rois)."""
    _roi_tensors(input, rois, offset)
    output_size = pair(output_size, "output_size", 1)
    spatial_scale = _number(spatial_scale, "spatial_scale")
    if not spatial_scale > 0:
        raise ValueError(f"spatial_scale must be > 0, got {spatial_scale}")
    sampling_ratio = _count(sampling_ratio, "sampling_ratio", 0)
    gamma = _number(gamma, "gamma")
    if offset is not None:
        expect_shape(offset, "offset", (rois.shape[0], 2, *output_size), "[K, 2, out_h, out_w], (x, y) per bin")
    check_rois(rois, input.shape[0])
    return RoiPoolArgs(output_size, spatial_scale, sampling_ratio, gamma, input.shape[1], 1, output_size, 1)


def deform_ps_roi_pool_args(
    input, rois, offset, output_size, spatial_scale, output_dim, group_size, part_size, sample_per_part, trans_std
) -> RoiPoolArgs:
    """Checks a deform_ps_roi_pool call; output_dim, group_size and part_size default from the shapes."""
    _roi_tensors(input, rois, offset)
    output_size = _count(output_size, "output_size", 1)
    group_size = _count(output_size if group_size is None else group_size, "group_size", 1)
    part_size = _count(output_size if part_size is None else part_size, "part_size", 1)
    channels = input.shape[1]
    if output_dim is None:
        if channels % (group_size * group_size):
            raise ValueError(f"input has {channels} channels, not a multiple of group_size^2 = {group_size**2}")
        output_dim = channels // (group_size * group_size)
    output_dim = _count(output_dim, "output_dim", 1)
    if channels != output_dim * group_size * group_size:
        raise ValueError(
            f"input must have output_dim * group_size^2 = {output_dim * group_size**2} channels, got {shape(input)}"
        )
    spatial_scale = _number(spatial_scale, "spatial_scale")
    if not spatial_scale > 0:
        raise ValueError(f"spatial_scale must be > 0, got {spatial_scale}")
    sample_per_part = _count(sample_per_part, "sample_per_part", 0)
    trans_std = _number(trans_std, "trans_std")
    classes = 1
    if offset is not None:
        if offset.dim() != 4 or offset.shape[1] == 0 or offset.shape[1] % 2 or output_dim % (offset.shape[1] // 2):
            raise ValueError(
                f"offset must have shape [{rois.shape[0]}, 2 * classes, {part_size}, {part_size}] with classes "
                f"dividing output_dim={output_dim}, got {shape(offset)}"
            )
        classes = offset.shape[1] // 2
        expect_shape(
            offset, "offset", (rois.shape[0], 2 * classes, part_size, part_size), "[K, 2 * classes, part, part]"
        )
    check_rois(rois, input.shape[0])
    return RoiPoolArgs(
        (output_size, output_size), spatial_scale, sample_per_part, trans_std, output_dim, group_size,
        (part_size, part_size), classes,
    )  # fmt: skip
