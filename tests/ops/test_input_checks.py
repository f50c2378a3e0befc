"""Bad calls get a ValueError/TypeError naming the argument, never a crash."""

from __future__ import annotations

import random

import pytest
import torch

import segdcn.ops
from tests.helpers import ConvCase


def valid_call(case: ConvCase | None = None):
    case = case or ConvCase(mask=True, offset_groups=2)
    t = case.tensors(torch.float32)
    return dict(t, **case.kwargs())


def call(kw):
    return segdcn.ops.deform_conv2d(
        kw["input"], kw["offset"], kw["weight"], kw["bias"], kw["stride"], kw["padding"], kw["dilation"], kw["mask"]
    )


@pytest.mark.parametrize(
    "change,error,message",
    [
        (dict(input=torch.randn(4, 7, 8)), ValueError, r"input must be 4-D \[N, C, H, W\], got shape \[4, 7, 8\]"),
        (dict(weight=torch.randn(6, 3, 3, 3)), ValueError, r"weight has 3 input channels per group.*\[2, 4, 7, 8\]"),
        (
            dict(offset=torch.randn(2, 36, 7, 9)),
            ValueError,
            r"offset must have shape \[2, 36, 7, 8\].*got \[2, 36, 7, 9\]",
        ),
        (
            dict(offset=torch.randn(2, 35, 7, 8)),
            ValueError,
            r"offset must have shape \[2, 2 \* offset_groups \* 3 \* 3",
        ),
        (dict(mask=torch.randn(2, 9, 7, 8)), ValueError, r"mask must have shape \[2, 18, 7, 8\].*got \[2, 9, 7, 8\]"),
        (dict(bias=torch.randn(5)), ValueError, r"bias must have shape \[6\] \(\[C_out\]\), got \[5\]"),
        (dict(offset=torch.randn(2, 18 * 8, 7, 8)), ValueError, r"offset_groups=8, which does not divide the 4"),
        (dict(input=torch.randn(2, 4, 1, 1), padding=0), ValueError, r"too small for a 3x3 kernel"),
        (dict(weight=torch.randn(6, 4, 3, 3, dtype=torch.float64)), TypeError, r"weight has dtype torch.float64"),
        (dict(input=torch.ones(2, 4, 7, 8, dtype=torch.int64)), TypeError, r"input must be a floating-point tensor"),
        (dict(offset=torch.randn(2, 36, 7, 8, device="meta")), ValueError, r"offset is on meta, expected cpu"),
        (dict(weight=[[1.0]]), TypeError, r"weight must be a torch.Tensor, got list"),
        (dict(mask="ones"), TypeError, r"mask must be a torch.Tensor or None, got str"),
        (dict(stride=0), ValueError, r"stride must be >= 1, got 0"),
        (dict(padding=(1, 1, 1)), TypeError, r"padding must be an int or a pair of ints"),
        (dict(dilation=1.5), TypeError, r"dilation must be an int or a pair of ints"),
    ],
)
def test_error_names_the_argument(change, error, message):
    kw = valid_call()
    kw.update(change)
    with pytest.raises(error, match=message):
        call(kw)


