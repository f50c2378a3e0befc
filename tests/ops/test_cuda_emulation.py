"""The CUDA kernels' code, compiled for the host and run thread by thread (tests/ops/cuda_emulation.cpp),
against the CPU op: their index arithmetic, slicing, offset groups and half-precision paths are
checked on every machine, GPU or not. Every case runs on both plans (deform_conv2d_plan): the
columns + GEMM kernels and the direct ones."""

from __future__ import annotations

import contextlib

import pytest
import torch

from tests.helpers import ConvCase, assert_close
from tests.ops.test_cuda import CASES, TOL, grad_output_for

EXTRA_CASES = {
    # more channels than one slice of 8, split over offset groups and weight groups
    "slices": ConvCase(in_channels=20, out_channels=4, groups=2, offset_groups=2, mask=True, offsets="far"),
    "slices-strided": ConvCase(batch=1, in_channels=24, out_channels=3, stride=(2, 2), dilation=(2, 1), mask=True),
    "depthwise-integer": ConvCase(in_channels=6, out_channels=6, groups=6, offset_groups=3, offsets="integer"),
}
PLANS = ("im2col", "direct")


@contextlib.contextmanager
def plan(emulation, name: str):
    before = emulation.force_plan(name)
    try:
        yield
    finally:
        emulation.force_plan(before)


def call(ops, case: ConvCase, t: dict, grad_output: torch.Tensor):
    args = (list(case.stride), list(case.padding), list(case.dilation), case.groups, case.offset_groups)
    out = ops.deform_conv2d(t["input"], t["weight"], t["offset"], t["mask"], t["bias"], *args)
    grads = ops.deform_conv2d_backward(grad_output, t["input"], t["weight"], t["offset"], t["mask"], *args, [True] * 3)
    return [out, *grads]


@pytest.mark.parametrize("plan_name", PLANS)
@pytest.mark.parametrize("dtype", list(TOL), ids=str)
@pytest.mark.parametrize("name", list(CASES) + list(EXTRA_CASES))
def test_emulated_cuda_kernels_match_cpu(emulation, name, dtype, plan_name):
    case = {**CASES, **EXTRA_CASES}[name]
    tensors = case.tensors(dtype)
    grad_output = grad_output_for(case, dtype)
    expected = call(
        torch.ops.segdcn, case, {k: (v.double() if v is not None else None) for k, v in tensors.items()},
        grad_output.double(),
    )  # fmt: skip
    with plan(emulation, plan_name):
        actual = call(emulation, case, tensors, grad_output)
    for what, a, e in zip(["output", "input", "weight", "offset", "mask"], actual, expected, strict=True):
        assert a.dtype == dtype, what
        assert_close(a, e, TOL[dtype], f"{name} {what}")


@pytest.mark.parametrize("plan_name", PLANS)
@pytest.mark.parametrize("name", ["slices", "depthwise"])
def test_emulated_partial_gradients(emulation, name, plan_name):
    case = {**CASES, **EXTRA_CASES}[name]
    t = case.tensors(torch.float64)
    grad_output = grad_output_for(case, torch.float64)
    args = (list(case.stride), list(case.padding), list(case.dilation), case.groups, case.offset_groups)
    with plan(emulation, plan_name):
        full = emulation.deform_conv2d_backward(
            grad_output, t["input"], t["weight"], t["offset"], t["mask"], *args, [True] * 3
        )
        for wanted in ([True, False, False], [False, True, False], [False, False, True]):
            part = emulation.deform_conv2d_backward(
                grad_output, t["input"], t["weight"], t["offset"], t["mask"], *args, wanted
            )
            for i, flag in enumerate(wanted):
                if flag:
                    assert torch.equal(part[i], full[i])
                    if i == 2:
                        assert torch.equal(part[3], full[3])


def test_emulation_refuses_an_unknown_plan(emulation):
    with pytest.raises(RuntimeError, match="plan must be auto, im2col or direct"):
        emulation.force_plan("gemm")
