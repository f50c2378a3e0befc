"""segdcn-eval (also `python -m segdcn.eval`): score a checkpoint of segdcn-train on a dataset split.

    segdcn-eval ckpt=outputs/2026-11-22/10-00-00/checkpoints/best.pt
    segdcn-eval ckpt=... dataset.root=/data/voc eval.split=val
    segdcn-eval ckpt=... dataset=cityscapes dataset.root=/data/cityscapes eval.official=true
    segdcn-eval ckpt=... eval.mode=slide eval.window=[769,769] eval.stride=[513,513] eval.flip=true

The dataset is the one the checkpoint was trained on (its config travels in the checkpoint), with any
`dataset.<key>=...` typed on the command line applied on top (say, a different root); `dataset=<name>`
takes conf/dataset/<name>.yaml instead. The run directory (outputs/eval/<date>/<time>) gets
summary.json (miou, per_class_iou by class name, pixel_acc, mean_acc, the official Cityscapes numbers
when eval.official=true, the deformable layers' offsets/<layer>/... statistics on the first
offset_images images, and the settings) and config.yaml; the per-class table is printed. main()
returns the mIoU, so Hydra's sweepers can optimise over evaluation settings.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import segdcn.config  # registers the structured-config schemas before Hydra composes
from segdcn.config import ConfigError, EvalAppConfig

log = logging.getLogger(__name__)


class EvalConfigError(ConfigError):
    """A segdcn-eval setting that cannot work with this checkpoint or dataset; the message names the key."""


def dataset_overrides(task_overrides: list[str]) -> list[str]:
    """The `dataset.<key>` paths set on the command line (also with + or ++), without the prefix."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys = []
    for override in OverridesParser.create().parse_overrides(task_overrides):
        key = override.key_or_group
        if key.startswith("dataset.") and not override.is_delete():
            keys.append(key[len("dataset.") :])
    return keys


def resolve_dataset_config(
    cfg: DictConfig, checkpoint_cfg: DictConfig, chosen: str | None, overridden: list[str], ckpt: Any = None
) -> DictConfig:
    """The dataset to evaluate on: conf/dataset/<chosen>.yaml (as composed, with its overrides) when
    `dataset=<chosen>` was given; otherwise the checkpoint's dataset config with the `dataset.*`
    keys typed on the command line applied, checked against the dataset schema. Either must have the
    classes the checkpoint predicts."""
    from segdcn.config import DatasetConfig

    ckpt = cfg.ckpt if ckpt is None else ckpt
    if chosen is not None:
        dataset = cfg.dataset
    elif "dataset" not in checkpoint_cfg:
        raise EvalConfigError(f"checkpoint {ckpt}: its config has no dataset section; choose one with dataset=<name>")
    else:
        dataset = OmegaConf.merge(OmegaConf.structured(DatasetConfig), checkpoint_cfg.dataset)
        for key in overridden:
            OmegaConf.update(dataset, key, OmegaConf.select(cfg.dataset, key), merge=False)
    classes = int(checkpoint_cfg.dataset.num_classes)
    if int(dataset.num_classes) != classes:
        raise EvalConfigError(
            f"checkpoint {ckpt} predicts {classes} classes ({checkpoint_cfg.dataset.name}) but "
            f"dataset {dataset.name} has {dataset.num_classes}; evaluate it on a dataset with its classes"
        )
    return dataset


