"""submitit for real: a 2-job sweep through hydra-submitit-launcher's local executor, each job sent the
time-limit signal (SIGUSR2) mid-run, saved by the trainer, requeued by submitit and finished with the
weights of an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from segdcn.engine.checkpoint import load_checkpoint
from tests.helpers import logged_step, one_thread_env

ITERATIONS = 400
SEEDS = (0, 1)


def settings(data_root: Path) -> list[str]:
    return [
        f"dataset.root={data_root}", "dataset.train.crop_size=[32,32]", "model.head.channels=16",
        "model.backbone.width=16", f"trainer.max_iters={ITERATIONS}", "trainer.batch_size=2",
        "trainer.num_workers=0", "trainer.eval_every=0", "trainer.checkpoint_every=100000", "trainer.log_every=1",
        "trainer.progress=false", "trainer.device=cpu", "eval.num_workers=0", "eval.max_images=2", "logger=none",
    ]  # fmt: skip


@pytest.mark.slow  # two jobs, each signalled, requeued and finished: about a minute on 2 cores
def test_submitit_local_sweep_requeues_on_the_time_limit_signal_and_finishes_exactly(synthetic_set, tmp_path):
    data_root = synthetic_set("tiny")
    sweep = tmp_path / "sweep"
    command = [
        sys.executable, "-m", "segdcn.train", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
        f"seed={','.join(map(str, SEEDS))}", *settings(data_root), f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    log = (tmp_path / "sweep.out").open("w")
    launcher = subprocess.Popen(command, cwd=tmp_path, env=one_thread_env(), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    jobs = [sweep / str(num) for num in range(len(SEEDS))]
    while not all(logged_step(job) >= 20 for job in jobs) and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    tasks = []
    for process in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if "submitit.core._submit" in " ".join(process.cmdline()):
                tasks.append(process)
        except psutil.Error:
            continue
    assert len(tasks) == len(SEEDS) and all(logged_step(job) < ITERATIONS for job in jobs), "raise ITERATIONS"
    for task in tasks:
        # the signal submitit's local executor sends at its time limit, sent here when both jobs are
        # under way, so that the test does not depend on the machine's speed
        task.send_signal(signal.SIGUSR2)
    assert launcher.wait(timeout=300) == 0, (tmp_path / "sweep.out").read_text()[-4000:]

    job_logs = ["".join(p.read_text() for p in folder.glob("*_log.*")) for folder in sweep.glob(".submitit/*/")]
    assert sum("Requeued job" in text for text in job_logs) == len(SEEDS), "\n".join(job_logs)[-4000:]
    for num in range(len(SEEDS)):
        run_dir = sweep / str(num)
        train_log = (run_dir / "train.log").read_text()
        assert "SIGUSR2 received: stopped at iteration" in train_log and "resumed from" in train_log
        assert json.loads((run_dir / "summary.json").read_text())["state"] == "finished"

    # the uninterrupted run of seed 0, outside submitit
    whole = tmp_path / "whole"
    single = [sys.executable, "-m", "segdcn.train", "seed=0", *settings(data_root), f"hydra.run.dir={whole}"]
    result = subprocess.run(single, cwd=tmp_path, env=one_thread_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    final, reference = (load_checkpoint(d / "checkpoints" / "last.pt") for d in (sweep / "0", whole))
    assert final["iteration"] == reference["iteration"] == ITERATIONS
    for key, value in reference["model"].items():
        assert torch.equal(final["model"][key], value), key
