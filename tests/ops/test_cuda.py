"""The CUDA kernels (kernels/cuda) against the CPU kernels, plus 64-bit indexing, streams
and devices. Everything but the registration check needs a GPU and is skipped without one."""

from __future__ import annotations

import pytest
import torch

import segdcn.ops
from tests.helpers import ConvCase, assert_close, run

CUDA_BUILT = segdcn.ops.build_info()["cuda"]
NOT_BUILT_REASON = "segdcn._C was built without CUDA kernels (no nvcc or SEGDCN_CUDA=0 at build time)"

gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
needs_cuda_build = pytest.mark.skipif(not CUDA_BUILT, reason=NOT_BUILT_REASON)

TOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}

CASES = {
    "plain": ConvCase(),
    "stride-dilation": ConvCase(kernel=(3, 2), stride=(2, 1), padding=(0, 2), dilation=(1, 2), mask=True),
    "groups": ConvCase(in_channels=4, out_channels=6, groups=2, offset_groups=2, mask=True),
    "offset-groups": ConvCase(in_channels=8, out_channels=4, groups=2, offset_groups=4, kernel=(2, 3), bias=False),
    "outside": ConvCase(offsets="far", mask=True, stride=(2, 2)),
    "integer": ConvCase(offsets="integer", mask=True, offset_groups=2),
    # the direct plan (deform_conv2d_plan): depthwise, and thin groups with a depth multiplier
    "depthwise": ConvCase(in_channels=8, out_channels=8, groups=8, offset_groups=2, mask=True, offsets="far"),
    "grouped-thin": ConvCase(in_channels=8, out_channels=16, groups=4, offset_groups=4, mask=True, stride=(2, 1)),
}


def test_cuda_kernels_registered():
    if not CUDA_BUILT:
        pytest.skip(NOT_BUILT_REASON)
    for op in ("segdcn::deform_conv2d", "segdcn::deform_conv2d_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA"), f"{op} has no CUDA kernel"


def grad_output_for(case: ConvCase, dtype) -> torch.Tensor:
    oh, ow = case.out_size
    g = torch.Generator().manual_seed(1)
    return torch.randn(case.batch, case.out_channels, oh, ow, generator=g, dtype=torch.float64).to(dtype)


@gpu
@needs_cuda
@needs_cuda_build
@pytest.mark.parametrize("dtype", list(TOL), ids=str)
@pytest.mark.parametrize("name", list(CASES))
def test_matches_cpu(name, dtype):
    """Forward and every gradient; the CPU op runs in float64 on the same (rounded) values."""
    case = CASES[name]
    tensors = case.tensors(dtype)
    grad_output = grad_output_for(case, dtype)
    expected_out, expected_grads, _ = run(
        segdcn.ops.deform_conv2d,
        case,
        {k: (v.double() if v is not None else None) for k, v in tensors.items()},
        grad_output.double(),
    )
    out, grads, _ = run(
        segdcn.ops.deform_conv2d,
        case,
        {k: (v.cuda() if v is not None else None) for k, v in tensors.items()},
        grad_output.cuda(),
    )
    assert out.is_cuda and out.dtype == dtype
    assert_close(out.cpu(), expected_out, TOL[dtype], "output")
    assert grads.keys() == expected_grads.keys()
    for k, grad in grads.items():
        assert grad.is_cuda and grad.dtype == dtype, k
        assert_close(grad.cpu(), expected_grads[k], TOL[dtype], k)


