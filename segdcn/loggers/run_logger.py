"""RunLogger: one object the training loop and segdcn-eval log through, to local files and W&B."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .files import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, MetricsFile, to_jsonable, write_atomic, write_json_atomic
from .keys import key_config
from .media import figure_image, iou_table, mask_images
from .naming import hydra_node, job_identity
from .wandb_backend import WandbRun, resolve_mode, start_wandb

log = logging.getLogger(__name__)

LOGGERS = ("wandb", "none")


class RunLogger:
    """Logs a run to run_dir (config.yaml, metrics.jsonl, summary.json) and, when started, to W&B.

    `resume_state` is what `state_dict()` returned when the checkpoint being resumed was written:
    metrics.jsonl loses the lines of later steps, summary.json returns to that point, and the same
    W&B run continues. A trainer may set its "step" to the checkpoint's iteration.
    """

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: str | Path,
        wandb_run: WandbRun | None = None,
        resume_state: Mapping[str, Any] | None = None,
        log_images: int = 4,
    ):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.wandb = wandb_run
        self.log_images = log_images
        self.metrics = MetricsFile(self.run_dir / METRICS_FILE)
        self.last_step: int | None = None
        self._finished = False
        self.summary: dict[str, Any] = {}
        self.class_names: list[str] = []  # of the last evaluation, to name a per-class list in log_summary
        write_atomic(self.run_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))
        if resume_state:
            self._resume(resume_state)
        self.summary["config"] = key_config(cfg)
        self.summary["state"] = "running"
        self.summary["wandb"] = self._wandb_info()
        self._write_summary()

    # ---- logging ----

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """Scalars of one step (loss, lr, it/s, ...): one metrics.jsonl line, one W&B history row at step=step."""
        values = {str(k): _scalar(k, v) for k, v in metrics.items()}
        self.metrics.append(step, values)
        self.last_step = int(step)
        if self.wandb is not None:
            self.wandb.log("log", values, step)

    def log_eval(
        self,
        metrics: Mapping[str, Any],
        step: int,
        class_names: Sequence[str],
        samples: Sequence[tuple[Any, Any, Any]] = (),
        prefix: str = "val",
    ) -> None:
        """An evaluation: scalars (miou, pixel_acc, ...) and per-class lists (per_class_iou, ...).

        Scalars go to metrics.jsonl and W&B as `<prefix>/<name>`, a list `per_class_<x>` (one value per
        class, None for an absent class) as `<prefix>/<x>/<class>`, per-class IoU also as a W&B table;
        `samples` are (image uint8 HxWx3, prediction HxW, target HxW), shown as W&B masks (255: "ignore").
        Other values (a confusion matrix) are left out. summary.json then holds this evaluation by
        plain names (per_class_iou as {class: IoU}) and the best mIoU so far.
        """
        self.class_names = [str(n) for n in class_names]
        scalars, per_class = _split_eval(metrics, self.class_names)
        flat = {f"{prefix}/{k}": v for k, v in scalars.items()}
        for key, values in per_class.items():
            flat.update({f"{prefix}/{key.removeprefix('per_class_')}/{name}": v for name, v in values.items()})
        self.metrics.append(step, flat)
        self.last_step = int(step)
        if self.wandb is not None:
            payload = {**flat, **self._eval_media(prefix, per_class.get("per_class_iou"), samples)}
            self.wandb.log("log of the evaluation", payload, step)
        latest = {**scalars, **per_class, "eval_step": int(step)}
        miou, best = scalars.get("miou"), self.summary.get("best_miou")
        if isinstance(miou, (int, float)) and math.isfinite(miou) and (best is None or miou > best):
            latest.update(best_miou=miou, best_step=int(step))
        self.log_summary(latest)

    def log_offsets(self, values: Mapping[str, Any], step: int, picture: str | Path | None = None) -> None:
        """An evaluation's offset statistics (`offsets/<layer>/<statistic>`, segdcn.engine.offsets): one
        metrics.jsonl line, W&B with `picture` (a PNG of the sampling locations) as `offsets/sampling`,
        and summary.json's latest values under the same keys."""
        values = {str(k): _scalar(k, v) for k, v in values.items()}
        if values:
            self.metrics.append(step, values)
            self.last_step = int(step)
        if self.wandb is not None and (values or picture is not None):
            payload = dict(values)
            if picture is not None:
                payload.update(self._picture_media(picture, step))
            self.wandb.log("log of the offsets", payload, step)
        if values:
            self.log_summary(values)

    def log_summary(self, values: Mapping[str, Any]) -> None:
        """Merge `values` (best mIoU, final metrics, ...) into summary.json and the W&B run summary.

        A per-class list (per_class_iou=[...]) becomes {class: value} with the last evaluation's class names.
        """
        values = to_jsonable(dict(values))
        for key, value in values.items():
            if key.startswith("per_class_") and isinstance(value, list) and len(value) == len(self.class_names):
                values[key] = dict(zip(self.class_names, value, strict=True))
        self.summary.update(values)
        self._write_summary()
        if self.wandb is not None:
            self.wandb.update_summary(values)

    # ---- resume and end ----

    def state_dict(self) -> dict[str, Any]:
        """Plain values for a checkpoint (loads with torch.load(weights_only=True))."""
        summary = {k: v for k, v in self.summary.items() if k not in ("config", "state", "wandb")}
        return {
            "wandb_run_id": self.wandb.id if self.wandb is not None else self._resumed_wandb_id,
            "step": -1 if self.last_step is None else self.last_step,  # -1: nothing logged yet
            "summary": summary,
        }

    def finish(self, exit_code: int = 0, state: str | None = None) -> None:
        """state: finished (exit code 0), failed, or preempted (stopped by a signal, to be resumed)."""
        if self._finished:
            return
        self._finished = True
        self.summary["state"] = state or ("finished" if exit_code == 0 else "failed")
        self._write_summary()
        if self.wandb is not None:
            self.wandb.finish(exit_code, preempted=state == "preempted")

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(0 if exc_type is None else 1)

    # ---- internals ----

    _resumed_wandb_id: str | None = None

    def _resume(self, state: Mapping[str, Any]) -> None:
        self._resumed_wandb_id = state.get("wandb_run_id")
        self.summary.update(state.get("summary") or {})
        step = state.get("step")
        if step is not None:
            kept = self.metrics.truncate_after(int(step))
            self.last_step = int(step)
            log.info("resuming the logs after step %d: %d lines of %s kept", step, kept, METRICS_FILE)

    def _eval_media(self, prefix: str, per_class_iou: dict | None, samples) -> dict[str, Any]:
        """The table and images; a bad sample costs the evaluation its media, never the run or W&B."""
        wandb = self.wandb.wandb
        media = {}
        try:
            if per_class_iou is not None:
                media[f"{prefix}/per_class_iou"] = iou_table(wandb, per_class_iou)
            if samples and self.log_images > 0:
                media[f"{prefix}/samples"] = mask_images(wandb, samples, self.class_names, self.log_images)
        except Exception as exc:
            log.warning("W&B media of the evaluation skipped (%s: %s)", type(exc).__name__, exc)
        return media

    def _picture_media(self, picture: str | Path, step: int) -> dict[str, Any]:
        try:
            return {"offsets/sampling": figure_image(self.wandb.wandb, picture, f"iteration {step}")}
        except Exception as exc:  # as for the evaluation's media: never the run or W&B
            log.warning("W&B image of the offsets skipped (%s: %s)", type(exc).__name__, exc)
            return {}

    def _write_summary(self) -> None:
        # Results first, then what identifies the run, for a reader opening the file.
        meta = ("config", "state", "wandb")
        ordered = {k: v for k, v in self.summary.items() if k not in meta}
        ordered.update({k: self.summary[k] for k in meta if k in self.summary})
        write_json_atomic(self.run_dir / SUMMARY_FILE, ordered)

    def _wandb_info(self) -> dict[str, Any] | None:
        if self.wandb is None:
            return None
        return {"id": self.wandb.id, "mode": self.wandb.mode, "dir": str(self.wandb.dir.relative_to(self.run_dir))}


