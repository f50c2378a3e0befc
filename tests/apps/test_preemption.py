"""Preemption: SIGTERM or SIGUSR1 sent to a real segdcn-train mid-run stops it after the current step with
last.pt at that iteration, state "preempted" and exit code 75, and the resumed run ends with the weights
of an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from segdcn.engine.checkpoint import load_checkpoint
from segdcn.engine.preemption import PREEMPTED_EXIT_CODE
from tests.helpers import logged_step, one_thread_env

ITERATIONS = 60


def command(data_root: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "segdcn.train", f"dataset.root={data_root}", "dataset.train.crop_size=[32,32]",
        "model.head.channels=16", "model.backbone.width=16", f"trainer.max_iters={ITERATIONS}",
        "trainer.batch_size=2", "trainer.num_workers=0", "trainer.eval_every=0",
        "trainer.checkpoint_every=1000",  # never on the way: the only last.pt before the end is the signal's
        "trainer.log_every=1", "trainer.progress=false", "trainer.device=cpu", "eval.num_workers=0",
        "eval.max_images=2", "logger=none", "optim.lr=0.01", f"hydra.run.dir={run_dir}", *extra,
    ]  # fmt: skip


def run_to_end(argv: list[str]) -> None:
    result = subprocess.run(argv, env=one_thread_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.fixture(scope="module")
def data_root(synthetic_set) -> Path:
    return synthetic_set("tiny")


@pytest.fixture(scope="module")
def uninterrupted(data_root, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("whole") / "run"
    run_to_end(command(data_root, run_dir))
    return run_dir


@pytest.mark.parametrize("sent", [signal.SIGTERM, signal.SIGUSR1])
def test_a_stop_signal_saves_where_it_stopped_and_the_resumed_run_matches(data_root, uninterrupted, tmp_path, sent):
    run_dir = tmp_path / "run"
    log = (tmp_path / "train.out").open("w")
    process = subprocess.Popen(command(data_root, run_dir), env=one_thread_env(), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while logged_step(run_dir) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before the signal: raise ITERATIONS"
    process.send_signal(sent)
    assert process.wait(timeout=120) == PREEMPTED_EXIT_CODE, (tmp_path / "train.out").read_text()[-4000:]

    stopped_at = load_checkpoint(run_dir / "checkpoints" / "last.pt")["iteration"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 3 <= stopped_at < ITERATIONS and stopped_at % 1000 != 0
    assert summary["state"] == "preempted" and summary["preempted_by"] == sent.name
    assert summary["iterations"] == stopped_at == logged_step(run_dir)

    run_to_end(command(data_root, run_dir, "trainer.resume=auto"))
    assert json.loads((run_dir / "summary.json").read_text())["state"] == "finished"
    final, whole = (load_checkpoint(d / "checkpoints" / "last.pt") for d in (run_dir, uninterrupted))
    assert final["iteration"] == whole["iteration"] == ITERATIONS
    for key, value in whole["model"].items():
        assert torch.equal(final["model"][key], value), key


def test_under_torchrun_a_signal_to_one_rank_stops_both_at_one_iteration(data_root, tmp_path):
    """SIGTERM to rank 1 alone: the ranks agree on the iteration, rank 0 writes last.pt, and the resumed
    2-process run ends with the weights of an uninterrupted 2-process run."""
    import psutil

    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]

    def ddp(run_dir: Path, *extra: str) -> list[str]:
        return [*launcher, *command(data_root, run_dir, "trainer.batch_size=4", *extra)[1:]]

    whole = tmp_path / "whole"
    run_to_end(ddp(whole))

    run_dir = tmp_path / "run"
    log = (tmp_path / "train.out").open("w")
    agent = subprocess.Popen(ddp(run_dir), env=one_thread_env(), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while logged_step(run_dir) < 3 and agent.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert agent.poll() is None, "the run ended before the signal: raise ITERATIONS"
    workers = sorted(psutil.Process(agent.pid).children(), key=lambda p: p.environ().get("RANK", ""))
    assert [w.environ()["RANK"] for w in workers] == ["0", "1"]
    workers[1].send_signal(signal.SIGTERM)
    assert agent.wait(timeout=120) != 0  # torchrun reports the workers' exit code 75 as a failure
    assert "SIGTERM received" in (tmp_path / "train.out").read_text()

    stopped_at = load_checkpoint(run_dir / "checkpoints" / "last.pt")["iteration"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 3 <= stopped_at < ITERATIONS and summary["state"] == "preempted"
    assert summary["preempted_by"] == "a stop signal (on another process)" and summary["iterations"] == stopped_at

    run_to_end(ddp(run_dir, "trainer.resume=auto"))
    final, reference = (load_checkpoint(d / "checkpoints" / "last.pt") for d in (run_dir, whole))
    for key, value in reference["model"].items():
        assert torch.equal(final["model"][key], value), key


def test_the_signal_goes_on_to_the_handler_installed_before():
    """submitit installs a SIGUSR2 handler that requeues the job: StopSignals records the signal, and after
    the save hands it over to that handler; a second signal while stopping changes nothing."""
    from segdcn.engine.preemption import StopSignals

    calls = []
    before = signal.signal(signal.SIGUSR2, lambda number, frame: calls.append(number))
    try:
        with StopSignals(["SIGUSR2", "SIGTERM"]) as signals:
            os.kill(os.getpid(), signal.SIGUSR2)
            os.kill(os.getpid(), signal.SIGTERM)  # ignored: already stopping
            time.sleep(0.01)
        assert signals.received == "SIGUSR2" and calls == []  # recorded only, until the save is done
        assert signal.getsignal(signal.SIGTERM) is not signals._handle  # the previous handlers are back
        signals.hand_over()
        assert calls == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, before)


def test_signals_are_checked_by_name():
    from segdcn.config import ConfigError, TrainerConfig

    with pytest.raises(ConfigError, match=r"trainer.save_on_signals=\['SIGTERM', 'SIGTEM'\]: 'SIGTEM' is not a signal"):
        TrainerConfig.from_config({"save_on_signals": ["SIGTERM", "SIGTEM"]})
    assert TrainerConfig.from_config({"save_on_signals": []}).save_on_signals == []
