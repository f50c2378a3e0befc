"""What the analysis tools read: a checkpoint's model, its dataset (with Hydra-style overrides), one image.

    model, train_cfg = model_from_checkpoint(ckpt)
    dataset_cfg = dataset_config(train_cfg, ["dataset.root=/data/voc"], ckpt)   # or ["dataset=cityscapes", ...]
    image = prepare_image(rgb_uint8, dataset_cfg)                                   # as the evaluation feeds it

The overrides mean what they mean to segdcn-eval (one rule, segdcn.eval.resolve_dataset_config): by
default the checkpoint's own dataset config, with `dataset.<key>=<value>` applied on top;
`dataset=<name>` takes conf/dataset/<name>.yaml instead.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
from omegaconf import DictConfig


def pop_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """(other arguments, dataset overrides): the `dataset=...`/`dataset.<key>=...` words of a command line,
    wherever they stand (so they never land in an option's list, e.g. after --points)."""
    pattern = re.compile(r"^[+~]{0,2}dataset(\.[\w.]+)?=")
    overrides = [word for word in argv if pattern.match(word)]
    return [word for word in argv if not pattern.match(word)], overrides


def parse_analysis_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The scripts' command line: options through `parser` (whose positional `overrides` catches stray
    words), the dataset overrides wherever they stand (args.overrides), and --size-thresholds as
    args.thresholds (SMALL, LARGE)."""
    rest, overrides = pop_overrides(sys.argv[1:] if argv is None else list(argv))
    args = parser.parse_args(rest)
    if args.overrides:
        parser.error(
            f"unexpected arguments {args.overrides}: only dataset=<name> and dataset.<key>=<value> overrides "
            "go without an option name"
        )
    args.overrides = overrides
    try:
        args.thresholds = tuple(float(v) for v in args.size_thresholds.split(","))
        assert len(args.thresholds) == 2
    except (ValueError, AssertionError):
        parser.error(f"--size-thresholds takes two fractions SMALL,LARGE, e.g. 0.1,0.3; got {args.size_thresholds!r}")
    return args


def split_overrides(overrides: list[str]) -> tuple[str | None, list[str]]:
    """(chosen dataset name or None, dataset.<key> paths set) of `dataset...` overrides; anything else is an error."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from segdcn.eval import dataset_overrides

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception as error:  # Hydra's OverrideParseException; its message names the bad text
        raise ValueError(f"cannot read the overrides {overrides}: {error}") from error
    chosen = None
    for override in parsed:
        key = override.key_or_group
        if key == "dataset":
            chosen = override.value()
        elif not key.startswith("dataset."):
            raise ValueError(
                f"override {override.input_line!r}: only dataset=<name> and dataset.<key>=<value> are accepted here"
            )
    return chosen, dataset_overrides(list(overrides))


def dataset_config(train_cfg: DictConfig, overrides: list[str], ckpt: str | Path = "checkpoint") -> DictConfig:
    """The dataset config for a checkpoint trained with `train_cfg`, under Hydra-style dataset overrides."""
    from segdcn.config import compose
    from segdcn.eval import resolve_dataset_config

    chosen, overridden = split_overrides(overrides)
    cfg = compose("eval", [f"ckpt={ckpt}", *overrides])
    return resolve_dataset_config(cfg, train_cfg, chosen, overridden)


def prepare_image(image: np.ndarray, dataset_cfg: DictConfig) -> torch.Tensor:
    """uint8 [H, W, 3] RGB -> the normalised [3, h, w] tensor the evaluation feeds the model
    (resized to dataset.eval.short_side when set)."""
    from segdcn.data import build_transforms

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}")
    transform = build_transforms(dataset_cfg, train=False)
    tensor, _ = transform(image, np.zeros(image.shape[:2], dtype=np.uint8))
    return tensor


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as uint8 [H, W, 3] RGB; the error names the file."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--image {path}: no such file")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"--image {path}: not a readable image ({error})") from error


def read_label_map(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """A label PNG (class indices, palette or grey) of the image's size as an int64 [H, W] map."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--label {path}: no such file")
    with Image.open(path) as image:
        label = np.asarray(image).astype(np.int64)
    if label.shape != tuple(shape):
        raise ValueError(
            f"--label {path} is {label.shape[1]}x{label.shape[0]}; expected the image's {shape[1]}x{shape[0]}"
        )
    return label


def user_errors() -> tuple[type[BaseException], ...]:
    """The errors a tool reports as one line (a bad argument, file or config), not as a traceback."""
    from hydra.errors import HydraException

    from segdcn.data.errors import DatasetError
    from segdcn.engine.checkpoint import CheckpointError

    return (ValueError, OSError, DatasetError, CheckpointError, HydraException)


def run_tool(main: Callable[[], int], script: str) -> NoReturn:
    """sys.exit(main()) for an analysis script; a user error (a bad argument, file or config, whose
    message names it) ends it with one line instead of a traceback."""
    try:
        sys.exit(main())
    except user_errors() as error:
        sys.exit(f"{Path(script).name}: error: {error}")