class NullLogger(RunLogger):
    """The logger of DDP ranks other than 0: same API, writes nothing."""

    def __init__(self):  # noqa: D107 - nothing to set up
        self.wandb = None
        self.last_step = None

    def log_metrics(self, metrics, step):
        pass

    def log_eval(self, metrics, step, class_names, samples=(), prefix="val"):
        pass

    def log_offsets(self, values, step, picture=None):
        pass

    def log_summary(self, values):
        pass

    def state_dict(self):
        return {}

    def finish(self, exit_code=0, state=None):
        pass


def build_logger(
    cfg: DictConfig, run_dir: str | Path, rank: int = 0, resume_state: Mapping[str, Any] | None = None
) -> RunLogger:
    """The run's logger from the resolved config's `logger` node (absent: local files only).

    Rank != 0 gets a NullLogger. W&B (logger.name=wandb) runs offline unless logger.mode or
    $WANDB_MODE says otherwise, and writes under run_dir/wandb; if it cannot start, a warning says
    so and the run goes on with the local files.
    """
    if rank != 0:
        return NullLogger()
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    name = OmegaConf.select(cfg, "logger.name", default="none")
    if name not in LOGGERS:
        raise ValueError(f"logger.name={name!r}: expected one of {', '.join(LOGGERS)} (logger=wandb|none)")
    log_images = int(OmegaConf.select(cfg, "logger.log_images", default=4))
    run_dir = Path(run_dir)
    # The local files exist before W&B starts (which may take up to its init timeout).
    logger = RunLogger(cfg, run_dir, resume_state=resume_state, log_images=log_images)
    if name == "wandb":
        mode = resolve_mode(OmegaConf.select(cfg, "logger.mode", default=None))
        if mode != "disabled":
            logger.wandb = _start(cfg, run_dir, mode, resume_state)
            logger.summary["wandb"] = logger._wandb_info()
            logger._write_summary()
    return logger


