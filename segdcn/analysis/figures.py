"""Figures: sampling locations over an image (the paper's Figures 5-7) and effective dilation by size (Table 2).

matplotlib only, drawn on Figure/Axes objects (no pyplot state), so scripts save them headless and
notebooks show them inline.
"""

from __future__ import annotations

import numpy as np
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .object_size import SIZE_GROUPS
from .sampling import Trace

# one colour per traced layer, from the first (most points) to the last; the activation in green
LAYER_COLORS = ("#d62728", "#ff7f0e", "#1f77b4", "#9467bd", "#8c564b", "#e377c2")
ACTIVATION_COLOR = "#2ca02c"


def draw_trace(
    ax: Axes,
    image: np.ndarray,
    trace: Trace,
    scale: tuple[float, float] = (1.0, 1.0),
    title: str = "",
    requested: tuple[float, float] | None = None,
):
    """The image, the sampling locations of each traced layer (colour by layer) and the activation.

    scale: (sy, sx) from the model input's pixels to the image's; points map through pixel centres.
    requested: the (y, x) image point asked for (a cross), which moved to the nearest activation.
    """
    height, width = image.shape[:2]
    ax.imshow(image, extent=(-0.5, width - 0.5, height - 0.5, -0.5))

    def to_image(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (points[:, 1] + 0.5) * scale[1] - 0.5, (points[:, 0] + 0.5) * scale[0] - 0.5

    layers = list(reversed(trace.layers))  # the first layer (most points) drawn first, underneath
    for depth, layer in enumerate(layers):
        xs, ys = to_image(layer.points.numpy())
        ax.scatter(
            xs,
            ys,
            s=4.0 if depth == 0 else 10.0 + 8.0 * depth,  # fewer points, larger markers
            c=LAYER_COLORS[depth % len(LAYER_COLORS)],
            alpha=0.55 if depth == 0 else 0.85,
            linewidths=0,
            label=f"{layer.paper_name}: {len(layer.points)} points",
        )
    ax_x, ax_y = to_image(trace.activation.numpy()[None])
    ax.scatter(ax_x, ax_y, s=90, marker="*", c=ACTIVATION_COLOR, edgecolors="white", linewidths=0.8, label="activation")
    if requested is not None:
        ax.scatter(
            [requested[1]],
            [requested[0]],
            s=50,
            marker="+",
            c="black",
            linewidths=1.2,
            path_effects=[patheffects.withStroke(linewidth=3, foreground="white")],  # visible on any image
            label="requested point",
        )
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def trace_figure(
    image: np.ndarray,
    traces: list[tuple[str, Trace]],
    scale=(1.0, 1.0),
    suptitle: str = "",
    requested: list[tuple[float, float]] | None = None,
) -> Figure:
    """One panel per (title, trace), side by side, with one legend for the layers; `requested`: the
    (y, x) image points asked for, one per trace."""
    columns = max(1, len(traces))
    figure = Figure(figsize=(3.6 * columns, 4.0), layout="constrained")
    axes = figure.subplots(1, columns, squeeze=False)[0]
    requested = requested or [None] * len(traces)
    for ax, (title, trace), point in zip(axes, traces, requested, strict=True):
        draw_trace(ax, image, trace, scale, title, point)
    if traces:
        handles, labels = axes[0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=8, markerscale=1.5)
    if suptitle:
        figure.suptitle(suptitle, fontsize=10)
    return figure


def layer_chain(records) -> str:
    """The traced layers, last first as the trace goes: "res5c <- res5b <- res5a"."""
    return " <- ".join(record.paper_name for record in reversed(records))


def effective_dilation_figure(result: dict) -> Figure:
    """Bars of mean ± std effective dilation per layer (last first) and size group; the paper's values,
    where a layer has the paper's name, as black diamonds with whiskers."""
    rows = result["layers"]
    figure = Figure(figsize=(1.8 + 2.2 * len(rows), 3.8), layout="constrained")
    ax = figure.subplots()
    width = 0.8 / len(SIZE_GROUPS)
    colors = ("#9ecae1", "#4292c6", "#08519c", "#bdbdbd")
    for g, group in enumerate(SIZE_GROUPS):
        xs = np.arange(len(rows)) + (g - (len(SIZE_GROUPS) - 1) / 2) * width
        means = [row["groups"][group]["mean"] for row in rows]
        stds = [row["groups"][group]["std"] for row in rows]
        heights = [m if m is not None else 0.0 for m in means]
        errors = [s if s is not None else 0.0 for s in stds]
        ax.bar(xs, heights, width, yerr=errors, capsize=2, color=colors[g], label=group)
        paper = [(x, row["paper"][group]) for x, row in zip(xs, rows, strict=True) if row.get("paper")]
        if paper:
            ax.errorbar(
                [x for x, _ in paper],
                [p["mean"] for _, p in paper],
                yerr=[p["std"] for _, p in paper],
                fmt="D",
                color="black",
                markersize=4,
                capsize=2,
                label="paper (R-FCN, VOC 2007)" if g == 0 else None,
            )
    for r, row in enumerate(rows):
        ax.hlines(row["dilation"][0], r - 0.45, r + 0.45, colors="#d62728", linestyles="dashed", linewidth=1)
    ax.plot([], [], color="#d62728", linestyle="dashed", linewidth=1, label="layer's dilation")
    ax.set_xticks(np.arange(len(rows)), [row["layer"] for row in rows], fontsize=8)
    ax.set_ylabel("effective dilation (input-map pixels)")
    ax.set_title(f"Effective dilation by object size ({result['images']} images)", fontsize=10)
    ax.legend(fontsize=7, ncols=2)
    return figure
