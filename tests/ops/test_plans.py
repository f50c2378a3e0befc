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

# The im2col plan multiplies its columns by the weights in one GEMM over whole rows (MKL's, or segdcn's
# panel kernel) or in one GEMM per tap over the rows where the tap is inside (chosen per tile; each
# forced here), and the direct plan.
PLANS = ("im2col-rows", "im2col-taps", "im2col-panels", "direct")


def cpu_has(*features: str) -> bool:
    """Whether the CPU's flags, as Linux reports them, hold all of `features`: independent of segdcn's own
    runtime check."""
    with open("/proc/cpuinfo") as f:
        flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    return set(features) <= set(flags)


@contextlib.contextmanager
def cpu_kernels(name: str):
    """The CPU kernels written in intrinsics capped at `name` ("auto", "avx2" or "portable") in the block."""
    before = _C._force_cpu_kernels(name)
    try:
        yield
    finally:
        _C._force_cpu_kernels(before)


@contextlib.contextmanager
def cpu_plan(name: str):
    """Every deform_conv2d in the block runs on plan `name` ("im2col-rows" and "im2col-taps": the im2col
    plan with its GEMMs forced to one way; process-wide settings of segdcn._C)."""
    plan, _, gemms = name.partition("-")
    before = _C._force_deform_conv2d_plan(plan)
    before_gemms = _C._force_tap_gemms(gemms or "auto")
    try:
        yield
    finally:
        _C._force_deform_conv2d_plan(before)
        _C._force_tap_gemms(before_gemms)


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
    with pytest.raises(ValueError, match="tap GEMMs must be auto, rows, taps or panels, got 'tap'"):
        _C._force_tap_gemms("tap")
    with pytest.raises(ValueError, match="CPU kernels must be auto, avx2 or portable, got 'avx512'"):
        _C._force_cpu_kernels("avx512")


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


# Rows of more entries than auto gives the panel kernel (2304: 256 channels of a 3x3 kernel), forced onto
# it: 260 channels, and two groups of 260, with output channels in blocks of six (one partial) and
# positions in short blocks.
LONG_ROWS = [
    ConvCase(batch=2, in_channels=260, out_channels=19, height=5, width=6, mask=True),
    ConvCase(batch=1, in_channels=520, out_channels=38, height=4, width=5, groups=2, offset_groups=4),
]


@pytest.mark.parametrize("case", LONG_ROWS, ids=["260-channels", "2-groups"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)], ids=["float64", "float32"])
def test_panel_kernel_on_long_rows(case, dtype, tol):
    with cpu_plan("im2col-panels"):
        check_against_torchvision(case, dtype, tol)


@settings(max_examples=25)
@given(grouped_cases())
def test_panel_kernel_float32(case):
    # float32 is where the panel kernel runs in intrinsics, AVX-512 or AVX2 and FMA as the CPU has them
    # (float64 takes the portable loops above), and in the portable loops when they are capped there;
    # short blocks of rows and partial blocks of output channels come with the drawn sizes
    for kernels in ("auto", "avx2", "portable"):
        with cpu_plan("im2col-panels"), cpu_kernels(kernels):
            check_against_torchvision(case, torch.float32, 1e-4)


@pytest.mark.skipif(not cpu_has("avx512f"), reason="the AVX-512 panel kernel needs a CPU with AVX-512")
@settings(max_examples=25)
@given(grouped_cases())
def test_avx512_panel_kernel_gives_the_avx2_kernels_bits(case):
    """The AVX-512 kernel (two blocks of output channels a call) does the AVX2 kernel's multiply-adds in
    the same order: the same bits, on long rows too."""
    tensors = case.tensors(torch.float32)
    outs = {}
    for kernels in ("auto", "avx2"):
        with cpu_plan("im2col-panels"), cpu_kernels(kernels):
            outs[kernels] = run(segdcn.ops.deform_conv2d, case, tensors)[0]
    assert torch.equal(outs["auto"], outs["avx2"])


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
        ),
        ConvCase(
            batch=1, in_channels=6, out_channels=6, height=4, width=4, groups=3, mask=True, bias=False, offsets="far"
        ),
    ],
    ids=["depthwise-modulated", "grouped-offset-groups", "grouped-far"],
)
def test_direct_plan_gradcheck(case):
    with cpu_plan("direct"):
        check_gradcheck(case)


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize(
    "wanted", [(True, False, False), (False, True, False), (False, False, True), (True, True, False)]
)
def test_partial_gradients(plan, wanted):
    """Each gradient alone equals its value among all three (the backward skips the others' work: without
    the offset gradient, the im2col plan samples the columns and spreads the input gradient in passes of
    their own)."""
    case = ConvCase(in_channels=8, out_channels=8, groups=4, offset_groups=2, mask=True)
    t = case.tensors(torch.float64)
    grad_output = torch.randn(case.batch, case.out_channels, *case.out_size, dtype=torch.float64)
    args = (list(case.stride), list(case.padding), list(case.dilation), case.groups, case.offset_groups)
    with cpu_plan(plan):
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


