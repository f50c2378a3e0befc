"""Checkpoints: atomic writes (a killed writer leaves the previous file), weights_only reads with errors
that name the file, and models rebuilt from the config stored in the checkpoint."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from segdcn.config import compose
from segdcn.engine.checkpoint import (
    CheckpointError,
    CheckpointNotFoundError,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from segdcn.engine.rng import rng_state, set_rng_state
from segdcn.models import build_model
from tests.helpers import ROOT


def small_model_config(**dcn) -> dict:
    model = OmegaConf.to_container(compose("train", ["model=deeplab_r18"]).model)
    model["head"]["channels"] = 16
    model["dcn"].update(dcn)
    return model


def checkpoint_of(model: torch.nn.Module, model_cfg: dict, num_classes: int = 6) -> dict:
    config = OmegaConf.to_yaml(OmegaConf.create({"model": model_cfg, "dataset": {"num_classes": num_classes}}))
    return {"model": model.state_dict(), "config": config, "iteration": 3, "segdcn_version": "0.1.0"}


def test_round_trip_with_rng_states(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = {"model": {"w": torch.arange(4.0)}, "config": "a: 1", "segdcn_version": "0.1.0", "rng": rng_state()}
    path = save_checkpoint(tmp_path / "checkpoints" / "last.pt", state)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    ckpt = load_checkpoint(path)  # weights_only=True: the RNG states are plain containers
    set_rng_state(ckpt["rng"])
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(1), expected[2])
    assert torch.equal(ckpt["model"]["w"], torch.arange(4.0))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left


def test_only_plain_values_are_saved(tmp_path):
    with pytest.raises(TypeError, match=r"state\['extra'\]\['fn'\] is a function"):
        save_checkpoint(tmp_path / "x.pt", {"model": {}, "extra": {"fn": test_round_trip_with_rng_states}})
    assert not (tmp_path / "x.pt").exists()


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match=str(tmp_path / "none.pt")):
        load_checkpoint(tmp_path / "none.pt")
    good = save_checkpoint(tmp_path / "good.pt", {"model": {"w": torch.ones(1000)}, "config": "", "segdcn_version": ""})
    data = good.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pt: unreadable"):
        load_checkpoint(tmp_path / "truncated.pt")
    torch.save({"state_dict": {"w": torch.ones(1)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt: not a segdcn checkpoint \(missing model"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save({"model": {}, "opt": torch.optim.SGD}, tmp_path / "pickled.pt")  # a class: needs unpickling code
    with pytest.raises(CheckpointError, match=r"pickled\.pt: holds objects other than tensors"):
        load_checkpoint(tmp_path / "pickled.pt")


def test_model_from_checkpoint_rebuilds_the_model(tmp_path):
    cfg = small_model_config(layers=1)
    model = build_model(cfg, 6)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    path = save_checkpoint(tmp_path / "last.pt", checkpoint_of(model, cfg))
    rebuilt, rebuilt_cfg = model_from_checkpoint(path)
    assert rebuilt_cfg.model.dcn.layers == 1
    for (name, a), (_, b) in zip(model.state_dict().items(), rebuilt.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    x = torch.randn(1, 3, 32, 32)
    model.eval(), rebuilt.eval()
    assert torch.equal(model(x), rebuilt(x))


def test_model_from_checkpoint_names_mismatching_keys(tmp_path):
    cfg = small_model_config(layers=0)
    ckpt = checkpoint_of(build_model(cfg, 6), cfg)
    ckpt["config"] = ckpt["config"].replace("layers: 0", "layers: 1")  # the config says res5b_branch2b is deformable
    with pytest.raises(CheckpointError, match=r"missing in the checkpoint: backbone\.layer4\.1\.conv2\.conv_offset"):
        model_from_checkpoint(ckpt)
    ckpt = checkpoint_of(build_model(cfg, 6), cfg, num_classes=21)
    with pytest.raises(CheckpointError, match=r"shape mismatch: head\.score\.bias: checkpoint \(6,\) vs model \(21,\)"):
        model_from_checkpoint(ckpt)


WRITER = """
import sys, torch
from segdcn.engine.checkpoint import save_checkpoint
# many tensors: torch.save takes about a second, so the parent can kill it midway
state = {"model": {f"w{i}": torch.full((4096,), 2.0) for i in range(10000)}, "config": "", "segdcn_version": "x"}
save_checkpoint(sys.argv[1], state)
"""


def test_killed_write_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "config": "", "segdcn_version": "x", "iteration": 1})
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        partial = []
        while not partial and writer.poll() is None and time.monotonic() < deadline:
            partial = [p for p in tmp_path.glob(".last.pt.*.tmp") if p.stat().st_size > 1_000_000]
            time.sleep(0.005)
        assert partial, "the writer finished before a partial write was seen"
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.wait(timeout=60)
    assert writer.returncode == -signal.SIGKILL
    ckpt = load_checkpoint(path)  # the previous file, whole
    assert ckpt["iteration"] == 1 and torch.equal(ckpt["model"]["w"], torch.ones(3))
    assert partial[0].exists()  # the partial file is beside it, and the next save clears it
    save_checkpoint(path, {"model": {}, "config": "", "segdcn_version": "x", "iteration": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert load_checkpoint(path)["iteration"] == 2
