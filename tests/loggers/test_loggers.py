"""segdcn.loggers: local run files always, W&B for real in offline mode (never online)."""

from __future__ import annotations

import json
import logging
import math
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from segdcn.config import compose
from segdcn.loggers import NullLogger, build_logger
from segdcn.loggers.naming import JobIdentity, job_identity, run_name, sweep_group
from tests.helpers import ROOT, run_python
from tests.wandb_records import config_values, history_rows, read_records, run_record, summary_values

CLASSES = ["background", "ellipse", "rectangle", "triangle"]


# W&B for real, offline (tests/conftest.py), in every test of this file.
pytestmark = pytest.mark.usefixtures("wandb_env")


def train_cfg(*overrides: str):
    return compose("train", overrides)


def eval_metrics(miou: float) -> dict:
    return {"miou": miou, "pixel_acc": 0.9, "per_class_iou": [0.95, miou, float("nan"), 0.1]}


def samples(n: int = 2) -> list:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    target = rng.integers(0, 4, (24, 32))
    target[:2] = 255
    return [(image, rng.integers(0, 4, (24, 32)), target)] * n


def wandb_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))


def test_offline_wandb_run_records_the_logged_metrics(tmp_path):
    cfg = train_cfg("logger.tags=[unit]", "model.dcn.layers=2")
    cfg.experiment = "demo"  # as an experiment file (conf/experiment/*.yaml) would set it
    with build_logger(cfg, tmp_path) as logger:
        for step in (10, 20):
            logger.log_metrics({"train/loss": 1.0 / step, "lr": 0.01, "it_per_s": 3.5}, step=step)
        logger.log_eval(eval_metrics(0.4), step=20, class_names=CLASSES, samples=samples(3))
        logger.log_summary({"final_loss": 0.05})
        run_id = logger.state_dict()["wandb_run_id"]

    (path,) = wandb_files(tmp_path)
    assert path.name == f"run-{run_id}.wandb"
    records = read_records(path)
    rows = history_rows(records)
    assert [row["_step"] for row in rows] == [10, 20]
    logged = set().union(*rows)
    assert {"train/loss", "lr", "it_per_s", "val/miou", "val/pixel_acc", "val/iou/ellipse"} <= logged
    assert rows[1]["val/per_class_iou/_type"] == "table-file"
    assert rows[1]["val/samples/_type"] == "images/separated" and rows[1]["val/samples/count"] == 3
    masks = rows[1]["val/samples/all_masks"][0]
    assert set(masks) == {"prediction", "ground_truth"}
    table = json.loads((path.parent / "files" / rows[1]["val/per_class_iou/path"]).read_text())
    assert table["columns"] == ["class", "iou"] and table["data"][1] == ["ellipse", 0.4] and table["data"][2][1] is None

    summary = summary_values(records)
    assert summary["best_miou"] == 0.4 and summary["best_step"] == 20 and summary["final_loss"] == 0.05
    config = config_values(records)
    assert config["model"]["dcn"]["layers"] == 2 and config["logger"]["name"] == "wandb"
    run = run_record(records)
    assert (run.project, run.run_group, run.job_type, list(run.tags)) == ("segdcn", "demo", "train", ["unit"])


def test_log_images_setting_and_ignore_label(tmp_path):
    cfg = train_cfg("logger.log_images=1")
    with build_logger(cfg, tmp_path) as logger:
        logger.log_eval(eval_metrics(0.3), step=5, class_names=CLASSES, samples=samples(3))
    (path,) = wandb_files(tmp_path)
    row = history_rows(read_records(path))[0]
    assert row["val/samples/count"] == 1
    assert (path.parent / "files" / row["val/samples/filenames"][0]).exists()
    labels = config_values(read_records(path))["_wandb"]["mask/class_labels"]
    for mask in ("prediction", "ground_truth"):
        assert labels[f"val/samples_wandb_delimeter_{mask}"]["value"] == {
            "0": "background",
            "1": "ellipse",
            "2": "rectangle",
            "3": "triangle",
            "255": "ignore",
        }