@gpu
@needs_cuda
@needs_cuda_build
@pytest.mark.slow
def test_64bit_indexing():
    """A columns buffer of more than 2**31 entries (one image: 64 * 9 * 1940**2), in half.

    The op is depthwise (groups = channels) with one offset group, so the output and input
    gradient of each block of 16 channels, and the sum of the offset and mask gradients over
    the blocks, must equal separate calls on the blocks, whose buffers are 4x smaller.
    """
    channels, size, block = 64, 1940, 16
    assert channels * 9 * size * size > 2**31
    free, _ = torch.cuda.mem_get_info()
    if free < 10 * 2**30:
        pytest.skip(f"needs 10 GiB of free GPU memory, {free / 2**30:.1f} GiB free")
    dev, dtype = "cuda", torch.float16
    x = torch.randn(1, channels, size, size, device=dev, dtype=dtype, requires_grad=True)
    offset = (2 * torch.randn(1, 18, size, size, device=dev)).to(dtype).requires_grad_()
    mask = torch.rand(1, 9, size, size, device=dev, dtype=dtype, requires_grad=True)
    weight = torch.randn(channels, 1, 3, 3, device=dev, dtype=dtype) / 3
    grad_output = torch.randn(1, channels, size, size, device=dev, dtype=dtype)

    out = segdcn.ops.deform_conv2d(x, offset, weight, padding=1, mask=mask)
    grad_x, grad_offset, grad_mask = torch.autograd.grad(out, [x, offset, mask], grad_output)
    out = out.detach()
    assert out[:, -1].abs().sum() > 0  # the last rows of the columns buffer were written

    # The blocks run in float32: the reference is the more accurate side.
    sum_offset = torch.zeros_like(grad_offset, dtype=torch.float32)
    sum_mask = torch.zeros_like(grad_mask, dtype=torch.float32)
    for c0 in range(0, channels, block):
        c = slice(c0, c0 + block)
        xb, ob, mb = (t.detach().float().requires_grad_() for t in (x[:, c], offset, mask))
        out_b = segdcn.ops.deform_conv2d(xb, ob, weight[c].float(), padding=1, mask=mb)
        gxb, gob, gmb = torch.autograd.grad(out_b, [xb, ob, mb], grad_output[:, c].float())
        assert_close(out[:, c], out_b, 1e-2, f"output channels {c}")
        assert_close(grad_x[:, c], gxb, 1e-2, f"input gradient channels {c}")
        sum_offset += gob
        sum_mask += gmb
        del out_b, gxb
    assert_close(grad_offset, sum_offset, 1e-2, "offset gradient")
    assert_close(grad_mask, sum_mask, 1e-2, "mask gradient")


@gpu
@needs_cuda
@needs_cuda_build
def test_runs_on_current_stream():
    """On a side stream that is busy, kernels launched on any other stream would read the
    inputs before they are written and give a different result."""
    case = ConvCase(mask=True, offset_groups=2)
    tensors = {k: v.cuda() for k, v in case.tensors(torch.float32).items()}
    grad_output = grad_output_for(case, torch.float32).cuda()
    expected_out, expected_grads, _ = run(segdcn.ops.deform_conv2d, case, tensors, grad_output)

    late = {k: torch.zeros_like(v) for k, v in tensors.items()}
    late_grad_output = torch.zeros_like(grad_output)
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        torch.cuda._sleep(100_000_000)
        for k, v in tensors.items():
            late[k].copy_(v)
        late_grad_output.copy_(grad_output)
        out, grads, _ = run(segdcn.ops.deform_conv2d, case, late, late_grad_output)
    torch.cuda.synchronize()
    assert_close(out, expected_out, 1e-5, "output")
    for k, grad in grads.items():
        assert_close(grad, expected_grads[k], 1e-5, k)


@gpu
@needs_cuda
@needs_cuda_build
def test_runs_on_a_non_current_device():
    """Tensors on cuda:1 while cuda:0 is current: the kernels must follow the tensors."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    case = ConvCase(mask=True, groups=2, offset_groups=2)
    tensors = case.tensors(torch.float32)
    grad_output = grad_output_for(case, torch.float32)
    results = {}
    for device in ("cuda:0", "cuda:1"):
        with torch.cuda.device(0):
            results[device] = run(
                segdcn.ops.deform_conv2d,
                case,
                {k: v.to(device) for k, v in tensors.items()},
                grad_output.to(device),
            )
    (out0, grads0, _), (out1, grads1, _) = results["cuda:0"], results["cuda:1"]
    assert out1.device == torch.device("cuda:1")
    assert_close(out1.cpu(), out0.cpu(), 1e-5, "output")
    for k in grads0:
        assert grads1[k].device == torch.device("cuda:1"), k
        assert_close(grads1[k].cpu(), grads0[k].cpu(), 1e-5, k)
