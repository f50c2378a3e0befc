"""The paper's Table 1 or Table 3 filled with runs: rows by model, mean +- std over seeds, paper numbers.

A run belongs to a row by what the row varies: Table 1 by `model.dcn.layers` (the last N 3x3 convs
deformable), Table 3 by (`model.dcn.layers`, `model.backbone.res5_dilation`). Runs that vary
something else (modulated or named deformable layers) or a layer count the paper has no row for
become extra rows without a paper number. All runs must share one dataset and one experiment: a
table mixing them would compare unlike things, so such runs are refused by name.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from segdcn.paper import Paper, PaperTable, load_paper

from .runs import RunResult

# Settings that should not differ between the rows of one ablation; a difference is reported.
SAME_SETTINGS = (
    "model.backbone.name",
    "model.backbone.output_stride",
    "trainer.max_iters",
    "trainer.batch_size",
    "optim.lr",
)
# The dataset whose paper column is shown when the runs' dataset is not in the paper (the synthetic set).
DEFAULT_PAPER_DATASET = "voc_aug"


class MixedRunsError(ValueError):
    """Runs of more than one dataset or experiment (or not the requested ones); the message names them."""


@dataclass
class TableRow:
    label: str  # the paper's row label, or a description of an extra row
    dcn_layers: int
    res5_dilation: int | None
    deformable: list[str]  # names of the deformable layers in the runs' backbone
    runs: list[RunResult] = field(default_factory=list)
    paper_miou: float | None = None  # % on the paper column's dataset
    in_paper: bool = True

    @property
    def mious(self) -> list[float]:
        return [100.0 * r.miou for r in self.runs]

    @property
    def seeds(self) -> list:
        return sorted((r.get("seed") for r in self.runs), key=lambda s: (s is None, s))

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.mious) if self.runs else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.mious) if len(self.runs) > 1 else None

    @property
    def it_per_s(self) -> float | None:
        """The runs' median training iterations per second; None unless every run recorded a finite one."""
        speeds = [r.it_per_s for r in self.runs]
        if not speeds or any(s is None or not math.isfinite(s) or s <= 0 for s in speeds):
            return None
        return statistics.median(speeds)


@dataclass
class AblationTable:
    name: str  # table1 | table3
    title: str
    dataset: str
    experiment: str | None
    paper_dataset: str  # whose paper numbers are shown
    rows: list[TableRow]
    missing_rows: list[str]
    missing_runs: list[str]
    problems: list[str]  # runs left out (unfinished, no mIoU) and unreadable directories
    notes: list[str]

    @property
    def compares_gains(self) -> bool:
        """The runs' dataset is not in the paper: compare gains over the first row, not absolute mIoU."""
        return self.dataset != self.paper_dataset

    def best_run(self, deformable: bool = False) -> RunResult | None:
        """The run with the highest mIoU (the one to export, say); of the rows with deformable layers only
        when `deformable` (an export that has DeformConv nodes)."""
        runs = [run for row in self.rows if row.dcn_layers > 0 or not deformable for run in row.runs]
        return max(runs, key=lambda run: run.miou) if runs else None

    def baseline(self) -> TableRow | None:
        first = self.rows[0] if self.rows else None
        return first if first is not None and first.in_paper and first.runs else None

    def gain(self, row: TableRow) -> float | None:
        base = self.baseline()
        return None if base is None or row.mean is None else row.mean - base.mean

    def seed_gains(self, row: TableRow) -> dict:
        """seed -> this row's mIoU minus the first row's, for the seeds both rows ran once. Runs of one seed
        share the data order and initialisation as far as the rows allow, so these differences vary less
        than the rows' means do, and their signs say how consistent a gain is."""
        base = self.baseline()
        if base is None or row is base:
            return {}

        def by_seed(r: TableRow) -> dict:
            seeds = [run.get("seed") for run in r.runs]
            once = {s for s in seeds if s is not None and seeds.count(s) == 1}
            return {run.get("seed"): 100.0 * run.miou for run in r.runs if run.get("seed") in once}

        ours, first = by_seed(row), by_seed(base)
        return {s: ours[s] - first[s] for s in sorted(ours.keys() & first.keys())}

    def paper_gain(self, row: TableRow) -> float | None:
        first = self.rows[0] if self.rows else None
        if first is None or row.paper_miou is None or first.paper_miou is None:
            return None
        return row.paper_miou - first.paper_miou

    def difference(self, row: TableRow) -> float | None:
        """Ours minus the paper: mIoU on the paper's own dataset, else the gain over the first row."""
        if self.compares_gains:
            ours, paper = self.gain(row), self.paper_gain(row)
        else:
            ours, paper = row.mean, row.paper_miou
        return None if ours is None or paper is None else ours - paper


