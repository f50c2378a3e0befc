"""Effective dilation by object size over a dataset split: the numbers of the paper's Table 2.

    table = effective_dilation_by_size(model, dataset, background_ids=(0,), max_images=50)
    table.rows()        # per deformable layer (last first, as in the paper): mean, std, count per group

Every output position of every deformable layer is one filter. Its effective dilation (in pixels of
the layer's input map, segdcn.analysis.dilation) goes to the size group of the ground-truth pixel
under it (segdcn.analysis.object_size). The position's image pixel (stride * j on the model's input)
is carried to the full-resolution label by the evaluation's own resampling (pixel centres, as
F.interpolate with align_corners=False), then rounded to the nearest label pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .capture import OffsetRecord, capture_offsets
from .dilation import effective_dilation
from .object_size import SIZE_GROUPS, UNGROUPED, SizeThresholds, size_group_map


@dataclass
class RunningStats:
    """Count, mean and (population) standard deviation of a stream of values, summed in float64."""

    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        self.count += values.size
        self.total += float(values.sum())
        self.total_sq += float(np.square(values).sum())

    def sums(self) -> list[float]:
        """(count, total, total of squares): what adds up across processes."""
        return [float(self.count), self.total, self.total_sq]

    def load(self, sums) -> None:
        count, total, total_sq = (float(v) for v in sums)
        self.count, self.total, self.total_sq = int(round(count)), total, total_sq

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def summary(self) -> dict[str, float | int | None]:
        if self.count == 0:
            return {"mean": None, "std": None, "count": 0}
        mean = self.total / self.count
        return {"mean": mean, "std": math.sqrt(max(self.total_sq / self.count - mean * mean, 0.0)), "count": self.count}


def label_pixels(
    output_size: tuple[int, int], output_stride: int, input_size: tuple[int, int], label_size: tuple[int, int]
):
    """(rows, cols): the label pixel under each output position of a map, as index arrays [h] and [w]."""
    out = []
    for n, size, full in zip(output_size, input_size, label_size, strict=True):
        pixel = np.arange(n) * output_stride  # on the model's input
        scaled = (pixel + 0.5) * (full / size) - 0.5
        out.append(np.clip(np.rint(scaled).astype(np.int64), 0, full - 1))
    return out[0], out[1]


def split_by_group(
    values: np.ndarray, record: OffsetRecord, groups: np.ndarray, input_size: tuple[int, int]
) -> dict[str, np.ndarray]:
    """Size group name -> the values [out_h, out_w] of one image's filters over a pixel of that group.

    groups: the size_group_map of the image's full-resolution label; input_size: the model input's (h, w).
    """
    rows, cols = label_pixels(record.output_size, record.output_stride, input_size, groups.shape)
    under = groups[np.ix_(rows, cols)]
    return {name: values[under == index] for index, name in enumerate(SIZE_GROUPS)}


@dataclass
class LayerDilationStats:
    name: str
    paper_name: str
    dilation: tuple[int, int]
    input_stride: int
    groups: dict[str, RunningStats] = field(default_factory=lambda: {g: RunningStats() for g in SIZE_GROUPS})

    @classmethod
    def of(cls, record: OffsetRecord) -> LayerDilationStats:
        return cls(record.name, record.paper_name, record.dilation, record.input_stride)

    def add(self, record: OffsetRecord, groups: np.ndarray, input_size: tuple[int, int]) -> None:
        values = effective_dilation(record)[0].numpy()  # one image per call
        for name, grouped in split_by_group(values, record, groups, input_size).items():
            self.groups[name].add(grouped)


@dataclass
class DilationTable:
    """The per-layer, per-group statistics, in forward order of the layers."""

    layers: list[LayerDilationStats]
    thresholds: SizeThresholds
    images: int = 0

    def rows(self) -> list[dict]:
        """One dict per layer, the last layer first (the paper lists res5c, res5b, res5a)."""
        return [
            {
                "layer": layer.paper_name,
                "module": layer.name,
                "dilation": list(layer.dilation),
                "input_stride": layer.input_stride,
                "groups": {name: stats.summary() for name, stats in layer.groups.items()},
            }
            for layer in reversed(self.layers)
        ]


def background_ids_of(class_names: list[str] | tuple[str, ...]) -> tuple[int, ...]:
    """The class indices named "background" (VOC, synthetic); none for Cityscapes, whose every class is
    an object or a region here."""
    return tuple(i for i, name in enumerate(class_names) if name == "background")


def effective_dilation_by_size(
    model: nn.Module,
    dataset,
    *,
    background_ids: tuple[int, ...],
    ignore_index: int = 255,
    thresholds: SizeThresholds | None = None,
    max_images: int | None = None,
    device: str | torch.device = "cpu",
    progress=None,
) -> DilationTable:
    """Runs `model` over `dataset` (items: normalised image [3, h, w], full-resolution label [H, W]),
    one image at a time (sizes differ), and groups every deformable filter's effective dilation."""
    thresholds = thresholds or SizeThresholds()
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    if count == 0:
        raise ValueError("the dataset split has no images")
    model = model.to(device).eval()
    table: DilationTable | None = None
    indices = range(count) if progress is None else progress(range(count))
    for index in indices:
        image, label = dataset[index]
        _, records = capture_offsets(model, image[None].to(device))
        if table is None:
            table = DilationTable([LayerDilationStats.of(r) for r in records], thresholds)
        groups = size_group_map(np.asarray(label), background_ids, ignore_index, thresholds)
        if (groups == UNGROUPED).all():
            continue
        for layer, record in zip(table.layers, records, strict=True):
            layer.add(record, groups, tuple(image.shape[-2:]))
        table.images += 1
    return table
