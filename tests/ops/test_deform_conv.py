"""segdcn.ops.deform_conv2d against independent oracles: torchvision, F.conv2d,
finite differences and torch.autograd.gradcheck; and against segdcn's own reference."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.ops
from hypothesis import assume, given
from hypothesis import strategies as st

import segdcn.ops
from segdcn.ops import reference
from segdcn.ops._checks import deform_conv2d_args
from tests.helpers import ConvCase, assert_close, run


def test_extension_is_built():
    info = segdcn.ops.build_info()
    assert info["native"], f"segdcn._C failed to load: {info.get('error')}"
    assert set(info) >= {"native", "cuda", "cuda_arch_list"}
    assert info["openmp"], "the CPU kernels were built without OpenMP, so at::parallel_for is serial"


@st.composite
def conv_cases(draw, offsets=("normal", "far", "integer")):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 2]))
    offset_groups = draw(st.sampled_from([1, 2, 4]))
    in_channels = math.lcm(groups, offset_groups) * draw(st.integers(1, 2))
    return draw_geometry(draw, ConvCase(in_channels=in_channels, out_channels=groups * draw(st.integers(1, 3)),
                                        kernel=(kh, kw), groups=groups, offset_groups=offset_groups),
                         batch=5, size=9, offsets=offsets)  # fmt: skip


def draw_geometry(draw, channels: ConvCase, batch: int, size: int, offsets=("normal", "far", "integer")) -> ConvCase:
    """`channels` (its channels, kernel and groups) with a drawn batch, map size up to `size`, stride,
    padding, dilation, mask, bias and kind of offsets; only cases with a non-empty output."""
    case = dataclasses.replace(
        channels,
        batch=draw(st.integers(1, batch)),
        height=draw(st.integers(1, size)),
        width=draw(st.integers(1, size)),
        stride=(draw(st.integers(1, 2)), draw(st.integers(1, 2))),
        padding=(draw(st.integers(0, 2)), draw(st.integers(0, 2))),
        dilation=(draw(st.integers(1, 2)), draw(st.integers(1, 2))),
        mask=draw(st.booleans()),
        bias=draw(st.booleans()),
        offsets=draw(st.sampled_from(offsets)),
    )
    assume(min(case.out_size) > 0)
    return case


def boundary_samples(case: ConvCase, offset: torch.Tensor) -> torch.Tensor:
    """[N, 2 * offset_groups * K, oh, ow]: offset entries whose sample lies exactly on h in {-1, H} or w in {-1, W}."""
    args = deform_conv2d_args(
        torch.empty(case.batch, case.in_channels, case.height, case.width, dtype=offset.dtype),
        offset,
        torch.empty(case.out_channels, case.in_channels // case.groups, *case.kernel, dtype=offset.dtype),
        None, case.stride, case.padding, case.dilation, None,
    )  # fmt: skip
    h, w = reference.sample_positions(offset, case.kernel, args)
    on_edge = (h == -1) | (h == case.height) | (w == -1) | (w == case.width)  # [N, G, K, oh, ow]
    return on_edge.unsqueeze(3).expand(*h.shape[:3], 2, *h.shape[3:]).reshape(offset.shape)


def check_against_torchvision(case: ConvCase, dtype: torch.dtype, tol: float) -> None:
    tensors = case.tensors(dtype)
    out, grads, grad_out = run(segdcn.ops.deform_conv2d, case, tensors)
    tv_out, tv_grads, _ = run(torchvision.ops.deform_conv2d, case, tensors, grad_out)
    assert_close(out, tv_out, tol, "output")
    edge = boundary_samples(case, tensors["offset"].double())
    for name, grad in grads.items():
        expected = tv_grads[name]
        if name == "offset":
            # torchvision's coordinate gradient ignores its own boundary rule at exactly -1 / H
            # (pytorch/vision#6885); those entries are checked by finite differences below.
            grad, expected = grad.masked_fill(edge, 0), expected.masked_fill(edge, 0)
        assert_close(grad, expected, tol, f"grad of {name}")
    if edge.any():
        check_boundary_offset_grad(case, tensors, grads["offset"], grad_out, edge)


def check_boundary_offset_grad(case, tensors, grad_offset, grad_out, edge) -> None:
    """On the boundary a sample counts as outside: its offset gradient is the derivative on
    the outer side, which is zero. Checked as a directional finite difference of
    torchvision's forward along the outward direction of every such sample."""
    assert (grad_offset[edge] == 0).all()
    offset = tensors["offset"].double()
    args = deform_conv2d_args(
        tensors["input"].double(), offset, tensors["weight"].double(), None, case.stride, case.padding,
        case.dilation, None,
    )  # fmt: skip
    h, w = reference.sample_positions(offset, case.kernel, args)
    direction = torch.stack(
        [torch.where(h == -1, -1.0, torch.where(h == case.height, 1.0, 0.0)),
         torch.where(w == -1, -1.0, torch.where(w == case.width, 1.0, 0.0))], dim=3,
    ).reshape(offset.shape).double()  # fmt: skip
    direction = direction * edge

    def f(off):
        t = {k: (v.double() if v is not None else None) for k, v in tensors.items()}
        y = torchvision.ops.deform_conv2d(t["input"], off, t["weight"], t["bias"], mask=t["mask"], **case.kwargs())
        return (y * grad_out.double()).sum()

    eps = 1e-4
    fd = (f(offset + eps * direction) - f(offset)) / eps
    assert abs(fd.item() - (grad_offset.double() * direction).sum().item()) < 1e-8


