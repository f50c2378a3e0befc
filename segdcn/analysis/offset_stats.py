"""What the offsets of each deformable layer do over a few images: the statistics a training run logs.

    stats = OffsetStats(paper_names(model), background_ids=(0,), ignore_index=255)
    with OffsetRecorder(model) as recorder:
        model(image[None])
    stats.add(recorder.records(image.shape[-2:]), [label], image.shape[-2:])
    stats.metrics()     # {"res5c/mean_abs_px": 0.8, "res5c/out_of_bounds": 0.02, "res5c/effective_dilation": 4.3, ...}

Per layer, by its paper name, over every tap of every output position of every image added:

    mean_abs_px                 mean length |(dy, dx)| of the offsets, in pixels of the layer's input map
    out_of_bounds               share of sampling locations outside the open interval (-1, H) x (-1, W) of
                                the input map: those read only zeros (the op's boundary rule)
    mask_mean                   mean modulation mask (modulated, DCNv2 layers only)
    effective_dilation          mean effective dilation of the filters (segdcn.analysis.dilation)
    effective_dilation/<group>  the same over the filters above a small, medium or large object or the
                                background of the ground truth (segdcn.analysis.object_size, .stats)

A plain conv's sampling grid already reaches beyond the map at its border (padding), so out_of_bounds
is not 0 for zero offsets: the share to compare with is that of the first evaluation. The sums add up
across processes (`reduce`), so every rank of a distributed run ends with the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from .capture import OffsetRecord
from .dilation import effective_dilation
from .object_size import SIZE_GROUPS, SizeThresholds, size_group_map
from .sampling import sampling_grid
from .stats import RunningStats, split_by_group

STATS = ("mean_abs_px", "out_of_bounds", "mask_mean", "effective_dilation")


class LayerOffsetStats:
    """The running sums of one layer's statistics: one RunningStats per statistic and per size group."""

    def __init__(self, paper_name: str):
        self.paper_name = paper_name
        self.streams: dict[str, RunningStats] = {name: RunningStats() for name in STATS}
        self.groups: dict[str, RunningStats] = {name: RunningStats() for name in SIZE_GROUPS}

    def add(self, record: OffsetRecord, groups: Sequence[np.ndarray] | None, input_size: tuple[int, int]) -> None:
        """groups: one size_group_map per image of the record, or None (no ground truth)."""
        self.streams["mean_abs_px"].add(record.offset_pairs().double().norm(dim=4).numpy())
        self.streams["out_of_bounds"].add(outside(record).numpy())
        if record.mask is not None:
            self.streams["mask_mean"].add(record.mask.double().numpy())
        dilation = effective_dilation(record).numpy()  # [N, out_h, out_w]
        self.streams["effective_dilation"].add(dilation)
        for image, image_groups in enumerate(groups or ()):
            for name, values in split_by_group(dilation[image], record, image_groups, input_size).items():
                self.groups[name].add(values)

    def all_streams(self) -> list[RunningStats]:
        return [*self.streams.values(), *self.groups.values()]

    def metrics(self) -> dict[str, float]:
        """`<paper name>/<statistic>` -> mean; statistics with nothing to average (a layer without masks, a
        size group absent from the images) are left out rather than logged as empty."""
        out = {f"{self.paper_name}/{name}": s.mean for name, s in self.streams.items() if s.count}
        out.update(
            {f"{self.paper_name}/effective_dilation/{name}": s.mean for name, s in self.groups.items() if s.count}
        )
        return out


def outside(record: OffsetRecord) -> Tensor:
    """bool [N, G * kh * kw, out_h, out_w]: the sampling locations outside (-1, H) x (-1, W) of the input map."""
    grid = sampling_grid(record)
    y, x = grid[:, :, 0], grid[:, :, 1]
    height, width = record.input_size
    return (y <= -1) | (y >= height) | (x <= -1) | (x >= width)


class OffsetStats:
    """The statistics of every deformable layer of a model, accumulated image by image.

    layers: module name -> paper name, in forward order (segdcn.analysis.capture.paper_names); fixed up
    front, so that processes which saw no image still hold sums of the same shape to add up.
    """

    def __init__(
        self,
        layers: Mapping[str, str],
        *,
        background_ids: tuple[int, ...],
        ignore_index: int = 255,
        thresholds: SizeThresholds | None = None,
    ):
        if not layers:
            raise ValueError("no deformable layers to take offset statistics of")
        self.layer_names = dict(layers)
        self.background_ids = tuple(background_ids)
        self.ignore_index = ignore_index
        self.thresholds = thresholds or SizeThresholds()
        self.reset()

    def reset(self) -> None:
        self.layers = {name: LayerOffsetStats(paper) for name, paper in self.layer_names.items()}
        self.images = 0

    def add(
        self, records: Sequence[OffsetRecord], labels: Sequence[np.ndarray] | None, input_size: tuple[int, int]
    ) -> None:
        """The records of one forward pass over images of `input_size` (the model input's (h, w)) and their
        ground-truth labels [H, W] (any resolution; None: no grouping by object size)."""
        groups = None
        if labels is not None:
            groups = [
                size_group_map(np.asarray(label), self.background_ids, self.ignore_index, self.thresholds)
                for label in labels
            ]
        for record in records:
            if record.name not in self.layers:
                raise KeyError(f"offsets of {record.name}, which is not among the layers {list(self.layers)}")
            if groups is not None and len(groups) != record.offset.shape[0]:
                raise ValueError(f"{len(groups)} labels for the {record.offset.shape[0]} images of {record.name}")
            self.layers[record.name].add(record, groups, input_size)
        self.images += records[0].offset.shape[0] if records else 0

    def sums(self) -> Tensor:
        """float64 [streams * 3 + 1]: every running sum and the image count, in a fixed order."""
        values = [v for layer in self.layers.values() for s in layer.all_streams() for v in s.sums()]
        return torch.tensor([*values, float(self.images)], dtype=torch.float64)

    def load_sums(self, sums: Tensor) -> None:
        values = sums.double().cpu().tolist()
        index = 0
        for layer in self.layers.values():
            for stream in layer.all_streams():
                stream.load(values[index : index + 3])
                index += 3
        self.images = int(round(values[index]))

    def reduce(self, reduce_sum: Callable[[Tensor], Tensor]) -> None:
        """Adds up the sums of all processes with `reduce_sum` (e.g. segdcn.engine.distributed.all_reduce_sum)."""
        self.load_sums(reduce_sum(self.sums()))

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for layer in self.layers.values():
            out.update(layer.metrics())
        return out
