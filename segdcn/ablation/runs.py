"""The one reader of runs: run directories (summary.json) and W&B groups, for the tables and the analysis.

`Run` is a run directory as segdcn leaves it (its summary.json: `miou`, `state`, per-class IoU and
the `config` block of key values under their command-line names); `summary_files` finds them below
a sweep. segdcn.analysis.runs picks and groups these for the notebooks.

The table sees a run as a RunResult: a name, the key config values and the final mIoU. Both sources
end in `run_from_summary`: a run directory's summary and a W&B run (its summary and its full nested
config, from which the same keys are picked). So the table code that the tests run on directories
is the code that runs on W&B groups.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segdcn.loggers.files import SUMMARY_FILE
from segdcn.loggers.keys import KEY_CONFIG


@dataclass(frozen=True)
class RunResult:
    name: str  # a run directory or "entity/project/run_id (run name)"
    config: dict[str, Any]  # KEY_CONFIG values by CLI key ("model.dcn.layers": 3); absent keys are None
    miou: float | None  # final mIoU as a fraction (summary.json's scale); None: the run has none
    state: str  # finished | running | failed | crashed | ...
    it_per_s: float | None = None  # training iterations per second (summary.json's it_per_s), if recorded

    def get(self, key: str) -> Any:
        return self.config.get(key)

    @property
    def usable(self) -> bool:
        return self.state == "finished" and self.miou is not None and math.isfinite(self.miou)


def run_from_summary(name: str, summary: Mapping[str, Any], config: Mapping[str, Any]) -> RunResult:
    """A RunResult from a summary (summary.json or a W&B run summary) and the run's key config values."""
    return RunResult(
        name=name,
        config={key: config.get(key) for key in KEY_CONFIG},
        miou=_number(summary.get("miou")),
        state=str(summary.get("state") or "unknown"),
        it_per_s=_number(summary.get("it_per_s")),
    )


def _number(value: Any) -> float | None:
    """A finite-or-not float of a summary value, None for anything that is not a number."""
    return None if isinstance(value, bool) or not isinstance(value, int | float) else float(value)


# ---- run and sweep directories ----


@dataclass
class Run:
    """A run directory and its summary.json, as segdcn-train (or segdcn-eval) leaves them."""

    path: Path
    summary: dict[str, Any]

    @classmethod
    def read(cls, path: Path) -> Run:
        """The run in folder `path`; OSError or json.JSONDecodeError are left to the caller, who names the file."""
        return cls(path, json.loads((path / SUMMARY_FILE).read_text(encoding="utf-8")))

    @property
    def config(self) -> dict[str, Any]:
        return self.summary.get("config") or {}

    @property
    def miou(self) -> float | None:
        return self.summary.get("miou")

    @property
    def per_class_iou(self) -> dict[str, float | None]:
        return self.summary.get("per_class_iou") or {}

    @property
    def checkpoint(self) -> Path | None:
        for name in ("best.pt", "last.pt"):
            path = self.path / "checkpoints" / name
            if path.is_file():
                return path
        return None

    @property
    def dcn_layers(self) -> int:
        """The number of deformable layers: model.dcn.layers, or the count of model.dcn.at names."""
        at = self.config.get("model.dcn.at") or []
        return len(at) if at else int(self.config.get("model.dcn.layers") or 0)


def summary_files(root: Path) -> list[Path]:
    """Every summary.json in `root` or below it, sorted by path."""
    return sorted(root.rglob(SUMMARY_FILE))


def _job_dirs(root: Path) -> list[Path]:
    """Run directories under `root`: those with summary.json, and Hydra job dirs (.hydra/) without one."""
    with_summary = {path.parent for path in summary_files(root)}
    hydra_jobs = {path.parent for path in root.rglob(".hydra")}
    return sorted(with_summary | hydra_jobs)


def read_run_dirs(paths: Iterable[str | Path]) -> tuple[list[RunResult], list[str]]:
    """Runs from run directories and sweep directories (searched recursively for summary.json).

    Returns (runs, problems): a job directory without summary.json, an unreadable summary, or a path
    holding no run is a problem line naming the path; the runs found are still returned.
    """
    runs, problems = [], []
    for given in paths:
        root = Path(given)
        if not root.is_dir():
            problems.append(f"{root}: not a directory (expected a run or sweep directory holding {SUMMARY_FILE})")
            continue
        found = False
        for run_dir in _job_dirs(root):
            found = True
            summary_path = run_dir / SUMMARY_FILE
            if not summary_path.exists():
                problems.append(f"{run_dir}: no {SUMMARY_FILE} (the job failed before training, or still starts)")
                continue
            try:
                run = Run.read(run_dir)
            except (OSError, json.JSONDecodeError) as error:
                problems.append(f"{summary_path}: unreadable ({error})")
                continue
            runs.append(run_from_summary(str(run_dir), run.summary, run.config))
        if not found:
            problems.append(f"{root}: no {SUMMARY_FILE} in it or below (expected a run or sweep directory)")
    return runs, problems


# ---- W&B ----


def _select(nested: Mapping[str, Any], dotted: str) -> Any:
    node: Any = nested
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    if isinstance(node, Mapping) and set(node) == {"value"}:  # W&B's older {"key": {"value": v}} form
        node = node["value"]
    return node


def _plain(value: Any) -> Any:
    """W&B summary values can be wrapper objects; plain Python values for the table."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def runs_from_wandb(path: str, group: str, api: Any = None) -> tuple[list[RunResult], list[str]]:
    """The runs of W&B group `group` in project `path` ("entity/project"), through wandb.Api().

    segdcn logs the whole resolved config as the run config, so the key values are picked from it by
    their dotted CLI names; the run summary holds `miou` like summary.json, and the run state is W&B's.
    """
    if path.count("/") != 1 or not all(path.split("/")):
        raise ValueError(f"--wandb expects ENTITY/PROJECT, got {path!r}")
    if api is None:
        import wandb

        api = wandb.Api()
    runs, problems = [], []
    for run in api.runs(path, filters={"group": group}):
        config = {key: _select(run.config, key) for key in KEY_CONFIG}
        summary = {key: _plain(run.summary.get(key)) for key in ("miou", "state")}
        summary["state"] = run.state
        runs.append(run_from_summary(f"{path}/{run.id} ({run.name})", summary, config))
    if not runs:
        problems.append(f"W&B {path}: no runs in group {group!r}")
    return runs, problems
