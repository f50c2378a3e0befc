"""DeepLab: a dilated ResNet backbone, a head, and logits resampled to the input size."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def upsample_logits(logits: Tensor, size: tuple[int, int], stride: int) -> Tensor:
    """Bilinear upsampling of stride-`stride` logits to `size`, on the backbone's own sampling grid.

    Every stride-2 layer of the ResNet (7x7/pad 3 stem, 3x3/pad 1 max pool and convs, 1x1
    shortcuts) centres output pixel i on input pixel 2i, so feature j sits on input pixel
    stride * j. Interpolating with align_corners=True onto stride * (n - 1) + 1 pixels puts
    every logit exactly there; the last < stride rows and columns (none for DeepLab's sizes
    k * stride + 1, e.g. 513 and 769) repeat the edge, as bilinear sampling clamped to the
    grid would.
    """
    height, width = size
    n_h, n_w = logits.shape[-2:]
    inner = (min(stride * (n_h - 1) + 1, height), min(stride * (n_w - 1) + 1, width))
    out = F.interpolate(logits, size=inner, mode="bilinear", align_corners=True)
    # Padded even when nothing is missing (then a copy): a branch on the size would specialise
    # torch.export programs and ONNX files to sizes of the form k * stride + 1, or to the others.
    return F.pad(out, (0, width - inner[1], 0, height - inner[0]), mode="replicate")


class DeepLab(nn.Module):
    """backbone (a ResNet, torchvision names) -> head -> logits of shape [N, classes, H, W] for input [N, 3, H, W]."""

    def __init__(self, backbone: nn.Module, head: nn.Module, *, head_lr_mult: float = 1.0):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.head_lr_mult = head_lr_mult  # read by segdcn.models.param_groups
        self.output_stride = backbone.output_stride

    def forward(self, x: Tensor) -> Tensor:
        logits = self.head(self.backbone(x))
        return upsample_logits(logits, x.shape[-2:], self.output_stride)