def _start(cfg: DictConfig, run_dir: Path, mode: str, resume_state: Mapping[str, Any] | None) -> WandbRun | None:
    identity = job_identity(cfg, hydra_node())
    resume_state = resume_state or {}
    run = start_wandb(
        run_dir=run_dir,
        mode=mode,
        project=OmegaConf.select(cfg, "logger.project", default="segdcn"),
        entity=OmegaConf.select(cfg, "logger.entity", default=None),
        group=identity.group,
        name=identity.name,
        tags=list(OmegaConf.select(cfg, "logger.tags", default=[]) or []),
        job_type=OmegaConf.select(cfg, "logger.job_type", default="train"),
        config=OmegaConf.to_container(cfg, resolve=True),
        run_id=resume_state.get("wandb_run_id"),
    )
    step = resume_state.get("step")
    if run is not None and step is not None and run.first_step > step + 1:
        log.warning(
            "W&B run %s already holds steps up to %d (logged after the checkpoint by the process that stopped); "
            "W&B skips this run's steps %d..%d, metrics.jsonl has them",
            run.id,
            run.first_step - 1,
            step + 1,
            run.first_step - 1,
        )
    return run


def _split_eval(metrics: Mapping[str, Any], class_names: list[str]) -> tuple[dict, dict]:
    """(scalars, {per_class_<x>: {class: value}}) of an evaluation's metrics; anything else is left out."""
    scalars, per_class = {}, {}
    for key, value in metrics.items():
        value = to_jsonable(value)
        if value is None or isinstance(value, (int, float, str, bool)):
            scalars[key] = value
        elif key.startswith("per_class_") and isinstance(value, (list, dict)):
            if isinstance(value, list):
                if len(value) != len(class_names):
                    raise ValueError(
                        f"{key} has {len(value)} values but class_names has {len(class_names)}: expected one per class"
                    )
                value = dict(zip(class_names, value, strict=True))
            per_class[key] = value
        else:
            log.debug("evaluation value %r (%s) is not logged", key, type(value).__name__)
    return scalars, per_class


def _scalar(key: Any, value: Any) -> Any:
    value = to_jsonable(value)
    if value is not None and not isinstance(value, (int, float, str, bool)):
        raise TypeError(f"metric {key!r} is {type(value).__name__} {value!r}: expected a number (or string)")
    return value
