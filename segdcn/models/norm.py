"""Normalisation layers: frozen batch norm (the paper's setting), batch norm, SyncBN."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

NORMS = ("frozen_bn", "bn", "syncbn")


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters, all buffers (never trained).

    The paper fine-tunes from ImageNet with one image per GPU, far too few for batch
    statistics, so BN keeps the pretrained model's statistics and scale/shift. Its buffers
    carry BatchNorm2d's names, `num_batches_tracked` included (unused), so state dicts move
    between frozen_bn, bn and torchvision's models without renaming keys.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: Tensor) -> Tensor:
        # one scale and shift per channel: y = (x - mean) / sqrt(var + eps) * weight + bias
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def norm_layer(name: str) -> Callable[[int], nn.Module]:
    """A constructor `f(num_features) -> module` for model.norm = frozen_bn | bn | syncbn."""
    if name == "frozen_bn":
        return FrozenBatchNorm2d
    if name == "bn":
        return nn.BatchNorm2d
    if name == "syncbn":
        if not torch.cuda.is_available():
            raise ValueError(
                "model.norm=syncbn synchronises batch statistics across CUDA GPUs, and no GPU is available here; "
                "use model.norm=bn or model.norm=frozen_bn (the paper's setting)"
            )
        return nn.SyncBatchNorm
    raise ValueError(f"model.norm must be one of {', '.join(NORMS)}, got {name!r}")


def head_norm_layer(name: str) -> Callable[[int], nn.Module]:
    """The norm of the head's new layers (ASPP v3): trained BN, since nothing pretrained exists to freeze."""
    return norm_layer("syncbn" if name == "syncbn" else "bn")


NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, FrozenBatchNorm2d)


def is_norm(module: nn.Module) -> bool:
    return isinstance(module, NORM_TYPES)