# A dilated kernel on a small map: at 8x8 with dilation 4 and zero offsets, 4 of a position's 9 taps on
# average sample inside (the demo's res5), so the im2col plan takes the per-tap GEMMs; on a 33x33 map
# with dilation 1, 94% of the pairs are inside and it takes whole rows: in float32 with 16 x 9 entries a
# row, the forward by the panel kernel where the CPU has AVX2 and FMA (and the kernels are not capped at
# the portable loops), by MKL's GEMM elsewhere, and the backward by MKL's.
SMALL_MAP = ConvCase(batch=4, in_channels=16, out_channels=16, height=8, width=8, padding=(4, 4),
                     dilation=(4, 4), offsets="zero")  # fmt: skip
LARGE_MAP = ConvCase(batch=1, in_channels=16, out_channels=16, height=33, width=33)


# Rows of 260 x 9 entries, more than the AVX2 panel kernel takes: the AVX-512 one takes any depth.
LONG_ROW_MAP = ConvCase(batch=1, in_channels=260, out_channels=8, height=20, width=20)
FMA = cpu_has("avx2", "fma")


@pytest.mark.parametrize(
    "case,kernels,way",
    [
        (SMALL_MAP, "auto", "taps"),
        (LARGE_MAP, "auto", "panels" if FMA else "rows"),
        (LARGE_MAP, "portable", "rows"),
        (LONG_ROW_MAP, "auto", "panels" if FMA and cpu_has("avx512f") else "rows"),
        (LONG_ROW_MAP, "avx2", "rows"),
    ],
    ids=["small-map", "large-map", "large-map-portable", "long-rows", "long-rows-avx2"],
)
def test_im2col_gemms_are_chosen_by_the_share_of_taps_inside(case, kernels, way):
    """auto gives bitwise what the expected way forced gives, and the other way differs in float32's last
    bits (so the comparison tells the two apart)."""
    tensors = case.tensors(torch.float32)
    results = {}
    for name in ("im2col-rows", "im2col-taps", "im2col-panels", "im2col"):
        with cpu_plan(name), cpu_kernels(kernels):
            results[name] = run(segdcn.ops.deform_conv2d, case, tensors)
    other = "rows" if way == "taps" else "taps"
    auto_out, auto_grads, _ = results["im2col"]
    chosen_out, chosen_grads, _ = results[f"im2col-{way}"]
    assert torch.equal(auto_out, chosen_out)
    assert all(torch.equal(auto_grads[k], chosen_grads[k]) for k in auto_grads)
    other_out, other_grads, _ = results[f"im2col-{other}"]
    assert not (torch.equal(auto_out, other_out) and torch.equal(auto_grads["weight"], other_grads["weight"]))
    assert_close(other_out, auto_out, 1e-5, "the other way's output")


@pytest.mark.parametrize(
    "case",
    [
        dataclasses.replace(
            SMALL_MAP,
            batch=2,
            in_channels=3,
            out_channels=4,
            height=5,
            width=5,
            padding=(2, 2),
            dilation=(2, 2),
            offsets="normal",
            mask=True,
        ),
        dataclasses.replace(
            SMALL_MAP,
            batch=1,
            in_channels=4,
            out_channels=4,
            height=4,
            width=5,
            padding=(2, 2),
            dilation=(2, 2),
            groups=2,
            offset_groups=2,
            offsets="far",
        ),
    ],
    ids=["modulated", "grouped-far"],
)
def test_per_tap_gemms_gradcheck(case):
    with cpu_plan("im2col-taps"):
        check_gradcheck(case)


# float32, C = 64 and a 3x3 kernel: a tile holds 3640 rows, so each 65x65 image (4225 rows) is its own
# chunk, and at 2 threads each thread's share (2113 rows) is two tiles of its own (1820, then 293).
THREAD_TILES = ConvCase(batch=2, in_channels=64, out_channels=64, height=65, width=65, padding=(2, 2),
                        dilation=(2, 2), mask=True)  # fmt: skip


@pytest.mark.parametrize("name", ["im2col-rows", "im2col-taps"])
def test_im2col_split_over_threads_and_tiles(name):
    """Forward and backward run each thread's share of a chunk's rows tile by tile, the backward adding
    into per-thread weight-gradient buffers: at 2 threads, with several chunks and several tiles per
    thread, both still match torchvision."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with cpu_plan(name):
            check_against_torchvision(THREAD_TILES, torch.float32, 1e-4)
    finally:
        torch.set_num_threads(before)


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