@given(conv_cases())
def test_matches_torchvision_float64(case):
    check_against_torchvision(case, torch.float64, 1e-10)


@given(conv_cases())
def test_matches_torchvision_float32(case):
    check_against_torchvision(case, torch.float32, 1e-4)


@given(conv_cases())
def test_native_matches_reference(case):
    tensors = case.tensors(torch.float64)
    out, grads, grad_out = run(segdcn.ops.deform_conv2d, case, tensors)
    ref_out, ref_grads, _ = run(reference.deform_conv2d, case, tensors, grad_out)
    assert_close(out, ref_out, 1e-10, "output")
    for name in grads:
        assert_close(grads[name], ref_grads[name], 1e-10, f"grad of {name}")


@pytest.mark.parametrize(
    "case",
    [
        ConvCase(),
        ConvCase(stride=(2, 1), padding=(0, 2), dilation=(2, 1), kernel=(3, 2)),
        ConvCase(in_channels=4, out_channels=4, groups=2, offset_groups=2, mask=True),
        ConvCase(batch=1, in_channels=4, out_channels=2, offset_groups=4, mask=True, bias=False, stride=(2, 2)),
    ],
    ids=["plain", "strided-dilated-nonsquare", "groups-modulated", "offset-groups-4"],
)
def test_gradcheck(case):
    check_gradcheck(case)


def check_gradcheck(case: ConvCase) -> None:
    """torch.autograd.gradcheck in float64 of the op's gradients of every tensor argument."""
    tensors = case.tensors(torch.float64)
    names = [k for k in ("input", "offset", "weight", "bias", "mask") if tensors[k] is not None]
    leaves = [tensors[k].clone().requires_grad_() for k in names]

    def fn(*args):
        t = dict(zip(names, args, strict=True))
        return segdcn.ops.deform_conv2d(
            t["input"], t["offset"], t["weight"], t.get("bias"), mask=t.get("mask"), **case.kwargs()
        )

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize(
    "case",
    [
        ConvCase(offsets="zero", mask=True),
        ConvCase(offsets="zero", stride=(2, 2), dilation=(2, 1), padding=(2, 0), groups=2, out_channels=4),
        ConvCase(offsets="zero", offset_groups=2, kernel=(1, 3), padding=(0, 1), mask=True),
    ],
)
def test_zero_offsets_equal_conv2d(case, dtype, tol):
    t = case.tensors(dtype)
    mask = torch.ones_like(t["mask"]) if case.mask else None
    out = segdcn.ops.deform_conv2d(t["input"], t["offset"], t["weight"], t["bias"], mask=mask, **case.kwargs())
    expected = F.conv2d(t["input"], t["weight"], t["bias"], groups=case.groups, **case.kwargs())
    assert_close(out, expected, tol)


def test_batch_larger_than_one_chunk():
    # 64 channels x 9 taps x 96x96 positions x 4 bytes = 21 MB of columns per image, so the
    # 32 MB column budget holds one image and the three images run as three chunks.
    case = ConvCase(batch=3, in_channels=64, out_channels=8, height=96, width=96, mask=True, offset_groups=2)
    tensors = case.tensors(torch.float32)
    out, grads, grad_out = run(segdcn.ops.deform_conv2d, case, tensors)
    tv_out, tv_grads, _ = run(torchvision.ops.deform_conv2d, case, tensors, grad_out)
    assert_close(out, tv_out, 1e-4, "output")
    for name in grads:
        assert_close(grads[name], tv_grads[name], 1e-4, f"grad of {name}")


