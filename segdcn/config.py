"""Structured-config schemas of the Hydra apps (train, eval, export), stored in Hydra's ConfigStore.

Each primary config (conf/train.yaml, conf/eval.yaml) lists its schema first in its defaults, so
the YAML files merge into typed nodes: a mistyped key (`trainer.max_iter=10`) or a wrong type
(`trainer.max_iters=ten`) stops the app at start with Hydra's own message. The model and dataset
builders check values further (ranges, choices) and name the key in their errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any  # noqa: UP035 - OmegaConf reads typing.Optional, not X | None, on 3.10

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

# The Hydra apps' config folder, as an absolute path: Hydra resolves a relative config_path against the
# calling module, which a console-script entry point (segdcn-train) does not provide as a file.
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

# ---- dataset (conf/dataset/*.yaml; checked further by segdcn.data.builder.validate) ----


@dataclass
class DatasetTrainConfig:
    short_side: int | None = None
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    crop_size: list[int] = field(default_factory=lambda: [321, 321])
    hflip: float = 0.5
    photometric: dict[str, Any] | None = None


@dataclass
class DatasetEvalConfig:
    short_side: int | None = None


@dataclass
class DatasetConfig:
    name: str = MISSING
    root: str = MISSING
    layout: str = "voc"
    num_classes: int = MISSING
    ignore_index: int = 255
    image_dir: str | None = None
    mask_dir: str | None = None
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "val": "val"})
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    train: DatasetTrainConfig = field(default_factory=DatasetTrainConfig)
    eval: DatasetEvalConfig = field(default_factory=DatasetEvalConfig)


# ---- model (conf/model/*.yaml; checked further by segdcn.models.config.parse_model_cfg) ----


@dataclass
class BackboneConfig:
    name: str = "resnet101"
    output_stride: int = 16
    pretrained: str | None = None
    frozen_stages: int = 0
    res5_dilation: int | None = None  # the paper's Table 3: 4, 6 or 8 in every res5 3x3 conv; null: from output_stride
    width: int = 64  # stem and res2 channels (torchvision's 64; narrower ResNets train from scratch)


@dataclass
class HeadConfig:
    name: str = "paper"
    channels: int = 1024
    rates: list[int] | None = None
    lr_mult: float = 1.0


@dataclass
class DCNConfig:
    layers: int = 0
    at: list[str] = field(default_factory=list)
    modulated: bool = False
    deform_groups: int = 1
    offset_dilation: str = "paper"
    offset_lr_mult: float = 1.0
    impl: str = "native"


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    norm: str = "frozen_bn"
    head: HeadConfig = field(default_factory=HeadConfig)
    dcn: DCNConfig = field(default_factory=DCNConfig)


# ---- training ----


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adamw
    lr: float = 1e-3
    momentum: float = 0.9  # sgd
    weight_decay: float = 5e-4
    nesterov: bool = False  # sgd
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw
    no_decay_norm_bias: bool = False  # weight decay 0 on norm weights and biases


@dataclass
class ScheduleConfig:
    name: str = "step"  # step | poly
    milestones: list[float] = field(default_factory=lambda: [2 / 3])  # step: fractions of max_iters
    gamma: float = 0.1  # step: lr factor at each milestone
    power: float = 0.9  # poly: lr * (1 - t / max_iters) ** power
    min_lr: float = 0.0  # poly: floor
    warmup_iters: int = 0  # linear warmup from warmup_factor * lr
    warmup_factor: float = 0.1


@dataclass
class TrainerConfig:
    max_iters: int = 1000
    batch_size: int = 8  # global batch (split over DDP processes), per optimizer step
    accumulate: int = 1  # gradient accumulation steps per optimizer step
    num_workers: int = 2
    device: str = "auto"  # auto | cpu | cuda | cuda:K
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16 on CUDA only)
    eval_every: int = 500  # iterations; 0: only at the end
    checkpoint_every: int = 100  # iterations between last.pt writes (and at every evaluation)
    log_every: int = 10
    resume: str = "auto"  # auto | none | <path to a checkpoint>
    deterministic: bool = False
    progress: bool = True  # tqdm bars
    clip_grad_norm: float | None = None
    init_from: str | None = None  # a checkpoint whose model weights start the run (not resumed)
    stop_at: int | None = None  # stop with a checkpoint after this iteration (a job's time slice); resume goes on


@dataclass
class EvalConfig:
    mode: str = "whole"  # whole | slide
    window: list[int] = field(default_factory=lambda: [513, 513])  # slide: [height, width]
    stride: list[int] = field(default_factory=lambda: [341, 341])  # slide: [height, width]
    scales: list[float] = field(default_factory=lambda: [1.0])
    flip: bool = False
    official: bool = False  # Cityscapes: also run cityscapesscripts' evaluation
    split: str = "val"
    max_images: int | None = None  # evaluate on the first N images only
    num_workers: int = 2


@dataclass
class LoggerConfig:
    name: str = "wandb"  # wandb | none (metrics.jsonl, summary.json and config.yaml are always written)
    project: str = "segdcn"
    entity: str | None = None
    group: str | None = None  # default: the sweep's name under -m, so a sweep's runs share one
    tags: list[str] = field(default_factory=list)
    job_type: str = "train"
    mode: str | None = None  # online | offline | disabled; default: $WANDB_MODE, else offline
    log_images: int = 4  # validation images with predicted and true masks per evaluation


@dataclass
class TrainConfig:
    dataset: DatasetConfig = MISSING
    model: ModelConfig = MISSING
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    experiment: str | None = None  # the experiment's name (set by conf/experiment/*.yaml)
    seed: int = 0


@dataclass
class EvalAppConfig:
    """segdcn-eval (conf/eval.yaml). Without `dataset=<name>`, the dataset is the checkpoint's, and the
    `dataset.*` keys typed on the command line override its values (see segdcn/eval.py)."""

    ckpt: str = MISSING  # a checkpoint of segdcn-train (checkpoints/best.pt or last.pt of a run)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    device: str = "auto"  # auto | cpu | cuda | cuda:K
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16 on CUDA only)
    progress: bool = True


def register() -> None:
    """Store the schemas: `<app>_schema` for primary configs, `schema/<group>` for groups."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="eval_schema", node=EvalAppConfig)
    for group, node in (
        ("dataset", DatasetConfig),
        ("model", ModelConfig),
        ("optim", OptimConfig),
        ("schedule", ScheduleConfig),
        ("trainer", TrainerConfig),
        ("eval", EvalConfig),
        ("logger", LoggerConfig),
    ):
        cs.store(group=f"schema/{group}", name="base", node=node)


