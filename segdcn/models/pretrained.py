"""Pretrained backbone weights: torchvision's ImageNet weights or a local state dict, loaded strictly.

A DeepLab backbone has torchvision's names, so a torchvision ResNet state dict must fit it
exactly, except for two known differences, which the one-line report names:
- new: the offset (and mask) convs of deformable layers (`...conv2.conv_offset`), which
  ImageNet models do not have; they keep their zero initialisation;
- ignored: the ImageNet classifier `fc.*`, which DeepLab drops.
Any other missing or unexpected key, or a shape mismatch, is an error.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from segdcn.ops import DeformConv2d

log = logging.getLogger(__name__)

# "imagenet" is torchvision's V1 weights: the classic recipe (no long schedules or heavy
# augmentation), the closest to the Caffe ResNets the paper started from.
IMAGENET_TAGS = {"imagenet": "IMAGENET1K_V1", "imagenet1k_v1": "IMAGENET1K_V1", "imagenet1k_v2": "IMAGENET1K_V2"}
IGNORED_PREFIXES = ("fc.",)
EXPECTED = "imagenet, imagenet1k_v1, imagenet1k_v2, none, or the path of a torchvision ResNet state dict"


def is_none(source) -> bool:
    return source is None or (isinstance(source, str) and source.lower() in ("none", "null", ""))


def imagenet_weights(depth: int, source: str = "imagenet"):
    """torchvision's weights enum member for resnet{depth} and `source` (imagenet | imagenet1k_v1 | imagenet1k_v2)."""
    from torchvision.models import get_model_weights

    tag = IMAGENET_TAGS[source.lower()]
    weights = get_model_weights(f"resnet{depth}")
    if tag not in weights.__members__:
        raise ValueError(
            f"model.backbone.pretrained={source}: torchvision has no {tag} weights for resnet{depth} "
            f"(it has {', '.join(weights.__members__)})"
        )
    return weights[tag]


def read_state_dict(source: str, depth: int) -> tuple[Mapping[str, torch.Tensor], str]:
    """The state dict named by `source` and a short description of where it came from."""
    if source.lower() in IMAGENET_TAGS:
        weights = imagenet_weights(depth, source)
        # torchvision's weights API: downloads once into the torch hub cache ($TORCH_HOME), then reads it
        return weights.get_state_dict(progress=True, check_hash=True), f"torchvision {weights}"
    if not os.path.isfile(source):
        raise FileNotFoundError(f"model.backbone.pretrained: no such file {source!r} (expected {EXPECTED})")
    state = torch.load(source, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"model.backbone.pretrained: {source} does not hold a state dict (name -> tensor)")
    return state, source


@dataclass
class LoadReport:
    source: str
    loaded: int
    new_keys: list[str] = field(default_factory=list)
    ignored_keys: list[str] = field(default_factory=list)

    @property
    def new_modules(self) -> list[str]:
        """Names of the modules whose parameters are new (the offset/mask convs)."""
        return list(dict.fromkeys(key.rpartition(".")[0] for key in self.new_keys))

    def __str__(self) -> str:
        new = ", ".join(self.new_modules) or "none"
        ignored = ", ".join(self.ignored_keys) or "none"
        return (
            f"pretrained {self.source}: {self.loaded} tensors loaded; "
            f"new (offset/mask convs): {new}; ignored: {ignored}"
        )


def _offset_keys(backbone: nn.Module) -> set[str]:
    return {
        f"{name}.conv_offset.{key}"
        for name, m in backbone.named_modules()
        if isinstance(m, DeformConv2d)
        for key in m.conv_offset.state_dict()
    }


def _listing(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")


def load_into(backbone: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> LoadReport:
    """Load a ResNet state dict into `backbone`: only offset/mask convs may be new, only fc.* ignored."""
    own = backbone.state_dict()
    offset_keys = _offset_keys(backbone)
    missing = set(own) - set(state) - offset_keys
    unexpected = {k for k in set(state) - set(own) if not k.startswith(IGNORED_PREFIXES)}
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected {_listing(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch (file vs model) {'; '.join(shapes[:8])}")
    if problems:
        depth = getattr(backbone, "depth", "?")
        raise ValueError(f"pretrained weights {source} do not fit resnet{depth}: " + "; ".join(problems))
    ignored = sorted(k for k in state if k not in own)
    fitting = {k: v for k, v in state.items() if k in own}
    backbone.load_state_dict(fitting, strict=False)
    return LoadReport(source, len(fitting), sorted(offset_keys & (set(own) - set(state))), ignored)


def load_pretrained(backbone: nn.Module, source) -> LoadReport | None:
    """Load `source` (see EXPECTED) into a ResNet backbone, log the one-line report and return it."""
    if is_none(source):
        return None
    state, description = read_state_dict(str(source), backbone.depth)
    report = load_into(backbone, state, description)
    log.info("%s", report)
    return report