def test_empty_batch():
    case = ConvCase(batch=0, mask=True)
    t = case.tensors(torch.float32)
    out = segdcn.ops.deform_conv2d(t["input"], t["offset"], t["weight"], t["bias"], mask=t["mask"], **case.kwargs())
    assert out.shape == (0, case.out_channels, *case.out_size)


def test_any_memory_layout():
    case = ConvCase(batch=2, in_channels=8, out_channels=8, height=9, width=9, mask=True)
    t = case.tensors(torch.float32)
    expected = segdcn.ops.deform_conv2d(t["input"], t["offset"], t["weight"], t["bias"], mask=t["mask"], padding=1)
    channels_last = {k: v.contiguous(memory_format=torch.channels_last) for k, v in t.items() if v.dim() == 4}
    out = segdcn.ops.deform_conv2d(
        channels_last["input"], channels_last["offset"], channels_last["weight"], t["bias"],
        mask=channels_last["mask"], padding=1,
    )  # fmt: skip
    assert_close(out, expected, 1e-6)
    strided = {k: v.transpose(2, 3).contiguous().transpose(2, 3) for k, v in t.items() if v.dim() == 4}
    out = segdcn.ops.deform_conv2d(
        strided["input"], strided["offset"], strided["weight"], t["bias"], mask=strided["mask"], padding=1
    )
    assert_close(out, expected, 1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_run_in_float32_on_cpu(dtype):
    case = ConvCase(mask=True)
    t = case.tensors(dtype)
    out, grads, grad_out = run(segdcn.ops.deform_conv2d, case, t)
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads.values())
    t32 = {k: (v.float() if v is not None else None) for k, v in t.items()}
    float32_out, float32_grads, _ = run(segdcn.ops.deform_conv2d, case, t32, grad_out.float())
    assert torch.equal(out, float32_out.to(dtype))
    for name, grad in grads.items():
        assert torch.equal(grad, float32_grads[name].to(dtype)), name
    expected = torchvision.ops.deform_conv2d(
        t32["input"], t32["offset"], t32["weight"], t32["bias"], mask=t32["mask"], **case.kwargs()
    )
    assert_close(out.float(), expected, 1e-2)


def test_cpu_autocast():
    case = ConvCase(mask=True)
    t = case.tensors(torch.float32)
    leaves = {k: v.clone().requires_grad_() for k, v in t.items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = segdcn.ops.deform_conv2d(
            leaves["input"], leaves["offset"], leaves["weight"], leaves["bias"], mask=leaves["mask"], padding=1
        )
    assert out.dtype == torch.bfloat16
    float32_out = segdcn.ops.deform_conv2d(t["input"], t["offset"], t["weight"], t["bias"], mask=t["mask"], padding=1)
    assert torch.equal(out, float32_out.to(torch.bfloat16))
    expected = torchvision.ops.deform_conv2d(t["input"], t["offset"], t["weight"], t["bias"], mask=t["mask"], padding=1)
    assert_close(out.float(), expected, 1e-2)
    out.float().sum().backward()
    assert all(v.grad is not None and v.grad.dtype == torch.float32 for v in leaves.values())


OPCHECK_CASES = {
    "plain": ConvCase(),
    "strided-grouped": ConvCase(
        out_channels=4, width=9, stride=(2, 1), padding=(0, 2), dilation=(1, 2), groups=2, offset_groups=2
    ),
    "depthwise": ConvCase(in_channels=4, out_channels=4, groups=4, offset_groups=2),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("mask", [False, True], ids=["v1", "v2-mask"])
@pytest.mark.parametrize("name", list(OPCHECK_CASES))
def test_opcheck(name, mask, dtype):
    """The op's schema, autograd registration, fake kernel and AOT dispatch (torch.library.opcheck)."""
    case = dataclasses.replace(OPCHECK_CASES[name], mask=mask)
    t = {k: (v.requires_grad_() if v is not None else None) for k, v in case.tensors(dtype).items()}
    args = (t["input"], t["weight"], t["offset"], t["mask"], t["bias"], list(case.stride), list(case.padding),
            list(case.dilation), case.groups, case.offset_groups)  # fmt: skip
    torch.library.opcheck(torch.ops.segdcn.deform_conv2d, args)
