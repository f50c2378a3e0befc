"""Scans a whole dataset and collects every problem, instead of stopping at the first."""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segdcn.config import DatasetConfig
from segdcn.data.builder import build_dataset, list_name
from segdcn.data.errors import DatasetError, UnreadableFileError
from segdcn.data.io import invalid_label_values, read_image, read_label, reduce_zero_label
from segdcn.data.parallel import parallel_map


@dataclass(frozen=True)
class ItemCheck:
    image: Path
    label: Path
    num_classes: int
    ignore_index: int
    reduce_zero_label: bool = False


def check_item(item: ItemCheck) -> tuple[list[tuple[str, str]], np.ndarray | None]:
    """The problems of one item as (kind, message), and its label's histogram over 0..255."""
    problems = []
    image = label = None
    for path, reader, kind in ((item.image, read_image, "image"), (item.label, read_label, "label")):
        if not path.is_file():
            problems.append((f"missing {kind} file", str(path)))
            continue
        try:
            if kind == "image":
                image = reader(path)
            else:
                label = reader(path)
        except UnreadableFileError as error:
            problems.append((f"unreadable {kind}", str(error)))
    histogram = None
    if label is not None:
        bad = invalid_label_values(label, item.num_classes, item.ignore_index, item.reduce_zero_label)
        histogram = np.bincount(
            (reduce_zero_label(label, item.ignore_index) if item.reduce_zero_label else label).ravel(), minlength=256
        )
        if bad:
            problems.append(("label values outside the classes and ignore", f"{item.label}: values {bad}"))
        if image is not None and image.shape[:2] != label.shape:
            problems.append(
                (
                    "image and label sizes differ",
                    f"{item.image} is {image.shape[1]}x{image.shape[0]}, "
                    f"{item.label} is {label.shape[1]}x{label.shape[0]}",
                )
            )
    return problems, histogram


@dataclass
class Report:
    dataset: str
    items: dict[str, int] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=lambda: collections.defaultdict(list))
    pixels: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self, class_names: tuple[str, ...], max_listed: int = 20) -> str:
        lines = [f"dataset {self.dataset}: " + ", ".join(f"{split} {n:,} items" for split, n in self.items.items())]
        if self.pixels.sum():
            total = self.pixels.sum()
            shares = [f"{name} {self.pixels[i] / total:.1%}" for i, name in enumerate(class_names)]
            shares.append(f"ignore {self.pixels[255] / total:.1%}")
            lines.append("label pixels: " + ", ".join(shares))
        if self.ok:
            lines.append("no problems found")
            return "\n".join(lines)
        total = sum(len(v) for v in self.problems.values())
        lines.append(f"{total:,} problems:")
        for kind, messages in sorted(self.problems.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"  {len(messages):>6,} x {kind}")
            lines += ["           " + message.replace("\n", "\n           ") for message in messages[:max_listed]]
            if len(messages) > max_listed:
                lines.append(f"           ... and {len(messages) - max_listed:,} more")
        return "\n".join(lines)


def scan(dataset_cfg: Mapping, splits: list[str], workers: int | None = None, progress: bool = True) -> Report:
    """Checks every listed file of every split: present, decodable, same size, label values known."""
    cfg = DatasetConfig.from_config(dataset_cfg)
    report = Report(f"{cfg.name} at {cfg.root}")
    for split in splits:
        try:
            dataset = build_dataset(cfg, split, transforms=None, check_labels=False, verify_files=False)
        except DatasetError as error:
            report.problems["split unusable"].append(f"{split} ({list_name(cfg, split)}): {error}")
            continue
        report.items[split] = len(dataset)
        for kind, message in dataset.layout_problems:  # a folder's unpaired files, once for all splits
            if message not in report.problems[kind]:
                report.problems[kind].append(message)
        jobs = [
            ItemCheck(image, label, dataset.num_classes, dataset.ignore_index, dataset.reduce_zero_label)
            for image, label in zip(dataset.images, dataset.labels, strict=True)
        ]
        for problems, histogram in parallel_map(check_item, jobs, workers, f"checking {split}", progress):
            for kind, message in problems:
                report.problems[kind].append(message)
            if histogram is not None:
                report.pixels += histogram
    return report