def corrupt(kw: dict, rng: random.Random) -> dict:
    """One or more random defects in an otherwise valid call."""
    kw = dict(kw)
    for _ in range(rng.randint(1, 3)):
        name = rng.choice(["input", "offset", "weight", "bias", "mask", "stride", "padding", "dilation"])
        value = kw[name] if isinstance(kw[name], torch.Tensor) else None
        kind = rng.randrange(8)
        if name in ("stride", "padding", "dilation"):
            kw[name] = rng.choice([0, -1, -3, (1,), (1, 2, 3), 1.5, "2", (1, None), True, torch.tensor(1), 10**9])
        elif kind == 0:
            kw[name] = rng.choice([None, 3, "x", [1.0, 2.0], object()])
        elif kind == 1 and value is not None:  # another rank
            kw[name] = torch.randn([rng.randint(0, 4) for _ in range(rng.choice([0, 1, 2, 3, 5]))])
        elif kind == 2 and value is not None:  # one dimension resized, possibly to 0
            shape = list(value.shape)
            shape[rng.randrange(len(shape))] = rng.choice([0, 1, 2, 3, 5, 17, 35])
            kw[name] = torch.randn(*shape)
        elif kind == 3 and value is not None:  # another dtype
            kw[name] = value.to(rng.choice([torch.float64, torch.float16, torch.int32, torch.bool, torch.complex64]))
        elif kind == 4 and value is not None:  # another device
            kw[name] = value.to("meta")
        elif kind == 5 and value is not None:  # a non-contiguous view of the wrong shape
            kw[name] = value.transpose(0, -1)
        elif kind == 6:
            kw[name] = torch.randn(rng.randint(1, 3), rng.randint(1, 40), rng.randint(1, 9), rng.randint(1, 9))
        else:
            kw[name] = torch.empty(0)
    return kw


# the default call runs on the im2col plan, these on the direct plan (deform_conv2d_plan)
FUZZ_CALLS = {
    "dense": None,
    "depthwise": ConvCase(mask=True, in_channels=4, out_channels=4, groups=4, offset_groups=2),
    "grouped": ConvCase(in_channels=4, out_channels=8, groups=2, offset_groups=4),
}


@pytest.mark.parametrize("name", list(FUZZ_CALLS))
def test_fuzz_malformed_calls(name):
    rng = random.Random(0)
    good = valid_call(FUZZ_CALLS[name])
    raised = 0
    for _ in range(600):
        kw = corrupt(good, rng)
        try:
            out = call(kw)
        except (ValueError, TypeError) as e:
            assert str(e), "errors must say what is wrong"
            raised += 1
        else:  # a defect that happens to leave the call valid must give a correct-looking result
            assert isinstance(out, torch.Tensor) and out.dim() == 4
    assert raised >= 500


def test_raw_op_rejects_bad_shapes_without_crashing():
    """torch.ops.segdcn.* skip the Python checks; the C++ checks must still stop bad shapes."""
    rng = random.Random(1)
    good = valid_call()
    for _ in range(300):
        kw = corrupt(good, rng)
        tensors = [kw[k] for k in ("input", "weight", "offset", "mask", "bias")]
        if not all(t is None or isinstance(t, torch.Tensor) for t in tensors) or any(
            t is not None and t.device.type == "meta" for t in tensors
        ):
            continue
        try:
            torch.ops.segdcn.deform_conv2d(*tensors, [1, 1], [1, 1], [1, 1], 1, 2)
        except RuntimeError:
            pass


@pytest.mark.parametrize("call", ["function", "raw op"])
def test_a_wrong_offset_under_torch_compile_fails_with_the_eager_message(call):
    """The fake kernel checks the shapes with the eager checks' conditions and messages (torch._check), so a
    traced call fails as an eager one does, also where the op is called without the Python checks."""
    case = ConvCase()
    t = case.tensors(torch.float32)
    t["offset"] = t["offset"][..., :-1]  # one column short
    with pytest.raises(ValueError) as eager:
        segdcn.ops.deform_conv2d(t["input"], t["offset"], t["weight"], t["bias"], **case.kwargs())
    assert "offset must have shape [2, 18, 7, 8]" in str(eager.value)

    def function(input, offset, weight, bias):
        return segdcn.ops.deform_conv2d(input, offset, weight, bias, **case.kwargs())

    def raw_op(input, offset, weight, bias):
        conv = (list(case.stride), list(case.padding), list(case.dilation), case.groups, case.offset_groups)
        return torch.ops.segdcn.deform_conv2d(input, weight, offset, None, bias, *conv)

    torch._dynamo.reset()
    compiled = torch.compile(function if call == "function" else raw_op, fullgraph=True, backend="eager")
    with pytest.raises(Exception) as traced:
        compiled(t["input"], t["offset"], t["weight"], t["bias"])
    assert str(eager.value) in str(traced.value)
