"""The settings of segdcn-train besides model and dataset: optim, schedule, trainer, eval, logger.

conf/train.yaml composes them with conf/{optim,schedule,trainer,logger}/*.yaml, which hold only
what differs from these defaults. The defaults of optim and schedule are the paper's (SGD at lr 1e-3,
lr/10 for the last third).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from omegaconf import MISSING

from .dataset import DatasetConfig
from .model import ModelConfig
from .schema import Schema

OPTIMIZERS = ("sgd", "adamw")
LOGGERS = ("wandb", "none")
DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device(schema: Schema, name: str) -> None:
    """A device name as trainer.device, device (eval, predict) take it; availability is checked when the run
    starts (segdcn.engine.device.resolve_device)."""
    if not DEVICE.match(getattr(schema, name)):
        schema.fail(name, "auto, cpu, cuda or cuda:K")


def check_precision(schema: Schema, name: str) -> None:
    from segdcn.engine.device import PRECISIONS

    schema.choice(name, PRECISIONS)


@dataclass
class OptimConfig(Schema):
    KEY = "optim"

    name: str = "sgd"  # sgd (the paper) | adamw (decoupled weight decay)
    lr: float = 1e-3  # base lr; the head and offset convs scale it (model.head.lr_mult, model.dcn.offset_lr_mult)
    momentum: float = 0.9  # sgd
    weight_decay: float = 5e-4
    nesterov: bool = False  # sgd
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw
    no_decay_norm_bias: bool = False  # weight decay 0 on norm weights and biases

    def check(self) -> None:
        self.choice("name", OPTIMIZERS)
        if self.lr <= 0:
            self.fail("lr", "a positive learning rate")
        if not 0 <= self.momentum < 1:
            self.fail("momentum", "a number in [0, 1)")
        self.at_least("weight_decay", 0)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            self.fail("betas", "two numbers in [0, 1)")
        if self.name == "adamw":
            self.only_with("optim.name=sgd", "momentum", "nesterov")
        if self.name == "sgd":
            self.only_with("optim.name=adamw", "betas")


@dataclass
class ScheduleConfig(Schema):
    KEY = "schedule"

    name: str = "step"  # step (the paper) | poly (DeepLab)
    milestones: list[float] = field(default_factory=lambda: [2 / 3])  # step: fractions of max_iters
    gamma: float = 0.1  # step: lr factor at each milestone
    power: float = 0.9  # poly: lr * (1 - t / max_iters) ** power
    min_lr: float = 0.0  # poly: floor
    warmup_iters: int = 0  # linear warmup from warmup_factor * lr
    warmup_factor: float = 0.1

    def check(self) -> None:
        from segdcn.engine.schedules import SCHEDULES

        self.choice("name", SCHEDULES)
        if any(not 0 < m <= 1 for m in self.milestones):
            self.fail("milestones", "fractions of trainer.max_iters in (0, 1]")
        if self.gamma <= 0:
            self.fail("gamma", "a positive factor")
        self.at_least("power", 0)
        self.at_least("min_lr", 0)
        self.at_least("warmup_iters", 0)
        if not 0 <= self.warmup_factor <= 1:
            self.fail("warmup_factor", "a number in [0, 1]")
        if self.name == "poly":
            self.only_with("schedule.name=step", "milestones", "gamma")
        if self.name == "step":
            self.only_with("schedule.name=poly", "power", "min_lr")


@dataclass
class TrainerConfig(Schema):
    KEY = "trainer"

    max_iters: int = 1000
    batch_size: int = 8  # global batch (split over DDP processes), per optimizer step
    accumulate: int = 1  # gradient accumulation steps per optimizer step
    num_workers: int = 2  # data loader processes (per DDP process)
    device: str = "auto"  # auto | cpu | cuda | cuda:K
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16 on CUDA only)
    eval_every: int = 500  # iterations; 0: only at the end
    checkpoint_every: int = 100  # iterations between last.pt writes (and at every evaluation); 0: at evaluations
    log_every: int = 10  # iterations per logged training loss
    resume: str = "auto"  # auto | none | <path to a checkpoint>
    deterministic: bool = False  # torch.use_deterministic_algorithms and cuDNN's deterministic kernels
    progress: bool = True  # tqdm bars
    clip_grad_norm: float | None = None  # clip the gradients' global norm to this; null: no clipping
    init_from: str | None = None  # a checkpoint whose model weights start the run (not resumed)
    stop_at: int | None = None  # stop with a checkpoint after this iteration (a job's time slice); resume goes on
    # on these signals: finish the step, write last.pt, exit 75 (requeue; resume=auto continues); []: none
    save_on_signals: list[str] = field(default_factory=lambda: ["SIGTERM", "SIGUSR1", "SIGUSR2"])

    def check(self) -> None:
        for name in ("max_iters", "batch_size", "accumulate", "log_every"):
            self.at_least(name, 1)
        for name in ("eval_every", "checkpoint_every", "num_workers"):
            self.at_least(name, 0)
        check_device(self, "device")
        check_precision(self, "precision")
        self.at_least("stop_at", 1, " (an iteration) or null")
        if self.clip_grad_norm is not None and self.clip_grad_norm <= 0:
            self.fail("clip_grad_norm", "a positive norm or null")
        if self.batch_size % self.accumulate:
            self.fail("batch_size", f"a multiple of trainer.accumulate={self.accumulate}")
        from segdcn.engine.preemption import signal_number

        for name in self.save_on_signals:
            try:
                signal_number(name)
            except ValueError as error:
                raise self.error(f"trainer.save_on_signals={self.save_on_signals}: {error}") from None


@dataclass
class EvalConfig(Schema):
    KEY = "eval"

    mode: str = "whole"  # whole | slide
    window: list[int] = field(default_factory=lambda: [513, 513])  # slide: [height, width]
    stride: list[int] = field(default_factory=lambda: [341, 341])  # slide: [height, width]
    scales: list[float] = field(default_factory=lambda: [1.0])  # test-time scales, logits averaged
    flip: bool = False  # also the flipped image, logits averaged
    official: bool = False  # Cityscapes: also run cityscapesscripts' evaluation (segdcn-eval)
    split: str = "val"  # a key of dataset.splits
    max_images: int | None = None  # evaluate on the first N images only
    num_workers: int = 2  # data loader processes

    def check(self) -> None:
        from segdcn.engine.inference import MODES

        self.choice("mode", MODES)
        self.pair("window", "pixels")
        self.pair("stride", "pixels")
        if any(s > w for s, w in zip(self.stride, self.window, strict=False)):
            self.fail("stride", f"at most eval.window={self.window} in each dimension, or pixels would be missed")
        if not self.scales or min(self.scales) <= 0:
            self.fail("scales", "positive factors, e.g. [0.75, 1.0, 1.25]")
        self.at_least("max_images", 1, " or null (all images)")
        self.at_least("num_workers", 0)
        if self.mode == "whole":
            self.only_with("eval.mode=slide", "window", "stride")


@dataclass
class LoggerConfig(Schema):
    KEY = "logger"

    name: str = "wandb"  # wandb | none (metrics.jsonl, summary.json and config.yaml are always written)
    project: str = "segdcn"
    entity: str | None = None
    group: str | None = None  # default: the sweep's name under -m, so a sweep's runs share one
    tags: list[str] = field(default_factory=list)
    job_type: str = "train"
    mode: str | None = None  # online | offline | disabled; default: $WANDB_MODE, else offline
    log_images: int = 4  # validation images with predicted and true masks per evaluation
    # the offsets (offsets/<layer>/...) also go to metrics.jsonl and summary.json, with or without W&B
    offset_every: int = 0  # iterations between offset statistics of the training batch; 0: at evaluations only
    offset_images: int = 16  # the first N validation images give each evaluation's offset statistics
    offset_picture: bool = True  # each evaluation draws analysis/offsets_<iteration>.png (and W&B offsets/sampling)

    def check(self) -> None:
        from segdcn.loggers.wandb_backend import MODES

        self.choice("name", LOGGERS)
        if self.mode is not None:
            self.choice("mode", MODES)
        self.at_least("log_images", 0)
        self.at_least("offset_every", 0, " (iterations; 0: at evaluations only)")
        self.at_least("offset_images", 1, " (validation images)")
        if self.name == "none":
            self.only_with("logger.name=wandb", "project", "entity", "group", "tags", "mode", "log_images")


@dataclass
class TrainConfig(Schema):
    """segdcn-train (conf/train.yaml)."""

    dataset: DatasetConfig = MISSING
    model: ModelConfig = MISSING
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    experiment: str | None = None  # the experiment's name (set by conf/experiment/*.yaml)
    seed: int = 0  # model initialisation, data order and augmentation

    def check(self) -> None:
        if self.eval.official:
            raise self.error(
                "eval.official=true: segdcn-train does not run the official Cityscapes evaluation (it writes and "
                "scores a file per image); run it on the trained model with segdcn-eval "
                "ckpt=<run dir>/checkpoints/best.pt eval.official=true"
            )
