"""segdcn-export (also `python -m segdcn.export`): a checkpoint of segdcn-train as ONNX and torch.export files.

    segdcn-export ckpt=outputs/2026-11-22/10-00-00/checkpoints/best.pt                # both formats
    segdcn-export ckpt=... format=onnx out=exports export.opset=21
    segdcn-export ckpt=... export.wandb=true                                          # + W&B artifact

Each file is run against the PyTorch model after writing (onnxruntime; torch.export.load) at two input
shapes; the largest difference is printed, and one above export.tolerance (relative) fails the export.
Files go to `out` (default: the run directory outputs/export/<date>/<time>), each with <file>.json.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import segdcn.config  # registers the structured-config schemas before Hydra composes
from segdcn.config import ExportAppConfig
from segdcn.export.errors import ExportConfigError

log = logging.getLogger(__name__)


def run(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Loads the checkpoint, writes and checks the files, logs the artifact; a summary of what was written."""
    from hydra.utils import to_absolute_path

    from segdcn.export.artifact import log_model_artifact
    from segdcn.export.exporter import export_model, load_trained_model, resolve_formats

    if OmegaConf.is_missing(cfg, "ckpt"):
        raise ExportConfigError("ckpt is required: segdcn-export ckpt=<run dir>/checkpoints/best.pt")
    settings = ExportAppConfig.from_config(cfg)  # every value checked before the checkpoint loads
    formats = resolve_formats(settings.format)  # before the checkpoint loads: a typo fails at once
    ckpt_path = Path(to_absolute_path(settings.ckpt))
    out_dir = Path(to_absolute_path(settings.out)) if settings.out else Path(run_dir)

    model, train_cfg, iteration = load_trained_model(ckpt_path)
    results = export_model(
        model,
        train_cfg,
        out_dir,
        formats=formats,
        name=settings.name,
        size=settings.export.input_size,
        opset=settings.export.opset,
        tolerance=settings.export.tolerance,
        verify=settings.export.verify,
        checkpoint=str(ckpt_path),
        iteration=iteration,
    )
    files = [p for r in results for p in (r.path, r.metadata_path)]
    name = results[0].path.stem
    summary_metadata = {
        key: results[0].metadata[key] for key in ("dataset", "num_classes", "config", "checkpoint", "segdcn_version")
    }
    summary_metadata["verification"] = {r.format: r.metadata["verification"] for r in results}
    artifact = log_model_artifact(
        files, name, summary_metadata, out_dir=out_dir, logger_cfg=settings.logger, start=bool(settings.export.wandb)
    )
    for path in files:
        print(f"wrote {path}")
    return {"files": [str(p) for p in files], "artifact": artifact}


@hydra.main(config_path=segdcn.config.CONF_DIR, config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg, HydraConfig.get().runtime.output_dir)