def _single(runs: list[RunResult], key: str, wanted: str | None) -> str | None:
    """The one value of `key` the runs share (or `wanted`); MixedRunsError names the runs that differ."""
    values = defaultdict(list)
    for run in runs:
        values[run.get(key)].append(run.name)
    if wanted is not None:
        foreign = {v: names for v, names in values.items() if v != wanted}
        if foreign:
            listing = "; ".join(f"{key}={v}: {', '.join(names)}" for v, names in foreign.items())
            raise MixedRunsError(f"the table is for {key}={wanted}, refusing runs of another {key}: {listing}")
        return wanted
    if len(values) > 1:
        listing = "; ".join(f"{key}={v}: {', '.join(names)}" for v, names in values.items())
        raise MixedRunsError(
            f"runs of more than one {key} cannot share a table: {listing}. "
            f"Pass the runs of one {key} only (or --{key.split('.')[0]} to name the one you mean)"
        )
    return next(iter(values)) if values else None


def _one_folder(runs: list[RunResult]) -> None:
    """Every dataset=folder set is called "folder": runs of two roots are two datasets. A run from before
    summary.json recorded the root (None) is not held against the others."""
    roots = defaultdict(list)
    for run in runs:
        if run.get("dataset.root") is not None:
            roots[str(Path(run.get("dataset.root")).expanduser().resolve())].append(run.name)
    if len(roots) > 1:
        listing = "; ".join(f"dataset.root={root}: {', '.join(names)}" for root, names in roots.items())
        raise MixedRunsError(f"runs of dataset=folder on more than one folder cannot share a table: {listing}")


def _layer_names(backbone: str | None, layers: int) -> list[str]:
    """The paper's names of the last `layers` 3x3 convs of `backbone` (e.g. res5a,b,c of ResNet-101)."""
    from segdcn.models.naming import STAGE_BLOCKS, last_conv3x3_paths, paper_name

    try:
        depth = int(str(backbone).removeprefix("resnet"))
    except ValueError:
        return []
    if depth not in STAGE_BLOCKS:
        return []
    try:
        return [paper_name(depth, path) for path in last_conv3x3_paths(depth, layers)]
    except ValueError:
        return []


def _row_key(run: RunResult) -> tuple:
    """(dcn layers, res5 dilation, modulated, named layers): what tells the ablation's models apart."""
    at = run.get("model.dcn.at") or []
    return (
        int(run.get("model.dcn.layers") or 0),
        run.get("model.backbone.res5_dilation"),
        bool(run.get("model.dcn.modulated")),
        tuple(at),
    )


def _extra_label(key: tuple) -> str:
    layers, dilation, modulated, at = key
    parts = [f"named deformable {','.join(at)}" if at else f"{layers} deformable"]
    if dilation is not None:
        parts.append(f"res5 dilation {dilation}")
    if modulated:
        parts.append("modulated (DCNv2)")
    return ", ".join(parts) + " (not in the paper)"


