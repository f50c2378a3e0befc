#!/usr/bin/env python
"""The paper's ablation tables from segdcn runs: our mIoU (mean +- std over seeds), the paper's, the difference.

    python scripts/ablation_table.py multirun/2026-11-22/10-00-00                 # a sweep: Table 1
    python scripts/ablation_table.py --table 3 multirun/.../table3 outputs/.../deformable
    python scripts/ablation_table.py --wandb my-team/segdcn --group 2026-11-22_10-00-00
    python scripts/ablation_table.py outputs/demo/2026-11-22_10-00-00 --rows 0,3  # only these rows expected
    python scripts/ablation_table.py outputs/demo/2026-11-22_10-00-00 --log-wandb # also a W&B run beside the runs

Reads each run's summary.json (run directories, or sweep directories searched recursively), or the
runs of one W&B group through wandb.Api(). Prints the table as Markdown and writes it as CSV, with a
PNG plot of mIoU against the number of deformable layers, to --out (default: the first directory,
or the current one with --wandb), with best_run.txt naming the run of the highest mIoU. All runs must
share one dataset.name and one experiment; runs of another are refused by name (exit 2). Missing
rows, missing seeds and runs left out (unfinished, no summary.json) are listed by name under the table.
With --results FILE, the same Markdown (the table and its same-seed gain lines) also goes to FILE
under the command, commit, date, machine and library versions (segdcn.provenance); `make demo`
writes docs/results/demo.md so. With --log-wandb, the table (a wandb.Table of the CSV's columns) and
its plot also go to a W&B run of job_type=ablation in the runs' group (the sweep's, as its jobs logged
it; --group G sets another), offline unless $WANDB_MODE says otherwise, under --out's wandb/ folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from segdcn.ablation import (
    MixedRunsError,
    build_table,
    plot_layers,
    read_run_dirs,
    runs_from_wandb,
    to_markdown,
    write_csv,
)
from segdcn.provenance import add_results_argument, provenance, tool_argv, write_results


def parse_rows(text: str) -> list[int]:
    try:
        rows = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        rows = []
    if not rows or min(rows) < 0:
        raise argparse.ArgumentTypeError(f"--rows takes numbers of deformable layers such as 0,3, got {text!r}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="*", type=Path, metavar="DIR", help="run or sweep directories")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read the runs of --group from W&B instead")
    parser.add_argument("--group", help="the W&B group (a sweep's runs share one: its directory's name)")
    parser.add_argument("--table", choices=("1", "3"), default="1", help="the paper's Table 1 (default) or 3")
    parser.add_argument("--dataset", help="the table's dataset.name (default: the one all runs share)")
    parser.add_argument("--experiment", help="the table's experiment (default: the one all runs share)")
    parser.add_argument(
        "--paper-dataset",
        choices=("voc_aug", "cityscapes"),
        help="the paper column (default: the runs' dataset, or voc_aug for a dataset the paper lacks)",
    )
    parser.add_argument("--rows", type=parse_rows, help="Table 1 rows expected, by deformable layers (e.g. 0,3)")
    parser.add_argument("--out", type=Path, help="folder for ablation_table{1,3}.{csv,png,md}")
    parser.add_argument(
        "--log-wandb", action="store_true", help="also log the table and plot as a W&B run (job_type=ablation)"
    )
    add_results_argument(parser, "the table")
    args = parser.parse_args(argv)

    if args.wandb:
        if args.dirs or not args.group:
            parser.error("--wandb ENTITY/PROJECT takes --group G and no directories")
        runs, problems = runs_from_wandb(args.wandb, args.group)
        out = args.out or Path(".")
    else:
        if not args.dirs:
            parser.error("give run or sweep directories, or --wandb ENTITY/PROJECT --group G")
        if args.group and not args.log_wandb:
            parser.error(
                "--group G goes with --wandb ENTITY/PROJECT (the runs to read) or --log-wandb (the table's run)"
            )
        runs, problems = read_run_dirs(args.dirs)
        out = args.out or args.dirs[0]

    try:
        table = build_table(
            runs,
            f"table{args.table}",
            dataset=args.dataset,
            experiment=args.experiment,
            paper_dataset=args.paper_dataset,
            rows=args.rows,
            problems=problems,
        )
    except MixedRunsError as error:
        print(f"ablation_table.py: {error}", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"ablation_table.py: {error}", file=sys.stderr)
        return 1

    markdown = to_markdown(table)
    print(markdown)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"ablation_{table.name}"
    stem.with_suffix(".md").write_text(markdown, encoding="utf-8")
    written = [write_csv(table, stem.with_suffix(".csv")), plot_layers(table, stem.with_suffix(".png"))]
    best = table.best_run()
    # best_run.txt: the best run's directory (or W&B path), for the steps that follow (e.g. export)
    (out / "best_run.txt").write_text(best.name + "\n", encoding="utf-8")
    print(f"best run: {best.name} (mIoU {100 * best.miou:.1f})")
    written.append(out / "best_run.txt")
    # best_deformable_run.txt: the same among the runs with deformable layers, if there are any (make demo
    # exports it, so that the ONNX file has DeformConv nodes whichever row won)
    if (deformable := table.best_run(deformable=True)) is not None:
        (out / "best_deformable_run.txt").write_text(deformable.name + "\n", encoding="utf-8")
        written.append(out / "best_deformable_run.txt")
    if args.results:
        title = f"Table {args.table} ablation: {table.dataset}, experiment {table.experiment}"
        body = markdown + f"\nbest run: {best.name} (mIoU {100 * best.miou:.1f})\n"
        written += write_results(args.results, title, body, provenance(tool_argv(__file__, argv)))
    print("wrote " + ", ".join(str(p) for p in [stem.with_suffix(".md"), *written]))
    if args.log_wandb:
        return log_to_wandb(args, table, runs, stem.with_suffix(".png"), out)
    return 0


def log_to_wandb(args: argparse.Namespace, table, runs, plot: Path, out: Path) -> int:
    from segdcn.ablation.wandb_log import WandbTarget, log_table, target_of_runs

    try:
        if args.wandb:
            entity, project = args.wandb.split("/")
            target = WandbTarget(project, entity, args.group)
        else:
            target = target_of_runs(Path(run.name) for run in runs)
            if args.group:
                target = WandbTarget(target.project, target.entity, args.group)
    except (OSError, ValueError) as error:
        print(f"ablation_table.py: --log-wandb: {error}", file=sys.stderr)
        return 1
    run = log_table(table, plot, out, target)
    if run is None:
        print("ablation_table.py: --log-wandb: the W&B run could not start (see the warning above)", file=sys.stderr)
        return 1
    print(f"W&B run {run.id} ({run.mode}, job_type=ablation, group {target.group}) in {run.dir}")
    if run.mode == "offline":
        print(f"upload it with: wandb sync {run.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
