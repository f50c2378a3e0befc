"""The few config values that tell runs apart, as summary.json's `config`.

Keys are spelt as users type them on the command line (`model.dcn.layers=3`), so the
ablation-table tool and a reader of summary.json use one vocabulary with the CLI.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

KEY_CONFIG = (
    "experiment",
    "dataset.name",
    "dataset.root",  # tells two dataset=folder sets apart: they share the name
    "model.backbone.name",
    "model.backbone.output_stride",
    "model.dcn.layers",
    "model.dcn.at",
    "model.dcn.modulated",
    "model.backbone.res5_dilation",
    "seed",
    "trainer.max_iters",
    "trainer.batch_size",
    "optim.lr",
)


def key_config(cfg: DictConfig) -> dict[str, Any]:
    """{dotted key: value} for the KEY_CONFIG entries present in `cfg` (an eval config lacks some)."""
    missing = object()
    values = {}
    for key in KEY_CONFIG:
        value = OmegaConf.select(cfg, key, default=missing, throw_on_missing=False)
        if value is missing:
            continue
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        values[key] = value
    return values
