"""The ablation table as a W&B run beside the training runs it summarises (ablation_table.py --log-wandb).

    target = target_of_runs(run_dirs)          # the project, entity and group the sweep's runs logged to
    run = log_table(table, "ablation_table1.png", out_dir, target)

The run has job_type=ablation and the training runs' group: for a sweep, the group its jobs share
(segdcn.loggers.naming, read back from each job's config.yaml and Hydra's .hydra/hydra.yaml), so the
table sits in the same W&B group as the runs. It logs a wandb.Table of the table's rows (our mIoU
mean and std, seeds, gains, same-seed gains and the paper's numbers: segdcn.ablation.render's
columns) and the plot as an image. Like a training run it is offline unless $WANDB_MODE says
otherwise, written under out_dir/wandb; `wandb sync out_dir/wandb/offline-run-*` uploads it later.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from segdcn.loggers.files import CONFIG_FILE
from segdcn.loggers.naming import job_identity
from segdcn.loggers.wandb_backend import WandbRun, resolve_mode, start_wandb

from .render import TABLE_COLUMNS, table_rows
from .table import AblationTable

JOB_TYPE = "ablation"


@dataclass(frozen=True)
class WandbTarget:
    project: str
    entity: str | None
    group: str | None


def target_of_run(run_dir: Path) -> WandbTarget:
    """Where the training run in `run_dir` logged to W&B, from its config.yaml and Hydra's record of the job."""
    config_file = run_dir / CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(f"{run_dir}: no {CONFIG_FILE}, so its W&B project and group are unknown; give --group")
    cfg = OmegaConf.load(config_file)
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    hydra = OmegaConf.load(hydra_file).hydra if hydra_file.is_file() else None
    return WandbTarget(
        project=OmegaConf.select(cfg, "logger.project", default="segdcn") or "segdcn",
        entity=OmegaConf.select(cfg, "logger.entity", default=None),
        group=job_identity(cfg, hydra).group,
    )


def target_of_runs(run_dirs: Iterable[Path]) -> WandbTarget:
    """The one W&B project, entity and group of the runs; runs of several are refused by name."""
    targets: dict[WandbTarget, list[str]] = {}
    for run_dir in run_dirs:
        targets.setdefault(target_of_run(Path(run_dir)), []).append(str(run_dir))
    if not targets:
        raise ValueError("no runs to take the W&B project and group from")
    if len(targets) > 1:
        found = "; ".join(
            f"group {t.group!r} in {t.entity + '/' if t.entity else ''}{t.project} ({', '.join(runs)})"
            for t, runs in targets.items()
        )
        raise ValueError(f"the runs logged to different W&B groups: {found}; give --group G for the table's run")
    return next(iter(targets))


def log_table(table: AblationTable, plot: Path, out_dir: Path, target: WandbTarget) -> WandbRun | None:
    """A finished W&B run of job_type=ablation holding the table and its plot; None when W&B cannot start
    (its warning says why)."""
    run = start_wandb(
        run_dir=Path(out_dir),
        mode=resolve_mode(None),
        project=target.project,
        entity=target.entity,
        group=target.group,
        name=f"{table.name}: {table.experiment or table.dataset}",
        tags=[JOB_TYPE],
        job_type=JOB_TYPE,
        config={
            "table": table.name,
            "dataset": table.dataset,
            "experiment": table.experiment,
            "paper_dataset": table.paper_dataset,
            "runs": [r.name for row in table.rows for r in row.runs],
        },
        run_id=None,
    )
    if run is None:
        return None
    wandb = run.wandb
    payload = {
        f"{JOB_TYPE}/{table.name}": wandb.Table(columns=list(TABLE_COLUMNS), data=table_rows(table)),
        f"{JOB_TYPE}/{table.name}_plot": wandb.Image(str(plot), caption=table.title),
    }
    run.log("log of the ablation table", payload, step=0)
    best = table.best_run()
    run.update_summary({"best_run": best.name, "best_miou": best.miou})
    run.finish(0)
    return run
