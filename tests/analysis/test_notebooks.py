"""The notebooks run top to bottom (nbclient, a real kernel) on the runs of a short synthetic sweep,
and are stored without outputs."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import ROOT

NOTEBOOKS = ("offsets.ipynb", "ablation.ipynb")


@pytest.fixture(scope="module")
def sweep(short_sweep):
    return short_sweep


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stored_without_outputs(name):
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: a cell has stored outputs"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_on_a_short_sweep(name, sweep, monkeypatch):
    monkeypatch.setenv("SEGDCN_RUNS", str(sweep))
    monkeypatch.setenv("SEGDCN_IMAGES", "1")
    monkeypatch.setenv("SEGDCN_MAX_IMAGES", "2")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    images = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert len(images) >= 2, f"{name}: expected figures in the outputs"