def build_table(
    runs: list[RunResult],
    table: str = "table1",
    *,
    dataset: str | None = None,
    experiment: str | None = None,
    paper_dataset: str | None = None,
    rows: list[int] | None = None,
    problems: list[str] | None = None,
    paper: Paper | None = None,
) -> AblationTable:
    """Group `runs` into the rows of the paper's `table` (table1 | table3).

    dataset/experiment: the table's (default: the one all runs share; others are refused by name).
    paper_dataset: whose paper numbers to show (default: the runs' dataset if the paper has it, else
    voc_aug, and then the difference column compares gains over the first row).
    rows: the paper rows expected, by model.dcn.layers for table1 (default: all of the paper's);
    an expected row without runs is reported missing by name.
    """
    paper = paper or load_paper()
    spec: PaperTable = paper.table(table)
    problems = list(problems or [])
    usable = []
    for run in runs:
        if run.usable:
            usable.append(run)
        else:
            problems.append(f"{run.name}: left out, state {run.state} and mIoU {run.miou} (expected a finished run)")
    if not usable:
        raise ValueError("no finished runs with an mIoU to tabulate" + (": " + "; ".join(problems) if problems else ""))

    dataset = _single(usable, "dataset.name", dataset)
    if dataset == "folder":
        _one_folder(usable)
    experiment = _single(usable, "experiment", experiment)
    if paper_dataset is None:
        paper_dataset = dataset if dataset in spec.datasets() else DEFAULT_PAPER_DATASET
    if paper_dataset not in spec.datasets():
        raise ValueError(f"--paper-dataset {paper_dataset!r}: the paper's {table} has {', '.join(spec.datasets())}")

    backbone = usable[0].get("model.backbone.name")
    grouped: dict[tuple, list[RunResult]] = defaultdict(list)
    for run in usable:
        grouped[_row_key(run)].append(run)

    if rows is not None and table != "table1":
        raise ValueError(f"rows (--rows) selects Table 1's rows by model.dcn.layers; {table} has no such choice")
    expected = [r for r in spec.rows if rows is None or r.dcn_layers in rows]
    table_rows = []
    for prow in spec.rows:
        key = (prow.dcn_layers, prow.res5_dilation, False, ())
        found = grouped.pop(key, [])
        if not found and prow not in expected:
            continue
        table_rows.append(
            TableRow(
                label=prow.label,
                dcn_layers=prow.dcn_layers,
                res5_dilation=prow.res5_dilation,
                deformable=_layer_names(backbone, prow.dcn_layers),
                runs=sorted(found, key=lambda r: (str(r.get("seed")), r.name)),
                paper_miou=prow.miou.get(paper_dataset),
            )
        )
    for key in sorted(grouped, key=str):
        layers, dilation = key[0], key[1]
        table_rows.append(
            TableRow(
                label=_extra_label(key),
                dcn_layers=layers,
                res5_dilation=dilation,
                deformable=list(key[3]) or _layer_names(backbone, layers),
                runs=sorted(grouped[key], key=lambda r: (str(r.get("seed")), r.name)),
                in_paper=False,
            )
        )

    missing_rows = [f"{r.label} ({_row_overrides(r.dcn_layers, r.res5_dilation)})" for r in table_rows if not r.runs]
    all_seeds = sorted({s for r in table_rows for s in r.seeds}, key=str)
    missing_runs = [
        f"{_row_overrides(r.dcn_layers, r.res5_dilation)} seed={s}"
        for r in table_rows
        if r.runs
        for s in all_seeds
        if s not in r.seeds
    ]
    notes = []
    for key in SAME_SETTINGS:
        values = sorted({str(r.get(key)) for r in usable})
        if len(values) > 1:
            notes.append(f"the runs differ in {key}: {', '.join(values)}")
    for row in table_rows:
        if len(row.seeds) != len(set(row.seeds)):
            notes.append(f"{row.label}: several runs with the same seed ({row.seeds}); all are averaged")
    return AblationTable(
        name=table,
        title=spec.title,
        dataset=str(dataset),
        experiment=experiment,
        paper_dataset=paper_dataset,
        rows=table_rows,
        missing_rows=missing_rows,
        missing_runs=missing_runs,
        problems=problems,
        notes=notes,
    )


def _row_overrides(layers: int, dilation: int | None) -> str:
    text = f"model.dcn.layers={layers}"
    return text if dilation is None else f"{text} model.backbone.res5_dilation={dilation}"


def fmt(value: float | None, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:+.1f}" if signed else f"{value:.1f}"
