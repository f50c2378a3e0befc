"""Export of trained models: ONNX files with DeformConv nodes, torch.export programs, their metadata, W&B artifacts.

    from segdcn.export import export_model, read_metadata
    results = export_model(model, train_cfg, "exports", formats=["onnx", "torch_export"])

Modules: exporter (the formats, each file checked, then described), onnx (torch.onnx.export with the
DeformConv translation, onnxruntime runner), program (torch.export save/load), verify (differences to
PyTorch), metadata (the JSON next to each file), artifact (W&B), shapes (dynamic dimensions, check
shapes), files (atomic writes), errors, app (the segdcn-export command).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "export_model": "segdcn.export.exporter",
    "resolve_formats": "segdcn.export.exporter",
    "export_onnx": "segdcn.export.onnx",
    "OnnxRunner": "segdcn.export.onnx",
    "export_program": "segdcn.export.program",
    "load_program": "segdcn.export.program",
    "model_metadata": "segdcn.export.metadata",
    "read_metadata": "segdcn.export.metadata",
    "metadata_path": "segdcn.export.metadata",
    "log_model_artifact": "segdcn.export.artifact",
    "ExportError": "segdcn.export.errors",
    "ExportConfigError": "segdcn.export.errors",
    "ExportVerificationError": "segdcn.export.errors",
    "MetadataError": "segdcn.export.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    # imported on first use: `import segdcn.export` must not pull in torch.onnx and onnxruntime
    if name not in _EXPORTS:
        raise AttributeError(f"module 'segdcn.export' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
