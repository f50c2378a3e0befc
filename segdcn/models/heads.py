"""Segmentation heads on top of the backbone's last features: the paper's, ASPP v2, ASPP v3."""

from __future__ import annotations

import torch
from torch import Tensor, nn

HEADS = ("paper", "aspp_v2", "aspp_v3")
ASPP_V2_RATES = (6, 12, 18, 24)  # DeepLab v2 (ASPP-L), fixed whatever the output stride
ASPP_V3_RATES_AT_OS16 = (6, 12, 18)  # DeepLab v3; doubled at output stride 8


def _normal_init(conv: nn.Conv2d, std: float = 0.01) -> nn.Conv2d:
    # the official DeepLab code: new layers N(0, 0.01), zero bias
    nn.init.normal_(conv.weight, std=std)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class PaperHead(nn.Module):
    """The paper's head: 1x1 conv to `channels` (1024) + ReLU, then 1x1 conv to the class scores."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 1024):
        super().__init__()
        self.fc6 = _normal_init(nn.Conv2d(in_channels, channels, 1))
        self.relu = nn.ReLU(inplace=True)
        self.score = _normal_init(nn.Conv2d(channels, num_classes, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.score(self.relu(self.fc6(x)))


class ASPPv2(nn.Module):
    """DeepLab v2's ASPP: parallel 3x3 convs straight to class scores at several rates, summed."""

    def __init__(self, in_channels: int, num_classes: int, rates=ASPP_V2_RATES):
        super().__init__()
        self.rates = tuple(rates)
        self.branches = nn.ModuleList(
            _normal_init(nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r)) for r in self.rates
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([branch(x) for branch in self.branches]).sum(0)


def _conv_norm_relu(in_channels: int, out_channels: int, kernel: int, rate: int, norm) -> nn.Sequential:
    conv = nn.Conv2d(in_channels, out_channels, kernel, padding=rate * (kernel // 2), dilation=rate, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(conv, norm(out_channels), nn.ReLU(inplace=True))


class ASPPv3(nn.Module):
    """DeepLab v3's ASPP: 1x1 + three 3x3 at `rates` + image pooling, each with BN, concatenated,
    projected by a 1x1 conv with BN, then a 1x1 classifier.

    The image-pooling branch has no norm: its map is 1x1, so batch norm over it would need
    more than one image per device, and the paper's setting trains with one.
    """

    def __init__(self, in_channels: int, num_classes: int, channels: int, rates, norm):
        super().__init__()
        self.rates = tuple(rates)
        self.branches = nn.ModuleList(
            [_conv_norm_relu(in_channels, channels, 1, 1, norm)]
            + [_conv_norm_relu(in_channels, channels, 3, r, norm) for r in self.rates]
        )
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, channels, 1), nn.ReLU())
        self.project = _conv_norm_relu(channels * (len(self.rates) + 2), channels, 1, 1, norm)
        self.classifier = _normal_init(nn.Conv2d(channels, num_classes, 1))

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.image_pool(x).expand(-1, -1, x.shape[-2], x.shape[-1])  # = bilinear upsampling of a 1x1 map
        out = torch.cat([branch(x) for branch in self.branches] + [pooled], dim=1)
        return self.classifier(self.project(out))


def aspp_v3_rates(output_stride: int) -> tuple[int, ...]:
    """DeepLab v3's rates (6, 12, 18) at output stride 16, scaled with it: (12, 24, 36) at 8, (3, 6, 9) at 32."""
    return tuple(r * 16 // output_stride for r in ASPP_V3_RATES_AT_OS16)


def build_head(
    name: str, in_channels: int, num_classes: int, *, channels: int, rates, output_stride: int, norm
) -> nn.Module:
    if name == "paper":
        return PaperHead(in_channels, num_classes, channels)
    if name == "aspp_v2":
        return ASPPv2(in_channels, num_classes, rates or ASPP_V2_RATES)
    if name == "aspp_v3":
        return ASPPv3(in_channels, num_classes, channels, rates or aspp_v3_rates(output_stride), norm)
    raise ValueError(f"model.head.name must be one of {', '.join(HEADS)}, got {name!r}")
