"""Checkpoints: written atomically, read with torch.load(weights_only=True), and models rebuilt from them.

A checkpoint is a dict of tensors and plain containers only (so it loads without unpickling code):

    model, optimizer, scheduler, scaler   state_dicts (scaler may be None)
    iteration                             optimizer steps done
    best_miou                             best validation mIoU so far (or None)
    config                                the resolved TrainConfig as a YAML string
    rng                                   {"torch", "cuda", "numpy", "python"} generator states
    data                                  the training sampler's state (epoch, position, seed)
    logger                                the logger's resume state (e.g. the W&B run id), optional
    segdcn_version                        the package version that wrote it

    save_checkpoint(run_dir / "checkpoints" / "last.pt", state)
    ckpt = load_checkpoint(path)
    model, cfg = model_from_checkpoint(path)          # the model of ckpt["config"], weights loaded strictly
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

import segdcn
from segdcn.atomic import replace_atomically, temp_prefix

REQUIRED_KEYS = ("model", "config", "segdcn_version")
_PLAIN = (str, int, float, bool, type(None), torch.Tensor, torch.Size, torch.dtype, torch.device)


class CheckpointError(RuntimeError):
    """A file that is not a loadable segdcn checkpoint, or one that does not fit its config."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    pass


def _check_plain(value: Any, where: str) -> None:
    """Only tensors and plain containers: anything else would not load with weights_only=True."""
    if isinstance(value, _PLAIN):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, (str, int, float, bool, type(None))):
                raise TypeError(f"checkpoint entry {where} has a key of type {type(key).__name__}; expected str or int")
            _check_plain(item, f"{where}[{key!r}]")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
        return
    raise TypeError(
        f"checkpoint entry {where} is a {type(value).__name__}; a checkpoint holds only tensors and "
        "plain containers (dict, list, tuple, str, int, float, bool, None)"
    )


def _fsync_dir(directory: Path) -> None:
    """Makes the rename itself durable (the directory entry), where the OS allows opening a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Writes `state` to `path` atomically: a reader sees the old file or the new one, never a part.

    The bytes go to a temporary file in the same directory (so the rename does not cross file
    systems), which is flushed and fsynced before os.replace puts it at `path`. A writer killed
    midway leaves the previous checkpoint and a stray `.<name>.*.tmp`, which the next save removes
    (one writer per checkpoint path: rank 0).
    """
    path = Path(path)
    _check_plain(dict(state), "state")
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(temp_prefix(path) + "*.tmp"):
        stale.unlink(missing_ok=True)
    replace_atomically(path, lambda handle: torch.save(dict(state), handle))
    _fsync_dir(path.parent)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint dict at `path`, loaded with torch.load(weights_only=True).

    Raises CheckpointNotFoundError for a missing file and CheckpointError, naming the file, for one
    that is truncated or corrupt, holds more than tensors and plain containers, or is not a segdcn
    checkpoint (a dict with model, config and segdcn_version).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint {path}: no such file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"checkpoint {path}: holds objects other than tensors and plain containers, so it does not load "
            f"with weights_only=True (not a segdcn checkpoint?): {error}"
        ) from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path}: unreadable (truncated or corrupt file?): {error}") from error
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path}: holds a {type(ckpt).__name__}, not a segdcn checkpoint dict")
    missing = [key for key in REQUIRED_KEYS if key not in ckpt]
    if missing:
        raise CheckpointError(
            f"checkpoint {path}: not a segdcn checkpoint (missing {', '.join(missing)}; has {sorted(ckpt)[:10]})"
        )
    return ckpt


def config_of(ckpt: Mapping[str, Any]) -> DictConfig:
    """The training config stored in a checkpoint (a YAML string) as a DictConfig."""
    config = ckpt["config"]
    if not isinstance(config, str):
        raise CheckpointError(f"checkpoint config is a {type(config).__name__}; expected a YAML string")
    cfg = OmegaConf.create(config)
    if not isinstance(cfg, DictConfig):
        raise CheckpointError("checkpoint config is not a YAML mapping")
    return cfg


def load_model_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """model.load_state_dict(state, strict=True), with an error that names the keys that differ."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(own[key].shape)}"
        for key in set(own) & set(state)
        if isinstance(state[key], torch.Tensor) and state[key].shape != own[key].shape
    )
    if missing or unexpected or shapes:

        def listed(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")

        problems = [
            f"missing in the checkpoint: {listed(missing)}" if missing else "",
            f"not in the model: {listed(unexpected)}" if unexpected else "",
            f"shape mismatch: {listed(shapes)}" if shapes else "",
        ]
        raise CheckpointError(
            f"{source}: weights do not match the model of its config; " + "; ".join(p for p in problems if p)
        )
    model.load_state_dict(state, strict=True)


def model_from_checkpoint(
    ckpt_or_path: Mapping[str, Any] | str | os.PathLike,
    device: str | torch.device = "cpu",
    path: str | os.PathLike | None = None,
) -> tuple[torch.nn.Module, DictConfig]:
    """(model, cfg): the model its config describes (model, dataset.num_classes), with its weights.

    No pretrained weights are fetched: the checkpoint's weights replace them, so the backbone is
    built with pretrained=none. Errors name the file: pass `path` with an already loaded checkpoint.
    """
    from segdcn.models import build_model  # the models pull in the ops extension; only here

    if isinstance(ckpt_or_path, (str, os.PathLike)):
        path = ckpt_or_path
        ckpt = load_checkpoint(ckpt_or_path)
    else:
        ckpt = ckpt_or_path
    source = f"checkpoint {path}" if path is not None else "checkpoint"
    cfg = config_of(ckpt)
    for key in ("model", "dataset"):
        if key not in cfg:
            raise CheckpointError(f"{source}: its config has no `{key}` section")
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg.setdefault("backbone", {})["pretrained"] = "none"
    with warnings.catch_warnings():
        # frozen BN without pretrained weights warns about identity statistics; the checkpoint has the real ones
        warnings.filterwarnings("ignore", message="model.norm=frozen_bn without")
        model = build_model(model_cfg, int(cfg.dataset.num_classes))
    load_model_state(model, ckpt["model"], source)
    return model.to(device), cfg


def checkpoint_version() -> str:
    return segdcn.__version__
