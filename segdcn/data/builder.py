"""Datasets and transforms from a dataset config (conf/dataset/*.yaml): a DictConfig or a dict.

    dataset = build_dataset(cfg.dataset, "train")          # transforms from the config
    dataset = build_dataset(cfg.dataset, "val", transforms=None)   # raw tensors, no transforms

Keys (see conf/dataset/voc_aug.yaml): name (voc_aug | cityscapes | synthetic), root, layout
(voc | cityscapes), num_classes, ignore_index, splits.{train,val} (split list names), image_dir and
mask_dir (voc layout), mean, std, train.{short_side, scale_range, crop_size, hflip, photometric},
eval.short_side.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from segdcn.data.cityscapes import Cityscapes
from segdcn.data.errors import DatasetConfigError
from segdcn.data.labels import label_set
from segdcn.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SegmentationTransform,
    build_eval_transform,
    build_train_transform,
)
from segdcn.data.voc import SegmentationFiles, VOCSegmentation

DEFAULT = object()  # build_dataset's transforms: build them from the config

PREPARE_COMMANDS = {
    "voc_aug": "python scripts/prepare_voc.py --voc-root ROOT --sbd-root SBD_ROOT [--download]",
    "synthetic": "python scripts/make_synthetic.py --out ROOT",
}
LAYOUTS = ("voc", "cityscapes")


def _as_dict(dataset_cfg: Mapping | DictConfig) -> dict[str, Any]:
    if isinstance(dataset_cfg, DictConfig):
        return OmegaConf.to_container(dataset_cfg, resolve=True)  # type: ignore[return-value]
    if isinstance(dataset_cfg, Mapping):
        return OmegaConf.to_container(OmegaConf.create(dict(dataset_cfg)), resolve=True)  # type: ignore[return-value]
    raise DatasetConfigError(f"dataset config must be a mapping (DictConfig or dict), got {type(dataset_cfg).__name__}")


def _get(cfg: Mapping, key: str, kind: type | tuple[type, ...], expected: str, default: Any = DEFAULT) -> Any:
    """cfg[key] (key may be dotted), checked against `kind`; errors name dataset.<key>."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            if default is not DEFAULT:
                return default
            raise DatasetConfigError(f"dataset config: missing key dataset.{key} (expected {expected})")
        node = node[part]
    if node is None and default is not DEFAULT:
        return default
    if not isinstance(node, kind) or (
        isinstance(node, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))
    ):
        raise DatasetConfigError(f"dataset config: dataset.{key} is {node!r}; expected {expected}")
    return node


def validate(dataset_cfg: Mapping | DictConfig) -> dict[str, Any]:
    """The config as a plain dict, with every key the builder reads checked."""
    cfg = _as_dict(dataset_cfg)
    name = _get(cfg, "name", str, "voc_aug, cityscapes or synthetic")
    try:
        labels = label_set(name)
    except KeyError as error:
        raise DatasetConfigError(
            f"dataset config: dataset.name is {name!r}; expected voc_aug, cityscapes or synthetic"
        ) from error
    _get(cfg, "root", (str, Path), "the dataset's root folder")
    layout = _get(cfg, "layout", str, "voc or cityscapes")
    if layout not in LAYOUTS:
        raise DatasetConfigError(f"dataset config: dataset.layout is {layout!r}; expected one of {LAYOUTS}")
    num_classes = _get(cfg, "num_classes", int, "the number of classes")
    if num_classes != labels.num_classes:
        raise DatasetConfigError(
            f"dataset config: dataset.num_classes is {num_classes} but {name} has {labels.num_classes} classes"
        )
    ignore_index = _get(cfg, "ignore_index", int, "the ignore label, 255")
    if ignore_index != labels.ignore_index:
        raise DatasetConfigError(f"dataset config: dataset.ignore_index is {ignore_index}; {name} labels use 255")
    splits = _get(cfg, "splits", Mapping, "a mapping such as {train: trainaug, val: val}")
    for split, list_name in splits.items():
        if not isinstance(list_name, str):
            raise DatasetConfigError(f"dataset config: dataset.splits.{split} is {list_name!r}; expected a list name")
    if layout == "voc":
        _get(cfg, "image_dir", str, "the image folder under VOCdevkit/VOC2012, e.g. JPEGImages")
        _get(cfg, "mask_dir", str, "the label folder under VOCdevkit/VOC2012, e.g. SegmentationClassAug")
    for key in ("mean", "std"):
        value = _get(cfg, key, list, "three numbers (RGB, 0-1 scale)", default=None)
        if value is not None and (len(value) != 3 or not all(isinstance(v, (int, float)) for v in value)):
            raise DatasetConfigError(f"dataset config: dataset.{key} is {value!r}; expected three numbers")
    crop = _get(cfg, "train.crop_size", (int, list), "[height, width] of the training crop", default=None)
    if crop is not None and not (isinstance(crop, int) or (len(crop) == 2 and all(isinstance(v, int) for v in crop))):
        raise DatasetConfigError(f"dataset config: dataset.train.crop_size is {crop!r}; expected [height, width]")
    scale = _get(cfg, "train.scale_range", list, "[low, high] scale factors", default=None)
    if scale is not None and not (len(scale) == 2 and 0 < scale[0] <= scale[1]):
        raise DatasetConfigError(
            f"dataset config: dataset.train.scale_range is {scale!r}; expected [low, high], 0 < low <= high"
        )
    for key in ("train.short_side", "eval.short_side"):
        _get(cfg, key, int, "a side length in pixels or null", default=None)
    _get(cfg, "train.hflip", (int, float), "a flip probability", default=None)
    _get(cfg, "train.photometric", Mapping, "ColorJitter arguments or null", default=None)
    return cfg


