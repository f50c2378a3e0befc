"""ONNX export: the model as an ONNX file with DeformConv nodes, dynamic batch, height and width.

    path = export_onnx(model, "exports/model.onnx", opset=19)
    differences = check_onnx(path, model, [(2, 3, 321, 321), (1, 3, 241, 403)], tolerance=1e-4)

torch.onnx.export (dynamo) traces the model with torch.export and translates each op; segdcn's and
torchvision's deform_conv2d become DeformConv through segdcn.ops.onnx.translation_table(), the one
place that maps their arguments to DeformConv's attributes. onnxruntime then runs the file.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from segdcn.export.errors import ExportConfigError, ExportVerificationError
from segdcn.export.files import written_atomically
from segdcn.export.metadata import INPUT_NAME, OUTPUT_NAME
from segdcn.export.shapes import EXAMPLE_BATCH, dynamic_input_shapes, random_input
from segdcn.export.verify import Difference, compare
from segdcn.ops.onnx import DEFORM_CONV_OPSET, MAX_IR_VERSION, translation_table

log = logging.getLogger(__name__)


def check_opset(opset: int) -> int:
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if not DEFORM_CONV_OPSET <= int(opset) <= newest:
        raise ExportConfigError(
            f"export.opset={opset}; expected {DEFORM_CONV_OPSET}..{newest} (DeformConv exists from opset "
            f"{DEFORM_CONV_OPSET}; onnx {onnx.__version__} knows up to {newest})"
        )
    return int(opset)


def count_deformable(model: torch.nn.Module) -> int:
    """The deformable convolutions that must become DeformConv nodes: all but those on the pure-PyTorch
    reference (impl=reference, or native without the built extension), which export as plain ONNX ops."""
    from segdcn.ops import DeformConv2d
    from segdcn.ops._extension import native_available

    impls = ("native", "torchvision") if native_available() else ("torchvision",)
    return sum(isinstance(m, DeformConv2d) and m.impl in impls for m in model.modules())


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's INFO records (one per deduplicated initializer) buried the check's result in the log."""
    loggers = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript", "torch.onnx")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def export_onnx(model: torch.nn.Module, path: str | os.PathLike, size: Sequence[int], opset: int = 19) -> Path:
    """Writes `model` (eval mode, CPU) to `path`, traced at an input of `size` = (height, width).

    onnxruntime 1.31 reads IR versions up to 13, so a newer IR version in the written file is lowered.
    """
    import onnx

    opset = check_opset(opset)
    path = Path(path)
    example = random_input((EXAMPLE_BATCH, 3, *size))
    with written_atomically(path) as staged, _quiet_exporter():
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=dynamic_input_shapes(model),
            custom_translation_table=translation_table(),
            verbose=False,
        )
        # one file unless the weights pass protobuf's 2 GB limit (then <name>.data next to it)
        program.save(staged, external_data=False)
        proto = onnx.load(staged, load_external_data=False)
        if proto.ir_version > MAX_IR_VERSION:
            proto.ir_version = MAX_IR_VERSION
            onnx.save(proto, staged)
    expected = count_deformable(model)
    found = deform_conv_nodes(path)
    if found != expected:
        raise ExportVerificationError(
            f"{path}: {found} DeformConv nodes for the model's {expected} deformable convolutions "
            "(an op left untranslated or decomposed?)"
        )
    return path


def deform_conv_nodes(path: str | os.PathLike) -> int:
    """The number of DeformConv nodes in the ONNX file's main graph."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return sum(node.op_type == "DeformConv" for node in proto.graph.node)


class OnnxRunner:
    """An ONNX file in onnxruntime (CPU), called like the model: float32 NCHW tensor in, logits out."""

    def __init__(self, path: str | os.PathLike, input_name: str = INPUT_NAME, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = input_name

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])


def check_onnx(
    path: str | os.PathLike, model: torch.nn.Module, shapes: Sequence[Sequence[int]], tolerance: float
) -> list[Difference]:
    """The file in onnxruntime against `model` at each input shape (see segdcn.export.verify.compare)."""
    return compare(f"ONNX {Path(path).name} in onnxruntime", model, OnnxRunner(path), shapes, tolerance)
