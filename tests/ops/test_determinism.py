"""Determinism of the segdcn ops (docs/training.md, Determinism).

CPU: at a fixed thread count the ops are bitwise reproducible: two runs of forward and backward in
one process give equal tensors (torch.equal), on shapes that use the CPU plan's parallel loops and,
for deform_conv2d, its per-thread input-gradient buffers. CUDA: the backward kernels that add with
atomics alert PyTorch's determinism check (at::globalContext().alertNotDeterministic) before they
launch; a text check of kernels/cuda documents that contract on every machine, and with a GPU the
backward raises under torch.use_deterministic_algorithms(True) and warns with warn_only=True.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import torch

import segdcn.ops
from tests.helpers import ROOT
from tests.ops.test_plans import cpu_plan

THREADS = 2
CUDA_DIR = ROOT / "kernels" / "cuda"
ATOMIC = re.compile(r"\b(?:SEGDCN_ATOMIC_ADD|atomicAdd|gpuAtomicAdd\w*)\s*\(")
ALERT = re.compile(r'at::globalContext\(\)\.alertNotDeterministic\("(\w+_backward)\b[^"]*\(CUDA\)"\)')

gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
needs_cuda_build = pytest.mark.skipif(
    not segdcn.ops.build_info()["cuda"],
    reason="segdcn._C was built without CUDA kernels (no nvcc or SEGDCN_CUDA=0 at build time)",
)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        assert torch.get_num_threads() == THREADS
        yield
    finally:
        torch.set_num_threads(before)


def run_twice(fn: Callable[[], dict[str, torch.Tensor]]) -> None:
    """fn() twice; every tensor it returns must be bitwise equal between the runs."""
    first, second = fn(), fn()
    assert first.keys() == second.keys()
    for name, value in first.items():
        assert value.shape == second[name].shape, name
        assert torch.equal(value, second[name]), f"{name} differs between two runs at {THREADS} threads"


def forward_backward(
    fn: Callable, leaves: dict[str, torch.Tensor | None], constants: tuple[str, ...] = (), seed: int = 7
) -> dict[str, torch.Tensor]:
    """fn(**leaves)'s output and the gradients of every leaf but `constants` for a fixed random
    grad_output, from fresh copies of the leaves."""
    fresh = {
        k: (v.detach().clone().requires_grad_(k not in constants) if v is not None else None) for k, v in leaves.items()
    }
    out = fn(**fresh)
    grad_output = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    wanted = [k for k, v in fresh.items() if v is not None and k not in constants]
    grads = torch.autograd.grad(out, [fresh[k] for k in wanted], grad_output.to(out.dtype))
    return {"output": out.detach(), **{f"grad_{k}": g for k, g in zip(wanted, grads, strict=True)}}


# --- deform_conv2d on the CPU ---------------------------------------------------------------------
#
# C = 64 and a 3x3 kernel give a columns row of 576 entries: row_grain (kernels/cpu) is 56 positions,
# so the 1089 positions of an image split over both threads, and a tile holds 3640 rows, so
# chunk_images = 3 and N = 4 runs two chunks (3 images, then 1: the per-thread input-gradient
# buffers are summed, zeroed and refilled). 4 offset groups of 16 channels, 2 weight groups.

N, C_IN, C_OUT, SIZE, OFFSET_GROUPS, GROUPS = 4, 64, 64, 33, 4, 2


def conv_leaves(dtype: torch.dtype, modulated: bool) -> dict[str, torch.Tensor | None]:
    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    taps = OFFSET_GROUPS * 9
    # fractional offsets of a few pixels, and one in 8 far enough to leave the image
    offset = randn(N, 2 * taps, SIZE, SIZE) * 2.5
    far = torch.rand(offset.shape, generator=g, dtype=torch.float64) < 0.125
    offset = torch.where(far, offset * 20, offset)
    leaves = {
        "input": randn(N, C_IN, SIZE, SIZE),
        "offset": offset,
        "weight": randn(C_OUT, C_IN // GROUPS, 3, 3) / 24,
        "bias": randn(C_OUT),
        "mask": torch.rand(N, taps, SIZE, SIZE, generator=g, dtype=torch.float64) if modulated else None,
    }
    return {k: (v.to(dtype) if v is not None else None) for k, v in leaves.items()}


def conv(input, offset, weight, bias, mask):
    return segdcn.ops.deform_conv2d(input, offset, weight, bias, padding=1, mask=mask)


@pytest.mark.usefixtures("two_threads")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("modulated", [False, True], ids=["dcnv1", "modulated"])
@pytest.mark.parametrize("gemms", ["rows", "taps"])  # the im2col plan's two ways (tests/ops/test_plans.py)
def test_deform_conv2d_cpu_is_bitwise_reproducible(dtype, modulated, gemms):
    with cpu_plan(f"im2col-{gemms}"):  # the layer's own plan (32 output channels per group), one way
        check_reproducible(conv_leaves(dtype, modulated), modulated)


def check_reproducible(leaves: dict[str, torch.Tensor | None], modulated: bool) -> None:
    result = forward_backward(conv, leaves)
    expected = {"output", "grad_input", "grad_offset", "grad_weight", "grad_bias"} | (
        {"grad_mask"} if modulated else set()
    )
    assert result.keys() == expected
    # the shape exercises what it is meant to: samples inside and outside, gradients everywhere
    assert (result["grad_input"] != 0).float().mean() > 0.9
    assert (result["grad_offset"] == 0).any() and (result["grad_offset"] != 0).float().mean() > 0.5
    run_twice(lambda: forward_backward(conv, leaves))


# The direct plan (grouped and depthwise layers): 2 images of 33x33 on both threads' slices, each with
# its own input- and weight-gradient buffers, summed in slice order.
DIRECT_SHAPES = {"depthwise": (64, 64, 64), "groups-of-8": (64, 64, 8)}  # C_in, C_out, groups


@pytest.mark.usefixtures("two_threads")
@pytest.mark.parametrize("shape", list(DIRECT_SHAPES))
@pytest.mark.parametrize("modulated", [False, True], ids=["dcnv1", "modulated"])
def test_direct_plan_is_bitwise_reproducible(shape, modulated):
    c_in, c_out, groups = DIRECT_SHAPES[shape]
    assert segdcn.ops.deform_conv2d_plan(c_in, c_out, groups) == "direct"
    g = torch.Generator().manual_seed(0)
    taps = OFFSET_GROUPS * 9
    leaves = {
        "input": torch.randn(2, c_in, SIZE, SIZE, generator=g),
        "offset": torch.randn(2, 2 * taps, SIZE, SIZE, generator=g) * 2.5,
        "weight": torch.randn(c_out, c_in // groups, 3, 3, generator=g),
        "bias": torch.randn(c_out, generator=g),
        "mask": torch.rand(2, taps, SIZE, SIZE, generator=g) if modulated else None,
    }
    result = forward_backward(conv, leaves)
    assert (result["grad_input"] != 0).float().mean() > 0.9
    run_twice(lambda: forward_backward(conv, leaves))


# --- the RoI ops on the CPU -----------------------------------------------------------------------


def rois_for(batch: int, height: int, width: int, count: int, g: torch.Generator) -> torch.Tensor:
    """Overlapping boxes, some partly outside the image."""
    x1 = torch.rand(count, generator=g, dtype=torch.float64) * width * 1.2 - 0.1 * width
    y1 = torch.rand(count, generator=g, dtype=torch.float64) * height * 1.2 - 0.1 * height
    w = 2 + torch.rand(count, generator=g, dtype=torch.float64) * width * 0.6
    h = 2 + torch.rand(count, generator=g, dtype=torch.float64) * height * 0.6
    index = torch.randint(0, batch, (count,), generator=g).double()
    return torch.stack([index, x1, y1, x1 + w, y1 + h], 1)


ROI_COUNT, ROI_BATCH, ROI_H, ROI_W = 48, 2, 24, 20


def roi_leaves(channels: int, offset_shape: tuple[int, ...], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    leaves = {
        "input": torch.randn(ROI_BATCH, channels, ROI_H, ROI_W, generator=g, dtype=torch.float64),
        "rois": rois_for(ROI_BATCH, ROI_H, ROI_W, ROI_COUNT, g),
        "offset": torch.randn(ROI_COUNT, *offset_shape, generator=g, dtype=torch.float64) * 0.8,
    }
    return {k: v.to(dtype) for k, v in leaves.items()}


@pytest.mark.usefixtures("two_threads")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_deform_roi_pool_cpu_is_bitwise_reproducible(dtype, sampling_ratio):
    leaves = roi_leaves(16, (2, 7, 7), dtype)

    def pool(input, rois, offset):
        return segdcn.ops.deform_roi_pool(input, rois, offset, 7, 1.0, sampling_ratio, 0.1)

    result = forward_backward(pool, leaves, constants=("rois",))
    assert result.keys() == {"output", "grad_input", "grad_offset"}
    assert (result["grad_offset"] != 0).any() and (result["grad_input"] != 0).any()
    run_twice(lambda: forward_backward(pool, leaves, constants=("rois",)))


@pytest.mark.usefixtures("two_threads")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_deform_ps_roi_pool_cpu_is_bitwise_reproducible(dtype):
    # 4 output channels on 3x3 score maps (36 input channels), 2 offset classes on 3x3 part cells
    leaves = roi_leaves(36, (4, 3, 3), dtype)

    def pool(input, rois, offset):
        return segdcn.ops.deform_ps_roi_pool(
            input, rois, offset, output_size=6, output_dim=4, group_size=3, part_size=3, sample_per_part=2
        )

    result = forward_backward(pool, leaves, constants=("rois",))
    assert result.keys() == {"output", "grad_input", "grad_offset"}
    assert (result["grad_offset"] != 0).any() and (result["grad_input"] != 0).any()
    run_twice(lambda: forward_backward(pool, leaves, constants=("rois",)))


# --- CUDA: the atomics alert PyTorch's determinism check -----------------------------------------


def kernels_with_atomics(header_text: str) -> list[str]:
    """The __global__ kernels of a kernel header whose bodies add with atomics."""
    names = []
    for match in re.finditer(r"__global__\s+void\s+(?:__launch_bounds__\(\w+\)\s+)?(\w+)\s*\(", header_text):
        body_start = header_text.index("{", match.end())
        depth, i = 0, body_start
        while True:
            depth += {"{": 1, "}": -1}.get(header_text[i], 0)
            if depth == 0:
                break
            i += 1
        if ATOMIC.search(header_text[body_start:i]):
            names.append(match.group(1))
    return names


def test_cuda_sources_alert_where_they_add_atomically():
    """Every kernels/cuda/*.cu that launches a kernel adding with atomics calls alertNotDeterministic
    (kernels/cuda/*.cu hold the host-side launch functions; the kernels are in the *_kernels.cuh
    headers they include). Those kernels are all backward ones; no forward kernel uses atomics."""
    checked = {}
    for source in sorted(CUDA_DIR.glob("*.cu")):
        text = source.read_text()
        atomic_kernels = []
        for header in re.findall(r'#include\s+"([^"]+_kernels\.cuh)"', text):
            atomic_kernels += kernels_with_atomics((CUDA_DIR / header).read_text())
        assert not ATOMIC.search(text), f"{source.name}: atomics in the host file; keep them in the kernel headers"
        if not atomic_kernels:
            continue
        assert all("forward" not in k and "sample" not in k for k in atomic_kernels), (source.name, atomic_kernels)
        alerts = ALERT.findall(text)
        assert alerts, f"{source.name} launches {atomic_kernels}, which add atomically, without alertNotDeterministic"
        assert "#include <ATen/Context.h>" in text, source.name
        checked[source.name] = (sorted(atomic_kernels), alerts)
    assert checked == {
        "deform_conv2d_cuda.cu": (
            ["direct_input_grad_kernel", "scatter_columns_kernel"],
            ["deform_conv2d_backward"],
        ),
        "deform_roi_pool_cuda.cu": (["roi_pool_backward_kernel"], ["deform_roi_pool_backward"]),
    }


@pytest.fixture
def restore_determinism():
    enabled, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def cuda_backward_cases() -> dict[str, Callable[[], tuple[torch.Tensor, list[torch.Tensor]]]]:
    """Per op: a function giving a CUDA output and the tensors to differentiate it for."""

    def conv_case():
        leaves = {k: v.cuda().requires_grad_() for k, v in conv_leaves(torch.float32, True).items()}
        return conv(**leaves), [leaves["input"], leaves["offset"], leaves["weight"]]

    def roi(ps: bool):
        def make():
            leaves = {
                k: v.cuda()
                for k, v in roi_leaves(36 if ps else 16, (4, 3, 3) if ps else (2, 7, 7), torch.float32).items()
            }
            x, offset = leaves["input"].requires_grad_(), leaves["offset"].requires_grad_()
            if ps:
                out = segdcn.ops.deform_ps_roi_pool(x, leaves["rois"], offset, output_size=6, part_size=3, group_size=3)
            else:
                out = segdcn.ops.deform_roi_pool(x, leaves["rois"], offset, 7)
            return out, [x, offset]

        return make

    return {"deform_conv2d": conv_case, "deform_roi_pool": roi(False), "deform_ps_roi_pool": roi(True)}


@gpu
@needs_cuda
@needs_cuda_build
@pytest.mark.usefixtures("restore_determinism")
@pytest.mark.parametrize("op", ["deform_conv2d", "deform_roi_pool", "deform_ps_roi_pool"])
def test_cuda_backward_is_flagged_nondeterministic(op, monkeypatch):
    """The forward runs under the setting; the backward raises, or warns with warn_only=True."""
    # cuBLAS has its own determinism check (CUBLAS_WORKSPACE_CONFIG), which trainer.deterministic
    # satisfies; set it here so that only segdcn's alert can fire
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    name = "deform_conv2d_backward" if op == "deform_conv2d" else "deform_roi_pool_backward"
    make = cuda_backward_cases()[op]

    torch.use_deterministic_algorithms(True)
    out, wrt = make()
    with pytest.raises(RuntimeError, match=rf"{name}\b.*\(CUDA\).*deterministic"):
        torch.autograd.grad(out.sum(), wrt)

    torch.use_deterministic_algorithms(True, warn_only=True)
    out, wrt = make()
    with pytest.warns(UserWarning, match=rf"{name}\b.*\(CUDA\).*deterministic"):
        grads = torch.autograd.grad(out.sum(), wrt)
    assert all(g.is_cuda and torch.isfinite(g).all() for g in grads)

    torch.use_deterministic_algorithms(False)
    out, wrt = make()
    torch.autograd.grad(out.sum(), wrt)  # no alert without the setting


@gpu
@needs_cuda
@needs_cuda_build
@pytest.mark.usefixtures("restore_determinism")
def test_cuda_deform_conv2d_without_input_gradient_is_not_flagged(monkeypatch):
    """Only the input gradient adds atomically: weight, offset and mask gradients alone pass, and
    they and the forward are bitwise reproducible (one stream, cuBLAS's workspace config set)."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    leaves = {k: v.cuda() for k, v in conv_leaves(torch.float32, True).items()}
    wrt = [leaves[k].requires_grad_() for k in ("offset", "weight", "mask")]
    runs = []
    for _ in range(2):
        out = conv(**leaves)
        runs.append((out.detach(), *torch.autograd.grad(out.sum(), wrt)))
    for name, a, b in zip(("output", "offset", "weight", "mask"), *runs, strict=True):
        assert torch.equal(a, b), name
