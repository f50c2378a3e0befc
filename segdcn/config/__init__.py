"""segdcn's settings: one dataclass schema for every key, Hydra's config folder, and `compose`.

    from segdcn.config import compose, TrainConfig
    cfg = compose("train", ["experiment=demo", "model.dcn.layers=3"])   # what segdcn-train would see
    settings = TrainConfig.from_config(cfg)                              # typed and checked

Each primary config (conf/train.yaml, eval.yaml, export.yaml, predict.yaml) lists its schema first
in its defaults, so the YAML files merge into typed nodes: a mistyped key (`trainer.max_iter=10`) or
a wrong type (`trainer.max_iters=ten`) stops the app at composition with Hydra's message, and the
value checks (`model.dcn.layers=-1: expected 0 or more`) run when the app turns the config into
its schema at start-up. The schemas live in segdcn/config/{model,dataset,train,apps}.py.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_store import ConfigStore

from .apps import EvalAppConfig, ExportAppConfig, ExportOptions, PredictAppConfig
from .dataset import DatasetConfig, DatasetEvalConfig, DatasetTrainConfig
from .model import BackboneConfig, DCNConfig, HeadConfig, ModelConfig
from .schema import ConfigError, Schema, unchecked
from .train import EvalConfig, LoggerConfig, OptimConfig, ScheduleConfig, TrainConfig, TrainerConfig

__all__ = [
    "CONF_DIR",
    "BackboneConfig",
    "ConfigError",
    "DCNConfig",
    "DatasetConfig",
    "DatasetEvalConfig",
    "DatasetTrainConfig",
    "EvalAppConfig",
    "EvalConfig",
    "ExportAppConfig",
    "ExportOptions",
    "HeadConfig",
    "LoggerConfig",
    "ModelConfig",
    "OptimConfig",
    "PredictAppConfig",
    "ScheduleConfig",
    "Schema",
    "TrainConfig",
    "TrainerConfig",
    "compose",
    "conf_dir",
    "register",
]


def conf_dir() -> Path:
    """The Hydra config folder: the copy of conf/ that a wheel ships inside the package (segdcn/conf),
    else the repository's top-level conf/ (a checkout, or an editable install of one)."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"segdcn's config folder is missing: neither {package / 'conf'} (an installed wheel) nor "
        f"{package.parent / 'conf'} (a checkout) holds train.yaml; reinstall segdcn"
    )


# An absolute path: Hydra resolves a relative config_path against the calling module, which a
# console-script entry point (segdcn-train) does not provide as a file.
CONF_DIR = str(conf_dir())

SCHEMAS = {"train": TrainConfig, "eval": EvalAppConfig, "export": ExportAppConfig, "predict": PredictAppConfig}


def register() -> None:
    """Store the schemas: `<app>_schema` for primary configs, `schema/<group>` for groups."""
    cs = ConfigStore.instance()
    with unchecked():
        _store(cs)


def _store(cs: ConfigStore) -> None:
    for app, node in SCHEMAS.items():
        cs.store(name=f"{app}_schema", node=node)
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


def compose(
    config_name: str = "train",
    overrides: list[str] | tuple[str, ...] = (),
    *,
    hydra_node: bool = False,
    config_dir: str | Path | None = None,
):
    """The config an app would see for `overrides` (a DictConfig): `compose("train", ["experiment=demo"])`
    is segdcn-train's, `compose("eval", ["ckpt=..."])` segdcn-eval's. hydra_node=True keeps the `hydra`
    section (run dirs, sweep settings); config_dir replaces segdcn's conf/ (add folders to it with the
    override `hydra.searchpath=[file:///lab/conf]`). For notebooks, tests and scripts; not inside a
    running Hydra app."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    folder = str(Path(config_dir).resolve()) if config_dir is not None else CONF_DIR
    with initialize_config_dir(config_dir=folder, version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra_node)
