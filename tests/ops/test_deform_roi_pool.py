"""Deformable RoI pooling and its position-sensitive form: torchvision oracles at zero offsets,
the pure-PyTorch reference with offsets, gradcheck, input checks, modules, and the CUDA kernels
run on the host (tests/ops/cuda_emulation_roi.cpp)."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision.ops

import segdcn.ops
from segdcn.ops import reference
from tests.helpers import run_python, run_without_extension

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def make_rois(batch: int, height: int, width: int, scale: float, count: int = 12, seed: int = 0, dtype=torch.float64):
    """Boxes in image pixels (before spatial_scale): inside, partly and wholly outside, tiny and empty."""
    g = torch.Generator().manual_seed(seed)
    h, w = height / scale, width / scale
    x1 = torch.rand(count, generator=g, dtype=torch.float64) * (w * 1.4) - 0.2 * w
    y1 = torch.rand(count, generator=g, dtype=torch.float64) * (h * 1.4) - 0.2 * h
    bw = torch.rand(count, generator=g, dtype=torch.float64) * w * 0.8
    bh = torch.rand(count, generator=g, dtype=torch.float64) * h * 0.8
    index = torch.randint(0, batch, (count,), generator=g).double()
    rois = torch.stack([index, x1, y1, x1 + bw, y1 + bh], 1)
    extra = torch.tensor(
        [
            [0, -3 * w, -3 * h, -2 * w, -2 * h],  # wholly outside
            [batch - 1, 0.2 * w, 0.3 * h, 0.2 * w, 0.3 * h],  # empty box
            [0, 0.5 * w, 0.5 * h, 0.5 * w + 0.3, 0.5 * h + 0.2],  # smaller than a pixel
            [batch - 1, -0.5 * w, -0.5 * h, 1.5 * w, 1.5 * h],  # covers the image and beyond
            [0, 0, 0, w, h],
        ],
        dtype=torch.float64,
    )
    return torch.cat([rois, extra]).to(dtype)


def features(shape, dtype=torch.float64, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def close(actual, expected, tol, what="values"):
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=tol, atol=tol, msg=lambda m: f"{what}: {m}")


# --- zero offsets equal torchvision ------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize(
    ("sampling_ratio", "scale", "size"), [(0, 1.0, 7), (2, 0.5, (3, 5)), (1, 0.25, 2), (3, 1.0, 4)]
)
def test_zero_offset_equals_roi_align(dtype, sampling_ratio, scale, size):
    input = features((2, 3, 11, 13), dtype)
    rois = make_rois(2, 11, 13, scale, dtype=dtype)
    expected = torchvision.ops.roi_align(input, rois, size, scale, sampling_ratio, aligned=True)
    for offset in (None, torch.zeros(rois.shape[0], 2, *torch.nn.modules.utils._pair(size), dtype=dtype)):
        out = segdcn.ops.deform_roi_pool(input, rois, offset, size, scale, sampling_ratio)
        close(out, expected, TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize(("sampling_ratio", "scale", "size"), [(0, 1.0, 3), (2, 0.5, 2), (1, 1.0, 4)])
def test_ps_zero_offset_equals_ps_roi_align(dtype, sampling_ratio, scale, size):
    input = features((2, 2 * size * size, 12, 10), dtype)
    rois = make_rois(2, 12, 10, scale, dtype=dtype)
    expected = torchvision.ops.ps_roi_align(input, rois, size, scale, sampling_ratio)
    # ps_roi_align divides by a zero sample count for empty boxes (NaN); roi_align and segdcn give 0
    empty = expected.isnan()
    assert empty.any() == (sampling_ratio == 0)
    expected[empty] = 0
    out = segdcn.ops.deform_ps_roi_pool(input, rois, None, size, scale, sample_per_part=sampling_ratio)
    close(out, expected, TOL[dtype])
    zeros = torch.zeros(rois.shape[0], 4, 2, 2, dtype=dtype)  # two classes, 2 x 2 parts
    out = segdcn.ops.deform_ps_roi_pool(input, rois, zeros, size, scale, part_size=2, sample_per_part=sampling_ratio)
    close(out, expected, TOL[dtype])


# --- offsets: native against the reference, and gradcheck ----------------------------------------


def plain_case(dtype=torch.float64, rois_count=6):
    input = features((2, 3, 9, 10), dtype)
    rois = make_rois(2, 9, 10, 0.5, count=rois_count, dtype=dtype)
    offset = features((rois.shape[0], 2, 3, 4), dtype, seed=2) * 0.7
    return input, rois, offset, {"output_size": (3, 4), "spatial_scale": 0.5, "sampling_ratio": 0, "gamma": 0.3}


def ps_case(dtype=torch.float64, rois_count=6):
    # 2 output channels x 2 x 2 score maps, 3 x 3 bins, 2 x 2 part cells, offsets per channel (2 classes)
    input = features((2, 8, 9, 10), dtype)
    rois = make_rois(2, 9, 10, 1.0, count=rois_count, dtype=dtype)
    offset = features((rois.shape[0], 4, 2, 2), dtype, seed=3) * 0.7
    kwargs = {"output_size": 3, "spatial_scale": 1.0, "group_size": 2, "part_size": 2, "sample_per_part": 2}
    return input, rois, offset, {**kwargs, "trans_std": 0.2}


CASES = {"plain": (plain_case, "deform_roi_pool"), "ps": (ps_case, "deform_ps_roi_pool")}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", list(CASES))
def test_offsets_match_reference(name, dtype):
    make, op = CASES[name]
    input, rois, offset, kwargs = make(dtype)
    tensors = [t.clone().requires_grad_() for t in (input, offset)]
    ref = [t.detach().double().requires_grad_() for t in (input, offset)]
    out = getattr(segdcn.ops, op)(tensors[0], rois, tensors[1], **kwargs)
    expected = getattr(reference, op)(ref[0], rois.double(), ref[1], **kwargs)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    close(out, expected, tol, "output")
    assert out.abs().sum() > 0
    grad = features(out.shape, dtype, seed=4)
    out.backward(grad)
    expected.backward(grad.double())
    close(tensors[0].grad, ref[0].grad, tol, "input grad")
    close(tensors[1].grad, ref[1].grad, tol, "offset grad")
    assert tensors[1].grad.abs().sum() > 0


@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck(name):
    make, op = CASES[name]
    input, rois, offset, kwargs = make(torch.float64, rois_count=3)
    input.requires_grad_()
    offset.requires_grad_()

    def fn(input, offset):
        return getattr(segdcn.ops, op)(input, rois, offset, **kwargs)

    assert torch.autograd.gradcheck(fn, (input, offset))


@pytest.mark.parametrize("name", list(CASES))
def test_opcheck(name):
    make, op = CASES[name]
    input, rois, offset, kwargs = make(torch.float64, rois_count=2)
    if name == "plain":
        args = (input, rois, offset, 3, 4, 0.5, 0, 0.3)
    else:
        args = (input, rois, offset, 2, 2, 3, 2, 1.0, 2, 0.2)
    torch.library.opcheck(getattr(torch.ops.segdcn, op), args)
    torch.library.opcheck(
        getattr(torch.ops.segdcn, op), (input.requires_grad_(), rois, offset.requires_grad_(), *args[3:])
    )


def test_parallel_threads_agree():
    input, rois, offset, kwargs = plain_case(rois_count=20)
    input.requires_grad_()
    offset.requires_grad_()
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            out = segdcn.ops.deform_roi_pool(input, rois, offset, **kwargs)
            results.append([out, *torch.autograd.grad(out.sum(), (input, offset))])
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results, strict=True):
        close(a, b, 1e-12)


# --- edge cases and input checks -----------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_empty_rois(name):
    make, op = CASES[name]
    input, rois, offset, kwargs = make()
    input.requires_grad_()
    out = getattr(segdcn.ops, op)(input, rois[:0], offset[:0], **kwargs)
    assert out.shape[0] == 0
    out.sum().backward()
    assert torch.equal(input.grad, torch.zeros_like(input))
    assert getattr(reference, op)(input, rois[:0], offset[:0], **kwargs).shape == out.shape


def test_roi_outside_is_zero_and_partial_matches_roi_align():
    input = features((1, 2, 6, 6))
    rois = torch.tensor([[0, -20.0, -20, -10, -10], [0, 4, 4, 14, 14], [0, -5, 2, 3, 9]], dtype=torch.float64)
    offset = torch.zeros(3, 2, 2, 2, dtype=torch.float64)
    out = segdcn.ops.deform_roi_pool(input, rois, offset, 2)
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    close(out, torchvision.ops.roi_align(input, rois, 2, aligned=True), 1e-12)


BAD_ROIS = {
    "x2 < x1": [0, 5.0, 1, 2, 4],
    "y2 < y1": [0, 1.0, 5, 2, 4],
    "batch index too large": [2, 1.0, 1, 2, 2],
    "negative batch index": [-1, 1.0, 1, 2, 2],
    "fractional batch index": [0.5, 1.0, 1, 2, 2],
    "nan": [0, float("nan"), 1, 2, 2],
    "inf": [0, 1.0, 1, float("inf"), 2],
}


@pytest.mark.parametrize("what", list(BAD_ROIS))
@pytest.mark.parametrize("op", ["deform_roi_pool", "deform_ps_roi_pool", "reference"])
def test_malformed_rois_raise(what, op):
    input = features((2, 4, 5, 5))
    rois = torch.tensor([[0, 0, 0, 3, 3], BAD_ROIS[what]], dtype=torch.float64)
    fn = reference.deform_roi_pool if op == "reference" else getattr(segdcn.ops, op)
    with pytest.raises(ValueError, match=r"rois\[1\]"):
        fn(input, rois, None, 2)


def test_raw_op_rejects_bad_batch_index():
    input = features((2, 4, 5, 5))
    rois = torch.tensor([[7, 0, 0, 3, 3]], dtype=torch.float64)
    with pytest.raises(RuntimeError, match="batch indices"):
        torch.ops.segdcn.deform_roi_pool(input, rois, None, 2, 2, 1.0, 0, 0.1)


def test_bad_arguments_name_themselves():
    input = features((2, 4, 5, 5))
    rois = torch.tensor([[0, 0, 0, 3, 3]], dtype=torch.float64)
    pool = segdcn.ops.deform_roi_pool
    cases = [
        (lambda: pool(input, rois[:, :4], None, 2), ValueError, "rois must have shape"),
        (lambda: pool(input[0], rois, None, 2), ValueError, "input must be 4-D"),
        (lambda: pool(input, rois.float(), None, 2), TypeError, "rois has dtype"),
        (lambda: pool(input.long(), rois, None, 2), TypeError, "input must be a floating-point"),
        (lambda: pool(input.half(), rois.half(), None, 2), TypeError, "float32 or float64"),
        (lambda: pool(input, rois, torch.zeros(1, 2, 3, 2, dtype=torch.float64), 2), ValueError, "offset must have"),
        (lambda: pool(input, rois, None, 0), ValueError, "output_size"),
        (lambda: pool(input, rois, None, 2, 0.0), ValueError, "spatial_scale"),
        (lambda: pool(input, rois, None, 2, 1.0, -1), ValueError, "sampling_ratio"),
        (lambda: pool(input, rois, None, 2, 1.0, 1.5), TypeError, "sampling_ratio"),
        (lambda: pool(input, [0, 0, 0, 1, 1], None, 2), TypeError, "rois must be"),
        (lambda: segdcn.ops.deform_ps_roi_pool(input, rois, None, 3), ValueError, "group_size"),
        (lambda: segdcn.ops.deform_ps_roi_pool(input, rois, None, 2, output_dim=2), ValueError, "channels"),
        (
            lambda: segdcn.ops.deform_ps_roi_pool(input, rois, torch.zeros(1, 6, 2, 2, dtype=torch.float64), 2),
            ValueError,
            "offset must have",
        ),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


def test_fuzzed_shapes_raise_clear_errors():
    g = torch.Generator().manual_seed(5)
    for _ in range(40):
        dims = [int(v) for v in torch.randint(0, 4, (4,), generator=g)]
        input = torch.randn(*[d + 1 for d in dims[:2]], 6, 6, dtype=torch.float64)
        rois_shape = (int(torch.randint(0, 3, (), generator=g)), int(torch.randint(3, 7, (), generator=g)))
        rois = torch.rand(rois_shape, generator=g, dtype=torch.float64) * 4
        if rois_shape[1] == 5:
            rois[:, 0] = 0
            rois[:, 3:] += rois[:, 1:3]
        offset = torch.zeros(rois_shape[0], int(dims[2]), 2, int(dims[3]) + 1, dtype=torch.float64)
        for op in (segdcn.ops.deform_roi_pool, segdcn.ops.deform_ps_roi_pool):
            try:
                out = op(input, rois, offset, 2)
            except (ValueError, TypeError) as error:
                assert any(name in str(error) for name in ("input", "rois", "offset", "channels", "group_size"))
            else:
                assert out.shape[0] == rois_shape[0]


# --- modules -------------------------------------------------------------------------------------


def test_pack_equals_plain_pooling_at_init_and_learns_offsets():
    torch.manual_seed(0)
    input = features((2, 3, 9, 10), torch.float32).requires_grad_()
    rois = make_rois(2, 9, 10, 0.5, count=5, dtype=torch.float32)
    pack = segdcn.ops.DeformRoIPoolPack((3, 3), 3, deform_fc_channels=16, spatial_scale=0.5)
    out = pack(input, rois)
    close(out, torchvision.ops.roi_align(input, rois, 3, 0.5, 0, aligned=True), 1e-6)
    out.square().sum().backward()
    assert pack.offset_fc[-1].weight.grad.abs().sum() > 0
    assert input.grad.abs().sum() > 0
    # after one step the offsets are non-zero, and their gradient reaches the earlier fc layers
    with torch.no_grad():
        pack.offset_fc[-1].weight.add_(torch.randn_like(pack.offset_fc[-1].weight) * 0.1)
    pack.zero_grad()
    pack(input, rois).square().sum().backward()
    assert pack.offset_fc[0].weight.grad.abs().sum() > 0


def test_modulated_pack_halves_at_init():
    input = features((1, 2, 8, 8), torch.float32)
    rois = make_rois(1, 8, 8, 1.0, count=3, dtype=torch.float32)
    pack = segdcn.ops.ModulatedDeformRoIPoolPack(2, 2, deform_fc_channels=8)
    close(pack(input, rois), 0.5 * segdcn.ops.DeformRoIPool(2)(input, rois), 1e-6)


def test_ps_module():
    input, rois, offset, kwargs = ps_case(torch.float32)
    module = segdcn.ops.DeformPSRoIPool(3, 2, group_size=2, part_size=2, sample_per_part=2, trans_std=0.2)
    close(module(input, rois, offset), segdcn.ops.deform_ps_roi_pool(input, rois, offset, **kwargs), 0)


# --- the CUDA kernels, run on the host -----------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", list(CASES))
def test_emulated_cuda_kernels_match_cpu(emulation, name, dtype):
    make, op = CASES[name]
    input, rois, offset, _ = make(dtype, rois_count=10)
    if name == "plain":
        params = (3, 4, 0.5, 0, 0.3)
    else:
        params = (2, 2, 3, 2, 1.0, 2, 0.2)
    grad = features((rois.shape[0], *getattr(torch.ops.segdcn, op)(input, rois, offset, *params).shape[1:]), dtype)
    for off in (offset, None):
        expected = [getattr(torch.ops.segdcn, op)(input, rois, off, *params)]
        expected += getattr(torch.ops.segdcn, op + "_backward")(grad, input, rois, off, *params, [True, True])
        actual = [getattr(emulation, op)(input, rois, off, *params)]
        actual += getattr(emulation, op + "_backward")(grad, input, rois, off, *params, [True, True])
        for what, a, e in zip(["output", "input grad", "offset grad"], actual, expected, strict=True):
            close(a, e, TOL[dtype] * 10, f"{name} {what}")


# --- without the extension, and the benchmark ------------------------------------------------------

WITHOUT_EXTENSION = """
import warnings
import torch, torchvision.ops
import segdcn.ops

