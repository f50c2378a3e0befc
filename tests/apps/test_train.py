"""segdcn-train end to end on a tiny synthetic set: the run's files, exact resume, a SIGKILL and a resume,
a non-finite loss, DDP on two gloo processes, and config errors at start.

Runs go through the command line (`python -m segdcn.train`, `torch.distributed.run`) as a user types
them; a ResNet-18 DeepLab with a 32-channel head on 64 px images keeps each run to seconds.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

import segdcn.config
from segdcn.data import build_dataset, label_set
from segdcn.engine.checkpoint import CheckpointNotFoundError, load_checkpoint, model_from_checkpoint
from segdcn.engine.evaluate import evaluate
from tests.helpers import ROOT, run_python


@pytest.fixture(scope="module")
def data_root(synthetic_set) -> Path:
    return synthetic_set("small")


def overrides(data_root: Path, run_dir: Path, *extra: str) -> list[str]:
    """A small, quick run; `extra` overrides come last and win."""
    return [
        f"dataset.root={data_root}",
        "dataset.train.crop_size=[64,64]",
        "model.head.channels=32",
        "trainer.batch_size=4",
        "trainer.num_workers=0",
        "trainer.eval_every=0",
        "trainer.checkpoint_every=2",
        "trainer.log_every=1",
        "trainer.progress=false",
        "eval.num_workers=0",
        "logger=none",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


def train_cli(data_root: Path, run_dir: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    result = run_python("-m", "segdcn.train", *overrides(data_root, run_dir, *extra), timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def metrics_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def compose_train(*args: str, hydra_node: bool = False):
    return segdcn.config.compose("train", args, hydra_node=hydra_node)


def assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for key in a:
        assert torch.equal(a[key], b[key]), f"{what}: {key} differs"


# ---- a short run, and the same run interrupted ----

# The reference run: 8 steps of 4 images (2 micro-batches of 2), poly schedule, evaluated at 4 and 8,
# deterministic, so interrupted copies of it can be compared tensor for tensor.
REFERENCE = (
    "trainer.max_iters=8",
    "trainer.accumulate=2",
    "trainer.eval_every=4",
    "trainer.checkpoint_every=0",
    "optim.lr=0.01",
    "schedule=poly",
    "trainer.deterministic=true",
)


@pytest.fixture(scope="module")
def reference_run(data_root, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    train_cli(data_root, run_dir, *REFERENCE)
    return run_dir


@pytest.fixture(scope="module")
def half_run(data_root, tmp_path_factory) -> Path:
    """Iterations 1-4 of the reference run (trainer.stop_at=4: the schedule still spans 8), checkpointed."""
    run_dir = tmp_path_factory.mktemp("half") / "run"
    train_cli(data_root, run_dir, *REFERENCE, "trainer.stop_at=4")
    assert load_checkpoint(run_dir / "checkpoints/last.pt")["iteration"] == 4
    return run_dir


def assert_same_training_state(a: dict, b: dict) -> None:
    assert a["iteration"] == b["iteration"]
    assert_same_tensors(a["model"], b["model"], "model")
    momentum_a = {str(k): v["momentum_buffer"] for k, v in a["optimizer"]["state"].items()}
    momentum_b = {str(k): v["momentum_buffer"] for k, v in b["optimizer"]["state"].items()}
    assert_same_tensors(momentum_a, momentum_b, "SGD momentum")
    assert a["scheduler"] == b["scheduler"]


def test_short_run_lowers_the_loss_and_writes_the_run_files(reference_run):
    run_dir = reference_run
    for name in ("summary.json", "metrics.jsonl", "config.yaml", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run_dir / name).is_file(), name
    lines = metrics_lines(run_dir)
    losses = [line["train/loss"] for line in lines if "train/loss" in line]
    assert len(losses) == 8
    assert sum(losses[-2:]) < sum(losses[:2]), losses
    # the lr of step t (from 1) is the poly schedule's at t - 1
    lrs = [line["train/lr"] for line in lines if "train/lr" in line]
    assert lrs == pytest.approx([0.01 * (1 - t / 8) ** 0.9 for t in range(8)], rel=1e-9)
    evals = [line for line in lines if "val/miou" in line]
    assert [line["step"] for line in evals] == [4, 8]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["miou"] == evals[-1]["val/miou"]
    # the run's speed: its logged windows' iterations over their summed time
    speeds = [(line["step"], line["train/it_per_s"]) for line in lines if "train/it_per_s" in line]
    window_starts = [0] + [step for step, _ in speeds[:-1]]
    seconds = sum((step - start) / speed for (step, speed), start in zip(speeds, window_starts, strict=True))
    assert summary["it_per_s"] == pytest.approx(8 / seconds, rel=1e-9)
    assert set(summary["per_class_iou"]) == set(label_set("synthetic").names)
    assert 0 < summary["pixel_acc"] <= 1
    assert summary["config"]["trainer.max_iters"] == 8 and summary["state"] == "finished"
    last, best = load_checkpoint(run_dir / "checkpoints/last.pt"), load_checkpoint(run_dir / "checkpoints/best.pt")
    assert last["iteration"] == 8
    assert best["best_miou"] == max(line["val/miou"] for line in evals) == summary["best_miou"]
    assert best["iteration"] == max(evals, key=lambda line: line["val/miou"])["step"]


def test_main_returns_the_final_miou(data_root, tmp_path):
    from segdcn.train import main

    run_dir = tmp_path / "run"
    cfg = compose_train(
        *overrides(data_root, run_dir, "trainer.max_iters=1", "trainer.batch_size=2"),
        f"hydra.runtime.output_dir={run_dir}",
        hydra_node=True,
    )
    HydraConfig.instance().set_config(cfg)  # what @hydra.main does before calling the task function
    with open_dict(cfg):
        del cfg["hydra"]
    try:
        miou = main(cfg)
    finally:
        HydraConfig.instance().cfg = None  # later tests in this process run outside a Hydra app
    summary = json.loads((run_dir / "summary.json").read_text())
    assert isinstance(miou, float) and 0 <= miou <= 1
    assert miou == summary["miou"]


def test_resume_gives_the_weights_of_an_uninterrupted_run(data_root, reference_run, half_run, tmp_path):
    resumed = tmp_path / "resumed"
    shutil.copytree(half_run, resumed)
    # two loader workers in the second half: augmentation is seeded per sample, not per worker
    train_cli(data_root, resumed, *REFERENCE, "trainer.num_workers=2")
    assert "resumed from" in (resumed / "train.log").read_text()
    assert_same_training_state(
        load_checkpoint(reference_run / "checkpoints/last.pt"), load_checkpoint(resumed / "checkpoints/last.pt")
    )
    losses = [
        [line["train/loss"] for line in metrics_lines(d) if "train/loss" in line] for d in (reference_run, resumed)
    ]
    assert losses[0] == losses[1]


def test_sigkill_mid_training_then_resume_auto_finishes(data_root, reference_run, tmp_path):
    run_dir = tmp_path / "run"
    args = overrides(data_root, run_dir, *REFERENCE, "trainer.checkpoint_every=1")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    last = run_dir / "checkpoints" / "last.pt"
    process = subprocess.Popen(
        [sys.executable, "-m", "segdcn.train", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while not last.is_file() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(last)["iteration"]  # atomic writes: a whole file, whenever the kill came
    assert 1 <= killed_at < 8

    result = run_python("-m", "segdcn.train", *args, "trainer.resume=auto", timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"resumed from {last} at iteration {killed_at}" in (run_dir / "train.log").read_text()
    assert_same_training_state(load_checkpoint(reference_run / "checkpoints/last.pt"), load_checkpoint(last))
    steps = [line["step"] for line in metrics_lines(run_dir) if "train/loss" in line]
    assert steps == list(range(1, 9))  # the killed run's lines after its checkpoint are replaced
    assert json.loads((run_dir / "summary.json").read_text())["state"] == "finished"


def test_non_finite_loss_stops_the_run_and_keeps_last_checkpoint(data_root, half_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(half_run, run_dir)
    result = train_cli(
        data_root,
        run_dir,
        *REFERENCE,
        "trainer.max_iters=12",
        "trainer.checkpoint_every=1",
        "optim.lr=1e30",
        check=False,
    )
    assert result.returncode != 0
    output = result.stderr + (run_dir / "train.log").read_text()
    assert "non-finite loss" in output, result.stderr[-4000:]
    stopped_at = int(output.split("non-finite loss")[1].split("at iteration ")[1].split(";")[0])
    assert 5 <= stopped_at <= 12
    ckpt = load_checkpoint(run_dir / "checkpoints/last.pt")
    assert ckpt["iteration"] == stopped_at - 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    model_from_checkpoint(ckpt)  # still a whole, consistent checkpoint
    assert json.loads((run_dir / "summary.json").read_text())["state"] == "failed"


def test_bf16_autocast_and_accumulation_in_one_step(data_root, tmp_path):
    from segdcn.engine.trainer import Trainer

    cfg = compose_train(
        *overrides(data_root, tmp_path, "trainer.precision=bf16", "trainer.batch_size=2", "trainer.accumulate=2"),
        "dataset.train.crop_size=[32,32]",
    )
    trainer = Trainer(cfg, tmp_path)
    dtypes = []
    trainer.model.head.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    batches = iter(trainer._loader())
    loss = trainer.train_step(batches)
    assert dtypes == [torch.bfloat16, torch.bfloat16]  # two micro-batches of one image, under autocast
    assert math.isfinite(loss) and loss > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # the weights stay fp32
    trainer.logger.finish(0)


# ---- distributed ----


def test_ddp_on_two_gloo_processes_matches_a_single_process_evaluation(data_root, tmp_path):
    run_dir = tmp_path / "ddp"
    result = run_python(
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "segdcn.train",
        # the one run with W&B (offline): only rank 0 may start a W&B run
        *overrides(
            data_root, run_dir, "trainer.max_iters=2", "trainer.device=cpu", "logger=wandb", "logger.mode=offline"
        ),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["iterations"] == 2
    model, cfg = model_from_checkpoint(run_dir / "checkpoints/last.pt")
    single = evaluate(
        model,
        build_dataset(cfg.dataset, "val"),
        cfg.eval,
        device="cpu",
        num_classes=6,
        class_names=label_set("synthetic").names,
        progress=False,
    )
    # the same confusion matrix, whether summed over two shards or counted in one process
    assert single.metrics["miou"] == summary["miou"]
    assert single.metrics["per_class_iou"] == summary["per_class_iou"]
    assert single.metrics["pixel_acc"] == summary["pixel_acc"]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    assert summary["wandb"]["mode"] == "offline"


# ---- configuration errors ----


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_iter=10", "Key 'max_iter' not in 'TrainerConfig'"),
        ("trainer.max_iters=ten", "Value 'ten' of type 'str' could not be converted to Integer"),
        ("trainer.deterministic=maybe", "Value 'maybe' is not a valid bool"),
    ],
)
def test_config_errors_fail_at_start(data_root, tmp_path, override, message):
    result = train_cli(data_root, tmp_path / "run", override, check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    ("overrides_", "message"),
    [
        (["trainer.batch_size=4", "trainer.accumulate=3"], "trainer.batch_size=4: expected a multiple of trainer."),
        (["trainer.precision=fp8"], "trainer.precision='fp8': expected one of fp32, bf16, fp16"),
        (["trainer.precision=fp16", "trainer.device=cpu"], "trainer.precision=fp16: runs on CUDA only"),
        (["trainer.max_iters=0"], "trainer.max_iters=0: expected 1 or more"),
        (["trainer.device=gpu"], "trainer.device='gpu': expected auto, cpu, cuda or cuda:K"),
        (["optim.name=adam"], "optim.name='adam': expected one of sgd, adamw"),
        (["optim=adamw", "optim.betas=[0.9,1.5]"], "optim.betas=[0.9, 1.5]: expected two numbers in [0, 1)"),
        # a key of the other optimizer or schedule would be ignored: refused
        (["optim=adamw", "optim.nesterov=true"], "optim.nesterov=true: expected false (the default): the key applies"),
        (["optim=sgd", "optim.betas=[0.8,0.9]"], "optim.betas=[0.8, 0.9]: expected [0.9, 0.999] (the default)"),
        (["schedule=poly", "schedule.milestones=[0.5]"], "schedule.milestones=[0.5]: expected [0.6666666666666666]"),
        (["schedule=step", "schedule.power=2.0"], "schedule.power=2.0: expected 0.9 (the default): the key applies to"),
        (
            ["eval.window=[769,769]"],
            "eval.window=[769, 769]: expected [513, 513] (the default): the key applies",
        ),
        (["logger=none", "logger.log_images=8"], "logger.log_images=8: expected 4 (the default): the key applies to"),
        (
            ["model.head.name=aspp_v2", "model.head.channels=256"],
            "model.head.channels=256: expected 1024 (the",
        ),
        (["dataset=cityscapes", "dataset.image_dir=JPEGImages"], "dataset.image_dir='JPEGImages': expected null"),
        (["model.dcn.layers=-1"], "model.dcn.layers=-1: expected 0 or more"),
        (["logger.mode=online2"], "logger.mode='online2': expected one of online, offline, disabled"),
        (["eval.official=true"], "eval.official=true: segdcn-train does not run the official Cityscapes evaluation"),
    ],
)
def test_value_errors_name_the_key(overrides_, message):
    from segdcn.config import ConfigError, TrainConfig
    from segdcn.engine.trainer import check_topology

    cfg = compose_train("logger=none", *overrides_)
    with pytest.raises(ConfigError, match=re.escape(message)):
        TrainConfig.from_config(cfg)
        check_topology(cfg, world_size=1, device=torch.device("cpu"))


def test_resume_from_a_missing_path_names_the_key(data_root, tmp_path):
    from segdcn.engine.trainer import Trainer

    cfg = compose_train(*overrides(data_root, tmp_path / "run", f"trainer.resume={tmp_path}/nope.pt"))
    with pytest.raises(CheckpointNotFoundError, match=r"trainer\.resume=.*nope\.pt: no such checkpoint"):
        Trainer(cfg, tmp_path / "run")


@pytest.mark.parametrize("command", ["segdcn-train", "segdcn-eval"])
def test_console_scripts_find_the_configs_from_any_directory(command, tmp_path):
    # an entry point gives Hydra no calling file, so a relative config_path would not resolve
    script = Path(sys.executable).parent / command
    if not script.exists():
        pytest.fail(f"{script} is missing: the console scripts come from `make install` (pyproject [project.scripts])")
    result = subprocess.run([str(script), "--cfg", "job"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "dataset:" in result.stdout or "ckpt:" in result.stdout


@pytest.mark.parametrize(("optim", "expected"), [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)])
def test_optimizer_follows_the_config(optim, expected):
    from segdcn.engine.trainer import build_optimizer
    from segdcn.models import build_model

    cfg = compose_train("logger=none", "experiment=demo", f"optim={optim}", "optim.weight_decay=0.01")
    model = build_model(cfg.model, 6)
    optimizer = build_optimizer(model, cfg.optim)
    assert type(optimizer) is expected
    decayed = [g for g in optimizer.param_groups if not g["name"].endswith("_no_decay")]
    assert decayed and all(g["weight_decay"] == 0.01 for g in decayed)
    if optim == "adamw":
        assert optimizer.defaults["betas"] == (0.9, 0.999)
        # decoupled decay: a parameter with zero gradient still shrinks by lr * weight_decay
        p = next(iter(decayed[0]["params"]))
        before = p.detach().clone()
        for q in model.parameters():
            q.grad = torch.zeros_like(q)
        optimizer.step()
        lr = decayed[0]["lr"]
        assert torch.allclose(p.detach(), before * (1 - lr * 0.01), rtol=1e-6, atol=1e-9)
