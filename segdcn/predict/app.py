"""segdcn-predict (also `python -m segdcn.predict`): label maps of images from a checkpoint, or from an ONNX
file or a torch.export program of segdcn-export.

    segdcn-predict ckpt=outputs/2026-11-22/10-00-00/checkpoints/best.pt input=photos/ out=predictions
    segdcn-predict onnx=exports/deeplab-resnet101-dcn3-voc_aug.onnx input='photos/*.jpg'
    segdcn-predict program=exports/deeplab-resnet101-dcn3-voc_aug.pt2 input='photos/*.jpg'
    segdcn-predict ckpt=... input=leftImg8bit/val window=[769,769] stride=[513,513] batch_size=2

Images are resized as in evaluation (the shorter side to the dataset's eval.short_side), run through
the model in windows of the training crop (mode=slide; an image no larger than the window is one
window, i.e. whole-image inference) or whole (mode=whole), and the logits resampled to the input's
size before the argmax (segdcn.engine.inference.infer, as segdcn-eval does). See segdcn.predict.writer
for the files written.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import segdcn.config  # registers the structured-config schemas before Hydra composes
from segdcn.config import PredictAppConfig
from segdcn.export.errors import ExportConfigError

log = logging.getLogger(__name__)


def inference_settings(cfg: PredictAppConfig, metadata: dict[str, Any]) -> dict[str, Any]:
    """mode, window, stride and short_side from the command line, else from the model's metadata."""
    window = list(cfg.window) if cfg.window is not None else metadata["input"].get("window")
    stride = list(cfg.stride) if cfg.stride is not None else None
    mode = cfg.mode if window is not None else "whole"  # no known window: whole images
    if mode == "slide":
        stride = stride or [max(1, 2 * w // 3) for w in window]
        if any(s > w for s, w in zip(stride, window, strict=True)):
            raise ExportConfigError(f"stride={stride} exceeds window={window}; pixels would be missed")
    short_side = metadata["input"].get("short_side") if cfg.short_side is None else cfg.short_side
    return {"mode": mode, "window": window, "stride": stride, "short_side": short_side or None}


def run(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    import torch
    from hydra.utils import to_absolute_path
    from tqdm import tqdm

    from segdcn.data.transforms import build_eval_transform
    from segdcn.engine.inference import infer
    from segdcn.predict.batches import batches
    from segdcn.predict.inputs import check_readable, find_images
    from segdcn.predict.sources import open_source
    from segdcn.predict.writer import PredictionWriter

    if OmegaConf.is_missing(cfg, "input"):
        raise ExportConfigError("input is required: an image, a folder or a glob pattern, e.g. input='photos/*.jpg'")
    cfg = PredictAppConfig.from_config(cfg)  # typed; every value checked before the images and the model are read
    images = find_images(to_absolute_path(cfg.input))
    check_readable(images)  # before the model loads: a bad file fails at once
    absolute = {k: to_absolute_path(getattr(cfg, k)) if getattr(cfg, k) else None for k in ("ckpt", "onnx", "program")}
    source = open_source(absolute["ckpt"], absolute["onnx"], cfg.device, cfg.threads, absolute["program"])
    settings = inference_settings(cfg, source.metadata)
    normalization = source.metadata["input"]["normalization"]
    transform = build_eval_transform(settings["short_side"], normalization["mean"], normalization["std"])
    out_dir = Path(to_absolute_path(cfg.out)) if cfg.out else Path(run_dir)
    writer = PredictionWriter(out_dir, source.metadata, cfg.overlay_alpha)
    log.info("%d images through %s (%s)", len(images), source.description, settings)

    windows = {"window": settings["window"], "stride": settings["stride"]} if settings["mode"] == "slide" else {}
    start = time.perf_counter()
    written = []
    with tqdm(total=len(images), unit="img", desc="predict", disable=not cfg.progress) as bar, torch.no_grad():
        for batch in batches(images, transform, int(cfg.batch_size)):
            # logits at the original size (bilinear), then the argmax: as segdcn-eval scores them
            images_in = batch.tensor.to(source.device)
            logits = infer(source.model, images_in, batch.original_size, mode=settings["mode"], **windows)
            predictions = logits.argmax(1).to(torch.uint8).cpu().numpy()
            for item, image, prediction in zip(batch.items, batch.images, predictions, strict=True):
                written.append(writer.write(item.name, image, prediction))
            bar.update(len(batch.items))
    seconds = time.perf_counter() - start
    folders = ", ".join(f"{path.parent.relative_to(out_dir).parts[0]}/" for path in written[0].values())
    print(f"{len(written)} images in {seconds:.1f} s; predictions in {out_dir} ({folders})")
    return {"out": str(out_dir), "files": [{k: str(v) for k, v in w.items()} for w in written], **settings}


@hydra.main(config_path=segdcn.config.CONF_DIR, config_name="predict", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg, HydraConfig.get().runtime.output_dir)