def list_name(cfg: Mapping, split: str) -> str:
    splits = cfg["splits"]
    if split not in splits:
        raise DatasetConfigError(
            f"dataset config: no split {split!r} in dataset.splits (has {sorted(splits)}); "
            f"add dataset.splits.{split}=<list name>"
        )
    return splits[split]


def build_transforms(dataset_cfg: Mapping | DictConfig, train: bool) -> SegmentationTransform:
    """The config's training augmentation (train=True) or evaluation transform."""
    cfg = validate(dataset_cfg)
    mean = tuple(cfg.get("mean") or IMAGENET_MEAN)
    std = tuple(cfg.get("std") or IMAGENET_STD)
    if not train:
        return build_eval_transform(short_side=(cfg.get("eval") or {}).get("short_side"), mean=mean, std=std)
    train_cfg = cfg.get("train") or {}
    if train_cfg.get("crop_size") is None:
        raise DatasetConfigError("dataset config: missing key dataset.train.crop_size (expected [height, width])")
    return build_train_transform(
        crop_size=train_cfg["crop_size"],
        scale_range=train_cfg.get("scale_range") or (0.5, 2.0),
        short_side=train_cfg.get("short_side"),
        hflip=train_cfg.get("hflip", 0.5),
        photometric=train_cfg.get("photometric"),
        mean=mean,
        std=std,
        ignore_index=cfg["ignore_index"],
    )


def build_dataset(
    dataset_cfg: Mapping | DictConfig,
    split: str,
    transforms: Any = DEFAULT,
    *,
    check_labels: bool = True,
    verify_files: bool = True,
    augment: bool | None = None,
) -> SegmentationFiles:
    """The dataset of `split` (a key of dataset.splits: train, val). transforms: left out, the
    config's: the training augmentation if `augment` (by default: for the "train" split), else the
    evaluation transform; None, raw tensors (uint8 image, int64 label); or any callable
    (image, label) -> (image, label)."""
    cfg = validate(dataset_cfg)
    if transforms is DEFAULT:
        transforms = build_transforms(cfg, train=split == "train" if augment is None else augment)
    labels = label_set(cfg["name"])
    root = Path(cfg["root"]).expanduser()
    name = list_name(cfg, split)
    if cfg["layout"] == "cityscapes":
        return Cityscapes(
            root, name, label_set=labels, transforms=transforms, check_labels=check_labels, verify_files=verify_files
        )
    return VOCSegmentation(
        root,
        name,
        image_dir=cfg["image_dir"],
        mask_dir=cfg["mask_dir"],
        label_set=labels,
        transforms=transforms,
        check_labels=check_labels,
        verify_files=verify_files,
        prepare_command=PREPARE_COMMANDS.get(cfg["name"], PREPARE_COMMANDS["voc_aug"]),
    )
