"""The training loop of segdcn-train: iteration-based SGD on a DeepLab, evaluation, checkpoints, resume.

    trainer = Trainer(cfg, run_dir)       # cfg: conf/train.yaml as composed (DictConfig), or a TrainConfig
    miou = trainer.fit()                  # the final evaluation's mIoU

One iteration is one optimizer step over trainer.batch_size images: `trainer.accumulate`
micro-batches per process, each of batch_size / (processes * accumulate) images. The loss is the
cross entropy averaged over the labelled pixels (255 ignored) of the whole global batch: every
micro-batch of every process divides its sum by the same global count, so 1 process, N processes on
M nodes and any accumulation take the same optimizer steps (to float rounding; BN statistics, when
BN is trained, are per process unless model.norm=syncbn). The run directory gets checkpoints/last.pt (every
trainer.checkpoint_every iterations and at each evaluation) and checkpoints/best.pt (on a new best
mIoU); the logger writes metrics.jsonl, summary.json and config.yaml there (rank 0 only), with the
offsets of the deformable layers at every evaluation and every logger.offset_every iterations
(segdcn.engine.offsets: offsets/<layer>/... and train/offsets/<layer>/..., pictures in analysis/).

A resumed run continues exactly: the checkpoint restores model, optimizer, schedule, grad scaler,
RNG states and the iteration, and the data order is a function of (seed, iteration)
(segdcn.engine.data_order), so N iterations plus a resumed N give the weights of 2N in one go.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from segdcn.config import ConfigError, TrainConfig
from segdcn.data import build_dataset, label_set
from segdcn.data.loader import seed_worker
from segdcn.engine import distributed as dist
from segdcn.engine.checkpoint import (
    CheckpointNotFoundError,
    checkpoint_version,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
)
from segdcn.engine.data_order import SeededSamples, TrainOrder
from segdcn.engine.device import check_precision_on, resolve_device
from segdcn.engine.evaluate import EvalResult, evaluate
from segdcn.engine.inference import autocast
from segdcn.engine.offsets import OffsetMonitor
from segdcn.engine.preemption import PREEMPTED_EXIT_CODE, Preempted, StopSignals
from segdcn.engine.rng import rng_state, seed_everything, set_deterministic, set_rng_state
from segdcn.engine.schedules import build_schedule
from segdcn.models import build_model, param_groups

log = logging.getLogger("segdcn.train")

CHECKPOINT_DIR = "checkpoints"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: the run stops without writing the bad weights."""


def check_topology(cfg: TrainConfig | DictConfig, world_size: int, device: torch.device) -> None:
    """The checks that need the process group and the device; the schema (segdcn.config) checks the rest."""
    t = cfg.trainer
    if t.batch_size % (world_size * t.accumulate):
        raise ConfigError(
            f"trainer.batch_size={t.batch_size}: the global batch per optimizer step is not divisible by "
            f"{world_size} processes x trainer.accumulate={t.accumulate}; expected a multiple of "
            f"{world_size * t.accumulate}"
        )
    check_precision_on(device, t.precision, key="trainer.precision")


def build_optimizer(model: nn.Module, optim: DictConfig) -> torch.optim.Optimizer:
    """optim.name=sgd (the paper's) or adamw (decoupled weight decay; trains a network from
    scratch in fewer steps, which the CPU demo needs)."""
    groups = param_groups(model, optim.lr, optim.weight_decay, no_decay_norm_bias=optim.no_decay_norm_bias)
    if optim.name == "adamw":
        return torch.optim.AdamW(groups, lr=optim.lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay)
    return torch.optim.SGD(
        groups, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay, nesterov=optim.nesterov
    )


def segmentation_loss(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, labelled: torch.Tensor | int | None = None
) -> torch.Tensor:
    """Cross entropy summed over the labelled pixels and divided by `labelled` (default: this batch's
    labelled pixels; 0, not NaN, when there are none). The trainer passes the global batch's count."""
    total = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="sum")
    if labelled is None:
        labelled = (labels != ignore_index).sum()
    return total / torch.as_tensor(labelled, dtype=total.dtype, device=total.device).clamp(min=1)


