"""The paper's ablation tables from segdcn runs: read the runs, group them into the table's rows, render.

    runs, problems = read_run_dirs(["multirun/2026-11-22/10-00-00"])      # or runs_from_wandb(...)
    table = build_table(runs, "table1", problems=problems)                # raises MixedRunsError
    print(to_markdown(table)); write_csv(table, "table.csv"); plot_layers(table, "table.png")

scripts/ablation_table.py is the command line over these functions; segdcn.ablation.wandb_log logs a
table as a W&B run of job_type=ablation in its runs' group (--log-wandb).
"""

from .render import plot_layers, to_csv, to_markdown, write_csv
from .runs import RunResult, read_run_dirs, run_from_summary, runs_from_wandb
from .table import AblationTable, MixedRunsError, TableRow, build_table

__all__ = [
    "AblationTable",
    "MixedRunsError",
    "RunResult",
    "TableRow",
    "build_table",
    "plot_layers",
    "read_run_dirs",
    "run_from_summary",
    "runs_from_wandb",
    "to_csv",
    "to_markdown",
    "write_csv",
]