def test_a_bad_sample_costs_only_the_media(tmp_path, caplog):
    image, pred, target = samples(1)[0]
    with caplog.at_level(logging.WARNING, logger="segdcn.loggers"), build_logger(train_cfg(), tmp_path) as logger:
        logger.log_eval(eval_metrics(0.3), step=5, class_names=CLASSES, samples=[(image, pred[:3], target)])
        logger.log_metrics({"train/loss": 0.5}, step=6)
    assert "samples[0] pred has shape (3, 32): expected (24, 32) (H, W)" in caplog.text
    (path,) = wandb_files(tmp_path)
    rows = history_rows(read_records(path))
    assert "val/miou" in rows[0] and "val/samples/_type" not in rows[0] and rows[1]["train/loss"] == 0.5


def test_state_dict_fits_a_weights_only_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    with build_logger(train_cfg("logger=none"), tmp_path) as logger:
        assert logger.state_dict()["step"] == -1  # nothing logged: a resume drops every line
        logger.log_eval(eval_metrics(0.3), step=5, class_names=CLASSES)
        torch.save({"logger": logger.state_dict()}, tmp_path / "last.pt")
    assert torch.load(tmp_path / "last.pt", weights_only=True)["logger"] == logger.state_dict()


def test_local_files(tmp_path):
    cfg = train_cfg("logger=none", "model.dcn.layers=3", "seed=7", "trainer.max_iters=40")
    with build_logger(cfg, tmp_path) as logger:
        logger.log_metrics({"train/loss": np.float32(0.5), "lr": 0.001}, step=10)
        logger.log_eval(eval_metrics(0.25), step=10, class_names=CLASSES)
        full = {**eval_metrics(0.2), "per_class_acc": [1.0, 0.5, None, 0.25], "confusion_matrix": [[1, 2], [3, 4]]}
        logger.log_eval(full, step=20, class_names=CLASSES)
        assert json.loads((tmp_path / "summary.json").read_text())["state"] == "running"
        logger.log_summary({"per_class_iou": [0.9, 0.2, None, 0.1], "iterations": 40})  # a trainer's final summary
    assert not (tmp_path / "wandb").exists()

    assert OmegaConf.create(yaml.safe_load((tmp_path / "config.yaml").read_text())) == cfg
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [10, 10, 20]
    assert lines[0] == {"step": 10, "train/loss": 0.5, "lr": 0.001}
    assert lines[1]["val/miou"] == 0.25 and lines[1]["val/iou/rectangle"] is None  # NaN: a class never seen
    assert lines[2]["val/acc/triangle"] == 0.25 and not any("confusion" in key for key in lines[2])

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["miou"] == 0.2 and summary["pixel_acc"] == 0.9 and summary["eval_step"] == 20
    assert summary["per_class_iou"] == {"background": 0.9, "ellipse": 0.2, "rectangle": None, "triangle": 0.1}
    assert summary["per_class_acc"]["ellipse"] == 0.5 and summary["iterations"] == 40
    assert (summary["best_miou"], summary["best_step"]) == (0.25, 10)
    assert summary["config"] == {
        "experiment": None,
        "dataset.name": "synthetic",
        "dataset.root": cfg.dataset.root,
        "model.backbone.name": cfg.model.backbone.name,
        "model.backbone.output_stride": cfg.model.backbone.output_stride,
        "model.dcn.layers": 3,
        "model.dcn.at": [],
        "model.dcn.modulated": False,
        "model.backbone.res5_dilation": None,
        "seed": 7,
        "trainer.max_iters": 40,
        "trainer.batch_size": cfg.trainer.batch_size,
        "optim.lr": cfg.optim.lr,
    }
    assert summary["state"] == "finished" and summary["wandb"] is None
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files


def test_failed_run_is_marked(tmp_path):
    with pytest.raises(RuntimeError), build_logger(train_cfg("logger=none"), tmp_path) as logger:
        logger.log_metrics({"train/loss": 1.0}, step=1)
        raise RuntimeError("non-finite loss")
    assert json.loads((tmp_path / "summary.json").read_text())["state"] == "failed"