def weights_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


class Trainer:
    def __init__(self, cfg: TrainConfig | DictConfig, run_dir: str | Path):
        # the typed settings, every value checked before anything is built; the composed DictConfig is
        # what the checkpoint and the logger record (with Hydra's context when there is one)
        self.cfg = TrainConfig.from_config(cfg)
        self.composed = cfg if isinstance(cfg, DictConfig) else OmegaConf.structured(self.cfg)
        cfg = self.cfg
        t = cfg.trainer
        wanted = "cuda" if t.device.startswith("cuda") or (t.device == "auto" and torch.cuda.is_available()) else "cpu"
        self.dist = dist.init_distributed(wanted)
        self.device = resolve_device(t.device, self.dist.local_rank, key="trainer.device")
        check_topology(cfg, self.dist.world_size, self.device)
        # every process must write to rank 0's directory (their Hydra clocks may straddle a second)
        self.run_dir = Path(dist.broadcast_object(str(run_dir)))
        self.checkpoint_dir = self.run_dir / CHECKPOINT_DIR
        self.is_main = self.dist.is_main
        if not self.is_main:  # one account of the run in train.log: rank 0's (others still warn)
            logging.getLogger("segdcn").setLevel(logging.WARNING)
        log.info(
            "run directory %s; %d process(es) on %s, %s", self.run_dir, self.dist.world_size, self.device, t.precision
        )
        seed_everything(cfg.seed)
        set_deterministic(t.deterministic, self.device)

        self.labels = label_set(cfg.dataset.name, cfg.dataset.root)
        self.num_classes = int(cfg.dataset.num_classes)
        self.ignore_index = int(cfg.dataset.ignore_index)
        self.train_set = build_dataset(cfg.dataset, "train")
        self.val_set = build_dataset(cfg.dataset, cfg.eval.split, augment=False)

        model = build_model(cfg.model, self.num_classes)
        if t.init_from:
            load_model_state(model, load_checkpoint(t.init_from)["model"], f"trainer.init_from={t.init_from}")
        model = dist.convert_sync_batchnorm(model, self.device).to(self.device)
        self.model = model
        self.optimizer = build_optimizer(model, cfg.optim)
        self.schedule = build_schedule(self.optimizer, cfg)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=t.precision == "fp16")
        self.iteration = 0
        # this process's training time and iterations (a resumed run counts from its resume)
        self.train_seconds, self.trained_iterations = 0.0, 0
        self.best_miou: float | None = None
        self.last_result: EvalResult | None = None
        resumed = self._resume()
        self.ddp_model = dist.wrap_ddp(self.model, self.device)
        self.order = TrainOrder(
            len(self.train_set),
            t.batch_size,
            seed=cfg.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            accumulate=t.accumulate,
            start_iteration=self.iteration,
        )
        self.logger = self._build_logger(resumed)
        self.offsets = OffsetMonitor.build(self.model, self.val_set, cfg, self.run_dir, self.labels.names)

    # ---- set-up ----

    def _resume_path(self) -> Path | None:
        resume = self.cfg.trainer.resume
        if resume in (None, "none", ""):
            return None
        if resume == "auto":
            path = self.checkpoint_dir / "last.pt"
            return path if path.is_file() else None
        path = Path(resume).expanduser()
        if not path.is_file():
            raise CheckpointNotFoundError(
                f"trainer.resume={resume}: no such checkpoint; expected auto, none or the path of a last.pt/best.pt"
            )
        return path

    def _resume(self) -> dict[str, Any] | None:
        path = self._resume_path()
        if path is None:
            return None
        ckpt = load_checkpoint(path)
        load_model_state(self.model, ckpt["model"], f"checkpoint {path}")
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        self.iteration = int(ckpt["iteration"])
        self.best_miou = ckpt.get("best_miou")
        data = ckpt.get("data") or {}
        for key, now in (("seed", self.cfg.seed), ("batch_size", self.cfg.trainer.batch_size)):
            if key in data and data[key] != now:
                log.warning(
                    "resuming with %s=%s but the checkpoint was trained with %s; the data order differs from "
                    "an uninterrupted run",
                    "seed" if key == "seed" else f"trainer.{key}",
                    now,
                    data[key],
                )
        log.info("resumed from %s at iteration %d", path, self.iteration)
        return ckpt

    def _build_logger(self, resumed: dict[str, Any] | None):
        from segdcn.loggers import build_logger  # W&B is imported only when a run starts

        return build_logger(self.composed, self.run_dir, self.dist.rank, resume_state=(resumed or {}).get("logger"))

    def _loader(self) -> DataLoader:
        t = self.cfg.trainer
        return DataLoader(
            SeededSamples(self.train_set),
            batch_size=self.order.micro_batch,
            sampler=self.order,
            num_workers=t.num_workers,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=seed_worker if t.num_workers > 0 else None,
        )

    # ---- state ----

    def state_dict(self) -> dict[str, Any]:
        logger_state = self.logger.state_dict() if hasattr(self.logger, "state_dict") else None
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "iteration": self.iteration,
            "best_miou": self.best_miou,
            "config": OmegaConf.to_yaml(self.composed, resolve=True),
            "rng": rng_state(),
            "data": self.order.state_dict(self.iteration),
            "logger": logger_state,
            "segdcn_version": checkpoint_version(),
        }

    def save(self, best: bool = False) -> None:
        """last.pt (and best.pt) on rank 0. Weights that are not finite are never written: the
        previous last.pt stays the run's resume point."""
        if not self.is_main:
            return
        if not weights_finite(self.model):
            raise NonFiniteLossError(
                f"non-finite weights after iteration {self.iteration}; not saving them, so "
                f"{self.checkpoint_dir / 'last.pt'} keeps the last good state"
            )
        state = self.state_dict()
        save_checkpoint(self.checkpoint_dir / "last.pt", state)
        if best:
            save_checkpoint(self.checkpoint_dir / "best.pt", state)

    # ---- the loop ----

    def train_step(self, batches) -> float:
        """One optimizer step over `accumulate` micro-batches; returns the global batch's loss."""
        t = self.cfg.trainer
        micro_batches = [next(batches) for _ in range(t.accumulate)]
        watch_offsets = self.offsets is not None and self.offsets.due(self.iteration + 1)
        # the labelled pixels of the whole global batch (every micro-batch, every process): each loss
        # term is divided by it, so the gradient is the global batch's mean whatever the topology
        labelled = sum(int((labels != self.ignore_index).sum()) for _, labels in micro_batches)
        labelled = dist.all_reduce_sum(torch.tensor(labelled, dtype=torch.float64, device=self.device))
        # DDP averages the gradients over processes: the sum over processes is the global mean
        scale = self.dist.world_size
        loss_sum = torch.zeros((), device=self.device)
        for micro, (images, labels) in enumerate(micro_batches):
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            last = micro == t.accumulate - 1
            # gradients are all-reduced once per optimizer step, on its last micro-batch
            sync = contextlib.nullcontext() if last or self.ddp_model is self.model else self.ddp_model.no_sync()
            # the offsets of the step's last micro-batch, on the iterations of logger.offset_every
            watch = self.offsets.training(images, labels) if watch_offsets and last else contextlib.nullcontext()
            with sync:
                with watch, autocast(self.device, t.precision):
                    logits = self.ddp_model(images)
                loss = segmentation_loss(logits, labels, self.ignore_index, labelled)
                self.scaler.scale(loss * scale).backward()
            loss_sum += loss.detach()
        loss_value = float(dist.all_reduce_sum(loss_sum))
        if not math.isfinite(loss_value):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(
                f"non-finite loss ({loss_value}) at iteration {self.iteration + 1}; stopping. The last good "
                f"checkpoint is {self.checkpoint_dir / 'last.pt'}: resume from it with a lower optim.lr "
                "(or trainer.clip_grad_norm)"
            )
        if t.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), t.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_value

    def run_evaluation(self) -> EvalResult:
        t = self.cfg.trainer
        dist.broadcast_buffers(self.model)  # every rank scores (and rank 0 saves) rank 0's model
        result = evaluate(
            self.model,
            self.val_set,
            self.cfg.eval,
            device=self.device,
            precision=t.precision,
            num_classes=self.num_classes,
            ignore_index=self.ignore_index,
            class_names=self.labels.names,
            progress=t.progress and self.is_main,
            num_samples=int(self.cfg.logger.log_images) if self.is_main else 0,
            mean=tuple(self.cfg.dataset.mean),
            std=tuple(self.cfg.dataset.std),
            probe=self.offsets,
        )
        offsets = self.offsets.eval_metrics(self._reduce_sum) if self.offsets is not None else {}
        miou = result.metrics["miou"]
        improved = math.isfinite(miou) and (self.best_miou is None or miou > self.best_miou)
        if improved:
            self.best_miou = miou
        self.last_result = result
        if self.is_main:
            self.logger.log_eval(result.metrics, self.iteration, list(self.labels.names), result.samples)
            if self.offsets is not None:
                picture = self.offsets.draw(self.iteration) if self.cfg.logger.offset_picture else None
                self.logger.log_offsets(offsets, self.iteration, picture=picture)
            log.info(
                "iteration %d: mIoU %.4f, pixel accuracy %.4f (best %.4f)",
                self.iteration,
                miou,
                result.metrics["pixel_acc"],
                self.best_miou if self.best_miou is not None else math.nan,
            )
        self.save(best=improved)
        return result

    def fit(self) -> float:
        """Trains to trainer.max_iters (or stop_at) and returns the final mIoU. On a signal of
        trainer.save_on_signals it saves at the iteration reached and exits with PREEMPTED_EXIT_CODE."""
        try:
            with StopSignals(self.cfg.trainer.save_on_signals) as self.signals:
                self._fit()
            dist.barrier()  # not on errors: a rank that failed alone would leave the others waiting
            summary = self.summary()
            if self.is_main:
                self.logger.log_summary(summary)
                self.logger.finish(0)
            return summary["miou"]
        except Preempted as stop:
            log.warning("%s; continue with hydra.run.dir=%s trainer.resume=auto", stop, self.run_dir)
            if self.is_main:
                self.logger.log_summary({**self.summary(), "preempted_by": stop.signal_name})
                self.logger.finish(PREEMPTED_EXIT_CODE, state="preempted")
            dist.cleanup()
            self.signals.hand_over()  # submitit's handler requeues the job and exits here
            raise SystemExit(PREEMPTED_EXIT_CODE) from None
        except BaseException as error:
            if isinstance(error, NonFiniteLossError):
                log.error("%s", error)  # also in the run's log file, beside the metrics
            if self.is_main:
                self.logger.finish(1)
            raise
        finally:
            dist.cleanup()

    def _fit(self) -> None:
        t = self.cfg.trainer
        if self.iteration >= t.max_iters:
            log.info(
                "the checkpoint is at iteration %d of trainer.max_iters=%d: evaluating only",
                self.iteration,
                t.max_iters,
            )
            self.run_evaluation()
            return
        batches = iter(self._loader())
        self.model.train()
        bar = tqdm(
            total=t.max_iters,
            initial=self.iteration,
            desc="train",
            unit="it",
            disable=not (t.progress and self.is_main),
            dynamic_ncols=True,
        )
        window_loss, window_start, window_iters = 0.0, time.perf_counter(), 0
        with bar:
            while self.iteration < self.stop_iteration:
                lr = self.schedule.lr_at(self.iteration)  # the base lr of this step (groups scale it)
                loss = self.train_step(batches)
                self.schedule.step()
                self.iteration += 1
                if self.offsets is not None and self.offsets.due(self.iteration):
                    train_offsets = self.offsets.train_metrics(self._reduce_sum)
                    if self.is_main:
                        self.logger.log_metrics(train_offsets, self.iteration)
                window_loss += loss
                window_iters += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
                if self.iteration % t.log_every == 0 or self.iteration == t.max_iters:
                    seconds = time.perf_counter() - window_start
                    self.train_seconds += seconds
                    self.trained_iterations += window_iters
                    if self.is_main:
                        self.logger.log_metrics(
                            {
                                "train/loss": window_loss / window_iters,
                                "train/lr": lr,
                                "train/it_per_s": window_iters / seconds if seconds > 0 else math.nan,
                                "train/epoch": self.iteration / self.order.steps_per_epoch,
                            },
                            self.iteration,
                        )
                    window_loss, window_start, window_iters = 0.0, time.perf_counter(), 0
                paused_at = time.perf_counter()
                self._stop_if_signalled()
                evaluate_now = t.eval_every > 0 and self.iteration % t.eval_every == 0
                if evaluate_now or self.iteration == t.max_iters:
                    self.run_evaluation()
                    self.model.train()
                elif (t.checkpoint_every > 0 and self.iteration % t.checkpoint_every == 0) or (
                    self.iteration == self.stop_iteration
                ):
                    self.save()
                else:
                    continue
                paused = time.perf_counter() - paused_at  # it/s counts training time only
                window_start += paused
        if self.iteration < t.max_iters:
            log.info(
                "stopped at iteration %d (trainer.stop_at); continue to %d with hydra.run.dir=%s trainer.resume=auto",
                self.iteration,
                t.max_iters,
                self.run_dir,
            )

    def _reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Summed over processes, on this process's device (NCCL reduces CUDA tensors only)."""
        return dist.all_reduce_sum(tensor.to(self.device)).cpu()

    def _stop_if_signalled(self) -> None:
        """After an optimizer step: when any process got a stop signal, every process stops at this
        iteration (one all-reduce of the flag, so no rank takes a step the others do not) and rank 0
        writes last.pt."""
        if not self.cfg.trainer.save_on_signals:
            return
        flag = torch.tensor(float(self.signals.received is not None), device=self.device)
        if float(dist.all_reduce_sum(flag)) == 0:
            return
        self.save()
        dist.barrier()  # no process exits (and so has torchrun stop the others) before rank 0 has saved
        raise Preempted(self.signals.received or "a stop signal (on another process)", self.iteration)

    @property
    def stop_iteration(self) -> int:
        """trainer.stop_at (a checkpointed pause; the schedule still spans max_iters), else max_iters."""
        stop_at = self.cfg.trainer.stop_at
        return self.cfg.trainer.max_iters if stop_at is None else min(stop_at, self.cfg.trainer.max_iters)

    @property
    def it_per_s(self) -> float:
        """Training iterations per second of this process so far (logged windows, evaluations and
        checkpoints excluded, as train/it_per_s): the ablation table's speed line."""
        return self.trained_iterations / self.train_seconds if self.train_seconds > 0 else math.nan

    def summary(self) -> dict[str, Any]:
        metrics = self.last_result.metrics if self.last_result is not None else {}
        return {
            "miou": metrics.get("miou", math.nan),
            "per_class_iou": metrics.get("per_class_iou"),
            "pixel_acc": metrics.get("pixel_acc", math.nan),
            "mean_acc": metrics.get("mean_acc", math.nan),
            "best_miou": self.best_miou,
            "iterations": self.iteration,
            "world_size": self.dist.world_size,
            "it_per_s": self.it_per_s,
        }
