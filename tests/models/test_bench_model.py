"""scripts/bench_model.py: its command line, and the offsets_only model (the DCN model's offset convs with plain
convolutions)."""

from __future__ import annotations

import argparse
import json

import torch

from segdcn.models import deformable_layers
from tests.helpers import load_script, run_python


def small_args(**changes) -> argparse.Namespace:
    args = dict(depth=18, width=16, output_stride=8, head="paper", num_classes=4)
    return argparse.Namespace(**(args | changes))


def test_offsets_only_computes_the_plain_model_and_runs_the_offset_convs_backward():
    bench = load_script("bench_model")
    args = small_args()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    state = bench.calibrated_state(args, x)
    plain = bench.make_model(args, 0, "native", state).eval()
    offsets_only = bench.make_model(args, 3, bench.OFFSETS_ONLY, state).eval()
    native = bench.make_model(args, 3, "native", state).eval()
    with torch.no_grad():
        expected = plain(x)
        assert torch.equal(offsets_only(x), expected)
        assert not torch.allclose(native(x), expected)  # the same offsets do move the native model's samples
    offsets_only(x).sum().backward()
    layers = deformable_layers(offsets_only).values()
    assert len(layers) == 3
    for layer in layers:
        grad = layer.conv_offset.weight.grad
        assert grad is not None and torch.count_nonzero(grad) == 0  # reached, with the weight 0 it enters by
        assert layer.weight.grad is not None and torch.count_nonzero(layer.weight.grad) > 0


def test_bench_model_times_the_offset_convs_beside_the_deformable_model(tmp_path):
    out = tmp_path / "model.json"
    args = ["--depth", "18", "--width", "16", "--output-stride", "8", "--size", "32", "--batch", "2"]
    args += ["--repeat", "1", "--warmup", "0", "--impls", "native,offsets_only", "--json", str(out)]
    result = run_python("scripts/bench_model.py", *args, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "| dcn3_offsets_only | offsets_only |" in result.stdout
    rows = {r["model"]: r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {"plain", "dcn3_native", "dcn3_offsets_only"}
    assert rows["dcn3_offsets_only"]["params"] == rows["dcn3_native"]["params"] > rows["plain"]["params"]
    assert all(r["train_step_s"] > 0 for r in rows.values())


def test_bench_model_runs_at_a_tiny_size(tmp_path):
    out = tmp_path / "bench.json"
    args = ["--depth", "18", "--size", "33", "--repeat", "1", "--warmup", "0", "--threads", "1", "--json", str(out)]
    result = run_python("scripts/bench_model.py", *args, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "paper, Table 4" in result.stdout and "res5b_branch2b" in result.stdout
    report = json.loads(out.read_text())
    rows = {r["model"]: r for r in report["results"]}
    assert set(rows) == {"plain", "dcn3_native", "dcn3_torchvision", "dcn3_offsets_only"}  # the default --impls
    assert rows["plain"]["forward_ratio"] == 1.0 and rows["dcn3_native"]["train_step_s"] > 0
    # three offset convs of 18 x 512 x 3 x 3 weights + 18 biases: the parameter difference
    assert rows["dcn3_native"]["params"] - rows["plain"]["params"] == 3 * (18 * 512 * 9 + 18)
    assert report["paper_table4"]["params_m"] == {"plain": 46.0, "deformable": 46.1}


def test_bench_model_help():
    result = run_python("scripts/bench_model.py", "--help", timeout=120)
    assert result.returncode == 0 and "--json" in result.stdout and "513" in result.stdout


def test_bench_model_refuses_a_setting_the_model_refuses_by_its_key():
    result = run_python("scripts/bench_model.py", "--depth", "18", "--width", "0", "--size", "32", timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "model.backbone.width=0" in result.stderr and "expected" in result.stderr
