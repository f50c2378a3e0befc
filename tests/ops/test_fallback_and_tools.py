"""Behaviour without the compiled extension, and the benchmark script."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re

import pytest
import torch

from segdcn import _C
from tests.helpers import load_script, run_python, run_without_extension

WITHOUT_EXTENSION = """
import warnings
import torch, torchvision.ops
import segdcn.ops

torch.manual_seed(0)
x, w = torch.randn(1, 4, 6, 6, dtype=torch.float64), torch.randn(3, 4, 3, 3, dtype=torch.float64)
offset = torch.randn(1, 18, 4, 4, dtype=torch.float64)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out = [segdcn.ops.deform_conv2d(x, offset, w) for _ in range(3)]
    layer = segdcn.ops.DeformConv2d(4, 3, 3)(x.float())
messages = [str(c.message) for c in caught if issubclass(c.category, RuntimeWarning)]
assert len(messages) == 1, messages
assert "make install" in messages[0] and "reference" in messages[0], messages[0]
assert (out[0] - torchvision.ops.deform_conv2d(x, offset, w)).abs().max() < 1e-12
info = segdcn.ops.build_info()
assert info["native"] is False and "hidden by the test" in info["error"], info
print("ok")
"""


def test_falls_back_to_reference_with_one_warning():
    result = run_without_extension(WITHOUT_EXTENSION)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_bench_ops_prints_ratios_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    result = run_python(
        "scripts/bench_ops.py", "--shapes", "1x8x9x2", "2x8x9x1", "--repeat", "1",
         "--threads", "1,2", "--json", str(out)
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "fwd / conv" in result.stdout and "tv fwdbwd / ours" in result.stdout
    data = json.loads(out.read_text())
    assert data["build_info"]["native"] is True
    assert [r["threads"] for r in data["results"]] == [1, 1, 2, 2]
    assert {r["verdict"] for r in data["results"] if r["threads"] == 1} == {"reference"}
    assert {r["verdict"].split()[0] for r in data["results"] if r["threads"] == 2} <= {"PASS", "FAIL"}
    assert len(data["scaling"]) == 2
    for r in data["results"]:
        assert all(t > 0 for t in r["times"].values())
        assert set(r["ratios"]) >= {"fwd / conv", "fwd / ort", "fwdbwd / conv", "tv fwdbwd / ours"}
        # groups = 1: the im2col plan's GEMM floor is measured beside the op
        assert r["ratios"]["gemm fwd / conv"] == r["times"]["gemm_fwd"] / r["times"]["conv_fwd"]
        assert r["times"]["gemm_fwdbwd"] > r["times"]["gemm_fwd"]
        assert 0 < r["ratios"]["taps inside"] < 1 and "taps_inside" not in r["times"]


@pytest.mark.parametrize(
    "size,dilation,scale,offset_groups", [(9, 2, 2.0, 1), (8, 4, 4.0, 1), (5, 1, 0.0, 1), (8, 4, 3.0, 2)]
)
def test_bench_ops_counts_the_taps_inside_as_torchvision_samples_them(size, dilation, scale, offset_groups):
    """The GEMM floor's (position, tap) pairs inside the image: a tap samples inside for some offset
    group exactly where torchvision's deform_conv2d of an all-ones input (a channel per offset group)
    through that tap alone is above zero."""
    import torchvision.ops

    bench = load_script("bench_ops")
    shape = bench.Shape(2, offset_groups, size, dilation, 1, offset_groups)
    generator = torch.Generator().manual_seed(0)
    offset = torch.randn(2, 18 * offset_groups, size, size, generator=generator) * scale
    ones = torch.ones(2, offset_groups, size, size)
    expected = []
    for k in range(9):
        weight = torch.zeros(1, offset_groups, 3, 3)
        weight[0, :, k // 3, k % 3] = 1
        out = torchvision.ops.deform_conv2d(ones, offset, weight, padding=dilation, dilation=dilation)
        expected.append(int((out > 0).sum()))
    assert bench.inside_counts(shape, offset) == expected
    assert 0 < sum(expected) < 9 * 2 * size * size  # some taps inside, some out: the test can fail


def test_bench_ops_has_no_gemm_floor_for_grouped_shapes():
    bench = load_script("bench_ops")
    row = bench.bench_shape(bench.Shape(1, 8, 9, 1, 8), repeat=1, threads=1, with_torchvision=False)
    assert "gemm_fwd" not in row and "gemm fwd / conv" not in bench.ratios(bench.medians([row]))


def test_bench_ops_measures_the_temporaries():
    result = run_python(
        "scripts/bench_ops.py", "--shapes", "1x8x9x2", "--repeat", "1", "--no-torchvision",
         "--memory"
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("temporaries of forward+backward"))
    n1, n8 = (float(v) for v in re.findall(r"N=[18] (\d+) MiB", line))
    # the temporaries of one 512x65x65 image: at least the padded channels-last input, at most a few tiles more
    assert 8 <= n1 <= 400 and line.endswith("PASS"), line


def test_bench_ops_forces_the_im2col_gemms_and_cpu_kernels_and_restores_them():
    bench = load_script("bench_ops")
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert bench.main(["--shapes", "2x8x8x4", "--repeat", "1", "--rounds", "1", "--no-torchvision",
                           "--im2col-gemms", "taps", "--cpu-kernels", "avx2"]) == 0  # fmt: skip
    assert "im2col GEMMs forced to taps; CPU kernels capped at avx2" in out.getvalue()
    # main put the settings back
    assert _C._force_tap_gemms("auto") == "auto"
    assert _C._force_cpu_kernels("auto") == "auto"
    for flag, value in (("--im2col-gemms", "tap"), ("--cpu-kernels", "avx512")):
        with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()) as err:
            bench.main([flag, value])
        assert f"{flag}: invalid choice: '{value}'" in err.getvalue()


def test_bench_ops_rejects_a_bad_shape():
    result = run_python("scripts/bench_ops.py", "--shapes", "1x8x9")
    assert result.returncode == 2
    assert "NxCxSIZExDILATION" in result.stderr


def test_bench_ops_device_table_runs_its_rounds():
    """The GPU table's code (--device cuda), run on the CPU: every implementation timed in every round,
    the ratios taken from the medians, an implementation that refuses a dtype listed and not timed. Only
    the CUDA events and the allocator's peak count are left to the GPU check."""
    bench = load_script("bench_ops")
    args = argparse.Namespace(
        shapes=[bench.Shape(1, 8, 9, 2)], dtypes=["float32", "bfloat16"], rounds=2, repeat=2, no_torchvision=False
    )
    lines = []
    results = bench.bench_device(args, torch.device("cpu"), lines.append)
    fp32, bf16 = results
    assert set(fp32["times"]) == {f"{i}_{k}" for i in ("cudnn", "segdcn", "tv") for k in ("fwd", "fwdbwd")}
    assert all(t > 0 for t in fp32["times"].values()) and not fp32["unsupported"]
    t = fp32["times"]
    assert fp32["ratios"]["fwdbwd / cudnn"] == t["segdcn_fwdbwd"] / t["cudnn_fwdbwd"]
    assert fp32["ratios"]["tv fwd / ours"] == t["tv_fwd"] / t["segdcn_fwd"]
    assert fp32["peak_bytes"] == {"cudnn": None, "segdcn": None, "tv": None}  # the CPU has no allocator count
    # torchvision has no bfloat16 kernel: named with its error, not timed, no ratio made up for it
    assert set(bf16["unsupported"]) == {"tv"} and "BFloat16" in bf16["unsupported"]["tv"]
    assert set(bf16["times"]) == {f"{i}_{k}" for i in ("cudnn", "segdcn") for k in ("fwd", "fwdbwd")}
    assert set(bf16["ratios"]) == {"fwd / cudnn", "fwdbwd / cudnn"}
    table = lines[0]
    assert "| float32 | N=1 8->8 9x9 d=2 |" in table and "tv at bfloat16: not timed" in table