register()


# ---- segdcn-export and segdcn-predict (conf/export.yaml, conf/predict.yaml) ----


@dataclass
class ExportOptions:
    opset: int = 19  # ONNX opset; DeformConv needs 19 or later
    input_size: list[int] | None = None  # [height, width] traced and checked at; null: dataset.train.crop_size
    tolerance: float = 1e-4  # largest difference to PyTorch, relative to the largest |logit|
    verify: bool = True  # run each file (onnxruntime, torch.export.load) against PyTorch after writing it
    wandb: bool = False  # log the files as a W&B artifact of type model (also done when a W&B run is active)


@dataclass
class ExportAppConfig:
    """segdcn-export (conf/export.yaml): a checkpoint of segdcn-train as ONNX and/or torch.export files."""

    ckpt: str = MISSING
    format: str = "all"  # onnx | torch_export | all
    out: str | None = None  # folder of the files; null: the run directory (outputs/export/<date>/<time>)
    name: str | None = None  # file name without suffix; null: deeplab-<backbone>-dcn<N>[-v2]-<dataset>
    export: ExportOptions = field(default_factory=ExportOptions)
    logger: LoggerConfig = field(default_factory=lambda: LoggerConfig(job_type="export"))  # W&B settings


@dataclass
class PredictAppConfig:
    """segdcn-predict (conf/predict.yaml): label maps of images from a checkpoint, an exported ONNX file or an
    exported torch.export program."""

    ckpt: str | None = None  # a checkpoint of segdcn-train ...
    onnx: str | None = None  # ... or an ONNX file of segdcn-export (with its .onnx.json metadata)
    program: str | None = None  # ... or a torch.export program (.pt2) of segdcn-export (with its .pt2.json)
    input: str = MISSING  # an image, a folder (searched recursively) or a glob pattern
    out: str | None = None  # null: the run directory (outputs/predict/<date>/<time>)
    batch_size: int = 4  # images of one size per forward pass
    short_side: int | None = None  # shorter side resized to this; null: the model's dataset.eval.short_side; 0: none
    mode: str = "slide"  # slide: windows of `window` over larger images (whole image when it fits); whole
    window: list[int] | None = None  # [height, width]; null: the model's training crop
    stride: list[int] | None = None  # [height, width]; null: 2/3 of the window
    overlay_alpha: float = 0.5  # weight of the class colours over the image in the overlays
    device: str = "auto"  # checkpoints: auto | cpu | cuda | cuda:K (ONNX files and programs run on the CPU)
    threads: int | None = None  # onnxruntime's intra-op threads; null: its default
    progress: bool = True


ConfigStore.instance().store(name="export_schema", node=ExportAppConfig)
ConfigStore.instance().store(name="predict_schema", node=PredictAppConfig)
