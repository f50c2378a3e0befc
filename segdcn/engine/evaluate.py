"""Evaluation of a model on a dataset: one confusion matrix over all images, then mIoU.

    result = evaluate(model, val_set, cfg.eval, device=device, num_classes=21, class_names=names)
    result.metrics["miou"], result.metrics["per_class_iou"]["aeroplane"], result.samples[0].pred

Items of the dataset are (normalised image [3, h, w], label [H, W]) as the evaluation transform
gives them: the image possibly resized, the label at full resolution. Images go through the model one
at a time (their sizes differ), with the inference of segdcn.engine.inference (whole or sliding
window, scales, flip) and the prediction taken at the label's size.

Under torch.distributed, rank r takes images r, r + world, r + 2 world, ... (no padding, unlike
DistributedSampler, so each image is counted exactly once), and the confusion matrices are summed
over ranks before the metrics: every rank returns the same numbers. A DistributedDataParallel model
is unwrapped first: its forward would synchronise buffers across ranks, which hangs when ranks hold
different numbers of images.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from segdcn.engine.distributed import is_main_process, shard_indices, unwrap
from segdcn.engine.inference import infer_with_config
from segdcn.engine.metrics import ConfusionMatrix

# on_prediction(index in the dataset, prediction [H, W] int64 on the CPU, label [H, W] int64 on the CPU)
PredictionHook = Callable[[int, torch.Tensor, torch.Tensor], None]


class ImageProbe(Protocol):
    """Looks at the model while it infers one image (e.g. segdcn.engine.offsets: the deformable layers'
    offsets): `watch` returns the context the image's inference runs in."""

    def watch(self, index: int, image: torch.Tensor, label: torch.Tensor) -> contextlib.AbstractContextManager: ...


class Sample(NamedTuple):
    """One validation image for display: all three at the label's size."""

    image: np.ndarray  # uint8 [H, W, 3], RGB, normalisation undone
    pred: np.ndarray  # uint8 [H, W] class indices
    target: np.ndarray  # uint8 [H, W] class indices, 255 = ignore


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    samples: list[Sample] = field(default_factory=list)
    num_images: int = 0  # over all ranks
    seconds: float = 0.0


def denormalise(image: torch.Tensor, size: Sequence[int], mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    image = image.float().cpu()
    if tuple(image.shape[-2:]) != tuple(size):
        image = F.interpolate(image[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
    rgb = image * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def named(values: list, class_names: Sequence[str] | None) -> dict[str, Any]:
    """A per-class list as {class name: value} (names "0", "1", ... without class_names)."""
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(values))]
    if len(names) != len(values):
        raise ValueError(f"class_names has {len(names)} names but there are {len(values)} classes")
    return dict(zip(names, values, strict=True))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    eval_cfg: Any,
    *,
    device: torch.device | str,
    precision: str = "fp32",
    num_classes: int,
    ignore_index: int = 255,
    class_names: Sequence[str] | None = None,
    progress: bool = True,
    num_samples: int = 0,
    on_prediction: PredictionHook | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    probe: ImageProbe | None = None,
) -> EvalResult:
    """Scores `model` (already on `device`) on `dataset` with the inference settings of `eval_cfg`
    (an EvalConfig: mode, window, stride, scales, flip, max_images, num_workers).

    metrics: miou, per_class_iou ({class name: IoU or None for a class absent from labels and
    predictions}), pixel_acc, mean_acc, per_class_acc, num_pixels, num_images, confusion_matrix.
    samples: the first `num_samples` images of rank 0, for display (mean/std, the dataset's, undo the
    normalisation; ImageNet's by default).
    on_prediction is called for every image this rank scores (e.g. to write prediction PNGs); the
    inference of each image runs in `probe.watch(index, image, label)`, and its time counts in `seconds`.
    The model is put in eval mode and returned to its previous mode afterwards.
    """
    device = torch.device(device)
    if num_samples and (mean is None or std is None):
        from segdcn.data.transforms import IMAGENET_MEAN, IMAGENET_STD  # albumentations: imported only when needed

        mean, std = mean or IMAGENET_MEAN, std or IMAGENET_STD
    main = is_main_process()
    model = unwrap(model)
    if getattr(getattr(dataset, "transforms", None), "image_only", True) is False:
        # segdcn's evaluation transform keeps the label whole; any other is the training augmentation
        raise ValueError(
            "evaluate: the dataset applies the training augmentation (random scale, crop, flip), so its items "
            "are not the images and labels to score; build it with "
            "build_dataset(cfg.dataset, split, augment=False)"
        )
    count = len(dataset)
    max_images = getattr(eval_cfg, "max_images", None)
    if max_images is not None:
        count = min(count, int(max_images))
    if count == 0:
        raise ValueError("evaluate: the dataset is empty (or eval.max_images is 0); nothing to score")
    indices = shard_indices(count)
    loader = DataLoader(
        Subset(dataset, indices),
        batch_size=1,  # image sizes differ within a dataset
        shuffle=False,
        num_workers=int(getattr(eval_cfg, "num_workers", 0) or 0),
        pin_memory=device.type == "cuda",
    )
    matrix = ConfusionMatrix(num_classes, ignore_index, device=device)
    samples: list[Sample] = []
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        bar = tqdm(loader, desc="eval", unit="img", disable=not progress or not main, leave=False, dynamic_ncols=True)
        for index, (image, label) in zip(indices, bar, strict=True):
            image = image.to(device, non_blocking=True)
            label = label.to(device, non_blocking=True)
            with probe.watch(index, image, label) if probe is not None else contextlib.nullcontext():
                logits = infer_with_config(model, image, label.shape[-2:], eval_cfg, precision)
            pred = logits.argmax(1)
            matrix.update(pred, label)
            if on_prediction is not None:
                on_prediction(index, pred[0].cpu(), label[0].cpu())
            if main and len(samples) < num_samples:
                samples.append(
                    Sample(
                        denormalise(image[0], label.shape[-2:], mean, std),
                        pred[0].to(torch.uint8).cpu().numpy(),
                        label[0].to(torch.uint8).cpu().numpy(),
                    )
                )
    finally:
        model.train(was_training)
    matrix.all_reduce()
    metrics = matrix.compute()
    metrics["per_class_iou"] = named(metrics["per_class_iou"], class_names)
    metrics["per_class_acc"] = named(metrics["per_class_acc"], class_names)
    metrics["num_images"] = count
    return EvalResult(metrics, samples, count, time.perf_counter() - start)
