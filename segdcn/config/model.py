"""The `model` settings (conf/model/*.yaml hold only what differs from these defaults).

The defaults are the paper's network: DeepLab on ResNet-101 at output stride 16, frozen BN, the
paper's head, no deformable layer and no pretrained weights. The allowed values come from the
modules that implement them (segdcn.models, segdcn.ops), imported when a config is checked, so that
composing a config on the command line does not load torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .schema import Schema


@dataclass
class BackboneConfig(Schema):
    KEY = "model.backbone"

    name: str = "resnet101"  # resnet18 | resnet34 | resnet50 | resnet101 | resnet152
    output_stride: int = 16  # 8 | 16 | 32: res5 (and res4 at 8) keep their resolution with dilation
    pretrained: str | None = None  # imagenet (torchvision V1) | imagenet1k_v1 | imagenet1k_v2 | none | <path>
    frozen_stages: int = 0  # 1 = conv1, 2 = + res2 (the official code), ... 5 = all
    res5_dilation: int | None = None  # the paper's Table 3: 4, 6 or 8 in every res5 3x3 conv; null: from output_stride
    width: int = 64  # stem and res2 channels (torchvision's 64; narrower ResNets train from scratch)

    @property
    def depth(self) -> int:
        return int(self.name.removeprefix("resnet"))

    def check(self) -> None:
        from segdcn.models.naming import STAGE_BLOCKS
        from segdcn.models.pretrained import is_none
        from segdcn.models.resnet import IMAGENET_WIDTH, OUTPUT_STRIDES

        self.choice("name", (f"resnet{d}" for d in STAGE_BLOCKS))
        self.choice("output_stride", OUTPUT_STRIDES)
        if not 0 <= self.frozen_stages <= 5:
            self.fail("frozen_stages", "one of 0..5 (1 = conv1, 2 = + res2, ..., 5 = all)")
        self.at_least("res5_dilation", 1)
        if self.res5_dilation is not None and self.output_stride == 32:
            raise self.error(
                f"model.backbone.res5_dilation={self.res5_dilation} needs res5 at stride 1: "
                "model.backbone.output_stride 8 or 16, got 32"
            )
        self.at_least("width", 1)
        if self.width != IMAGENET_WIDTH and not is_none(self.pretrained):
            raise self.error(
                f"model.backbone.width={self.width} has no pretrained weights (they exist for width "
                f"{IMAGENET_WIDTH}); set model.backbone.pretrained=none"
            )


@dataclass
class HeadConfig(Schema):
    KEY = "model.head"

    name: str = "paper"  # paper (1x1 conv + ReLU + 1x1 conv) | aspp_v2 | aspp_v3
    channels: int = 1024  # paper: fc6 width; aspp_v3: branch width (256 in DeepLab v3); aspp_v2: none
    rates: list[int] | None = None  # ASPP rates; null: aspp_v2 6,12,18,24; aspp_v3 6,12,18 at OS16 (scaled)
    lr_mult: float = 1.0  # the head's lr relative to optim.lr

    def check(self) -> None:
        from segdcn.models.heads import HEADS

        self.choice("name", HEADS)
        self.at_least("channels", 1)
        if self.rates is not None:
            if not self.rates or min(self.rates) < 1:
                self.fail("rates", "null or a list of positive integers")
            if self.name == "paper":
                self.fail("rates", "null with model.head.name=paper (it has no atrous branches)")
        if self.name == "aspp_v2":  # its branches go straight to the class scores
            self.only_with("model.head.name=paper or aspp_v3", "channels")
        self.at_least("lr_mult", 0)


@dataclass
class DCNConfig(Schema):
    KEY = "model.dcn"

    layers: int = 0  # the last N 3x3 convs are deformable (Table 1: 0, 1, 2, 3, 6)
    at: list[str] = field(default_factory=list)  # or by name: [res5a, res5b, res5c]; not together with layers
    modulated: bool = False  # DCNv2: masks through a sigmoid, starting at 0.5
    deform_groups: int = 1  # offset groups: channel groups that share one offset field
    offset_dilation: str = "paper"  # paper: offset conv dilated like its layer | official: 3x3, pad 1, no dilation
    offset_lr_mult: float = 1.0  # the offset convs' lr relative to optim.lr (the paper: 1; DCNv2: 0.1)
    impl: str = "native"  # native (segdcn._C) | torchvision | reference (pure PyTorch)

    def __post_init__(self) -> None:
        if isinstance(self.at, str):  # at: res5a,res5c in a Python dict
            self.at = [name.strip() for name in self.at.split(",") if name.strip()]
        super().__post_init__()

    def check(self) -> None:
        from segdcn.models.dcn import OFFSET_DILATIONS
        from segdcn.ops.modules import IMPLS

        self.at_least("layers", 0)
        if self.at and self.layers:
            raise self.error(
                f"set either model.dcn.layers (the last N 3x3 convs) or model.dcn.at (named layers), "
                f"not both: got layers={self.layers}, at={list(self.at)}"
            )
        self.at_least("deform_groups", 1)
        self.choice("offset_dilation", OFFSET_DILATIONS)
        self.at_least("offset_lr_mult", 0)
        self.choice("impl", IMPLS)


@dataclass
class ModelConfig(Schema):
    KEY = "model"

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    norm: str = "frozen_bn"  # frozen_bn (the paper; needs pretrained statistics) | bn | syncbn (GPUs)
    head: HeadConfig = field(default_factory=HeadConfig)
    dcn: DCNConfig = field(default_factory=DCNConfig)

    def check(self) -> None:
        from segdcn.models.naming import conv3x3_paths, conv3x3_paths_of
        from segdcn.models.norm import NORMS

        self.choice("norm", NORMS)
        count = len(conv3x3_paths(self.backbone.depth))
        if self.dcn.layers > count:
            raise self.error(
                f"model.dcn.layers={self.dcn.layers}: expected 0..{count} for {self.backbone.name} (its 3x3 convs)"
            )
        for name in self.dcn.at:
            try:
                conv3x3_paths_of(self.backbone.depth, name)
            except ValueError as e:
                raise self.error(f"model.dcn.at: {e}") from None

    def deformable_paths(self) -> list[str]:
        """Backbone module paths of the 3x3 convs to make deformable, in forward order."""
        from segdcn.models.naming import conv3x3_paths, conv3x3_paths_of, last_conv3x3_paths

        depth = self.backbone.depth
        if self.dcn.at:
            chosen = {p for name in self.dcn.at for p in conv3x3_paths_of(depth, name)}
            return [p for p in conv3x3_paths(depth) if p in chosen]
        return last_conv3x3_paths(depth, self.dcn.layers)