def test_resume_drops_later_lines_and_continues_the_wandb_run(tmp_path):
    cfg = train_cfg()
    logger = build_logger(cfg, tmp_path)
    for step in (10, 20, 30):
        logger.log_metrics({"train/loss": 1.0 / step}, step=step)
    logger.log_eval(eval_metrics(0.3), step=30, class_names=CLASSES)
    state = logger.state_dict()  # what the checkpoint of iteration 30 holds
    logger.log_metrics({"train/loss": 0.01}, step=40)
    logger.log_eval(eval_metrics(0.9), step=40, class_names=CLASSES)  # lost with the killed process
    logger.finish()
    assert state["step"] == 30 and state["summary"]["best_miou"] == 0.3

    with build_logger(cfg, tmp_path, resume_state=state) as resumed:
        assert resumed.state_dict()["wandb_run_id"] == state["wandb_run_id"]
        resumed.log_metrics({"train/loss": 0.02}, step=40)
        resumed.log_eval(eval_metrics(0.35), step=40, class_names=CLASSES)

    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [10, 20, 30, 30, 40, 40]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["best_miou"], summary["best_step"], summary["miou"]) == (0.35, 40, 0.35)

    first, second = wandb_files(tmp_path)  # offline: one directory per process, the same W&B run id
    assert first.name == second.name == f"run-{state['wandb_run_id']}.wandb"
    assert run_record(read_records(second)).run_id == state["wandb_run_id"]
    assert [row["_step"] for row in history_rows(read_records(second))] == [40]


def test_resume_drops_a_torn_last_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "lo')
    with build_logger(train_cfg("logger=none"), tmp_path, resume_state={"step": 5}) as logger:
        logger.log_metrics({"loss": 0.5}, step=6)
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 6]


def test_rank_other_than_zero_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    with build_logger(train_cfg(), run_dir, rank=1) as logger:
        assert isinstance(logger, NullLogger)
        logger.log_metrics({"train/loss": 1.0}, step=1)
        logger.log_eval(eval_metrics(0.1), step=1, class_names=CLASSES, samples=samples())
        logger.log_summary({"best_miou": 0.1})
        assert logger.state_dict() == {}
    assert not run_dir.exists()


