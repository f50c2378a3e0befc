"""build_model(model_cfg, num_classes): the DeepLab of the paper, and its variants, from config."""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from segdcn.config import ModelConfig

from .dcn import make_deformable
from .deeplab import DeepLab
from .heads import build_head
from .norm import head_norm_layer, norm_layer
from .pretrained import is_none, load_pretrained
from .resnet import ResNet


def freeze_stages(backbone: ResNet, stages: int) -> None:
    """requires_grad=False for the first `stages` stages: 1 = stem (conv1/bn1), 2 = + res2 (layer1), ..."""
    modules = [[backbone.conv1, backbone.bn1], [backbone.layer1], [backbone.layer2], [backbone.layer3]]
    modules.append([backbone.layer4])
    for group in modules[:stages]:
        for module in group:
            module.requires_grad_(False)


def build_backbone(spec: ModelConfig) -> ResNet:
    b = spec.backbone
    backbone = ResNet(b.depth, b.output_stride, norm_layer(spec.norm), res5_dilation=b.res5_dilation, width=b.width)
    d = spec.dcn
    make_deformable(
        backbone,
        spec.deformable_paths(),
        modulated=d.modulated,
        deform_groups=d.deform_groups,
        offset_dilation=d.offset_dilation,
        offset_lr_mult=d.offset_lr_mult,
        impl=d.impl,
    )
    if spec.norm == "frozen_bn" and is_none(spec.backbone.pretrained):
        warnings.warn(
            "model.norm=frozen_bn without model.backbone.pretrained freezes every BN at the identity; "
            "train from scratch with model.norm=bn",
            stacklevel=3,
        )
    # loaded after the convs became deformable, so the report checks that only offset convs are new
    backbone.pretrained_report = load_pretrained(backbone, spec.backbone.pretrained)
    freeze_stages(backbone, spec.backbone.frozen_stages)
    return backbone


def build_model(model_cfg: Any, num_classes: int) -> nn.Module:
    """A DeepLab model from a `model` config (DictConfig, dict or dataclass; see conf/model/*.yaml).

    Returns DeepLab with `.backbone` (torchvision ResNet names; deformable convs are
    segdcn.ops.DeformConv2d at the names of the convs they replace), `.head`, `.spec` (the
    checked segdcn.config.ModelConfig) and `.backbone.pretrained_report` (None unless weights were loaded).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    spec = ModelConfig.from_config(model_cfg)
    backbone = build_backbone(spec)
    head = build_head(
        spec.head.name,
        backbone.out_channels,
        num_classes,
        channels=spec.head.channels,
        rates=spec.head.rates,
        output_stride=spec.backbone.output_stride,
        norm=head_norm_layer(spec.norm),
    )
    model = DeepLab(backbone, head, head_lr_mult=spec.head.lr_mult)
    model.spec = spec
    return model
