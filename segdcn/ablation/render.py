"""An AblationTable as Markdown (printed), CSV (one line per row) and a PNG plot of mIoU vs deformable layers."""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path

from segdcn.paper import load_paper

from .table import AblationTable, TableRow, fmt

DATASET_NAMES = {"voc_aug": "VOC", "cityscapes": "Cityscapes"}


def _mean_std(row: TableRow) -> str:
    if row.mean is None:
        return "missing"
    return fmt(row.mean) if row.std is None else f"{fmt(row.mean)} +- {fmt(row.std)}"


def _columns(table: AblationTable) -> list[str]:
    paper = DATASET_NAMES.get(table.paper_dataset, table.paper_dataset)
    diff = f"diff (gain - paper {paper} gain)" if table.compares_gains else "diff (ours - paper)"
    return [
        "row",
        "deformable layers",
        "seeds",
        f"mIoU {table.dataset} (ours)",
        "gain (ours)",
        f"paper mIoU {paper}",
        "paper gain",
        diff,
    ]


def _cells(table: AblationTable, row: TableRow) -> list[str]:
    return [
        row.label,
        ", ".join(row.deformable) if row.deformable else ("none" if row.dcn_layers == 0 else "-"),
        ",".join(str(s) for s in row.seeds) or "-",
        _mean_std(row),
        fmt(table.gain(row), signed=True),
        fmt(row.paper_miou),
        fmt(table.paper_gain(row), signed=True),
        fmt(table.difference(row), signed=True),
    ]


def _seed_gains(table: AblationTable, row: TableRow) -> str:
    """The gain over the first row seed by seed, with its mean, std and how many are positive."""
    gains = table.seed_gains(row)
    if not gains:
        return ""
    values = list(gains.values())
    mean = fmt(statistics.fmean(values), signed=True)
    spread = f"{mean} +- {fmt(statistics.stdev(values))}" if len(values) > 1 else mean
    seeds = ", ".join(f"{fmt(gain, signed=True)} (seed {seed})" for seed, gain in gains.items())
    positive = sum(value > 0 for value in values)
    return f"{spread} over {len(values)} seeds, {positive} of {len(values)} positive: {seeds}"


def _speeds(table: AblationTable) -> str:
    """Each row's training iterations per second and its time per iteration over the first row's; empty
    unless every run of every row recorded its speed (runs on other machines or settings compare only
    roughly: the line says what the runs measured, not what the layers cost)."""
    speeds = [row.it_per_s for row in table.rows]
    if not table.rows or any(s is None for s in speeds):
        return ""
    first = speeds[0]
    return "; ".join(
        f"{row.label} {speed:.1f} it/s" + ("" if i == 0 else f" ({first / speed:.2f}x the first row's time)")
        for i, (row, speed) in enumerate(zip(table.rows, speeds, strict=True))
    )


def to_markdown(table: AblationTable) -> str:
    """The table with a heading, then the notes, missing rows and runs, and the runs left out."""
    paper = load_paper()
    lines = [
        f"### {table.title}",
        "",
        f"Ours: dataset {table.dataset}, experiment {table.experiment}; mIoU (%) mean +- std over seeds. "
        f"Paper: {paper.citation}, {paper.datasets.get(table.paper_dataset, table.paper_dataset)}.",
    ]
    if table.compares_gains:
        lines.append(
            f"The paper has no {table.dataset} numbers: the diff column compares our gain over the first row "
            f"with the paper's gain on {DATASET_NAMES.get(table.paper_dataset, table.paper_dataset)}."
        )
    lines.append("")
    columns = _columns(table)
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "|".join("---" if i < 3 else "---:" for i in range(len(columns))) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(_cells(table, row)) + " |")
    extra = [f"- same-seed gain, {row.label}: {line}" for row in table.rows if (line := _seed_gains(table, row))]
    if speed := _speeds(table):
        extra.append(f"- training speed (median of the runs' iterations/s): {speed}")
    extra += [f"- missing row: {m}" for m in table.missing_rows]
    extra += [f"- missing run: {m}" for m in table.missing_runs]
    extra += [f"- left out: {p}" for p in table.problems]
    extra += [f"- note: {n}" for n in table.notes]
    if extra:
        lines += [""] + extra
    return "\n".join(lines) + "\n"


TABLE_COLUMNS = (
    "table", "dataset", "experiment", "row", "dcn_layers", "res5_dilation", "deformable_layers", "seeds",
    "runs", "miou_mean", "miou_std", "gain", "seed_gain_mean", "seed_gain_std", "seed_gain_seeds",
    "paper_dataset", "paper_miou", "paper_gain", "difference",
)  # fmt: skip


def table_rows(table: AblationTable) -> list[list]:
    """One list per row in TABLE_COLUMNS' order: numbers unrounded, None where there is none (the CSV
    and the W&B table of the same rows)."""
    rows = []
    for row in table.rows:
        seed_gains = table.seed_gains(row)
        gains = list(seed_gains.values())
        rows.append(
            [
                table.name, table.dataset, table.experiment, row.label, row.dcn_layers, row.res5_dilation,
                " ".join(row.deformable), " ".join(str(s) for s in row.seeds), len(row.runs), row.mean, row.std,
                table.gain(row), statistics.fmean(gains) if gains else None,
                statistics.stdev(gains) if len(gains) > 1 else None, " ".join(str(s) for s in seed_gains),
                table.paper_dataset, row.paper_miou, table.paper_gain(row), table.difference(row),
            ]
        )  # fmt: skip
    return rows


def to_csv(table: AblationTable) -> str:
    """Machine-readable: numbers unrounded, empty where there is none."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TABLE_COLUMNS)
    for row in table_rows(table):
        writer.writerow([_num(v) if isinstance(v, float) or v is None else v for v in row])
    return out.getvalue()


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def write_csv(table: AblationTable, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(to_csv(table), encoding="utf-8")
    return path


def plot_layers(table: AblationTable, path: str | Path) -> Path:
    """mIoU against the number of deformable layers: ours (mean, std bars, every seed) and the paper's."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on clusters and CI
    import matplotlib.pyplot as plt

    rows = [r for r in table.rows if r.runs and r.res5_dilation is None]
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    if rows:
        xs = [r.dcn_layers for r in rows]
        ax.errorbar(xs, [r.mean for r in rows], yerr=[r.std or 0.0 for r in rows], fmt="o-", capsize=4,
                    label=f"ours ({table.dataset}, mean ± std)")  # fmt: skip
        for r in rows:
            ax.scatter([r.dcn_layers] * len(r.mious), r.mious, s=10, color="grey", alpha=0.6, zorder=3)
    paper_rows = [r for r in table.rows if r.in_paper and r.paper_miou is not None and r.res5_dilation is None]
    if paper_rows:
        name = DATASET_NAMES.get(table.paper_dataset, table.paper_dataset)
        target = ax.twinx() if table.compares_gains else ax  # other dataset: its own scale
        target.plot([r.dcn_layers for r in paper_rows], [r.paper_miou for r in paper_rows], "s--", color="tab:red",
                    label=f"paper ({name})")  # fmt: skip
        if target is not ax:
            target.set_ylabel(f"paper mIoU on {name} (%)", color="tab:red")
            target.legend(loc="lower right")
    ax.set_xticks(sorted({r.dcn_layers for r in rows + paper_rows}))  # the table's rows, not fractions
    ax.set_xlabel("deformable 3x3 layers (the last N)")
    ax.set_ylabel(f"mIoU on {table.dataset} (%)")
    ax.set_title(f"{table.name}: {table.experiment}", fontsize=10)
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
