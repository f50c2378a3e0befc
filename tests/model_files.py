"""Checkpoints of tiny DeepLab models in segdcn-train's format, for the export and predict tests.

The config is composed from conf/train.yaml as segdcn-train resolves it; the offset (and mask) convs
get random weights, so the deformable layers sample off the grid as a trained model's do (a fresh one
equals a plain convolution, which would let a wrong offset layout pass).
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

import segdcn
from segdcn.config import compose
from segdcn.engine.checkpoint import save_checkpoint
from segdcn.models import build_model
from segdcn.ops import DeformConv2d

TINY = ("model=deeplab_r18", "model.head.channels=32", "model.dcn.layers=2", "dataset.train.crop_size=[64,64]")


def train_config(*overrides: str):
    return compose("train", [*TINY, *overrides])


def randomise_offsets(model: torch.nn.Module, seed: int = 0) -> None:
    """Offsets of a few pixels and masks away from 0.5, as after training."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, DeformConv2d):
                weight = module.conv_offset.weight
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.05)
                module.conv_offset.bias.copy_(torch.randn(module.conv_offset.bias.shape, generator=generator))


def write_checkpoint(path: Path, *overrides: str, seed: int = 0) -> Path:
    """A checkpoint as segdcn-train writes it (model weights, resolved config as YAML, version)."""
    cfg = train_config(*overrides)
    torch.manual_seed(seed)
    model = build_model(cfg.model, int(cfg.dataset.num_classes))
    randomise_offsets(model, seed)
    state = {
        "model": model.state_dict(),
        "iteration": 2,
        "best_miou": None,
        "config": OmegaConf.to_yaml(cfg, resolve=True),
        "segdcn_version": segdcn.__version__,
    }
    return save_checkpoint(path, state)
