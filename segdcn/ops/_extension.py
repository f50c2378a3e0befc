"""Loading of the compiled extension segdcn._C, and the facts of its build."""

from __future__ import annotations

import warnings

BUILD_COMMAND = "make install  (or: pip install --no-build-isolation -e .)"

try:
    from segdcn import _C
except ImportError as error:  # the package is importable from a source tree without a build
    _C = None
    _import_error: ImportError | None = error
else:
    _import_error = None

_warned = False


def native_available() -> bool:
    return _C is not None


def warn_fallback(op: str) -> None:
    """Say once per process that `op` runs on the slow pure-PyTorch reference."""
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"segdcn._C is not built ({_import_error}); {op} falls back to the pure-PyTorch reference, "
            f"which is slow. Build the extension with: {BUILD_COMMAND}",
            RuntimeWarning,
            stacklevel=3,
        )


def build_info() -> dict:
    """How the extension was built: {"native", "cuda", "cuda_arch_list", "openmp"}."""
    if _C is None:
        return {"native": False, "cuda": False, "cuda_arch_list": "", "openmp": False, "error": str(_import_error)}
    info = dict(_C.build_info())
    info["openmp"] = bool(info["openmp"])
    return info


def deform_conv2d_plan(in_channels: int, out_channels: int, groups: int = 1) -> str:
    """The plan deform_conv2d runs for a layer of this shape on the CPU and CUDA (docs/operator.md, Plans):
    "im2col" (sampled columns, then GEMMs) or "direct" (grouped and depthwise layers whose per-group GEMMs
    would be thin: the samples are multiplied by their weights in the same pass)."""
    if _C is None:
        raise RuntimeError(f"segdcn._C is not built ({_import_error}): {BUILD_COMMAND}")
    return _C.deform_conv2d_plan(in_channels, out_channels, groups)
