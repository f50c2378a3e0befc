"""Datasets of segdcn: PASCAL VOC 2012 + SBD, Cityscapes and the synthetic shapes set.

    from segdcn.data import build_dataset, build_loader
    train = build_dataset(cfg.dataset, "train")     # cfg.dataset: conf/dataset/<name>.yaml
    loader = build_loader(train, batch_size=16, train=True, num_workers=2, seed=0)

Modules: labels (class names, palettes), io (reading, label checks), voc (the VOC-layout reader),
voc_aug (trainaug from SBD), cityscapes, synthetic (the generator), transforms (albumentations),
loader (DataLoader, worker seeding), builder (from configs), check (whole-dataset scan), errors.
The names below are imported on first use, so `import segdcn.data` stays light for the scripts.
"""

from __future__ import annotations

import importlib

import cv2

# OpenCV's thread pool does not survive fork: a DataLoader or process-pool worker forked while the
# pool exists can deadlock in its first OpenCV call (seen here in cv2.setNumThreads, inside
# pthread_cond_destroy). Sequential OpenCV in every process keeps the pool from ever starting; the
# worker processes are the parallelism. This runs before any segdcn.data module uses cv2.
cv2.setNumThreads(0)

_EXPORTS = {
    "build_dataset": "segdcn.data.builder",
    "build_transforms": "segdcn.data.builder",
    "build_loader": "segdcn.data.loader",
    "build_train_transform": "segdcn.data.transforms",
    "build_eval_transform": "segdcn.data.transforms",
    "VOCSegmentation": "segdcn.data.voc",
    "Cityscapes": "segdcn.data.cityscapes",
    "SyntheticConfig": "segdcn.data.synthetic",
    "generate_synthetic": "segdcn.data.synthetic",
    "label_set": "segdcn.data.labels",
    "IGNORE_INDEX": "segdcn.data.labels",
    "DatasetError": "segdcn.data.errors",
    "DatasetLayoutError": "segdcn.data.errors",
    "DatasetConfigError": "segdcn.data.errors",
    "LabelValueError": "segdcn.data.errors",
    "UnreadableFileError": "segdcn.data.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'segdcn.data' has no attribute {name!r}")
    attribute = "generate" if name == "generate_synthetic" else name
    return getattr(importlib.import_module(_EXPORTS[name]), attribute)
