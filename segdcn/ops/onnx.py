"""ONNX's DeformConv operator (opset 19), as onnxruntime runs it, and the translation of deform_conv2d to it.

deform_conv_attributes(stride, padding, dilation, groups, offset_groups)   # the one attribute mapping
deform_conv_model(...)                      # a one-node model (the op tests' onnxruntime oracle)
translation_table()                         # for torch.onnx.export(..., dynamo=True, custom_translation_table=)
"""

from __future__ import annotations

import numpy as np
import torch

DEFORM_CONV_OPSET = 19
# onnxruntime 1.31 reads models up to IR version 13; onnx 1.23 writes 14 unless told.
IR_VERSION = 10
MAX_IR_VERSION = 13

_ONNX_DTYPES = {torch.float32: 1, torch.float64: 11}  # onnx.TensorProto.FLOAT, DOUBLE


def deform_conv_attributes(stride, padding, dilation, groups: int, offset_groups: int) -> dict:
    """DeformConv's attributes for deform_conv2d's arguments ((h, w) pairs). ONNX pads list the starts of
    all axes, then their ends; deform_conv2d pads both sides alike. kernel_shape is left to W's shape."""
    return {
        "dilations": [int(d) for d in dilation],
        "group": int(groups),
        "offset_group": int(offset_groups),
        "pads": [int(padding[0]), int(padding[1]), int(padding[0]), int(padding[1])],
        "strides": [int(s) for s in stride],
    }


def deform_conv_model(
    weight_shape,
    stride,
    padding,
    dilation,
    groups: int,
    offset_groups: int,
    bias: bool,
    mask: bool,
    dtype=torch.float32,
):
    """A one-node ONNX model Y = DeformConv(X, W, offset[, B][, mask]) with dynamic N, H, W."""
    import onnx
    from onnx import helper

    elem = _ONNX_DTYPES[dtype]
    c_out, c_per_group, kh, kw = weight_shape
    names = ["X", "W", "offset"] + (["B"] if bias or mask else []) + (["mask"] if mask else [])
    shapes = {
        "X": ["N", c_per_group * groups, "H", "W"],
        "W": list(weight_shape),
        "offset": ["N", 2 * offset_groups * kh * kw, "OH", "OW"],
        "B": [c_out],
        "mask": ["N", offset_groups * kh * kw, "OH", "OW"],
    }
    node = helper.make_node(
        "DeformConv",
        names,
        ["Y"],
        kernel_shape=[kh, kw],
        **deform_conv_attributes(stride, padding, dilation, groups, offset_groups),
    )
    graph = helper.make_graph(
        [node],
        "deform_conv",
        [helper.make_tensor_value_info(n, elem, shapes[n]) for n in names],
        [helper.make_tensor_value_info("Y", elem, ["N", c_out, "OH", "OW"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", DEFORM_CONV_OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


class OrtDeformConv:
    """onnxruntime's CPU DeformConv for one weight shape and conv setting."""

    def __init__(
        self, weight: torch.Tensor, stride, padding, dilation, groups, offset_groups, mask: bool, threads=None
    ):
        import onnxruntime as ort

        model = deform_conv_model(
            tuple(weight.shape), stride, padding, dilation, groups, offset_groups, True, mask, weight.dtype
        )
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            # Its worker threads otherwise spin between runs and take a core from whatever runs next in
            # the process: in scripts/bench_ops.py on 2 cores, that doubled F.conv2d's or segdcn's time.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.mask = mask

    def __call__(self, input, offset, weight, bias=None, mask=None) -> torch.Tensor:
        def np_(t):
            return np.ascontiguousarray(t.detach().cpu().numpy())

        if bias is None:
            bias = weight.new_zeros(weight.shape[0])
        feeds = {"X": np_(input), "W": np_(weight), "offset": np_(offset), "B": np_(bias)}
        if self.mask:
            feeds["mask"] = np_(mask)
        return torch.from_numpy(self.session.run(["Y"], feeds)[0])


# ---- torch.onnx.export (dynamo): the custom ops as DeformConv nodes ----


def _segdcn_deform_conv2d(input, weight, offset, mask, bias, stride, padding, dilation, groups, offset_groups):
    """torch.ops.segdcn.deform_conv2d -> DeformConv. Its schema orders (weight, offset, mask, bias); ONNX's
    inputs are (X, W, offset, B, mask), with an absent B or mask left empty."""
    from onnxscript import opset19 as op

    attributes = deform_conv_attributes(stride, padding, dilation, groups, offset_groups)
    return op.DeformConv(input, weight, offset, bias, mask, **attributes)


def _torchvision_deform_conv2d(
    input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, offset_groups, use_mask
):
    """torch.ops.torchvision.deform_conv2d -> DeformConv. torchvision always passes a bias (zeros when there
    is none) and a mask tensor, a placeholder unless use_mask: DCNv1 then gets no mask input."""
    from onnxscript import opset19 as op

    attributes = deform_conv_attributes((stride_h, stride_w), (pad_h, pad_w), (dil_h, dil_w), groups, offset_groups)
    return op.DeformConv(input, weight, offset, bias, mask if use_mask else None, **attributes)


def translation_table() -> dict:
    """{op overload: onnxscript function} for torch.onnx.export(dynamo=True, custom_translation_table=...):
    segdcn's deform_conv2d and, when torchvision's ops are loaded, torchvision's (model.dcn.impl=torchvision)."""
    table = {}
    if hasattr(torch.ops.segdcn, "deform_conv2d"):  # absent without the extension (the reference runs instead)
        table[torch.ops.segdcn.deform_conv2d.default] = _segdcn_deform_conv2d
    try:
        import torchvision  # noqa: F401 - registers torch.ops.torchvision

        table[torch.ops.torchvision.deform_conv2d.default] = _torchvision_deform_conv2d
    except (ImportError, AttributeError):
        pass  # without torchvision's ops no model can contain them
    return table
