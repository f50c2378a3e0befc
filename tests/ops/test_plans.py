"""The CPU op's two plans (docs/operator.md, "Plans"): im2col + GEMM and the direct plan for grouped and
depthwise layers. The automatic choice by shape, and both plans on the same randomised grouped and
depthwise configs against torchvision, segdcn's reference and gradcheck."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import segdcn.ops
from segdcn import _C
from segdcn.ops import reference
from tests.helpers import ConvCase, assert_close, run
from tests.ops.test_deform_conv import check_against_torchvision, check_gradcheck, draw_geometry

PLANS = ("im2col", "direct")


@contextlib.contextmanager
def cpu_plan(name: str):
    """Every deform_conv2d in the block runs on plan `name` (a process-wide setting of segdcn._C)."""
    before = _C._force_deform_conv2d_plan(name)
    try:
        yield
    finally:
        _C._force_deform_conv2d_plan(before)


@pytest.mark.parametrize(
    "in_channels,out_channels,groups,plan",
    [
        (512, 512, 1, "im2col"),  # DeepLab's res5: one large GEMM
        (256, 256, 256, "direct"),  # depthwise
        (256, 256, 32, "direct"),  # 8 output channels per group
        (256, 512, 32, "direct"),  # 16 per group: the largest the direct plan takes
        (256, 256, 8, "im2col"),  # 32 per group: GEMMs wide enough for MKL
        (64, 256, 64, "direct"),  # depthwise with a depth multiplier of 4
    ],
)
def test_plan_is_chosen_by_shape(in_channels, out_channels, groups, plan):
    assert segdcn.ops.deform_conv2d_plan(in_channels, out_channels, groups) == plan


def test_plan_arguments_are_checked():
    with pytest.raises(ValueError, match="groups=3 must divide in_channels=4"):
        segdcn.ops.deform_conv2d_plan(4, 6, 3)
    with pytest.raises(ValueError, match="plan must be auto, im2col or direct, got 'gemm'"):
        _C._force_deform_conv2d_plan("gemm")
    with cpu_plan("direct"):
        assert _C.deform_conv2d_plan(512, 512, 1) == "direct"
    assert _C.deform_conv2d_plan(512, 512, 1) == "im2col"


@st.composite
def grouped_cases(draw):
    """Groups 1..C (depthwise included), offset groups dividing C, group widths that hit the direct
    plan's fixed-width loops (4, 8, 16) and others, masks, strides, dilations, far and integer offsets."""
    groups = draw(st.integers(1, 4))
    per_group = draw(st.sampled_from([1, 1, 2, 3, 4, 8, 16]))
    per_out = draw(st.sampled_from([1, 1, 2, 4, 8, 16, 3]))
    channels = groups * per_group
    offset_groups = draw(st.sampled_from([d for d in range(1, channels + 1) if channels % d == 0]))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return draw_geometry(draw, ConvCase(in_channels=channels, out_channels=groups * per_out, kernel=(kh, kw),
                                        groups=groups, offset_groups=offset_groups), batch=3, size=7)  # fmt: skip


@settings(max_examples=60)
@given(grouped_cases())
def test_both_plans_match_torchvision_and_the_reference(case):
    tensors = case.tensors(torch.float64)
    ref_out, ref_grads, grad_out = run(reference.deform_conv2d, case, tensors)
    for name in PLANS:
        with cpu_plan(name):
            check_against_torchvision(case, torch.float64, 1e-10)
            out, grads, _ = run(segdcn.ops.deform_conv2d, case, tensors, grad_out)
        assert_close(out, ref_out, 1e-10, f"{name}: output")
        for k, grad in grads.items():
            assert_close(grad, ref_grads[k], 1e-10, f"{name}: grad of {k}")


@settings(max_examples=25)
@given(grouped_cases())
def test_direct_plan_float32(case):
    with cpu_plan("direct"):
        check_against_torchvision(case, torch.float32, 1e-4)


@pytest.mark.parametrize(
    "case",
    [
        ConvCase(batch=1, in_channels=4, out_channels=4, height=4, width=5, groups=4, offset_groups=2, mask=True),
        ConvCase(
            batch=1,
            in_channels=4,
            out_channels=8,
            height=5,
            width=4,
            groups=2,
            offset_groups=4,
            stride=(2, 1),
            dilation=(1, 2),
        ),  # fmt: skip
        ConvCase(
            batch=1, in_channels=6, out_channels=6, height=4, width=4, groups=3, mask=True, bias=False, offsets="far"
        ),  # fmt: skip
    ],
    ids=["depthwise-modulated", "grouped-offset-groups", "grouped-far"],
)
def test_direct_plan_gradcheck(case):
    with cpu_plan("direct"):
        check_gradcheck(case)


