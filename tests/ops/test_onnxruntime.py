"""segdcn's forward against onnxruntime's DeformConv (ONNX opset 19), an independent kernel."""

from __future__ import annotations

import pytest
import torch

import segdcn.ops
from segdcn.ops.onnx import OrtDeformConv
from tests.helpers import ConvCase, assert_close

CASES = [
    ConvCase(),
    ConvCase(mask=True, offsets="far"),
    ConvCase(stride=(2, 1), padding=(2, 0), dilation=(2, 1), kernel=(3, 2), offsets="integer"),
    ConvCase(in_channels=8, out_channels=4, groups=2, offset_groups=4, mask=True, batch=3),
]


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("case", CASES, ids=["plain", "modulated-far", "strided-integer", "groups"])
def test_forward_equals_onnxruntime(case, dtype, tol):
    t = case.tensors(dtype)
    ort = OrtDeformConv(t["weight"], case.stride, case.padding, case.dilation, case.groups, case.offset_groups,
                        mask=case.mask)  # fmt: skip
    expected = ort(t["input"], t["offset"], t["weight"], t["bias"], t["mask"])
    out = segdcn.ops.deform_conv2d(t["input"], t["offset"], t["weight"], t["bias"], mask=t["mask"], **case.kwargs())
    assert out.dtype == expected.dtype
    assert_close(out, expected, tol)
