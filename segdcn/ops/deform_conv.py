"""deform_conv2d: torchvision's signature on segdcn's kernels.

`torch.ops.segdcn.deform_conv2d` is defined in C++ (kernels/ops.cpp); this module adds
its fake kernel (shapes for torch.compile and torch.export) and its autograd formula,
and exposes the checked, torchvision-compatible function.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import reference
from ._checks import deform_conv2d_args, deform_conv2d_shapes, shape
from ._extension import native_available, warn_fallback

OP = "segdcn::deform_conv2d"
BACKWARD_OP = "segdcn::deform_conv2d_backward"


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    mask: Tensor | None = None,
) -> Tensor:
    """Deformable convolution (DCNv1; DCNv2 when `mask` is given), drop-in for torchvision's.

    input [N, C_in, H, W]; offset [N, 2 * offset_groups * kh * kw, out_h, out_w] as
    (dy, dx) pairs per tap; weight [C_out, C_in / groups, kh, kw]; mask
    [N, offset_groups * kh * kw, out_h, out_w]. Weight groups and offset groups are
    inferred from the shapes. Samples outside (-1, H) x (-1, W) read as zero.
    """
    args = deform_conv2d_args(input, offset, weight, bias, stride, padding, dilation, mask)
    if not native_available():
        warn_fallback("deform_conv2d")
        return reference.deform_conv2d_checked(input, offset, weight, bias, mask, args)
    return torch.ops.segdcn.deform_conv2d(
        input, weight, offset, mask, bias, args.stride, args.padding, args.dilation, args.groups, args.offset_groups
    )


def _register() -> None:
    @torch.library.register_fake(OP)
    def _(input, weight, offset, mask, bias, stride, padding, dilation, groups, offset_groups):
        # the eager checks' conditions and messages, as torch._check: a wrong shape fails while tracing
        stride, padding, dilation = tuple(stride), tuple(padding), tuple(dilation)
        implied = deform_conv2d_shapes(input, offset, weight, bias, mask, stride, padding, dilation, torch._check)
        torch._check(
            (groups, offset_groups) == implied[:2],
            lambda: (
                f"groups={groups} and offset_groups={offset_groups}, but the shapes of input {shape(input)}, "
                f"weight {shape(weight)} and offset {shape(offset)} imply {implied[0]} and {implied[1]}"
            ),
        )
        return input.new_empty((input.shape[0], weight.shape[0], *implied[2]))

    @torch.library.register_fake(BACKWARD_OP)
    def _(grad_output, input, weight, offset, mask, stride, padding, dilation, groups, offset_groups, output_mask):
        def grad_like(t, wanted):
            return t.new_empty(t.shape) if wanted and t is not None else input.new_empty(0)

        return (
            grad_like(input, output_mask[0]),
            grad_like(weight, output_mask[1]),
            grad_like(offset, output_mask[2]),
            grad_like(mask, output_mask[2]),
        )

    def setup_context(ctx, inputs, output):
        input, weight, offset, mask, bias, stride, padding, dilation, groups, offset_groups = inputs
        ctx.save_for_backward(input, weight, offset, mask)
        ctx.conv_args = (stride, padding, dilation, groups, offset_groups)
        ctx.has_mask = mask is not None

    def backward(ctx, grad_output):
        input, weight, offset, mask = ctx.saved_tensors
        need = ctx.needs_input_grad
        output_mask = [need[0], need[1], need[2] or need[3]]
        grad_input = grad_weight = grad_offset = grad_mask = grad_bias = None
        if any(output_mask):
            grad_input, grad_weight, grad_offset, grad_mask = torch.ops.segdcn.deform_conv2d_backward(
                grad_output, input, weight, offset, mask if ctx.has_mask else None, *ctx.conv_args, output_mask
            )
        if need[4]:
            grad_bias = grad_output.sum((0, 2, 3))
        return (
            grad_input if need[0] else None,
            grad_weight if need[1] else None,
            grad_offset if need[2] else None,
            grad_mask if need[3] else None,
            grad_bias,
            None,
            None,
            None,
            None,
            None,
        )

    torch.library.register_autograd(OP, backward, setup_context=setup_context)


if native_available():
    _register()
