"""The op tests' shared fixture: the CUDA kernels' code compiled for the host (cuda_emulation*.cpp)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.cpp_extension import load

from tests.helpers import ROOT

HERE = Path(__file__).resolve().parent

# The emulated kernel files: kernels/<name>.cpp, with the host build's source here and its op namespace.
EMULATIONS = {
    "deform_conv2d": ("cuda_emulation.cpp", "segdcn_cuda_emulation"),
    "deform_roi_pool": ("cuda_emulation_roi.cpp", "segdcn_cuda_emulation_roi"),
}


class HostEmulation:
    """The emulated ops by name (`emulation.deform_conv2d_backward`, `emulation.deform_roi_pool`); each
    kernel file is compiled on its first op's use and loaded once per session."""

    def __init__(self):
        self._namespaces = {}

    def __getattr__(self, op: str):
        kernel = "deform_conv2d" if op.startswith("deform_conv2d") or op == "force_plan" else "deform_roi_pool"
        if kernel not in self._namespaces:
            source, name = EMULATIONS[kernel]
            sources = [str(HERE / source), str(ROOT / "kernels" / f"{kernel}.cpp")]
            load(name=name, sources=sources, extra_cflags=["-O1"], is_python_module=False)
            self._namespaces[kernel] = getattr(torch.ops, name)
        return getattr(self._namespaces[kernel], op)


@pytest.fixture(scope="session")
def emulation() -> HostEmulation:
    return HostEmulation()
