"""The deformable layers' offsets in a training run's logs: statistics at every evaluation, optionally on
the training batch every logger.offset_every iterations, and a picture of where the layers sample.

    monitor = OffsetMonitor.build(model, val_set, cfg, run_dir, class_names)   # None: no deformable layer
    evaluate(..., probe=monitor)          # watches the first logger.offset_images validation images
    monitor.eval_metrics(reduce_sum)      # {"offsets/res5c/mean_abs_px": ..., ...}, summed over processes
    monitor.draw(iteration)               # <run dir>/analysis/offsets_<iteration>.png
    with monitor.training(images, labels):
        logits = model(images)            # on iterations where monitor.due(iteration)
    monitor.train_metrics(reduce_sum)     # {"train/offsets/res5c/mean_abs_px": ..., ...}

The statistics are segdcn.analysis.offset_stats', the picture is scripts/visualize_offsets.py's (the
sampling locations of an activation on a small, a medium and a large object and on the background,
traced through every deformable layer), so what the dashboard shows is what the analysis tools say.
At evaluations the offsets come from the evaluation's own forward pass when that is one pass over the
whole image at scale 1 (eval.mode=whole, scales [1.0], no flip: the defaults), so they cost only the
hooks and the arithmetic; other inference settings add one whole-image pass per watched image.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from segdcn.analysis.capture import OffsetRecorder, capture_offsets, paper_names
from segdcn.analysis.object_size import SizeThresholds, labelled_points
from segdcn.analysis.offset_stats import OffsetStats
from segdcn.analysis.stats import background_ids_of
from segdcn.engine.evaluate import denormalise
from segdcn.engine.inference import autocast

log = logging.getLogger(__name__)

EVAL_PREFIX = "offsets/"
TRAIN_PREFIX = "train/offsets/"
PICTURE_DIR = "analysis"

Reduce = Callable[[Tensor], Tensor]


@dataclass
class Picture:
    """The validation image the pictures show, with the image points to trace (image pixels)."""

    index: int
    tensor: Tensor  # the model's input [3, h, w]
    image: np.ndarray  # uint8 [H, W, 3] at the label's size
    points: list[tuple[str, tuple[int, int]]]

    @property
    def scale(self) -> tuple[float, float]:
        return self.image.shape[0] / self.tensor.shape[-2], self.image.shape[1] / self.tensor.shape[-1]


class OffsetMonitor:
    def __init__(
        self,
        model: nn.Module,
        val_set,
        *,
        images: int,
        every: int,
        class_names: Sequence[str],
        ignore_index: int,
        mean: Sequence[float],
        std: Sequence[float],
        single_pass: bool,
        precision: str,
        run_dir: Path,
    ):
        self.model = model
        self.val_set = val_set
        self.images = images
        self.every = every
        self.class_names = list(class_names)
        self.background_ids = background_ids_of(self.class_names)
        self.ignore_index = ignore_index
        self.mean, self.std = tuple(mean), tuple(std)
        self.single_pass = single_pass
        self.precision = precision
        self.run_dir = Path(run_dir)
        self.thresholds = SizeThresholds()  # segdcn.analysis's object sizes, as receptive_field_stats.py's default
        layers = paper_names(model)
        self.eval_stats, self.train_stats = (
            OffsetStats(layers, background_ids=self.background_ids, ignore_index=ignore_index, thresholds=t)
            for t in (self.thresholds, self.thresholds)
        )
        self._picture: Picture | None = None
        self._picture_chosen = False
        self._recorder = OffsetRecorder(model)  # hooks on for the watched forward passes only

    @classmethod
    def for_evaluation(
        cls,
        model: nn.Module,
        dataset,
        eval_cfg: Any,
        dataset_cfg: Any,
        *,
        images: int,
        precision: str,
        class_names: Sequence[str],
        run_dir: Path,
        every: int = 0,
    ) -> OffsetMonitor:
        """A monitor of the first `images` images that `evaluate(..., eval_cfg)` scores on `dataset` (of
        config `dataset_cfg`); segdcn-eval's, and the trainer's through build()."""
        return cls(
            model,
            dataset,
            images=min(images, len(dataset), eval_cfg.max_images or len(dataset)),
            every=every,
            class_names=class_names,
            ignore_index=int(dataset_cfg.ignore_index),
            mean=dataset_cfg.mean,
            std=dataset_cfg.std,
            single_pass=eval_cfg.mode == "whole" and list(eval_cfg.scales) == [1.0] and not eval_cfg.flip,
            precision=precision,
            run_dir=run_dir,
        )

    @classmethod
    def build(cls, model: nn.Module, val_set, cfg: Any, run_dir: Path, class_names: Sequence[str]):
        """The monitor of a run with config `cfg` (a TrainConfig), or None when the model has no deformable
        layer: such a run logs no offset keys, whatever logger.offset_every says (a sweep over
        model.dcn.layers=0,3 shares one command line, so the setting is not refused there)."""
        layers = paper_names(model)
        if not layers:
            if cfg.logger.offset_every:
                log.info(
                    "logger.offset_every=%d: the model has no deformable layer, so there are no offsets to log",
                    cfg.logger.offset_every,
                )
            return None
        monitor = cls.for_evaluation(
            model,
            val_set,
            cfg.eval,
            cfg.dataset,
            images=cfg.logger.offset_images,
            every=cfg.logger.offset_every,
            precision=cfg.trainer.precision,
            class_names=class_names,
            run_dir=run_dir,
        )
        images = monitor.images
        every = f", and of the training batch every {monitor.every} iterations" if monitor.every else ""
        log.info(
            "offsets of %s: statistics of the first %d validation images at each evaluation%s",
            ", ".join(layers.values()),
            images,
            every,
        )
        return monitor

    # ---- evaluation ----

    @contextlib.contextmanager
    def watch(self, index: int, image: Tensor, label: Tensor) -> Iterator[None]:
        """The context of one image's inference in segdcn.engine.evaluate (an ImageProbe)."""
        if index >= self.images:
            yield
            return
        size = tuple(image.shape[-2:])
        if self.single_pass:
            with self._recorder:
                yield
        else:
            yield
            with self._recorder, torch.no_grad(), autocast(image.device, self.precision):
                self.model(image)
        self.eval_stats.add(self._recorder.records(size), [label[0].cpu().numpy()], size)

    def eval_metrics(self, reduce_sum: Reduce) -> dict[str, float]:
        """The statistics of the images watched since the last call, over every process (call it on all)."""
        return _collect(self.eval_stats, EVAL_PREFIX, reduce_sum)

    # ---- training ----

    def due(self, iteration: int) -> bool:
        return self.every > 0 and iteration % self.every == 0

    @contextlib.contextmanager
    def training(self, images: Tensor, labels: Tensor) -> Iterator[None]:
        """Around a training forward pass: its offsets, with the batch's labels for the size groups."""
        with self._recorder:
            yield
        size = tuple(images.shape[-2:])
        self.train_stats.add(self._recorder.records(size), list(labels.cpu().numpy()), size)

    def train_metrics(self, reduce_sum: Reduce) -> dict[str, float]:
        return _collect(self.train_stats, TRAIN_PREFIX, reduce_sum)

    # ---- the picture ----

    def draw(self, iteration: int) -> Path | None:
        """The sampling locations on the fixed validation image after `iteration`, as a PNG in
        <run dir>/analysis; None (and a warning) when it cannot be drawn: a picture never stops a run."""
        from segdcn.analysis.figures import layer_chain, trace_figure  # matplotlib: only where one is drawn
        from segdcn.analysis.sampling import trace_image_points

        try:
            if not self._picture_chosen:
                self._picture = self._choose_picture()
                self._picture_chosen = True
            picture = self._picture
            if picture is None:
                return None
            was_training = self.model.training
            device = next(self.model.parameters()).device
            try:
                _, records = capture_offsets(self.model, picture.tensor[None].to(device))
            finally:
                self.model.train(was_training)
            titles = [title for title, _ in picture.points]
            points = [point for _, point in picture.points]
            traces = trace_image_points(records, points, picture.scale)
            figure = trace_figure(
                picture.image,
                list(zip(titles, traces, strict=True)),
                picture.scale,
                suptitle=f"iteration {iteration}, validation image {picture.index}: {layer_chain(records)}",
                requested=points,
            )
            path = self.run_dir / PICTURE_DIR / f"offsets_{iteration}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            figure.savefig(path, dpi=100)
            return path
        except Exception as exc:
            log.warning("the offsets picture of iteration %d is skipped (%s: %s)", iteration, type(exc).__name__, exc)
            return None

    def _choose_picture(self) -> Picture | None:
        """Among the watched images, the first with the most of small, medium, large object and background."""
        best: Picture | None = None
        for index in range(self.images):
            tensor, label = self.val_set[index]
            label = np.asarray(label)
            points = labelled_points(label, self.class_names, self.background_ids, self.ignore_index, self.thresholds)
            if points and (best is None or len(points) > len(best.points)):
                best = Picture(index, tensor, denormalise(tensor, label.shape, self.mean, self.std), points)
        if best is None:
            log.warning("no offsets picture: the first %d validation images have no labelled pixels", self.images)
        return best


def _collect(stats: OffsetStats, prefix: str, reduce_sum: Reduce) -> dict[str, float]:
    stats.reduce(reduce_sum)
    values = {prefix + key: value for key, value in stats.metrics().items()}
    stats.reset()
    return values