x = torch.randn(1, 8, 6, 6, dtype=torch.float64)
rois = torch.tensor([[0, 0.5, 1, 4, 5]], dtype=torch.float64)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out = segdcn.ops.deform_roi_pool(x, rois, None, 2)
    ps = segdcn.ops.deform_ps_roi_pool(x, rois, None, 2)
assert any("reference" in str(c.message) for c in caught)
assert (out - torchvision.ops.roi_align(x, rois, 2, aligned=True)).abs().max() < 1e-12
assert (ps - torchvision.ops.ps_roi_align(x, rois, 2)).abs().max() < 1e-12
print("ok")
"""


def test_falls_back_to_reference():
    result = run_without_extension(WITHOUT_EXTENSION)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_bench_ops_roi_table(tmp_path):
    out = tmp_path / "bench.json"
    result = run_python(
        "scripts/bench_ops.py", "--roi-only", "--roi-config", "5,4,9", "--repeat", "1",
         "--threads", "1", "--json", str(out)
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "roi_align" in result.stdout and "fwdbwd ratio" in result.stdout
    data = json.loads(out.read_text())
    assert data["results"] == [] and all(t > 0 for t in data["roi"][0]["times"].values())


# --- on a GPU, when there is one -------------------------------------------------------------------

CUDA_BUILT = segdcn.ops.build_info()["cuda"]


def test_cuda_kernels_registered():
    if not CUDA_BUILT:
        pytest.skip("segdcn._C was built without CUDA kernels")
    for op in ("deform_roi_pool", "deform_roi_pool_backward", "deform_ps_roi_pool", "deform_ps_roi_pool_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"segdcn::{op}", "CUDA"), op


@pytest.mark.gpu
@pytest.mark.skipif(not (CUDA_BUILT and torch.cuda.is_available()), reason="needs a CUDA build and a GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", list(CASES))
def test_cuda_matches_cpu(name, dtype):
    make, op = CASES[name]
    input, rois, offset, kwargs = make(dtype, rois_count=10)
    results = []
    for device in ("cpu", "cuda"):
        leaves = [t.to(device).requires_grad_() for t in (input, offset)]
        out = getattr(segdcn.ops, op)(leaves[0], rois.to(device), leaves[1], **kwargs)
        grads = torch.autograd.grad(out, leaves, features(out.shape, dtype, seed=4).to(device))
        results.append([t.cpu() for t in (out, *grads)])
    for what, a, e in zip(["output", "input grad", "offset grad"], results[1], results[0], strict=True):
        close(a, e, 1e-4 if dtype == torch.float32 else 1e-10, what)