def test_the_benchmarks_refuse_device_settings_they_cannot_honour():
    cases = [
        ("bench_ops", ["--dtypes", "bfloat16"], "--dtypes on cpu takes float32"),
        ("bench_ops", ["--device", "tpu"], "--device='tpu': expected auto, cpu, cuda or cuda:K"),
        ("bench_model", ["--device", "tpu"], "--device='tpu': expected auto, cpu, cuda or cuda:K"),
    ]
    if torch.cuda.is_available():
        cases.append(("bench_ops", ["--device", "cuda", "--threads", "2"], "--threads and --memory measure the CPU"))
    else:
        for script in ("bench_ops", "bench_model"):
            cases.append((script, ["--device", "cuda"], "--device='cuda': no CUDA device is available"))
    for script, args, message in cases:
        result = run_python(f"scripts/{script}.py", *args)
        assert result.returncode == 2 and message in result.stderr, (script, args, result.stderr)


def test_bench_ops_shapes_take_groups_and_offset_groups():
    bench = load_script("bench_ops")
    depthwise = bench.Shape.parse("2x256x65x1x256x8")
    assert (depthwise.groups, depthwise.offset_groups, depthwise.kind) == (256, 8, "depthwise")
    assert str(depthwise) == "N=2 256->256 65x65 d=1 g=256 og=8"
    assert bench.Shape.parse("2x256x65x1x32").kind == "grouped"
    assert bench.Shape.parse("16x128x8x4").kind == "small map"
    assert str(bench.Shape.parse("2x512x65x2")) == "N=2 512->512 65x65 d=2"  # the dense shapes' names stay
    assert {s.kind for s in bench.DEFAULT_SHAPES} == set(bench.TARGETS)
    bad = {
        "2x8x9x1x3": r"GROUPS \(3\) and OFFSET_GROUPS \(1\) must divide the channels \(8\)",
        "2x8x9x1x1x3": r"GROUPS \(1\) and OFFSET_GROUPS \(3\) must divide",
        "2x8x9x1x2x2x2": r"NxCxSIZExDILATION\[xGROUPS\[xOFFSET_GROUPS\]\]",
        "2x8x0x1": "positive integers",
    }
    for text, message in bad.items():
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            bench.Shape.parse(text)
    # the grouped shapes time F.conv2d and onnxruntime with the same groups, and judge by their kind
    row = bench.medians([bench.bench_shape(bench.Shape(1, 8, 9, 1, 8, 2), 1, 1, with_torchvision=True)])
    ratios = bench.ratios(row)
    assert set(ratios) >= {"fwd / conv", "fwd / ort", "fwdbwd / conv", "tv fwdbwd / ours"}
    assert bench.verdict(ratios, "depthwise").split()[0] in {"PASS", "FAIL"}
    assert bench.verdict({"fwd / ort": 9.0}, "depthwise") == "PASS"  # not a depthwise target


def test_bench_ops_names_the_argument_of_a_bad_grouped_shape():
    result = run_python("scripts/bench_ops.py", "--shapes", "2x8x9x1x3")
    assert result.returncode == 2
    assert "argument --shapes" in result.stderr and "must divide the channels (8)" in result.stderr
