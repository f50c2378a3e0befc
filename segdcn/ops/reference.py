"""Pure-PyTorch deformable convolution and RoI pooling: runs on any device, differentiable by autograd.

It is the oracle the native kernels are tested against and the fallback when the
extension is not built. It follows the same rule as kernels/bilinear.h: a sample is zero
unless -1 < h < H and -1 < w < W, and corners outside the image read as zero. The RoI pooling
ops follow RoIAlign's rule instead (see roi_bilinear).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._checks import DeformConvArgs, RoiPoolArgs, deform_conv2d_args, deform_ps_roi_pool_args, deform_roi_pool_args


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


# RoI pooling. Sampling follows RoIAlign's rule (kernels/bilinear.h, roi_sample_point), not the
# one above: a sample is zero when y < -1, y > H, x < -1 or x > W; otherwise coordinates clamp
# to [0, H - 1] x [0, W - 1], so clamped samples do not move with their coordinate.


def roi_bilinear(plane: Tensor, y: Tensor, x: Tensor) -> Tensor:
    """RoIAlign samples of plane [C, H, W] at positions y, x (same shape S) -> [C, *S]."""
    channels, height, width = plane.shape
    inside = ~((y < -1) | (y > height) | (x < -1) | (x > width))
    y, x = y.clamp(min=0), x.clamp(min=0)
    y0, x0 = y.detach().floor(), x.detach().floor()
    top, right = y0 >= height - 1, x0 >= width - 1
    y0, x0 = torch.where(top, height - 1, y0), torch.where(right, width - 1, x0)
    y, x = torch.where(top, y0, y), torch.where(right, x0, x)
    y1, x1 = torch.where(top, y0, y0 + 1), torch.where(right, x0, x0 + 1)
    ly, lx = y - y0, x - x0
    flat = plane.reshape(channels, height * width)

    def corner(yy, xx):
        index = (yy.clamp(0, height - 1) * width + xx.clamp(0, width - 1)).long()
        return flat[:, index.reshape(-1)].reshape(channels, *y.shape)

    value = (
        (1 - ly) * (1 - lx) * corner(y0, x0)
        + (1 - ly) * lx * corner(y0, x1)
        + ly * (1 - lx) * corner(y1, x0)
        + ly * lx * corner(y1, x1)
    )
    return value * inside


def deform_roi_pool(input, rois, offset=None, output_size=7, spatial_scale=1.0, sampling_ratio=0, gamma=0.1):
    """segdcn.ops.deform_roi_pool in plain PyTorch."""
    args = deform_roi_pool_args(input, rois, offset, output_size, spatial_scale, sampling_ratio, gamma)
    return roi_pool_checked(input, rois, offset, args)


def deform_ps_roi_pool(
    input, rois, offset=None, output_size=7, spatial_scale=1.0, output_dim=None, group_size=None, part_size=None,
    sample_per_part=0, trans_std=0.1,
):  # fmt: skip
    """segdcn.ops.deform_ps_roi_pool in plain PyTorch."""
    args = deform_ps_roi_pool_args(
        input, rois, offset, output_size, spatial_scale, output_dim, group_size, part_size, sample_per_part, trans_std
    )
    return roi_pool_checked(input, rois, offset, args)


def roi_pool_checked(input: Tensor, rois: Tensor, offset: Tensor | None, args: RoiPoolArgs) -> Tensor:
    """Both RoI pooling ops, one RoI at a time: see kernels/deform_roi_pool.h for the geometry."""
    pooled_h, pooled_w = args.output_size
    part_h, part_w = args.part_size
    group = args.group_size
    classes = args.offset_classes
    per_class = args.out_channels // classes
    device, dtype = input.device, input.dtype
    ph = torch.arange(pooled_h, device=device)
    pw = torch.arange(pooled_w, device=device)
    # input channel of output (c, ph, pw): (c * group + gh) * group + gw
    c = torch.arange(args.out_channels, device=device)
    c_in = (c[:, None, None] * group + (ph * group // pooled_h)[None, :, None]) * group + (pw * group // pooled_w)[
        None, None, :
    ]
    outputs = []
    for k in range(rois.shape[0]):
        roi = rois[k]
        scale = torch.tensor(args.spatial_scale, dtype=dtype, device=device)
        start_x, start_y = roi[1] * scale - 0.5, roi[2] * scale - 0.5
        roi_w, roi_h = roi[3] * scale - 0.5 - start_x, roi[4] * scale - 0.5 - start_y
        bin_h, bin_w = roi_h / pooled_h, roi_w / pooled_w
        grid_h = args.sampling_ratio or max(math.ceil(float(bin_h)), 0)
        grid_w = args.sampling_ratio or max(math.ceil(float(bin_w)), 0)
        if grid_h == 0 or grid_w == 0:
            outputs.append(input.new_zeros(args.out_channels, pooled_h, pooled_w))
            continue
        step_y, step_x = bin_h / grid_h, bin_w / grid_w
        iy = torch.arange(grid_h, device=device, dtype=dtype) + 0.5
        ix = torch.arange(grid_w, device=device, dtype=dtype) + 0.5
        plane = input[int(roi[0])]
        out = input.new_zeros(args.out_channels, pooled_h, pooled_w)
        for cls in range(classes):
            y0 = start_y + ph.to(dtype) * bin_h  # [ph]
            x0 = start_x + pw.to(dtype) * bin_w  # [pw]
            y0, x0 = y0[:, None].expand(pooled_h, pooled_w), x0[None, :].expand(pooled_h, pooled_w)
            if offset is not None:
                cell = offset[k, 2 * cls : 2 * cls + 2][
                    :, (ph * part_h // pooled_h)[:, None], (pw * part_w // pooled_w)
                ]
                x0 = x0 + args.gamma * roi_w * cell[0]
                y0 = y0 + args.gamma * roi_h * cell[1]
            y = y0[:, :, None, None] + iy[:, None] * step_y  # [ph, pw, grid_h, 1]
            x = x0[:, :, None, None] + ix[None, :] * step_x  # [ph, pw, 1, grid_w]
            y, x = torch.broadcast_tensors(y, x)
            pooled = roi_bilinear(plane, y, x).sum((-2, -1)) / (grid_h * grid_w)  # [C_in, ph, pw]
            channels = slice(cls * per_class, (cls + 1) * per_class)
            picked = (
                pooled.reshape(pooled.shape[0], -1)
                .gather(0, c_in[channels].reshape(per_class, -1))
                .view(per_class, pooled_h, pooled_w)
            )
            out = torch.cat([out[: channels.start], picked, out[channels.stop :]])
        outputs.append(out)
    if not outputs:
        return input.new_zeros(0, args.out_channels, pooled_h, pooled_w)
    return torch.stack(outputs)
