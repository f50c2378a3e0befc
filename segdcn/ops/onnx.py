"""ONNX's DeformConv operator (opset 19), as onnxruntime runs it."""

from __future__ import annotations

import numpy as np
import torch

DEFORM_CONV_OPSET = 19
# onnxruntime 1.31 reads models up to IR version 13; onnx 1.23 writes 14 unless told.
IR_VERSION = 10

_ONNX_DTYPES = {torch.float32: 1, torch.float64: 11}  # onnx.TensorProto.FLOAT, DOUBLE


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
        dilations=list(dilation),
        group=groups,
        kernel_shape=[kh, kw],
        offset_group=offset_groups,
        pads=[padding[0], padding[1], padding[0], padding[1]],
        strides=list(stride),
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
