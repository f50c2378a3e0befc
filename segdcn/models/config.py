"""Reading and checking the `model` config (a DictConfig, dict or dataclass) into a typed spec.

Every key has a default, so `{}` is a plain DeepLab-R101 at output stride 16 with frozen BN
and the paper's head, not pretrained. Unknown keys and bad values raise a ValueError that
names the key (as a user types it: model.dcn.layers) and the allowed values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from segdcn.ops.modules import IMPLS

from .dcn import OFFSET_DILATIONS
from .heads import HEADS
from .naming import STAGE_BLOCKS, conv3x3_paths, conv3x3_paths_of, last_conv3x3_paths
from .norm import NORMS
from .pretrained import is_none
from .resnet import IMAGENET_WIDTH, OUTPUT_STRIDES

BACKBONES = tuple(f"resnet{d}" for d in STAGE_BLOCKS)
FROZEN_STAGES = range(0, 6)  # 1 = stem (conv1), 2 = + res2, ..., 5 = + res5


@dataclass(frozen=True)
class BackboneSpec:
    name: str = "resnet101"
    output_stride: int = 16
    pretrained: str | None = None  # imagenet | imagenet1k_v1 | imagenet1k_v2 | none | <path>
    frozen_stages: int = 0  # the official code freezes conv1 and res2: 2
    res5_dilation: int | None = None  # None: a trous from the output stride; 4, 6, 8: the paper's Table 3
    width: int = 64  # channels of the stem and res2 (torchvision's 64); narrower only from scratch

    @property
    def depth(self) -> int:
        return int(self.name.removeprefix("resnet"))


@dataclass(frozen=True)
class HeadSpec:
    name: str = "paper"
    channels: int = 1024  # paper: fc6 width; aspp_v3: branch width (256 in DeepLab v3); aspp_v2: unused
    rates: tuple[int, ...] | None = None  # None: the head's own (v2: 6,12,18,24; v3: 6,12,18 at OS16, scaled)
    lr_mult: float = 1.0


@dataclass(frozen=True)
class DCNSpec:
    layers: int = 0
    at: tuple[str, ...] = ()
    modulated: bool = False
    deform_groups: int = 1
    offset_dilation: str = "paper"
    offset_lr_mult: float = 1.0
    impl: str = "native"


@dataclass(frozen=True)
class ModelSpec:
    backbone: BackboneSpec = field(default_factory=BackboneSpec)
    norm: str = "frozen_bn"
    head: HeadSpec = field(default_factory=HeadSpec)
    dcn: DCNSpec = field(default_factory=DCNSpec)

    def deformable_paths(self) -> list[str]:
        """Backbone module paths of the 3x3 convs to make deformable, in forward order."""
        depth = self.backbone.depth
        if self.dcn.at:
            chosen = {p for name in self.dcn.at for p in conv3x3_paths_of(depth, name)}
            return [p for p in conv3x3_paths(depth) if p in chosen]
        return last_conv3x3_paths(depth, self.dcn.layers)


def _to_dict(cfg: Any) -> dict:
    if cfg is None:
        return {}
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg) if isinstance(cfg, dict) else OmegaConf.structured(cfg)
    return OmegaConf.to_container(cfg, resolve=True)


def _fields(section: dict | None, key: str, allowed: tuple[str, ...]) -> dict:
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ValueError(f"{key} must be a mapping with keys {', '.join(allowed)}, got {section!r}")
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise ValueError(f"unknown key {key}.{unknown[0]}; {key} has the keys {', '.join(allowed)}")
    return section


def _choice(key: str, value, allowed) -> Any:
    if value not in allowed:
        raise ValueError(f"{key} must be one of {', '.join(map(str, allowed))}, got {value!r}")
    return value


def _int(key: str, value, low: int, high: int | None = None, what: str = "") -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    if not ok:
        span = f"{low}..{high}" if high is not None else f"an integer >= {low}"
        raise ValueError(f"{key} must be {'one of ' if high is not None else ''}{span}{what}, got {value!r}")
    return value


def _float(key: str, value, low: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
        raise ValueError(f"{key} must be a number >= {low:g}, got {value!r}")
    return float(value)


def _bool(key: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {value!r}")
    return value


def _names(key: str, value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} must be a list of layer names such as [res5a, res5b, res5c], got {value!r}")
    return tuple(value)


def parse_model_cfg(cfg: Any) -> ModelSpec:
    """Check a `model` config and return its ModelSpec; raises ValueError naming the bad key."""
    raw = _fields(_to_dict(cfg), "model", tuple(ModelSpec.__dataclass_fields__))
    b = _fields(raw.get("backbone"), "model.backbone", tuple(BackboneSpec.__dataclass_fields__))
    h = _fields(raw.get("head"), "model.head", tuple(HeadSpec.__dataclass_fields__))
    d = _fields(raw.get("dcn"), "model.dcn", tuple(DCNSpec.__dataclass_fields__))
    bd, hd, dd = BackboneSpec(), HeadSpec(), DCNSpec()

    name = _choice("model.backbone.name", b.get("name", bd.name), BACKBONES)
    pretrained = b.get("pretrained", bd.pretrained)
    if pretrained is not None and not isinstance(pretrained, str):
        raise ValueError(f"model.backbone.pretrained must be imagenet, none or a file path, got {pretrained!r}")
    backbone = BackboneSpec(
        name=name,
        output_stride=_choice("model.backbone.output_stride", b.get("output_stride", bd.output_stride), OUTPUT_STRIDES),
        pretrained=pretrained,
        frozen_stages=_int("model.backbone.frozen_stages", b.get("frozen_stages", bd.frozen_stages), 0, 5),
        res5_dilation=b.get("res5_dilation", bd.res5_dilation),
        width=_int("model.backbone.width", b.get("width", bd.width), 1),
    )
    if backbone.res5_dilation is not None:
        _int("model.backbone.res5_dilation", backbone.res5_dilation, 1)
        if backbone.output_stride == 32:
            raise ValueError(
                f"model.backbone.res5_dilation={backbone.res5_dilation} needs res5 at stride 1: "
                "model.backbone.output_stride 8 or 16, got 32"
            )
    if backbone.width != IMAGENET_WIDTH and not is_none(pretrained):
        raise ValueError(
            f"model.backbone.width={backbone.width} has no pretrained weights (they exist for width "
            f"{IMAGENET_WIDTH}); set model.backbone.pretrained=none"
        )
    rates = h.get("rates", hd.rates)
    if rates is not None:
        if not isinstance(rates, list | tuple) or not rates:
            raise ValueError(f"model.head.rates must be null or a list of positive integers, got {rates!r}")
        rates = tuple(_int("model.head.rates[]", r, 1) for r in rates)
    head = HeadSpec(
        name=_choice("model.head.name", h.get("name", hd.name), HEADS),
        channels=_int("model.head.channels", h.get("channels", hd.channels), 1),
        rates=rates,
        lr_mult=_float("model.head.lr_mult", h.get("lr_mult", hd.lr_mult)),
    )

    depth = backbone.depth
    count = len(conv3x3_paths(depth))
    layers = _int("model.dcn.layers", d.get("layers", dd.layers), 0, count, f" for {name} (its 3x3 convs)")
    at = _names("model.dcn.at", d.get("at", dd.at))
    if at and layers:
        raise ValueError(
            f"set either model.dcn.layers (the last N 3x3 convs) or model.dcn.at (named layers), "
            f"not both: got layers={layers}, at={list(at)}"
        )
    for layer_name in at:
        try:
            conv3x3_paths_of(depth, layer_name)
        except ValueError as e:
            raise ValueError(f"model.dcn.at: {e}") from None
    dcn = DCNSpec(
        layers=layers,
        at=at,
        modulated=_bool("model.dcn.modulated", d.get("modulated", dd.modulated)),
        deform_groups=_int("model.dcn.deform_groups", d.get("deform_groups", dd.deform_groups), 1),
        offset_dilation=_choice(
            "model.dcn.offset_dilation", d.get("offset_dilation", dd.offset_dilation), OFFSET_DILATIONS
        ),
        offset_lr_mult=_float("model.dcn.offset_lr_mult", d.get("offset_lr_mult", dd.offset_lr_mult)),
        impl=_choice("model.dcn.impl", d.get("impl", dd.impl), IMPLS),
    )
    norm = _choice("model.norm", raw.get("norm", "frozen_bn"), NORMS)
    return ModelSpec(backbone=backbone, norm=norm, head=head, dcn=dcn)
