"""The paper's published numbers (Dai et al., ICCV 2017), read from one data file: dcn_iccv2017.yaml.

    paper = load_paper()
    paper.table("table1").rows[3].miou["voc_aug"]      # 75.2: res5a,b,c deformable on VOC
    paper.table4["forward_s"]["cityscapes"]             # {"plain": 0.61, "deformable": 0.696}

Every tool that prints a paper number (scripts/ablation_table.py, scripts/bench_model.py, README,
and segdcn.analysis.paper for Table 2) reads it here, so a corrected transcription changes them all.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DATA_FILE = Path(__file__).with_name("dcn_iccv2017.yaml")
TABLES = ("table1", "table3")


@dataclass(frozen=True)
class PaperRow:
    """One row of an ablation table: which model it is (dcn_layers, res5_dilation) and its mIoU per dataset."""

    label: str
    dcn_layers: int
    res5_dilation: int | None
    miou: dict[str, float]

    @property
    def key(self) -> tuple[int, int | None]:
        return (self.dcn_layers, self.res5_dilation)


@dataclass(frozen=True)
class PaperTable:
    name: str
    title: str
    model: str
    rows: tuple[PaperRow, ...]

    def datasets(self) -> list[str]:
        return sorted({d for row in self.rows for d in row.miou})


@dataclass(frozen=True)
class Paper:
    citation: str
    arxiv: str
    source: str
    metric: str
    datasets: dict[str, str]
    tables: dict[str, PaperTable]
    table4: dict[str, Any]

    def table(self, name: str) -> PaperTable:
        if name not in self.tables:
            raise KeyError(f"the paper has no ablation table {name!r} in {DATA_FILE.name}; expected one of {TABLES}")
        return self.tables[name]


def _table(name: str, node: dict) -> PaperTable:
    rows = []
    for i, row in enumerate(node["rows"]):
        try:
            rows.append(
                PaperRow(
                    label=str(row["label"]),
                    dcn_layers=int(row["dcn_layers"]),
                    res5_dilation=row.get("res5_dilation"),
                    miou={str(k): float(v) for k, v in row["miou"].items()},
                )
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"{DATA_FILE}: {name}.rows[{i}] needs label, dcn_layers and miou {{dataset: number}}: {error}"
            ) from None
    return PaperTable(name=name, title=str(node["title"]), model=str(node["model"]), rows=tuple(rows))


def read_data(path: str | Path | None = None) -> dict[str, Any]:
    """The data file at `path` as parsed YAML, uncached; the default is DATA_FILE as it is at the
    call (not at import), so a test that points DATA_FILE at another file is read.

    The one place the file is parsed: load_paper builds its tables from this, and a section without
    a typed form here (Table 2, read by segdcn.analysis.paper) is taken from it as it stands.
    """
    with open(DATA_FILE if path is None else path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


@functools.cache
def load_paper(path: str | Path = DATA_FILE) -> Paper:
    """The paper's numbers from `path` (default: the packaged dcn_iccv2017.yaml)."""
    data = read_data(path)
    return Paper(
        citation=data["paper"],
        arxiv=str(data["arxiv"]),
        source=" ".join(str(data["source"]).split()),
        metric=data["metric"],
        datasets=dict(data["datasets"]),
        tables={name: _table(name, data[name]) for name in TABLES},
        table4=data["table4"],
    )
