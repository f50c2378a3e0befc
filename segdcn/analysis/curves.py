"""Training curves from the runs' metrics.jsonl, without W&B: loss, mIoU and each layer's offsets.

    runs = read_curves(["outputs/demo/2026-12-01_10-00-00"])    # a sweep: every run below it
    curves_figure(runs).savefig("curves.png")

A run directory holds metrics.jsonl (one JSON object per logged step, segdcn.loggers) and, once
started, summary.json, whose `config` block says how many layers are deformable: the colour of its
lines. Offsets are drawn from the evaluations' `offsets/<layer>/<statistic>` (dots) and, when the
run logged them (logger.offset_every), from the training batches' `train/offsets/...` (thin lines).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from segdcn.ablation.runs import Run
from segdcn.loggers.files import METRICS_FILE, SUMMARY_FILE

EVAL_PREFIX, TRAIN_PREFIX = "offsets/", "train/offsets/"  # segdcn.engine.offsets' keys
# the offset statistics drawn per layer: (statistic, axis label)
OFFSET_PANELS = (
    ("mean_abs_px", "offset length (input-map px)"),
    ("out_of_bounds", "samples out of bounds"),
    ("effective_dilation", "effective dilation (px)"),
)
NO_DEFORMABLE_COLOR = "#7f7f7f"
LAYER_COLORS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


@dataclass
class RunCurves:
    """One run's logged series: key -> ([steps], [values])."""

    path: Path
    dcn_layers: int | None
    seed: Any
    series: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        layers = "?" if self.dcn_layers is None else self.dcn_layers
        seed = "" if self.seed is None else f", seed {self.seed}"
        return f"{self.path.name}: {layers} deformable{seed}"

    def layers(self) -> list[str]:
        """The deformable layers with offsets logged, in the order they were logged (first to last)."""
        names: dict[str, None] = {}
        for key in self.series:
            for prefix in (EVAL_PREFIX, TRAIN_PREFIX):
                if key.startswith(prefix):
                    names[key[len(prefix) :].split("/")[0]] = None
        return list(names)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The lines of a metrics.jsonl; a torn line (a run still writing, or killed mid-line) is skipped."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def read_run(run_dir: Path) -> RunCurves:
    dcn_layers = seed = None
    if (run_dir / SUMMARY_FILE).is_file():
        run = Run.read(run_dir)
        dcn_layers, seed = run.dcn_layers, run.config.get("seed")
    curves = RunCurves(run_dir, dcn_layers, seed)
    for record in read_metrics(run_dir / METRICS_FILE):
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                steps, values = curves.series.setdefault(key, ([], []))
                steps.append(record["step"])
                values.append(float(value))
    return curves


def read_curves(paths: list[str | Path]) -> list[RunCurves]:
    """The runs of run directories and sweep directories (any metrics.jsonl below them), in path order."""
    runs = []
    for given in paths:
        root = Path(given)
        if (root / METRICS_FILE).is_file():
            files = [root / METRICS_FILE]
        elif root.is_dir():
            files = sorted(root.rglob(METRICS_FILE))
        else:
            raise FileNotFoundError(f"{root}: no such run or sweep directory")
        if not files:
            raise FileNotFoundError(f"{root}: no {METRICS_FILE} in it or below (expected a run or sweep directory)")
        runs += [read_run(path.parent) for path in files]
    return runs


def _color(dcn_layers: int | None, palette: dict) -> str:
    if dcn_layers == 0:
        return NO_DEFORMABLE_COLOR
    if dcn_layers not in palette:
        palette[dcn_layers] = LAYER_COLORS[len(palette) % len(LAYER_COLORS)]
    return palette[dcn_layers]


def curves_figure(runs: list[RunCurves], title: str = "") -> Figure:
    """Row 1: training loss and validation mIoU; then one row per deformable layer: offset length,
    out-of-bounds share and effective dilation against iterations. One colour per model.dcn.layers."""
    layers: dict[str, None] = {}
    for run in runs:
        layers.update(dict.fromkeys(run.layers()))
    rows = 1 + len(layers)
    figure = Figure(figsize=(12, 2.6 * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, 3, squeeze=False, sharex=True)  # every panel is against iterations
    palette: dict = {}
    for run in runs:
        color = _color(run.dcn_layers, palette)
        for ax, key in ((axes[0][0], "train/loss"), (axes[0][1], "val/miou")):
            if key in run.series:
                ax.plot(*run.series[key], color=color, marker="o" if key == "val/miou" else None, ms=3, lw=1.2,
                        alpha=0.85, label=run.label)  # fmt: skip
        for row, layer in enumerate(layers, start=1):
            for ax, (stat, _) in zip(axes[row], OFFSET_PANELS, strict=True):
                train = run.series.get(f"{TRAIN_PREFIX}{layer}/{stat}")
                if train:
                    ax.plot(*train, color=color, lw=0.9, alpha=0.7)
                evaluated = run.series.get(f"{EVAL_PREFIX}{layer}/{stat}")
                if evaluated:
                    ax.plot(*evaluated, color=color, marker="o", ms=4, lw=1.2, ls="--")
    axes[0][0].set_ylabel("training loss")
    axes[0][1].set_ylabel("val mIoU")
    for row, layer in enumerate(layers, start=1):
        for ax, (_, label) in zip(axes[row], OFFSET_PANELS, strict=True):
            ax.set_ylabel(label, fontsize=8)
            ax.set_title(layer, fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("iteration")
    for row in axes:
        for ax in row:
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
    legend = axes[0][2]
    legend.axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if not handles:
        handles, labels = axes[0][1].get_legend_handles_labels()
    legend.legend(handles, labels, loc="upper left", fontsize=7, title="run (colour: model.dcn.layers)",
                  title_fontsize=7)  # fmt: skip
    if layers:
        key = "offsets: dots = validation images at evaluations,\nthin lines = training batches (logger.offset_every)"
        legend.text(0.0, 0.02, key, fontsize=7, transform=legend.transAxes)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure
