"""The `dataset` settings (conf/dataset/*.yaml hold only what differs from these defaults).

name, root and num_classes have no default: each dataset file sets them. The checks compare the
config with the dataset's label set (segdcn.data.labels), so a VOC config cannot claim 19 classes.
A folder dataset keeps its classes in a file under its root, so conf/dataset/folder.yaml takes
num_classes from there with the resolver `${segdcn.num_classes:${.name},${.root}}` (registered here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, OmegaConf

from segdcn.data.errors import DatasetConfigError

from .schema import Schema

# voc: VOCdevkit/VOC2012-style folders and split lists; cityscapes, ade20k: their releases; folder: images/ + masks/
LAYOUTS = ("voc", "cityscapes", "folder", "ade20k")
OWN_LAYOUTS = ("folder", "ade20k")  # the datasets whose reader is their own: dataset.name = dataset.layout


def num_classes_resolver(name: str, root: str) -> int:
    """`${segdcn.num_classes:<name>,<root>}`: the classes of a dataset's label set, for the datasets that keep
    them in a file under their root. Its errors name that file (segdcn.data.classes)."""
    from segdcn.data.labels import label_set

    return label_set(name, root).num_classes


OmegaConf.register_new_resolver("segdcn.num_classes", num_classes_resolver, replace=True)


@dataclass
class DatasetTrainConfig(Schema):
    KEY = "dataset.train"
    ERROR = DatasetConfigError

    short_side: int | None = None  # shorter side resized to this before the random scale; null: as stored
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])  # [low, high] random scale factors
    crop_size: list[int] = field(default_factory=lambda: [321, 321])  # [height, width]; padding is ignored
    hflip: float = 0.5  # probability of a horizontal flip
    photometric: dict[str, Any] | None = None  # ColorJitter arguments, e.g. {brightness: 0.2, p: 0.8}; null: none

    def check(self) -> None:
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            self.fail("scale_range", "[low, high] scale factors, 0 < low <= high")
        self.pair("crop_size", "the training crop")
        self.at_least("short_side", 1)
        if not 0 <= self.hflip <= 1:
            self.fail("hflip", "a probability in [0, 1]")


@dataclass
class DatasetEvalConfig(Schema):
    KEY = "dataset.eval"
    ERROR = DatasetConfigError

    short_side: int | None = None  # the input is resized to this; metrics use the full-resolution labels

    def check(self) -> None:
        self.at_least("short_side", 1)


@dataclass
class DatasetConfig(Schema):
    KEY = "dataset"
    ERROR = DatasetConfigError

    name: str = MISSING  # voc_aug | cityscapes | synthetic | folder | ade20k: picks the label set (names, colours)
    root: str = MISSING  # the dataset's root folder (see docs: each dataset's layout)
    layout: str = "voc"  # voc | cityscapes | folder | ade20k (the last two with the dataset of that name)
    num_classes: int = MISSING  # must match the label set of `name`
    ignore_index: int = 255  # label value excluded from loss and metrics
    reduce_zero_label: bool = False  # folder, ade20k: masks hold 0 = unlabelled (read as ignore), k + 1 = class k
    val_fraction: float = 0.1  # folder: share of the images in val, when ROOT/splits/ has no train/val lists
    split_seed: int = 0  # folder: seed of that split (not the training seed, so every run shares one split)
    image_dir: str | None = None  # voc layout: image folder under VOCdevkit/VOC2012, e.g. JPEGImages
    mask_dir: str | None = None  # voc layout: label folder under VOCdevkit/VOC2012, e.g. SegmentationClassAug
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "val": "val"})  # split: list name
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])  # RGB, 0-1 scale (ImageNet's)
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    train: DatasetTrainConfig = field(default_factory=DatasetTrainConfig)
    eval: DatasetEvalConfig = field(default_factory=DatasetEvalConfig)

    def check(self) -> None:
        from segdcn.data.labels import label_set

        if not self.is_set("name"):  # segdcn-eval without dataset=<name>: the checkpoint's dataset, checked then
            return
        self.choice("layout", LAYOUTS)
        if self.name in OWN_LAYOUTS and self.layout != self.name:
            self.fail("layout", f"{self.name} with dataset.name={self.name}")
        if self.layout in OWN_LAYOUTS and self.name != self.layout:
            self.fail("layout", f"voc or cityscapes; the {self.layout} layout is dataset.name={self.layout}'s")
        for split, list_name in self.splits.items():
            if not isinstance(list_name, str):
                raise self.error(f"dataset.splits.{split}={list_name!r}: expected a split list name")
        for key in ("mean", "std"):
            if len(getattr(self, key)) != 3:
                self.fail(key, "three numbers (RGB, 0-1 scale)")
        if self.layout == "voc":
            for key, example in (("image_dir", "JPEGImages"), ("mask_dir", "SegmentationClassAug")):
                if getattr(self, key) is None:
                    self.fail(key, f"the folder under VOCdevkit/VOC2012 with the voc layout, e.g. {example}")
        else:
            for key in ("image_dir", "mask_dir"):
                if getattr(self, key) is not None:
                    self.fail(key, f"null with dataset.layout={self.layout} (its folders are fixed: see docs/data.md)")
        if self.layout not in OWN_LAYOUTS:
            self.only_with("dataset=folder and dataset=ade20k", "reduce_zero_label")
        if self.name == "ade20k" and not self.reduce_zero_label:
            self.fail("reduce_zero_label", "true with dataset=ade20k (its annotations: 0 = other, 1..150 = classes)")
        if self.layout == "folder":
            if not 0 < self.val_fraction < 1:
                self.fail("val_fraction", "a fraction of the images, 0 < val_fraction < 1")
        else:
            self.only_with("dataset=folder", "val_fraction", "split_seed")
        try:
            labels = label_set(self.name, self.root if self.is_set("root") else None)
        except KeyError:
            self.fail("name", "voc_aug, cityscapes, synthetic, folder or ade20k")
        if self.is_set("num_classes") and self.num_classes != labels.num_classes:
            where = f" in the class table under {self.root}" if self.name == "folder" else f" of {self.name}"
            self.fail("num_classes", f"{labels.num_classes}, the classes{where}")
        if self.ignore_index != labels.ignore_index:
            self.fail("ignore_index", f"{labels.ignore_index}, the ignore value of {self.name}'s labels")
