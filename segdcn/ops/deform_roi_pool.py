"""Deformable RoI pooling (Dai et al. 2017, section 2.2) and its position-sensitive form (R-FCN).

`torch.ops.segdcn.deform_roi_pool` and `deform_ps_roi_pool` are defined in C++ (kernels/ops.cpp,
kernels/deform_roi_pool.h); this module adds their fake kernels and autograd formulas (input and
offset gradients; rois get none), and exposes the checked functions.

Coordinates are those of torchvision's roi_align(aligned=True): with zero (or no) offsets,
deform_roi_pool equals roi_align(..., aligned=True) and deform_ps_roi_pool equals ps_roi_align,
at the same sampling ratio. Offsets are (x, y) per bin, the order of mmcv and of the original
R-FCN code (deform_conv2d's offsets are (dy, dx)).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import reference
from ._checks import deform_ps_roi_pool_args, deform_roi_pool_args
from ._extension import native_available, warn_fallback

OP = "segdcn::deform_roi_pool"
BACKWARD_OP = "segdcn::deform_roi_pool_backward"
PS_OP = "segdcn::deform_ps_roi_pool"
PS_BACKWARD_OP = "segdcn::deform_ps_roi_pool_backward"


def deform_roi_pool(
    input: Tensor,
    rois: Tensor,
    offset: Tensor | None = None,
    output_size=7,
    spatial_scale: float = 1.0,
    sampling_ratio: int = 0,
    gamma: float = 0.1,
) -> Tensor:
    """RoIAlign-style average pooling whose bins move by learned, normalised offsets.

    input [N, C, H, W]; rois [K, 5] as (batch index, x1, y1, x2, y2) in input pixels before
    `spatial_scale`; offset [K, 2, out_h, out_w]: bin (i, j) of RoI k moves by
    (gamma * roi_width * offset[k, 0, i, j], gamma * roi_height * offset[k, 1, i, j]) in x and y.
    Each bin averages sampling_ratio^2 bilinear samples (ceil(bin size) per axis when 0).
    Returns [K, C, out_h, out_w].
    """
    args = deform_roi_pool_args(input, rois, offset, output_size, spatial_scale, sampling_ratio, gamma)
    if not native_available():
        warn_fallback("deform_roi_pool")
        return reference.roi_pool_checked(input, rois, offset, args)
    return torch.ops.segdcn.deform_roi_pool(
        input, rois, offset, *args.output_size, args.spatial_scale, args.sampling_ratio, args.gamma
    )


def deform_ps_roi_pool(
    input: Tensor,
    rois: Tensor,
    offset: Tensor | None = None,
    output_size: int = 7,
    spatial_scale: float = 1.0,
    output_dim: int | None = None,
    group_size: int | None = None,
    part_size: int | None = None,
    sample_per_part: int = 0,
    trans_std: float = 0.1,
) -> Tensor:
    """Deformable position-sensitive RoI pooling of R-FCN, on ps_roi_align's sampling.

    input [N, output_dim * group_size^2, H, W] score maps; output [K, output_dim, output_size,
    output_size], where bin (i, j) reads score map (i * group_size // output_size, j * ...) of
    its channel, as in R-FCN (group_size defaults to output_size: ps_roi_align's mapping).
    offset [K, 2 * classes, part_size, part_size] (x, y) per part cell and class (classes
    dividing output_dim, output channel c belongs to class c // (output_dim / classes)); bin
    (i, j) uses cell (i * part_size // output_size, ...), moved by trans_std times the RoI size.
    sample_per_part is the sampling ratio (0: ceil(bin size) per axis, like ps_roi_align).
    """
    args = deform_ps_roi_pool_args(
        input, rois, offset, output_size, spatial_scale, output_dim, group_size, part_size, sample_per_part, trans_std
    )
    if not native_available():
        warn_fallback("deform_ps_roi_pool")
        return reference.roi_pool_checked(input, rois, offset, args)
    return torch.ops.segdcn.deform_ps_roi_pool(
        input,
        rois,
        offset,
        args.out_channels,
        args.group_size,
        args.output_size[0],
        args.part_size[0],
        args.spatial_scale,
        args.sampling_ratio,
        args.gamma,
    )


def _register() -> None:
    @torch.library.register_fake(OP)
    def _(input, rois, offset, pooled_h, pooled_w, spatial_scale, sampling_ratio, gamma):
        return input.new_empty((rois.shape[0], input.shape[1], pooled_h, pooled_w))

    @torch.library.register_fake(PS_OP)
    def _(input, rois, offset, output_dim, group_size, pooled_size, part_size, spatial_scale, sample_per_part, std):
        return input.new_empty((rois.shape[0], output_dim, pooled_size, pooled_size))

    def fake_backward(grad_output, input, rois, offset, *rest):
        output_mask = rest[-1]
        grad_input = input.new_empty(input.shape) if output_mask[0] else input.new_empty(0)
        grad_offset = offset.new_empty(offset.shape) if output_mask[1] and offset is not None else input.new_empty(0)
        return grad_input, grad_offset

    torch.library.register_fake(BACKWARD_OP)(fake_backward)
    torch.library.register_fake(PS_BACKWARD_OP)(fake_backward)

    def setup_context(ctx, inputs, output):
        input, rois, offset, *params = inputs
        ctx.save_for_backward(input, rois, offset)
        ctx.params = params
        ctx.has_offset = offset is not None

    def make_backward(backward_op):
        def backward(ctx, grad_output):
            input, rois, offset = ctx.saved_tensors
            need = ctx.needs_input_grad
            want_offset = ctx.has_offset and need[2]
            grad_input = grad_offset = None
            if need[0] or want_offset:
                grad_input, grad_offset = backward_op(
                    grad_output, input, rois, offset if ctx.has_offset else None, *ctx.params, [need[0], want_offset]
                )
            return (
                grad_input if need[0] else None,
                None,
                grad_offset if want_offset else None,
                *([None] * len(ctx.params)),
            )

        return backward

    torch.library.register_autograd(
        OP, make_backward(torch.ops.segdcn.deform_roi_pool_backward), setup_context=setup_context
    )
    torch.library.register_autograd(
        PS_OP, make_backward(torch.ops.segdcn.deform_ps_roi_pool_backward), setup_context=setup_context
    )


if native_available():
    _register()
