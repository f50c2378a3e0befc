"""W&B objects for an evaluation: the per-class IoU table, images with their masks, figures from PNG files."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

IGNORE_INDEX = 255
# Full-resolution Cityscapes frames (1024x2048) would make every evaluation's media large;
# masks are subsampled by whole strides, so every shown label is a real label (no blending).
MAX_SIDE = 512


def class_labels(class_names: Sequence[str]) -> dict[int, str]:
    labels = {i: str(name) for i, name in enumerate(class_names)}
    labels[IGNORE_INDEX] = "ignore"
    return labels


def iou_table(wandb: Any, per_class_iou: Mapping[str, float | None]) -> Any:
    """Columns class, iou; a class absent from labels and predictions has no IoU (empty cell)."""
    rows = [[name, None if v is None or not math.isfinite(v) else float(v)] for name, v in per_class_iou.items()]
    return wandb.Table(columns=["class", "iou"], data=rows)


def _stride(shape: tuple[int, ...]) -> int:
    return max(1, math.ceil(max(shape[:2]) / MAX_SIDE))


def _check_sample(index: int, image: np.ndarray, pred: np.ndarray, target: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"samples[{index}] image has shape {image.shape}: expected (H, W, 3) uint8")
    for what, mask in (("pred", pred), ("target", target)):
        if mask.shape != image.shape[:2]:
            raise ValueError(f"samples[{index}] {what} has shape {mask.shape}: expected {image.shape[:2]} (H, W)")


def mask_images(
    wandb: Any, samples: Sequence[tuple[Any, Any, Any]], class_names: Sequence[str], limit: int
) -> list[Any]:
    """wandb.Images of the first `limit` (image, prediction, target) triples, masks "prediction"/"ground_truth"."""
    labels = class_labels(class_names)
    images = []
    for index, (image, pred, target) in enumerate(list(samples)[:limit]):
        image, pred, target = (np.asarray(_numpy(a)) for a in (image, pred, target))
        _check_sample(index, image, pred, target)
        s = _stride(image.shape)
        image, pred, target = image[::s, ::s], pred[::s, ::s], target[::s, ::s]
        masks = {
            "prediction": {"mask_data": pred.astype(np.uint8), "class_labels": labels},
            "ground_truth": {"mask_data": target.astype(np.uint8), "class_labels": labels},
        }
        images.append(wandb.Image(image.astype(np.uint8), masks=masks, caption=f"sample {index}"))
    return images


def figure_image(wandb: Any, path: Any, caption: str) -> Any:
    """A wandb.Image of a PNG written by the run (the offsets' sampling locations)."""
    return wandb.Image(str(path), caption=caption)


def _numpy(a: Any) -> Any:
    # torch tensors (possibly on a GPU) without importing torch here
    return a.detach().cpu().numpy() if hasattr(a, "detach") else a
