"""Optimizer parameter groups: backbone, head (lr multiplier), offset/mask convs (their own multiplier)."""

from __future__ import annotations

from torch import nn

from segdcn.ops import DeformConv2d

from .norm import is_norm


def _offset_mults(model: nn.Module) -> dict[int, float]:
    """id(parameter) -> offset_lr_mult of its DeformConv2d, for the offset/mask conv parameters."""
    return {
        id(p): float(m.offset_lr_mult)
        for m in model.modules()
        if isinstance(m, DeformConv2d)
        for p in m.conv_offset.parameters()
    }


def _no_decay_ids(model: nn.Module) -> set[int]:
    """Parameters of norm layers and all biases."""
    ids = {id(p) for m in model.modules() if is_norm(m) for p in m.parameters(recurse=False)}
    ids |= {id(p) for name, p in model.named_parameters() if name.rpartition(".")[2] == "bias"}
    return ids


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    head_lr_mult: float | None = None,
    no_decay_norm_bias: bool = False,
) -> list[dict]:
    """torch.optim parameter groups of a DeepLab model.

    Groups: "backbone" (lr), "head" (lr * head_lr_mult, by default the model's
    `head_lr_mult` from model.head.lr_mult), "offset" (the offset/mask convs of the
    deformable layers, lr * each layer's `offset_lr_mult`, wherever they are). With
    `no_decay_norm_bias`, norm weights/biases and all biases go to "<group>_no_decay" groups
    with weight decay 0. Each group has "name" and "lr_mult" (for schedulers that set
    lr = base_lr * lr_mult); empty groups and frozen parameters (requires_grad=False; frozen BN
    has none) are left out.
    """
    if head_lr_mult is None:
        head_lr_mult = float(getattr(model, "head_lr_mult", 1.0))
    offset_mults = _offset_mults(model)
    no_decay = _no_decay_ids(model) if no_decay_norm_bias else set()
    groups: dict[str, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in offset_mults:
            mult = offset_mults[id(p)]
            part = "offset" if len(set(offset_mults.values())) == 1 else f"offset_x{mult:g}"
        elif name.startswith("head."):
            part, mult = "head", float(head_lr_mult)
        else:
            part, mult = "backbone", 1.0
        decay = 0.0 if id(p) in no_decay else weight_decay
        key = part if id(p) not in no_decay else f"{part}_no_decay"
        group = groups.setdefault(
            key, {"name": key, "params": [], "lr": lr * mult, "lr_mult": mult, "weight_decay": decay}
        )
        group["params"].append(p)
    return list(groups.values())
