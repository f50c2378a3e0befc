"""Datasets and transforms from a dataset config (conf/dataset/*.yaml): a DatasetConfig, DictConfig or dict.

    dataset = build_dataset(cfg.dataset, "train")          # transforms from the config
    dataset = build_dataset(cfg.dataset, "val", transforms=None)   # raw tensors, no transforms

The keys, their defaults and their checks are the schema's: segdcn.config.DatasetConfig.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segdcn.config import DatasetConfig
from segdcn.data.ade20k import ADE20K
from segdcn.data.cityscapes import Cityscapes
from segdcn.data.errors import DatasetConfigError
from segdcn.data.folder import FolderDataset
from segdcn.data.labels import label_set
from segdcn.data.transforms import SegmentationTransform, build_eval_transform, build_train_transform
from segdcn.data.voc import SegmentationFiles, VOCSegmentation

DEFAULT = object()  # build_dataset's transforms: build them from the config

PREPARE_COMMANDS = {
    "voc_aug": "python scripts/prepare_voc.py --voc-root ROOT --sbd-root SBD_ROOT [--download]",
    "synthetic": "python scripts/make_synthetic.py --out ROOT",
}


def list_name(cfg: DatasetConfig, split: str) -> str:
    if split not in cfg.splits:
        raise DatasetConfigError(
            f"dataset config: no split {split!r} in dataset.splits (has {sorted(cfg.splits)}); "
            f"add dataset.splits.{split}=<list name>"
        )
    return cfg.splits[split]


def build_transforms(dataset_cfg: Any, train: bool) -> SegmentationTransform:
    """The config's training augmentation (train=True) or evaluation transform."""
    cfg = DatasetConfig.from_config(dataset_cfg)
    if not train:
        return build_eval_transform(short_side=cfg.eval.short_side, mean=tuple(cfg.mean), std=tuple(cfg.std))
    t = cfg.train
    return build_train_transform(
        crop_size=t.crop_size,
        scale_range=t.scale_range,
        short_side=t.short_side,
        hflip=t.hflip,
        photometric=t.photometric,
        mean=tuple(cfg.mean),
        std=tuple(cfg.std),
        ignore_index=cfg.ignore_index,
    )


def build_dataset(
    dataset_cfg: Any,
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
    cfg = DatasetConfig.from_config(dataset_cfg)
    if transforms is DEFAULT:
        transforms = build_transforms(cfg, train=split == "train" if augment is None else augment)
    labels = label_set(cfg.name, cfg.root)
    root = Path(cfg.root).expanduser()
    name = list_name(cfg, split)
    common = {"label_set": labels, "transforms": transforms, "check_labels": check_labels, "verify_files": verify_files}
    if cfg.layout == "cityscapes":
        return Cityscapes(root, name, **common)
    if cfg.layout == "ade20k":
        return ADE20K(root, name, **common)
    if cfg.layout == "folder":
        return FolderDataset(
            root,
            name,
            reduce_zero_label=cfg.reduce_zero_label,
            val_fraction=cfg.val_fraction,
            split_seed=cfg.split_seed,
            **common,
        )
    return VOCSegmentation(
        root,
        name,
        image_dir=cfg.image_dir,
        mask_dir=cfg.mask_dir,
        prepare_command=PREPARE_COMMANDS.get(cfg.name, PREPARE_COMMANDS["voc_aug"]),
        **common,
    )
