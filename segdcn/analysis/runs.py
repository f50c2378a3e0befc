"""Training runs under a directory (e.g. `make demo`'s outputs/demo): their summaries and checkpoints.

    sweep = latest_sweep("outputs/demo")             # the newest sweep (make demo: outputs/demo/<date>_<time>)
    runs = find_runs(sweep)                          # every folder with a summary.json, sorted by path
    by_layers = group_by(runs, "model.dcn.layers")   # {0: [...], 3: [...]}

A run's key settings are under summary["config"] as typed on the command line ("model.dcn.layers",
"seed", ...; segdcn.loggers), its metrics at the top (miou, per_class_iou by class name). Run
directories are read by segdcn.ablation.runs (Run, summary_files), as for the ablation tables; this
module picks the sweep and groups its runs.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from segdcn.ablation.runs import Run, summary_files  # the one reader of run directories
from segdcn.loggers.files import SUMMARY_FILE

_NO_RUNS = f"no {SUMMARY_FILE} below it; expected the run folders of a sweep"


def _runs_dir(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"runs directory {root}: no such folder (run `make demo`, or point SEGDCN_RUNS at runs)"
        )
    return root


def latest_sweep(root: str | Path) -> Path:
    """`root` itself when its runs are its own folders (a sweep: root/<job>/summary.json, or a run);
    else its newest subfolder holding runs. `make demo` writes one sweep per call under
    outputs/demo/<date>_<time>/<job>, so by default the notebooks read the last demo, not all of them."""
    root = _runs_dir(root)
    if (root / SUMMARY_FILE).is_file() or any(root.glob(f"*/{SUMMARY_FILE}")):
        return root
    sweeps = {}
    for summary in summary_files(root):
        sweep = root / summary.relative_to(root).parts[0]
        sweeps[sweep] = max(sweeps.get(sweep, 0.0), summary.stat().st_mtime)
    if not sweeps:
        raise FileNotFoundError(f"runs directory {root}: {_NO_RUNS}")
    return max(sweeps, key=sweeps.get)


def find_runs(root: str | Path, finished_only: bool = True) -> list[Run]:
    """The runs under `root` (any depth), each a folder holding summary.json; errors name the folder."""
    root = _runs_dir(root)
    runs, unfinished = [], []
    for path in summary_files(root):
        try:
            run = Run.read(path.parent)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
        if finished_only and run.summary.get("state", "finished") != "finished":
            unfinished.append(f"{path.parent.name} ({run.summary.get('state')})")  # still training, or stopped
            continue
        runs.append(run)
    if not runs and unfinished:
        raise FileNotFoundError(f"runs directory {root}: no finished run yet; {', '.join(unfinished)}")
    if not runs:
        raise FileNotFoundError(f"runs directory {root}: {_NO_RUNS}")
    return runs


def group_by(runs: list[Run], key: str) -> dict[Any, list[Run]]:
    """Runs grouped by a config key's value ("dcn_layers" groups by Run.dcn_layers), keys sorted."""
    groups: dict[Any, list[Run]] = {}
    for run in runs:
        value = run.dcn_layers if key == "dcn_layers" else run.config.get(key)
        groups.setdefault(value, []).append(run)
    return dict(sorted(groups.items(), key=lambda item: (item[0] is None, item[0])))


def mean_std(values: list[float | None]) -> tuple[float | None, float | None, int]:
    """(mean, sample std or 0 for one value, count) over the values that are not None."""
    present = [v for v in values if v is not None]
    if not present:
        return None, None, 0
    return statistics.fmean(present), statistics.stdev(present) if len(present) > 1 else 0.0, len(present)


def best_deformable_run(sweep: str | Path, layers: int | None = None) -> Run:
    """The finished run of `sweep` with the highest mIoU among those with `layers` deformable layers
    (None: any number but 0) and a checkpoint; the error says which runs were wanted."""
    wanted = "a deformable layer" if layers is None else f"{layers} deformable layers"
    candidates = [
        run
        for run in find_runs(sweep)
        if (run.dcn_layers == layers if layers is not None else run.dcn_layers > 0)
        and run.checkpoint is not None
        and run.miou is not None
    ]
    if not candidates:
        raise FileNotFoundError(f"--sweep {sweep}: no finished run with {wanted} and a checkpoint")
    return max(candidates, key=lambda run: run.miou)
