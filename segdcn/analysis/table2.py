"""The paper's Table 2 layout (effective dilation by object size, per deformable layer) in Markdown and JSON.

Rows are the deformable layers, the last one first, as in the paper (res5c, res5b, res5a); columns
are small, medium, large, background, each "mean ± std" in pixels of the layer's input map. The
paper's own row follows ours wherever a layer has a name the paper measured (res5a/b/c); it was
measured with R-FCN on VOC 2007 test with the paper's size groups, so it shows the trend to expect,
not a number to match.
"""

from __future__ import annotations

from typing import Any

from .object_size import SIZE_GROUPS
from .stats import DilationTable


def cell(stats: dict[str, Any] | None, with_count: bool = False) -> str:
    if not stats or stats.get("mean") is None:
        return "-"
    text = f"{stats['mean']:.1f} ± {stats['std']:.1f}"
    return text + f" (n={stats['count']})" if with_count and "count" in stats else text


def table2_dict(table: DilationTable, paper: dict[str, Any] | None = None, **context: Any) -> dict:
    """A JSON-ready dict: context (checkpoint, dataset, ...), thresholds, units and the rows, each with
    the paper's numbers for the same layer name (or null). paper: segdcn.analysis.paper.paper_table2()."""
    paper = paper or {}
    rows = table.rows()
    for row in rows:
        row["paper"] = (paper.get("rows") or {}).get(row["layer"])
    return {
        **context,
        "images": table.images,
        "size_groups": table.thresholds.describe(),
        "thresholds": {"small": table.thresholds.small, "large": table.thresholds.large},
        "units": "pixels of the layer's input feature map (a plain conv with dilation d gives d)",
        "paper_setting": paper.get("setting"),
        "layers": rows,
    }


def table2_markdown(result: dict) -> str:
    """Markdown of a table2_dict: the table, then the groups' definitions and where the paper's row comes from."""
    header = "| layer | dilation | " + " | ".join(SIZE_GROUPS) + " |"
    lines = [header, "|" + "---|" * (2 + len(SIZE_GROUPS))]
    for row in result["layers"]:
        dilation = "x".join(str(d) for d in row["dilation"]) if len(set(row["dilation"])) > 1 else row["dilation"][0]
        cells = [cell(row["groups"][g], with_count=True) for g in SIZE_GROUPS]
        lines.append(f"| {row['layer']} (ours) | {dilation} | " + " | ".join(cells) + " |")
        if row.get("paper"):
            cells = [cell(row["paper"].get(g)) for g in SIZE_GROUPS]
            lines.append(
                f"| {row['layer']} (paper) | {row['paper'].get('dilation') or '-'} | " + " | ".join(cells) + " |"
            )
    groups = result["size_groups"]
    notes = [
        "",
        f"Effective dilation, mean ± std over all filter positions of {result['images']} images, in "
        f"{result['units']}; n = filter positions.",
        f"Object: {groups['object']}. Small: {groups['small']}; medium: {groups['medium']}; "
        f"large: {groups['large']}; background: {groups['background']}.",
    ]
    if any(row.get("paper") for row in result["layers"]):
        notes.append(
            f"Paper rows: {result['paper_setting']}, grouped by its detection boxes; "
            "another detector, dataset and size grouping, so compare trends, not values."
        )
    return "\n".join(lines + notes) + "\n"
