"""The paper's Table 2 (effective dilation by object size) for the rows beside ours, from the paper's data file.

The numbers live in segdcn/paper/dcn_iccv2017.yaml (the one home of the paper's numbers) under
`table2`, one row per layer, each group a [mean, std] pair:

    table2:
      setting: R-FCN, ResNet-101, VOC 2007 test; res5 dilation 2
      dilation: 2
      rows:
        res5c: {small: [5.3, 3.3], medium: [5.8, 3.5], large: [8.4, 4.5], background: [6.2, 3.0]}
        ...

While the file has no `table2` (or the package is absent), the tools print our rows alone.
"""

from __future__ import annotations

from typing import Any

from .object_size import SIZE_GROUPS


def paper_table2() -> dict[str, Any]:
    """{"setting": text, "rows": {layer name (res5a/b/c): {group: {"mean", "std"}, "dilation": d}}};
    {} when the data file has no Table 2."""
    try:
        import segdcn.paper as paper
    except ImportError:  # the paper's data file is optional to the analysis: no paper rows then
        return {}
    node = paper.read_data().get("table2")
    if not node:
        return {}
    out = {}
    for layer, groups in (node.get("rows") or {}).items():
        try:
            row = {g: {"mean": float(groups[g][0]), "std": float(groups[g][1])} for g in SIZE_GROUPS}
        except (KeyError, TypeError, IndexError, ValueError) as error:
            raise ValueError(
                f"{paper.DATA_FILE}: table2.rows.{layer} needs [mean, std] for each of "
                f"{', '.join(SIZE_GROUPS)}: {error!r}"
            ) from None
        row["dilation"] = node.get("dilation")
        out[str(layer)] = row
    return {"setting": str(node.get("setting", "the paper's Table 2")), "rows": out}