@pytest.mark.parametrize("wanted", [(True, False, False), (False, True, False), (False, False, True)])
def test_direct_plan_partial_gradients(wanted):
    """Each gradient alone equals its value among all three (the backward skips the others' work)."""
    case = ConvCase(in_channels=8, out_channels=8, groups=4, offset_groups=2, mask=True)
    t = case.tensors(torch.float64)
    grad_output = torch.randn(case.batch, case.out_channels, *case.out_size, dtype=torch.float64)
    args = (list(case.stride), list(case.padding), list(case.dilation), case.groups, case.offset_groups)
    with cpu_plan("direct"):
        full = torch.ops.segdcn.deform_conv2d_backward(
            grad_output, t["input"], t["weight"], t["offset"], t["mask"], *args, [True] * 3
        )
        part = torch.ops.segdcn.deform_conv2d_backward(
            grad_output, t["input"], t["weight"], t["offset"], t["mask"], *args, list(wanted)
        )
    for i, flag in enumerate(wanted):
        if flag:
            assert torch.equal(part[i], full[i])
        else:
            assert part[i].numel() == 0


def test_direct_plan_empty_batch():
    case = dataclasses.replace(ConvCase(in_channels=4, out_channels=4, groups=4, mask=True), batch=0)
    t = case.tensors(torch.float64)
    with cpu_plan("direct"):
        out, grads, _ = run(segdcn.ops.deform_conv2d, case, t)
    assert out.shape == (0, 4, *case.out_size)
    assert (grads["weight"] == 0).all() and grads["weight"].shape == t["weight"].shape


@pytest.mark.parametrize("name", PLANS)
def test_taps_outside_the_image_add_zero_whatever_the_input(name):
    """A sample outside the image is 0, also when the input holds inf or nan (0 x inf would be nan)."""
    case = ConvCase(in_channels=4, out_channels=4, groups=4, mask=True)
    t = case.tensors(torch.float64)
    t["input"][:, :, :2, :2] = float("inf")
    t["input"][:, :, -1, -1] = float("nan")
    t["offset"] = torch.full_like(t["offset"], 1000.0)
    with cpu_plan(name):
        out = segdcn.ops.deform_conv2d(t["input"], t["offset"], t["weight"], t["bias"], mask=t["mask"], padding=1)
    assert torch.equal(out, t["bias"].view(1, -1, 1, 1).expand_as(out))


@pytest.mark.parametrize("name", PLANS)
def test_results_do_not_share_the_op_workspace(name):
    """The CPU op keeps its temporaries between calls: no result may live in them (a 1x1 depthwise weight
    gradient, a plain view of its buffer, once did not)."""
    case = ConvCase(in_channels=4, out_channels=4, groups=4, kernel=(1, 1), padding=(0, 0), mask=True)
    with cpu_plan(name):
        first_out, first, grad_out = run(segdcn.ops.deform_conv2d, case, case.tensors(torch.float64, seed=0))
        kept = {k: v.clone() for k, v in first.items()}
        kept_out = first_out.clone()
        run(segdcn.ops.deform_conv2d, case, case.tensors(torch.float64, seed=1), grad_out)
    assert torch.equal(first_out, kept_out)
    for k, v in first.items():
        assert torch.equal(v, kept[k]), k


@pytest.mark.parametrize("name", PLANS)
def test_a_call_under_inference_mode_leaves_the_next_training_call_working(name):
    """The workspace outlives a call: one made under torch.inference_mode (an evaluation, bench_model's
    forward) must not leave inference tensors that the next call's in-place writes would refuse."""
    case = ConvCase(in_channels=4, out_channels=4, groups=4 if name == "direct" else 1, mask=True)
    tensors = case.tensors(torch.float32, seed=0)
    with cpu_plan(name):
        with torch.inference_mode():
            t = {k: v.clone() if v is not None else None for k, v in tensors.items()}
            expected = segdcn.ops.deform_conv2d(
                t["input"], t["offset"], t["weight"], t["bias"], mask=t["mask"], **case.kwargs()
            )
        out, grads, _ = run(segdcn.ops.deform_conv2d, case, tensors)
    assert torch.equal(out.detach(), expected) and all(g is not None for g in grads.values())
