"""scripts/gpu_check.py, run up to its CUDA-less parts: on the CPU every step but the CUDA build runs
for real (the gpu tests skip, the benchmarks' CPU tables, a 2-iteration demo training twice) and the
summary reads their files. On a GPU `make gpu-check` runs it whole (docs/benchmarks.md)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import run_python


@pytest.mark.slow  # the tests step, the benchmarks and a training: about a minute on 2 cores
def test_gpu_check_runs_its_steps_and_writes_one_summary(tmp_path):
    out = tmp_path / "check"
    steps = "tests,bench_ops,bench_model,train"
    result = run_python("scripts/gpu_check.py", "--device", "cpu", "--steps", steps, "--quick", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((out / "gpu_check.json").read_text())
    by_name = {s["name"]: s for s in report["steps"]}
    assert list(by_name) == steps.split(",")
    assert {s["status"] for s in report["steps"]} == {"passed"}, report["steps"]
    tests = by_name["tests"]["figures"]
    assert tests["tests"] > 0 and tests["failures"] == tests["errors"] == 0
    if not torch.cuda.is_available():
        assert tests["skipped"] == tests["tests"]  # every gpu test, skipped here
    # the benchmarks' own results files, with their provenance, beside the summary
    assert "fwd / conv" in by_name["bench_ops"]["figures"]["float32"]
    assert (out / "bench_ops_cpu.md").read_text().startswith("# CPU op benchmark")
    assert "dcn3_native" in by_name["bench_model"]["figures"]
    train = by_name["train"]["figures"]
    # two CPU runs of one seed at one thread count are bitwise equal (tests/ops/test_determinism.py)
    assert train["weights_bitwise_equal"] is True and train["weights_max_abs_diff"] == 0.0
    assert 0 <= train["miou_a"] == train["miou_b"] <= 1
    assert train["it_per_s_a"] > 0 and train["it_per_s_b"] > 0
    summary = (out / "gpu_check.md").read_text()
    assert summary.startswith("# GPU check") and "- command: `python scripts/gpu_check.py --device cpu" in summary
    assert "| train | passed |" in summary
    assert "===== train: run b" in (out / "gpu_check.log").read_text()


def test_gpu_check_refuses_what_it_cannot_do(tmp_path):
    for args, message in (
        (["--device", "cpu", "--steps", "build"], "leave it out with --device cpu"),
        (["--device", "cpu", "--steps", "tests,lint"], "--steps takes a comma-separated list of build, tests"),
        (["--device", "tpu"], "--device takes cuda, cuda:K or cpu"),
    ):
        result = run_python("scripts/gpu_check.py", *args, "--out", str(tmp_path))
        assert result.returncode == 2 and message in result.stderr, result.stderr
    if not torch.cuda.is_available():
        result = run_python("scripts/gpu_check.py", "--out", str(tmp_path))
        assert result.returncode == 2 and "sees no CUDA device" in result.stderr, result.stderr