def test_wandb_failing_to_start_leaves_local_logging(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_MODE", "sometimes")  # wandb.init rejects it
    with caplog.at_level(logging.WARNING, logger="segdcn.loggers"), build_logger(train_cfg(), tmp_path) as logger:
        logger.log_metrics({"train/loss": 1.0}, step=1)
        logger.log_eval(eval_metrics(0.5), step=1, class_names=CLASSES, samples=samples())
        assert logger.state_dict()["wandb_run_id"] is None
    assert "W&B could not start" in caplog.text and "continuing with local files only" in caplog.text
    assert not wandb_files(tmp_path)
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
    assert json.loads((tmp_path / "summary.json").read_text())["miou"] == 0.5


def test_wandb_mode_from_config_and_environment(tmp_path, monkeypatch):
    with build_logger(train_cfg("logger.mode=disabled"), tmp_path / "a") as logger:
        assert logger.wandb is None
    assert not (tmp_path / "a" / "wandb").exists()
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the user's environment wins over the offline default
    with build_logger(train_cfg(), tmp_path / "b") as logger:
        assert logger.wandb is None
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_DISABLED", "true")
    with build_logger(train_cfg(), tmp_path / "b2") as logger:
        assert logger.wandb is None
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with build_logger(train_cfg("logger.mode=offline"), tmp_path / "c") as logger:  # and config over environment
        assert logger.wandb is not None and logger.wandb.mode == "offline"


KILL_SERVICE = """
import os, signal, sys
from omegaconf import OmegaConf
from segdcn.loggers import build_logger

logger = build_logger(OmegaConf.create({"logger": {"name": "wandb"}}), sys.argv[1])
logger.log_metrics({"train/loss": 1.0}, step=1)
for pid in filter(str.isdigit, os.listdir("/proc")):  # this process's W&B service, wandb-core
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        continue
    name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
    if name.startswith("wandb-core") and int(fields[1]) == os.getpid():
        os.kill(int(pid), signal.SIGKILL)
        os.waitpid(int(pid), 0)
for step in (2, 3):
    logger.log_metrics({"train/loss": 1.0 / step}, step=step)
logger.log_eval({"miou": 0.5, "per_class_iou": [0.5]}, step=3, class_names=["thing"])
logger.finish()
"""


def test_a_dead_wandb_service_stops_only_wandb(tmp_path):
    result = run_python("-c", KILL_SERVICE, str(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "W&B log failed (ConnectionResetError" in result.stderr and "local files continue" in result.stderr
    assert "Traceback" not in result.stderr
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 3]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["state"] == "finished" and summary["miou"] == 0.5


def test_bad_logger_settings_name_the_key(tmp_path):
    cfg = train_cfg()
    cfg.logger.mode = "offlne"
    with pytest.raises(ValueError, match=r"logger.mode='offlne': expected one of online, offline, disabled"):
        build_logger(cfg, tmp_path)
    cfg.logger.name = "tensorboard"
    with pytest.raises(ValueError, match=r"logger.name='tensorboard': expected one of wandb, none"):
        build_logger(cfg, tmp_path)


def test_group_and_name_from_the_hydra_job():
    cfg = OmegaConf.create({"logger": {"group": None}, "experiment": "table1"})
    sweep = {"mode": "RunMode.MULTIRUN", "sweep": {"dir": "multirun/2026-11-22/02-30-00"}, "job": {"name": "train"}}
    jobs = [
        OmegaConf.merge(sweep, {"job": {"num": n}, "overrides": {"task": [f"model.dcn.layers={n}", "dataset.root=/d"]}})
        for n in (0, 3)
    ]
    identities = [job_identity(cfg, job) for job in jobs]
    assert [i.group for i in identities] == ["2026-11-22_02-30-00"] * 2
    assert [i.name for i in identities] == ["model.dcn.layers=0", "model.dcn.layers=3"]
    assert job_identity(cfg, OmegaConf.merge(sweep, {"job": {"num": 4}, "overrides": {"task": []}})).name == "train-4"
    noisy = ["+experiment=x", "dataset.root=/data", "trainer.num_workers=0", "logger.tags=[a]", "model.dcn.at=[res5c]"]
    assert run_name(noisy) == "+experiment=x,model.dcn.at=[res5c]"
    assert sweep_group("/scratch/sweeps/table1") == "table1"
    single = OmegaConf.create({"mode": "RunMode.RUN", "overrides": {"task": ["dataset.root=/data"]}})
    assert job_identity(cfg, single) == job_identity(cfg, None) == JobIdentity(group="table1", name=None)
    cfg.logger.group = "mine"
    assert job_identity(cfg, jobs[0]).group == "mine"


SWEEP_APP = """
import hydra
import segdcn.config
from segdcn.loggers import build_logger
from hydra.core.hydra_config import HydraConfig

@hydra.main(config_path={conf!r}, config_name="train", version_base=None)
def main(cfg):
    with build_logger(cfg, HydraConfig.get().runtime.output_dir) as logger:
        logger.log_metrics({{"train/loss": 1.0}}, step=1)

main()
"""


def test_a_hydra_sweep_shares_one_group(tmp_path):
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent(SWEEP_APP.format(conf=str(ROOT / "conf"))))
    sweep_dir = tmp_path / "sweep"
    result = run_python(str(app), "-m", "model.dcn.layers=0,1", f"hydra.sweep.dir={sweep_dir}", timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {}
    for n in (0, 1):
        (path,) = wandb_files(sweep_dir / str(n))
        runs[n] = run_record(read_records(path))
    assert runs[0].run_group == runs[1].run_group == "sweep"
    assert (runs[0].display_name, runs[1].display_name) == ("model.dcn.layers=0", "model.dcn.layers=1")
    assert math.isclose(json.loads((sweep_dir / "1" / "metrics.jsonl").read_text())["train/loss"], 1.0)
