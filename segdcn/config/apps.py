"""The settings of segdcn-eval, segdcn-export and segdcn-predict (conf/{eval,export,predict}.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from .dataset import DatasetConfig
from .schema import Schema
from .train import EvalConfig, LoggerConfig, check_device, check_precision


@dataclass
class EvalAppConfig(Schema):
    """segdcn-eval (conf/eval.yaml). Without `dataset=<name>`, the dataset is the checkpoint's, and the
    `dataset.*` keys typed on the command line override its values (see segdcn/eval.py)."""

    ckpt: str = MISSING  # a checkpoint of segdcn-train (checkpoints/best.pt or last.pt of a run)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    device: str = "auto"  # auto | cpu | cuda | cuda:K
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16 on CUDA only)
    progress: bool = True
    # the first N images give summary.json's offsets/<layer>/... statistics (as segdcn-train's at each
    # evaluation; a model without deformable layers has none); 0: none
    offset_images: int = 16

    def check(self) -> None:
        check_device(self, "device")
        check_precision(self, "precision")
        self.at_least("offset_images", 0, " (images; 0: no offset statistics)")


@dataclass
class ExportOptions(Schema):
    KEY = "export"

    opset: int = 19  # ONNX opset; DeformConv needs 19 or later (the newest is onnx's)
    input_size: list[int] | None = None  # [height, width] traced and checked at; null: dataset.train.crop_size
    tolerance: float = 1e-4  # largest difference to PyTorch, relative to the largest |logit|
    verify: bool = True  # run each file (onnxruntime, torch.export.load) against PyTorch after writing it
    wandb: bool = False  # log the files as a W&B artifact of type model (also done when a W&B run is active)

    def check(self) -> None:
        self.pair("input_size", "the traced input")
        if self.tolerance <= 0:
            self.fail("tolerance", "a positive relative difference")


@dataclass
class ExportAppConfig(Schema):
    """segdcn-export (conf/export.yaml): a checkpoint of segdcn-train as ONNX and/or torch.export files."""

    ckpt: str = MISSING
    format: str = "all"  # onnx | torch_export | all
    out: str | None = None  # folder of the files; null: the run directory (outputs/export/<date>/<time>)
    name: str | None = None  # file name without suffix; null: deeplab-<backbone>-dcn<N>[-v2]-<dataset>
    export: ExportOptions = field(default_factory=ExportOptions)
    logger: LoggerConfig = field(default_factory=lambda: LoggerConfig(job_type="export"))  # W&B settings

    def check(self) -> None:
        from segdcn.export.exporter import FORMAT_CHOICES

        self.choice("format", FORMAT_CHOICES)


@dataclass
class PredictAppConfig(Schema):
    """segdcn-predict (conf/predict.yaml): label maps of images from a checkpoint, an exported ONNX file or an
    exported torch.export program."""

    ckpt: str | None = None  # a checkpoint of segdcn-train ...
    onnx: str | None = None  # ... or an ONNX file of segdcn-export (with its .onnx.json metadata)
    program: str | None = None  # ... or a torch.export program (.pt2) of segdcn-export (with its .pt2.json)
    input: str = MISSING  # an image, a folder (searched recursively) or a glob pattern
    out: str | None = None  # null: the run directory (outputs/predict/<date>/<time>)
    batch_size: int = 4  # images of one size per forward pass
    short_side: int | None = None  # shorter side resized to this; null: the model's dataset.eval.short_side; 0: none
    mode: str = "slide"  # slide: windows of `window` over larger images (whole image when it fits) | whole
    window: list[int] | None = None  # [height, width]; null: the model's training crop
    stride: list[int] | None = None  # [height, width]; null: 2/3 of the window
    overlay_alpha: float = 0.5  # weight of the class colours over the image in the overlays
    device: str = "auto"  # checkpoints: auto | cpu | cuda | cuda:K (ONNX files and programs run on the CPU)
    threads: int | None = None  # onnxruntime's intra-op threads; null: its default
    progress: bool = True

    def check(self) -> None:
        from segdcn.engine.inference import MODES

        self.at_least("batch_size", 1)
        self.at_least("short_side", 0, " (pixels; 0: no resize) or null")
        self.choice("mode", MODES)
        self.pair("window", "pixels")
        self.pair("stride", "pixels")
        if not 0 <= self.overlay_alpha <= 1:
            self.fail("overlay_alpha", "a weight in [0, 1]")
        check_device(self, "device")
        self.at_least("threads", 1, " or null")
        if self.threads is not None and self.onnx is None:
            self.fail("threads", "null unless onnx=<file>.onnx is given (onnxruntime's threads)")