def json_ready(value: Any) -> Any:
    """NaN and infinities as null (JSON has neither), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def format_table(metrics: dict[str, Any], official: dict[str, Any] | None = None) -> str:
    """Per-class IoU (and the official IoU) in percent, then the means."""

    def pct(value: float | None) -> str:
        return "     -" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:6.2f}"

    names = list(metrics["per_class_iou"])
    width = max(12, *(len(n) for n in names))
    header = f"{'class':<{width}}  {'IoU':>6}" + (f"  {'official':>8}" if official else "")
    lines = [header, "-" * len(header)]
    for name in names:
        row = f"{name:<{width}}  {pct(metrics['per_class_iou'][name])}"
        if official:
            row += f"  {pct(official['per_class_iou'].get(name)):>8}"
        lines.append(row)
    lines.append("-" * len(header))
    mean = f"{'mIoU':<{width}}  {pct(metrics['miou'])}" + (f"  {pct(official['miou']):>8}" if official else "")
    lines += [
        mean,
        f"{'pixel acc':<{width}}  {pct(metrics['pixel_acc'])}",
        f"{'mean acc':<{width}}  {pct(metrics['mean_acc'])}",
    ]
    if official and official.get("niou") is not None:
        lines.append(f"{'iIoU (official)':<{width}}  {'':>6}  {pct(official['niou']):>8}")
    return "\n".join(lines)


def run(cfg: DictConfig, run_dir: str | Path, chosen_dataset: str | None, overridden: list[str]) -> dict[str, Any]:
    """Loads the checkpoint, evaluates, writes summary.json and config.yaml to run_dir; the summary."""
    from hydra.utils import to_absolute_path

    from segdcn.analysis.capture import paper_names
    from segdcn.data import build_dataset, label_set
    from segdcn.engine.checkpoint import load_checkpoint, model_from_checkpoint
    from segdcn.engine.device import check_precision_on, resolve_device
    from segdcn.engine.evaluate import evaluate
    from segdcn.engine.offsets import OffsetMonitor

    run_dir = Path(run_dir)
    if OmegaConf.is_missing(cfg, "ckpt"):
        raise EvalConfigError("ckpt is required: segdcn-eval ckpt=<run dir>/checkpoints/best.pt")
    settings = EvalAppConfig.from_config(cfg)  # every value checked before the model and the data load
    ckpt_path = Path(to_absolute_path(cfg.ckpt))
    device = resolve_device(settings.device)
    check_precision_on(device, settings.precision)

    ckpt = load_checkpoint(ckpt_path)  # errors name the file: missing, truncated, not a segdcn checkpoint
    model, train_cfg = model_from_checkpoint(ckpt, device, path=ckpt_path)
    del ckpt["model"]
    dataset_cfg = resolve_dataset_config(cfg, train_cfg, chosen_dataset, overridden, ckpt_path)
    model_classes = int(train_cfg.dataset.num_classes)
    if settings.eval.official and dataset_cfg.layout != "cityscapes":
        raise EvalConfigError(
            f"eval.official=true runs cityscapesscripts' evaluation, but the dataset is {dataset_cfg.name} "
            f"(layout {dataset_cfg.layout}); use it with dataset=cityscapes"
        )
    dataset = build_dataset(dataset_cfg, settings.eval.split, augment=False)
    names = list(label_set(dataset_cfg.name, dataset_cfg.root).names)

    writer = None
    if settings.eval.official:
        from segdcn.engine.cityscapes_official import PredictionWriter

        writer = PredictionWriter(dataset.images, run_dir / "cityscapes_results")
    log.info(
        "evaluating %s on %s/%s (%d images) on %s",
        ckpt_path,
        dataset_cfg.name,
        settings.eval.split,
        len(dataset),
        device,
    )
    monitor = None
    if settings.offset_images > 0 and paper_names(model):
        monitor = OffsetMonitor.for_evaluation(
            model,
            dataset,
            settings.eval,
            dataset_cfg,
            images=settings.offset_images,
            precision=settings.precision,
            class_names=names,
            run_dir=run_dir,
        )
    start = time.perf_counter()
    result = evaluate(
        model,
        dataset,
        settings.eval,
        device=device,
        precision=settings.precision,
        num_classes=model_classes,
        ignore_index=int(dataset_cfg.ignore_index),
        class_names=names,
        progress=settings.progress,
        on_prediction=writer,
        probe=monitor,
    )
    offsets = monitor.eval_metrics(lambda total: total) if monitor is not None else {}  # one process: no sum
    official = None
    if writer is not None:
        from segdcn.engine.cityscapes_official import official_evaluation

        outcome = official_evaluation(
            writer.predictions, writer.ground_truths, export_file=run_dir / "cityscapes_official.json"
        )
        (run_dir / "cityscapes_official.log").write_text(outcome.log)
        official = outcome.as_dict()
    seconds = time.perf_counter() - start

    metrics = result.metrics
    summary = {
        "miou": metrics["miou"],
        "per_class_iou": metrics["per_class_iou"],
        "pixel_acc": metrics["pixel_acc"],
        "mean_acc": metrics["mean_acc"],
        "per_class_acc": metrics["per_class_acc"],
        "num_images": metrics["num_images"],
        "num_pixels": metrics["num_pixels"],
        "official": official,
        "checkpoint": str(ckpt_path),
        "iteration": ckpt.get("iteration"),
        "dataset": {"name": dataset_cfg.name, "root": str(dataset_cfg.root), "split": settings.eval.split},
        "model": OmegaConf.to_container(train_cfg.model, resolve=True),
        "eval": dataclasses.asdict(settings.eval),
        "precision": settings.precision,
        "device": str(device),
        "seconds": seconds,
        "confusion_matrix": metrics["confusion_matrix"],
        **offsets,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps(json_ready(summary), indent=2) + "\n")
    resolved = OmegaConf.merge(cfg, {"dataset": dataset_cfg})
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved, resolve=True))
    print(format_table(metrics, official))
    print(f"{metrics['num_images']} images in {seconds:.1f} s; results in {run_dir / 'summary.json'}")
    return summary


@hydra.main(config_path=segdcn.config.CONF_DIR, config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    summary = run(
        cfg,
        hydra_cfg.runtime.output_dir,
        hydra_cfg.runtime.choices.get("dataset"),
        dataset_overrides(list(hydra_cfg.overrides.task)),
    )
    return summary["miou"]


if __name__ == "__main__":
    main()
