"""One result whatever the topology: 2 processes on one node, 2 single-process "nodes" through torchrun's
c10d rendezvous on 127.0.0.1, and trainer.accumulate=2 take the optimizer steps of one process (SGD, frozen
BN, 10 steps of a DeepLab-R18), to float rounding. The runs and their comparison are those of
scripts/compare_topologies.py, which writes the figures; the test asserts them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import load_script, run_python

topologies = load_script("compare_topologies")


@pytest.fixture(scope="module")
def data_root(synthetic_set) -> Path:
    return synthetic_set("small")


@pytest.fixture(scope="module")
def single(data_root, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("single") / "run"
    topologies.train("single", run_dir, data_root)
    return run_dir


def assert_follows_the_single_process_run(run_dir: Path, single: Path, world_size: int) -> None:
    figures = topologies.compare(run_dir, single)
    assert figures["world_size"] == world_size
    # float rounding stays well inside 1e-6; the per-process (and per-micro-batch) mean used before
    # fails by orders of magnitude
    assert figures["weights"] < 1e-6 and figures["weights_worst_tensor"] < 1e-6, figures
    assert figures["loss"] < 1e-6, figures


@pytest.mark.filterwarnings("ignore:model.norm=frozen_bn without")
def test_accumulation_follows_one_process(data_root, single, tmp_path):
    topologies.train("accumulate", tmp_path / "run", data_root)
    assert_follows_the_single_process_run(tmp_path / "run", single, world_size=1)


def test_two_processes_on_one_node_follow_one_process(data_root, single, tmp_path):
    topologies.train("processes", tmp_path / "run", data_root)
    assert_follows_the_single_process_run(tmp_path / "run", single, world_size=2)


def test_two_nodes_through_c10d_rendezvous_follow_one_process(data_root, single, tmp_path):
    """Two torchrun launches of one process each, as on two machines, meeting at 127.0.0.1."""
    topologies.train("nodes", tmp_path / "run", data_root)
    assert_follows_the_single_process_run(tmp_path / "run", single, world_size=2)


def test_the_comparison_notices_a_difference(single, tmp_path):
    """The oracle itself: a run one SGD step apart is far outside the tolerance, and the tool refuses a
    folder that is not a synthetic set by name."""
    import shutil

    import torch

    from segdcn.engine.checkpoint import load_checkpoint, save_checkpoint

    other = tmp_path / "other"
    shutil.copytree(single, other)
    ckpt = load_checkpoint(other / "checkpoints" / "last.pt")
    name = next(k for k, v in ckpt["model"].items() if v.is_floating_point() and v.numel() > 100)
    ckpt["model"][name] = ckpt["model"][name] * (1 + 1e-3) + 1e-3 * torch.randn_like(ckpt["model"][name])
    save_checkpoint(other / "checkpoints" / "last.pt", ckpt)
    assert topologies.compare(other, single)["weights_worst_tensor"] > 1e-4
    result = run_python("scripts/compare_topologies.py", "--data", str(tmp_path), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "no VOCdevkit/VOC2012 there" in result.stderr, result.stderr
