"""One result whatever the topology: 2 processes on one node, 2 single-process "nodes" through torchrun's
c10d rendezvous on 127.0.0.1, and trainer.accumulate=2 take the optimizer steps of one process (SGD, frozen
BN, 10 steps of a DeepLab-R18), to float rounding."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from segdcn.engine.checkpoint import load_checkpoint
from tests.helpers import ROOT, one_thread_env

STEPS = 10


def settings(data_root: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        f"dataset.root={data_root}",
        # crops larger than the scaled images: the padding is ignored, so the labelled pixels differ from
        # image to image, and a per-process or per-micro-batch mean would differ from the global one
        "dataset.train.crop_size=[72,72]",
        "dataset.train.scale_range=[0.5,1.0]",
        "model.head.channels=16",
        "model.backbone.width=16",
        "model.norm=frozen_bn",  # no batch statistics: what differs between topologies is the loss alone
        # a plain network: with deformable layers, runs whose micro-batches differ in size drift apart
        # after a few steps however the loss is normalised, because the offset gradient jumps where
        # a sampling point crosses an integer coordinate and zero-initialised offsets start exactly there
        # (docs/training.md); here what differs between topologies is the loss's normalisation alone
        "model.dcn.layers=0",
        "optim=sgd",
        "optim.lr=0.02",
        f"trainer.max_iters={STEPS}",
        "trainer.batch_size=4",
        "trainer.num_workers=0",
        "trainer.eval_every=0",
        "trainer.checkpoint_every=0",
        "trainer.log_every=1",
        "trainer.progress=false",
        "trainer.device=cpu",
        "eval.num_workers=0",
        "eval.max_images=2",
        "logger=none",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


def train(run_dir: Path, data_root: Path, *launcher: str, extra: tuple[str, ...] = ()) -> None:
    env = one_thread_env()  # torchrun's one thread per worker, in every run: they differ by the reduction alone
    command = [sys.executable, *launcher, "-m", "segdcn.train", *settings(data_root, run_dir, *extra)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def losses(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["train/loss"] for r in map(json.loads, lines) if "train/loss" in r]


def relative_differences(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[float, float]:
    """||a - b|| / ||b|| over all floating-point weights as one vector, and the largest per tensor."""
    keys = [k for k in b if b[k].is_floating_point()]
    assert a.keys() == b.keys()
    diff = {k: float((a[k].double() - b[k].double()).norm()) for k in keys}
    norm = {k: float(b[k].double().norm()) for k in keys}
    overall = sum(d * d for d in diff.values()) ** 0.5 / sum(n * n for n in norm.values()) ** 0.5
    return overall, max(diff[k] / max(norm[k], 1e-12) for k in keys)


@pytest.fixture(scope="module")
def data_root(synthetic_set) -> Path:
    return synthetic_set("small")


@pytest.fixture(scope="module")
def single(data_root, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("single") / "run"
    train(run_dir, data_root)
    return run_dir


def assert_follows_the_single_process_run(run_dir: Path, single: Path) -> None:
    # float rounding stays well inside 1e-6; the per-process (and per-micro-batch) mean used before
    # fails by orders of magnitude
    overall, per_tensor = relative_differences(weights(run_dir), weights(single))
    assert overall < 1e-6 and per_tensor < 1e-6, (
        f"weights differ by {overall:.2e} (relative; {per_tensor:.2e} per tensor)"
    )
    assert losses(run_dir) == pytest.approx(losses(single), rel=1e-6)


@pytest.mark.filterwarnings("ignore:model.norm=frozen_bn without")
def test_accumulation_follows_one_process(data_root, single, tmp_path):
    run_dir = tmp_path / "accumulate"
    train(run_dir, data_root, extra=("trainer.accumulate=2",))
    assert_follows_the_single_process_run(run_dir, single)


def test_two_processes_on_one_node_follow_one_process(data_root, single, tmp_path):
    run_dir = tmp_path / "ddp"
    train(run_dir, data_root, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
          extra=("trainer.accumulate=2",))  # fmt: skip
    assert json.loads((run_dir / "summary.json").read_text())["world_size"] == 2
    assert_follows_the_single_process_run(run_dir, single)


def test_two_nodes_through_c10d_rendezvous_follow_one_process(data_root, single, tmp_path):
    """Two torchrun launches of one process each, as on two machines, meeting at 127.0.0.1."""
    run_dir = tmp_path / "nodes"
    port = free_port()
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d",
        f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=segdcn-test", "-m", "segdcn.train",
        *settings(data_root, run_dir),
    ]  # fmt: skip
    logs = [tmp_path / f"node{i}.log" for i in range(2)]  # files, not pipes: a full pipe would stall a node
    nodes = [
        subprocess.Popen(
            command,
            cwd=ROOT,
            env=one_thread_env(),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for log in logs
    ]
    for node, log in zip(nodes, logs, strict=True):
        assert node.wait(timeout=300) == 0, log.read_text()[-4000:]
    assert json.loads((run_dir / "summary.json").read_text())["world_size"] == 2
    assert_follows_the_single_process_run(run_dir, single)
