"""Pure-PyTorch deformable convolution: runs on any device, differentiable by autograd.

It is the oracle the native kernels are tested against and the fallback when the
extension is not built. It follows the same rule as kernels/bilinear.h: a sample is zero
unless -1 < h < H and -1 < w < W, and corners outside the image read as zero.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import DeformConvArgs, deform_conv2d_args


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
    """torchvision.ops.deform_conv2d, in plain PyTorch."""
    args = deform_conv2d_args(input, offset, weight, bias, stride, padding, dilation, mask)
    return deform_conv2d_checked(input, offset, weight, bias, mask, args)


def sample_positions(offset: Tensor, kernel_size: tuple[int, int], args: DeformConvArgs) -> tuple[Tensor, Tensor]:
    """Sampling positions (h, w), each [N, offset_groups, kh * kw, out_h, out_w]."""
    n = offset.shape[0]
    kh, kw = kernel_size
    out_h, out_w = args.out_size
    taps = kh * kw
    dtype, device = offset.dtype, offset.device

    def grid(out_len, k, stride, pad, dil):  # [k, out_len]
        outs = torch.arange(out_len, device=device, dtype=dtype) * stride - pad
        return outs[None, :] + (torch.arange(k, device=device, dtype=dtype) * dil)[:, None]

    base_h = grid(out_h, kh, args.stride[0], args.padding[0], args.dilation[0])  # [kh, out_h]
    base_w = grid(out_w, kw, args.stride[1], args.padding[1], args.dilation[1])  # [kw, out_w]
    base_h = base_h[:, None, :, None].expand(kh, kw, out_h, out_w).reshape(taps, out_h, out_w)
    base_w = base_w[None, :, None, :].expand(kh, kw, out_h, out_w).reshape(taps, out_h, out_w)
    off = offset.view(n, args.offset_groups, taps, 2, out_h, out_w)
    return base_h + off[:, :, :, 0], base_w + off[:, :, :, 1]


def bilinear_columns(input: Tensor, h: Tensor, w: Tensor) -> Tensor:
    """Bilinear samples of input [N, C, H, W] at positions [N, G, K, oh, ow] -> [N, C, K, oh, ow]."""
    n, channels, height, width = input.shape
    _, groups, taps, out_h, out_w = h.shape
    inside = (h > -1) & (h < height) & (w > -1) & (w < width)
    h0, w0 = torch.floor(h), torch.floor(w)
    lh, lw = h - h0, w - w0
    x = input.reshape(n, groups, channels // groups, height * width)
    columns = input.new_zeros(n, groups, channels // groups, taps * out_h * out_w)
    for dh, dw, weight in (
        (0, 0, (1 - lh) * (1 - lw)),
        (0, 1, (1 - lh) * lw),
        (1, 0, lh * (1 - lw)),
        (1, 1, lh * lw),
    ):
        hi, wi = h0 + dh, w0 + dw
        valid = inside & (hi >= 0) & (hi < height) & (wi >= 0) & (wi < width)
        index = (hi.clamp(0, height - 1) * width + wi.clamp(0, width - 1)).long()
        index = index.view(n, groups, 1, -1).expand(n, groups, channels // groups, taps * out_h * out_w)
        corner = x.gather(3, index)
        columns = columns + corner * (weight * valid).view(n, groups, 1, -1)
    return columns.view(n, channels, taps, out_h, out_w)


def deform_conv2d_checked(
    input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None, mask: Tensor | None, args: DeformConvArgs
) -> Tensor:
    n, channels = input.shape[:2]
    c_out, _, kh, kw = weight.shape
    out_h, out_w = args.out_size
    h, w = sample_positions(offset, (kh, kw), args)
    columns = bilinear_columns(input, h, w)  # [N, C, K, oh, ow]
    if mask is not None:
        g = args.offset_groups
        columns = columns.view(n, g, channels // g, kh * kw, out_h, out_w) * mask.view(n, g, 1, kh * kw, out_h, out_w)
    groups = args.groups
    columns = columns.reshape(n, groups, -1, out_h * out_w)
    out = torch.matmul(weight.reshape(groups, c_out // groups, -1), columns)  # [N, groups, C_out / groups, P]
    out = out.reshape(n, c_out, out_h, out_w)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out
