"""Exported files as a W&B artifact of type `model`: to the active W&B run, or to a run started for it.

    info = log_model_artifact(files, "deeplab-resnet101-dcn3-voc_aug", metadata, out_dir=out, logger_cfg=cfg.logger,
                              start=cfg.export.wandb)

A process that already has a W&B run (a notebook, a training script exporting at its end) gets the
artifact in that run. Otherwise, with export.wandb=true, a run of job type `export` starts through the
same guarded start as training (segdcn.loggers.wandb_backend: offline unless logger.mode or $WANDB_MODE
says otherwise, under <out>/wandb). As in training, W&B failing costs a warning, never the export: the
files are written and checked by then.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

ARTIFACT_TYPE = "model"


def active_run() -> Any:
    """The process's W&B run, if wandb is imported and wandb.run is set (never imports wandb itself).
    Runs started with reinit="create_new", as segdcn's trainer starts them, do not set wandb.run."""
    wandb = sys.modules.get("wandb")
    return getattr(wandb, "run", None) if wandb is not None else None


def artifact_name(name: str) -> str:
    """W&B artifact names take letters, digits, dashes, underscores and dots."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


def _artifact(wandb: Any, files: Sequence[Path], name: str, metadata: Mapping[str, Any]):
    artifact = wandb.Artifact(artifact_name(name), type=ARTIFACT_TYPE, metadata=dict(metadata))
    for path in files:
        artifact.add_file(str(path), name=Path(path).name)
    return artifact


def log_model_artifact(
    files: Sequence[str | os.PathLike],
    name: str,
    metadata: Mapping[str, Any],
    *,
    out_dir: str | os.PathLike,
    logger_cfg: DictConfig | Mapping[str, Any] | None = None,
    start: bool = False,
    run: Any = None,
) -> dict[str, Any] | None:
    """Logs `files` as artifact `name` of type model to `run` (a wandb Run), else to the active run
    (wandb.run), else, with `start`, to a new run; returns {name, type, run_id, mode, dir}, or None when
    there was no run to log to or W&B failed (with a warning)."""
    files = [Path(f) for f in files]
    run = run if run is not None else active_run()
    if run is not None:
        try:
            import wandb

            run.log_artifact(_artifact(wandb, files, name, metadata))
        except Exception as exc:  # any wandb failure: the files stay, one warning says what was not logged
            log.warning("W&B artifact %s not logged to the active run (%s: %s)", name, type(exc).__name__, exc)
            return None
        return {"name": artifact_name(name), "type": ARTIFACT_TYPE, "run_id": run.id, "mode": None, "dir": None}
    if not start:
        return None
    return _log_in_new_run(files, name, metadata, Path(out_dir), logger_cfg)


def _log_in_new_run(
    files: list[Path], name: str, metadata: Mapping[str, Any], out_dir: Path, logger_cfg
) -> dict[str, Any] | None:
    from segdcn.loggers.wandb_backend import resolve_mode, start_wandb

    cfg = OmegaConf.create(dict(logger_cfg) if isinstance(logger_cfg, Mapping) else logger_cfg or {})
    mode = resolve_mode(OmegaConf.select(cfg, "mode", default=None))
    if mode == "disabled":
        log.warning("export.wandb=true but W&B is disabled (logger.mode or $WANDB_MODE); artifact %s not logged", name)
        return None
    run = start_wandb(
        run_dir=out_dir,
        mode=mode,
        project=OmegaConf.select(cfg, "project", default="segdcn"),
        entity=OmegaConf.select(cfg, "entity", default=None),
        group=OmegaConf.select(cfg, "group", default=None),
        name=f"export-{artifact_name(name)}",
        tags=list(OmegaConf.select(cfg, "tags", default=[]) or []),
        job_type=OmegaConf.select(cfg, "job_type", default="export"),
        config=dict(metadata),
        run_id=None,
    )
    if run is None:
        return None  # start_wandb warned
    logged = []
    run.call("artifact logging", lambda r: logged.append(r.log_artifact(_artifact(run.wandb, files, name, metadata))))
    run_id, run_mode, run_dir = run.id, run.mode, run.dir
    run.finish(0)
    if not logged:
        return None
    if run_mode == "offline":
        print(f"W&B artifact {artifact_name(name)} is in the offline run {run_dir}; upload it: wandb sync {run_dir}")
    return {"name": artifact_name(name), "type": ARTIFACT_TYPE, "run_id": run_id, "mode": run_mode, "dir": str(run_dir)}
