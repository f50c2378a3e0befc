"""The metadata JSON that travels with an exported model: what a program needs to feed it and read it.

    meta = model_metadata(train_cfg, checkpoint="runs/x/checkpoints/best.pt", iteration=30000)
    write_metadata("exports/model.onnx", {**meta, "format": "onnx"})     # -> exports/model.onnx.json
    meta = read_metadata("exports/model.onnx")                           # MetadataError if it is missing

Each exported file gets its own `<file>.json` (model.onnx.json, model.pt2.json), so two formats of one
model never share or overwrite a description. Classes, palette and the Cityscapes label ids come from
segdcn.data.labels and cityscapesscripts (never retyped); the training config's key values are the ones
summary.json records (segdcn.loggers.key_config), so one vocabulary describes runs and their exports.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

import segdcn
from segdcn.export.errors import MetadataError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def metadata_path(model_file: str | os.PathLike) -> Path:
    """`<file>.json` next to the exported file."""
    model_file = Path(model_file)
    return model_file.with_name(model_file.name + ".json")


def _labels(dataset: DictConfig) -> tuple[list[str], list[list[int]], list[int] | None]:
    """(class names, [r, g, b] per class, trainId -> Cityscapes label id or None) of the dataset config."""
    from segdcn.data.labels import label_set, voc_palette

    num_classes = int(dataset.num_classes)
    try:
        labels = label_set(str(dataset.name), OmegaConf.select(dataset, "root", default=None))
        names, colors = list(labels.names), [list(c) for c in labels.colors]
    except KeyError:
        # a dataset segdcn has no label set for: numbered classes in VOC's colours, still usable
        log.warning("no label set for dataset %s: classes are named class_0..class_%d", dataset.name, num_classes - 1)
        names, colors = [f"class_{i}" for i in range(num_classes)], [list(c) for c in voc_palette(num_classes)]
    if len(names) != num_classes:
        raise MetadataError(
            f"dataset.num_classes={num_classes} but the label set of {dataset.name} has {len(names)} classes"
        )
    label_ids = None
    if OmegaConf.select(dataset, "layout", default=None) == "cityscapes":
        from segdcn.engine.cityscapes_official import train_id_to_id

        label_ids = [int(v) for v in train_id_to_id()[:num_classes]]
    return names, colors, label_ids


def model_metadata(
    train_cfg: DictConfig, *, checkpoint: str | None = None, iteration: int | None = None
) -> dict[str, Any]:
    """The description of a model trained with `train_cfg` (a checkpoint's config), without format details."""
    from segdcn.loggers import key_config

    dataset = train_cfg.dataset
    names, colors, label_ids = _labels(dataset)
    crop = OmegaConf.select(train_cfg, "dataset.train.crop_size", default=None)
    short_side = OmegaConf.select(train_cfg, "dataset.eval.short_side", default=None)
    mean = [float(v) for v in OmegaConf.select(train_cfg, "dataset.mean", default=[0.485, 0.456, 0.406])]
    std = [float(v) for v in OmegaConf.select(train_cfg, "dataset.std", default=[0.229, 0.224, 0.225])]
    return {
        "schema": SCHEMA_VERSION,
        "segdcn_version": segdcn.__version__,
        "dataset": str(dataset.name),
        "num_classes": len(names),
        "classes": names,
        "palette": colors,
        "ignore_index": int(OmegaConf.select(train_cfg, "dataset.ignore_index", default=255)),
        "label_ids": label_ids,  # Cityscapes: label id of each trainId (the benchmark's PNGs); else null
        "input": {
            "name": INPUT_NAME,
            "layout": "NCHW",
            "dtype": "float32",
            "channels": "RGB",
            # pixel = (rgb / 255 - mean) / std, as segdcn's evaluation transform (albumentations Normalize)
            "normalization": {"scale": 1 / 255, "mean": mean, "std": std},
            "dynamic_axes": {"0": "batch", "2": "height", "3": "width"},
            "min_size": int(OmegaConf.select(train_cfg, "model.backbone.output_stride", default=16)) + 1,
            # test-time resizing (the shorter side, or null for none) and the training crop as the window
            "short_side": None if short_side is None else int(short_side),
            "window": None if crop is None else [int(v) for v in crop],
        },
        "output": {
            "name": OUTPUT_NAME,
            "layout": "NCHW",
            "dtype": "float32",
            "meaning": "class logits at the input's height and width; argmax over axis 1 gives the class index",
        },
        "config": key_config(train_cfg),
        "model": OmegaConf.to_container(train_cfg.model, resolve=True),
        "checkpoint": {"path": checkpoint, "iteration": iteration},
    }


def write_metadata(model_file: str | os.PathLike, metadata: dict[str, Any]) -> Path:
    """Writes `<model_file>.json` atomically and returns its path."""
    from segdcn.loggers.files import write_json_atomic

    path = metadata_path(model_file)
    write_json_atomic(path, {**metadata, "file": Path(model_file).name})
    if Path(model_file).exists():  # readable by whoever may read the model (the temp file was private)
        os.chmod(path, Path(model_file).stat().st_mode & 0o777)
    return path


def read_metadata(model_file: str | os.PathLike) -> dict[str, Any]:
    """The metadata written next to `model_file` by segdcn-export; MetadataError names what is missing."""
    path = metadata_path(model_file)
    if not path.is_file():
        raise MetadataError(
            f"{model_file} has no metadata: expected {path} next to it (segdcn-export writes it with the model; "
            "it holds the classes, palette and input normalisation needed to run the file)"
        )
    try:
        metadata = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise MetadataError(f"metadata {path} of {model_file} is not readable JSON: {error}") from error
    missing = [key for key in ("classes", "palette", "input", "output") if key not in metadata]
    if not isinstance(metadata, dict) or missing:
        raise MetadataError(f"metadata {path} of {model_file} is not segdcn-export's (missing {', '.join(missing)})")
    return metadata
