"""Dataset-level segmentation metrics from one confusion matrix.

The paper (and its official code) scores a dataset, not an average of images: every pixel of every
image goes into one confusion matrix, and IoU is computed once from it at the end. An image-averaged
mIoU would weigh a small image's few pixels as much as a large image's many, and would be undefined
for classes an image does not contain.

    matrix = ConfusionMatrix(num_classes=21)
    for pred, target in batches:          # int tensors of the same shape, 255 = ignore in target
        matrix.update(pred, target)
    matrix.all_reduce()                   # under torch.distributed: sum over ranks (no-op otherwise)
    metrics = matrix.compute()            # {"miou": ..., "per_class_iou": [...], ...}

Absent classes: a class that appears neither in the labels nor in the predictions has no IoU (0/0).
Its entry in `per_class_iou` is None and it is left out of the mean, as the Cityscapes and VOC
evaluations do; a class present in only one of them has IoU 0 and counts. The values are plain
Python floats, ints and None, so the dict goes to JSON as it is (`miou` and `pixel_acc` are NaN only
when no pixel was counted at all).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from segdcn.engine.distributed import all_reduce_sum


class ConfusionMatrix:
    """counts[t, p] = number of pixels with target class t predicted as p (int64, pixels labelled
    `ignore_index` skipped). The counts live on the device of the predictions (moved there on the
    first update), so accumulating on a GPU costs no transfer per image."""

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str | None = None):
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.counts = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        self.counts.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Adds a batch: `pred` and `target` integer tensors of the same shape (any, e.g. [N, H, W])."""
        if pred.shape != target.shape:
            raise ValueError(
                f"pred has shape {tuple(pred.shape)} but target has {tuple(target.shape)}; "
                "expected the same shape (resize the prediction to the label's size first)"
            )
        if pred.is_floating_point() or target.is_floating_point():
            raise TypeError(
                f"pred ({pred.dtype}) and target ({target.dtype}) must be integer class indices; "
                "take logits.argmax(1) first"
            )
        if self.counts.device != pred.device:
            self.counts = self.counts.to(pred.device)
        target = target.to(pred.device)
        valid = target != self.ignore_index
        t = target[valid].long()
        p = pred[valid].long()
        if t.numel() == 0:
            return
        c = self.num_classes
        # one bounds check per batch: bincount would silently spill an out-of-range value into a neighbour cell
        low, high = torch.stack([torch.minimum(t.min(), p.min()), torch.maximum(t.max(), p.max())]).tolist()
        if low < 0 or high >= c:
            bad_t = torch.unique(t[(t < 0) | (t >= c)]).tolist()[:10]
            bad_p = torch.unique(p[(p < 0) | (p >= c)]).tolist()[:10]
            raise ValueError(
                f"class indices outside 0..{c - 1} (ignore_index {self.ignore_index}): "
                f"target values {bad_t}, pred values {bad_p}"
            )
        self.counts += torch.bincount(t * c + p, minlength=c * c).view(c, c)

    def all_reduce(self) -> None:
        """Sums the counts of all ranks in place (every rank ends with the total), when
        torch.distributed is initialised; does nothing otherwise."""
        all_reduce_sum(self.counts)

    def compute(self) -> dict[str, Any]:
        """The metrics of the counts so far:

        miou            mean IoU over the classes present in the labels or the predictions
        per_class_iou   [IoU of class i, or None if class i is in neither]
        pixel_acc       correct pixels / labelled pixels
        mean_acc        mean over the classes present in the labels of their recall
        per_class_acc   [recall of class i, or None if class i is not in the labels]
        num_pixels      labelled pixels counted
        confusion_matrix  the counts as a list of rows (row = target class, column = predicted)
        """
        counts = self.counts.detach().cpu().to(torch.float64)
        true_positive = counts.diagonal()
        in_labels = counts.sum(1)
        in_preds = counts.sum(0)
        union = in_labels + in_preds - true_positive
        total = float(counts.sum())

        iou = [float(tp / u) if u > 0 else None for tp, u in zip(true_positive, union, strict=True)]
        acc = [float(tp / n) if n > 0 else None for tp, n in zip(true_positive, in_labels, strict=True)]
        return {
            "miou": _mean(iou),
            "per_class_iou": iou,
            "pixel_acc": float(true_positive.sum()) / total if total > 0 else math.nan,
            "mean_acc": _mean(acc),
            "per_class_acc": acc,
            "num_pixels": int(total),
            "confusion_matrix": self.counts.detach().cpu().tolist(),
        }


def _mean(values: list[float | None]) -> float:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else math.nan
