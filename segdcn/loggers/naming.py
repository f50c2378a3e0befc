"""W&B group and run names from the Hydra job that runs the training.

A sweep's runs must land in one W&B group without the user naming it, so the group defaults to
the sweep's identity: its output directory, which Hydra computes once for all the sweep's jobs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Hydra's default sweep dir is multirun/<date>/<time>; a bare time would not tell two days apart.
_TIME_ONLY = re.compile(r"^\d{2}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class JobIdentity:
    group: str | None
    name: str | None


def hydra_node() -> DictConfig | None:
    """The running Hydra app's `hydra` node, or None outside a Hydra app (tests, notebooks)."""
    try:
        from hydra.core.hydra_config import HydraConfig
    except ImportError:
        return None
    return HydraConfig.get() if HydraConfig.initialized() else None


def sweep_group(sweep_dir: str) -> str:
    path = Path(sweep_dir)
    if _TIME_ONLY.match(path.name) and path.parent.name:
        return f"{path.parent.name}_{path.name}"
    return path.name


# Overrides that say where or how a run ran, not what it trains: left out of run names.
_NOT_IN_NAMES = (
    "dataset.root",
    "trainer.num_workers",
    "eval.num_workers",
    "trainer.progress",
    "trainer.resume",
    "trainer.device",
    "logger.",
    "hydra.",
)


def run_name(task_overrides: list[str]) -> str:
    """The job's command-line overrides that define the experiment, e.g. "model.dcn.layers=3,seed=1"."""
    kept = []
    for override in task_overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if not any(key == p or (p.endswith(".") and key.startswith(p)) for p in _NOT_IN_NAMES):
            kept.append(override)
    return ",".join(kept)


def job_identity(cfg: DictConfig, hydra: DictConfig | None) -> JobIdentity:
    """Group: logger.group, else the sweep (multirun), else the experiment. Name: the job's overrides."""
    group = OmegaConf.select(cfg, "logger.group", default=None)
    experiment = OmegaConf.select(cfg, "experiment", default=None)
    if hydra is None:
        return JobIdentity(group=group or experiment, name=None)
    multirun = str(_get(hydra, "mode", "")).endswith("MULTIRUN")
    task = _get(hydra, "overrides.task", None)
    overrides = run_name(list(task)) if task is not None else _get(hydra, "job.override_dirname", "") or ""
    if multirun:
        sweep_dir = _get(hydra, "sweep.dir", None)
        num = _get(hydra, "job.num", None)
        return JobIdentity(
            group=group or (sweep_group(str(sweep_dir)) if sweep_dir else experiment),
            name=overrides or (f"{_get(hydra, 'job.name', 'job')}-{num}" if num is not None else None),
        )
    # A single run: W&B's generated name unless the command line overrode something.
    return JobIdentity(group=group or experiment, name=overrides or None)


def _get(node: DictConfig, key: str, default: Any) -> Any:
    return OmegaConf.select(node, key, default=default, throw_on_missing=False)
