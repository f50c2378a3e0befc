"""nn.Modules of the deformable ops."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from . import reference
from ._checks import pair
from .deform_conv import deform_conv2d

IMPLS = ("native", "torchvision", "reference")


def _impl(name: str):
    if name == "native":
        return deform_conv2d
    if name == "reference":
        return reference.deform_conv2d
    if name == "torchvision":
        import torchvision.ops

        return torchvision.ops.deform_conv2d
    raise ValueError(f"impl must be one of {', '.join(IMPLS)}, got {name!r}")


class DeformConv2d(nn.Module):
    """A 3x3 (or any kh x kw) convolution whose sampling grid is shifted by learned offsets.

    The offsets (and, with `modulated=True`, the DCNv2 masks) come from a convolution over
    the same input, `conv_offset`, with the same kernel, stride, padding and dilation and
    2 * deform_groups * kh * kw (+ deform_groups * kh * kw mask) output channels. It is
    zero-initialised, so a fresh DCNv1 layer computes exactly a plain convolution with the
    same weight; a fresh modulated layer computes half of it (masks start at sigmoid(0)).
    `offset_lr_mult` is read by optimizers for the parameters of `conv_offset`.
    `impl` runs the same layer on segdcn's kernels, torchvision's, or the reference.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        deform_groups: int = 1,
        modulated: bool = False,
        offset_lr_mult: float = 1.0,
        impl: str = "native",
    ):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels={in_channels} and out_channels={out_channels} must be divisible by groups={groups}"
            )
        if in_channels % deform_groups:
            raise ValueError(f"in_channels={in_channels} must be divisible by deform_groups={deform_groups}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = pair(stride, "stride", 1)
        self.padding = pair(padding, "padding", 0)
        self.dilation = pair(dilation, "dilation", 1)
        self.groups = groups
        self.deform_groups = deform_groups
        self.modulated = modulated
        self.offset_lr_mult = offset_lr_mult
        self.impl = impl
        self._op = _impl(impl)

        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        taps = deform_groups * kh * kw
        self.conv_offset = nn.Conv2d(
            in_channels,
            (3 if modulated else 2) * taps,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            bias=True,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the initialisation of nn.Conv2d, so swapping a conv for this layer changes nothing
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def offset_and_mask(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        out = self.conv_offset(x)
        if not self.modulated:
            return out, None
        taps = self.deform_groups * self.kernel_size[0] * self.kernel_size[1]
        offset, mask = out.split([2 * taps, taps], dim=1)
        return offset, torch.sigmoid(mask)

    def forward(self, x: Tensor) -> Tensor:
        offset, mask = self.offset_and_mask(x)
        return self._op(x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask)

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}"
        )
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        s += f", deform_groups={self.deform_groups}"
        if self.modulated:
            s += ", modulated=True"
        if self.offset_lr_mult != 1.0:
            s += f", offset_lr_mult={self.offset_lr_mult}"
        if self.impl != "native":
            s += f", impl={self.impl!r}"
        return s
