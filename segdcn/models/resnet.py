"""ResNet-18/34/50/101/152 backbones with torchvision's module names and DeepLab's dilation.

Module and parameter names are torchvision's (conv1, bn1, layer1..layer4, blocks with
conv1/bn1/conv2/bn2[/conv3/bn3] and downsample.0/1), so torchvision's ImageNet state dicts
load as they are; the classifier (avgpool, fc) is left out, as in the paper.

The bottleneck is torchvision's "v1.5" (stride in the 3x3 conv), which its weights were
trained with; the paper's Caffe ResNet-101 strides in the first 1x1 conv. Inside the
dilated stages (stride 1) the two are the same.

Output stride 16 or 8 replaces the stride 2 of res5 (and res4) by dilation 2 (and 4 in
res5): the "algorithme a trous", which keeps every pretrained filter's footprint, so the
network computes the same features as at output stride 32, only on a denser grid. The
conv that had the stride keeps the previous dilation and every conv after it gets the new
one. In the paper's Caffe ResNet-101 the stride sits in res5a's first 1x1 conv, so all res5
3x3 convs come after it and get dilation 2 ("dilation 2 in its 3x3 convs"); in torchvision's
v1.5 blocks the stride sits in res5a's 3x3 conv itself, so res5a's 3x3 keeps dilation 1 and
res5b/c get 2 (torchvision's `replace_stride_with_dilation` and mmseg's contract_dilation do
the same). Basic blocks stride in conv1: it keeps the previous dilation, conv2 gets the new.

Two knobs beyond torchvision's:
- `res5_dilation` sets the dilation of every 3x3 conv in res5 (res5a's too, as in the paper's
  Caffe model), for the paper's Table 3, which compares res5 with atrous dilation 4, 6 and 8
  against deformable res5; it needs res5 at stride 1 (output stride 8 or 16).
- `width` is the channel count of the stem and res2 (torchvision: 64; each later stage
  doubles it): a narrower ResNet trains from scratch in minutes on a CPU (the demo). Only
  width 64 has ImageNet weights.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from .naming import BOTTLENECK_DEPTHS, STAGE_BLOCKS

OUTPUT_STRIDES = (8, 16, 32)
IMAGENET_WIDTH = 64  # the stem's channels in every ImageNet ResNet

Norm = Callable[[int], nn.Module]


def conv3x3(in_channels: int, out_channels: int, stride: int, dilation: int) -> nn.Conv2d:
    # padding = dilation keeps the size at stride 1; no bias: a norm follows
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels, planes, stride, dilation, downsample, norm: Norm, first_dilation=None):
        super().__init__()
        # conv1 holds the stage's stride (if any): under a trous it keeps the previous dilation
        self.conv1 = conv3x3(in_channels, planes, stride, first_dilation or dilation)
        self.bn1 = norm(planes)
        self.conv2 = conv3x3(planes, planes, 1, dilation)
        self.bn2 = norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels, planes, stride, dilation, downsample, norm: Norm, first_dilation=None):
        super().__init__()
        self.conv1 = conv1x1(in_channels, planes)
        self.bn1 = norm(planes)
        # the block's 3x3, the paper's deformable layer; it holds the stage's stride (v1.5), so
        # under a trous it keeps the previous dilation
        self.conv2 = conv3x3(planes, planes, stride, first_dilation or dilation)
        self.bn2 = norm(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = norm(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


def stage_strides_and_dilations(output_stride: int) -> list[tuple[int, int]]:
    """(stride, dilation) of layer1..layer4: the stem divides by 4, each later stride-2 stage by 2.

    A stage past the output stride gets stride 1 and twice the previous stage's dilation.
    """
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"model.backbone.output_stride must be one of 8, 16, 32, got {output_stride!r}")
    plan, reached, dilation = [(1, 1)], 4, 1
    for _ in range(3):
        if reached < output_stride:
            plan.append((2, 1))
            reached *= 2
        else:  # past the output stride: keep the resolution, widen the 3x3 convs instead
            dilation *= 2
            plan.append((1, dilation))
    return plan


class ResNet(nn.Module):
    """ResNet without avgpool/fc; forward returns the last stage's features (output stride OS)."""

    def __init__(
        self,
        depth: int,
        output_stride: int = 32,
        norm: Norm = nn.BatchNorm2d,
        res5_dilation: int | None = None,
        width: int = IMAGENET_WIDTH,
    ):
        super().__init__()
        if depth not in STAGE_BLOCKS:
            raise ValueError(f"ResNet depth must be one of {', '.join(map(str, STAGE_BLOCKS))}, got {depth!r}")
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"model.backbone.width must be a positive integer, got {width!r}")
        self.depth = depth
        self.output_stride = output_stride
        block = Bottleneck if depth in BOTTLENECK_DEPTHS else BasicBlock
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels, previous = width, 1
        plans = stage_strides_and_dilations(output_stride)
        if res5_dilation is not None:
            if plans[3][0] != 1 or res5_dilation < 1:
                raise ValueError(
                    f"model.backbone.res5_dilation={res5_dilation!r} needs res5 at stride 1 (output stride 8 or 16) "
                    f"and a positive dilation; got output stride {output_stride}"
                )
            plans[3] = (1, res5_dilation)
        for i, (blocks, planes, (stride, dilation)) in enumerate(
            zip(STAGE_BLOCKS[depth], [width * 2**k for k in range(4)], plans, strict=True), start=1
        ):
            if i == 4 and res5_dilation is not None:
                previous = res5_dilation  # the paper's Table 3: every res5 3x3 conv, res5a's included
            stage, in_channels = self._stage(block, in_channels, planes, blocks, stride, dilation, previous, norm)
            previous = dilation
            self.add_module(f"layer{i}", stage)
        self.out_channels = in_channels
        self._init_weights()

    @staticmethod
    def _stage(block, in_channels, planes, blocks, stride, dilation, previous, norm) -> tuple[nn.Sequential, int]:
        out_channels = planes * block.expansion
        downsample = None
        if stride != 1 or in_channels != out_channels:
            downsample = nn.Sequential(conv1x1(in_channels, out_channels, stride), norm(out_channels))
        layers = [block(in_channels, planes, stride, dilation, downsample, norm, first_dilation=previous)]
        layers += [block(out_channels, planes, 1, dilation, None, norm) for _ in range(1, blocks)]
        return nn.Sequential(*layers), out_channels

    def _init_weights(self) -> None:
        # He initialisation for training from scratch; pretrained weights overwrite it
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
