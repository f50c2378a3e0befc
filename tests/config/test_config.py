"""The schema (segdcn.config): one definition per setting, YAML files that add only what differs, checks
that name the key, and compose() giving what the apps see."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

import segdcn.config as config
from segdcn.config import ConfigError, Schema, compose
from tests.helpers import ROOT

# conf/<group>/*.yaml merge into these schema nodes (experiment files are overlays of the paper's
# settings, where restating a default with its source is the point, so they are not walked)
GROUPS = {
    "dataset": config.DatasetConfig,
    "model": config.ModelConfig,
    "optim": config.OptimConfig,
    "schedule": config.ScheduleConfig,
    "trainer": config.TrainerConfig,
    "logger": config.LoggerConfig,
}


def schema_classes() -> list[type[Schema]]:
    found, todo = [], [Schema]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            found.append(sub)
            todo.append(sub)
    return found


def defaults_of(cls: type) -> dict:
    """The schema's defaults as plain values (MISSING fields left out)."""
    return OmegaConf.to_container(OmegaConf.structured(cls), resolve=False, throw_on_missing=False)


def repeated_defaults(node: dict, defaults: dict, prefix: str) -> list[str]:
    repeats = []
    for key, value in node.items():
        if key not in defaults:
            continue
        if isinstance(value, dict) and isinstance(defaults[key], dict):
            repeats += repeated_defaults(value, defaults[key], f"{prefix}.{key}")
        elif value == defaults[key]:
            repeats.append(f"{prefix}.{key}: {value!r}")
    return repeats


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_group_files_hold_only_what_differs_from_the_schema(group):
    defaults = defaults_of(GROUPS[group])
    files = sorted((ROOT / "conf" / group).glob("*.yaml"))
    assert files, f"conf/{group} has no files"
    for path in files:
        node = yaml.safe_load(path.read_text()) or {}
        node.pop("defaults", None)
        repeats = repeated_defaults(node, defaults, group)
        assert not repeats, f"{path.relative_to(ROOT)} repeats the schema's defaults: {repeats}"


@pytest.mark.parametrize("app", sorted(config.SCHEMAS))
def test_primary_configs_hold_only_what_differs_from_the_schema(app):
    node = yaml.safe_load((ROOT / "conf" / f"{app}.yaml").read_text())
    for key in ("defaults", "hydra"):
        node.pop(key, None)
    defaults = OmegaConf.to_container(OmegaConf.structured(config.SCHEMAS[app]), resolve=False)
    assert not repeated_defaults(node, defaults, app)


def test_the_walk_finds_a_repeated_default():
    # the check above can fail: a file restating model.dcn.layers: 0 is caught
    assert repeated_defaults({"dcn": {"layers": 0, "modulated": True}}, defaults_of(config.ModelConfig), "model") == [
        "model.dcn.layers: 0"
    ]


def test_each_part_of_the_tree_is_defined_once():
    """No two schema classes claim one key, and no dataclass elsewhere in segdcn repeats a schema's fields
    (the parallel ModelSpec tree that models/config.py had)."""
    keys = [cls.KEY for cls in schema_classes() if cls.KEY]
    assert len(keys) == len(set(keys)), sorted(keys)
    field_sets = {frozenset(f.name for f in dataclasses.fields(cls)): cls.__name__ for cls in schema_classes()}
    copies = []
    for path in (ROOT / "segdcn").rglob("*.py"):
        if path.parent.name == "config":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                names = frozenset(s.target.id for s in node.body if isinstance(s, ast.AnnAssign))
                if len(names) > 1 and names in field_sets:
                    copies.append(f"{path.relative_to(ROOT)}:{node.name} repeats {field_sets[names]}")
    assert not copies, copies


def test_every_schema_default_passes_its_own_checks():
    # registering the schemas builds their defaults unchecked (the checks import torch); here they are checked
    for cls in schema_classes():
        if all(not config.schema.is_missing(f.default) for f in dataclasses.fields(cls)):
            cls()


@pytest.mark.parametrize(
    ("cls", "data", "message"),
    [
        (config.TrainerConfig, {"batch_size": 0}, "trainer.batch_size=0: expected 1 or more"),
        (config.TrainerConfig, {"precision": "fp8"}, "trainer.precision='fp8': expected one of fp32, bf16, fp16"),
        (config.TrainerConfig, {"stop_at": 0}, "trainer.stop_at=0: expected 1 or more (an iteration) or null"),
        (config.TrainerConfig, {"clip_grad_norm": 0}, "trainer.clip_grad_norm=0.0: expected a positive norm"),
        (config.TrainerConfig, {"max_iter": 3}, "unknown key trainer.max_iter; trainer has the keys max_iters"),
        (config.EvalConfig, {"window": [513]}, "eval.window=[513]: expected [height, width]"),
        (config.EvalConfig, {"stride": [600, 600]}, "eval.stride=[600, 600]: expected at most eval.window"),
        (config.EvalConfig, {"scales": []}, "eval.scales=[]: expected positive factors"),
        (config.EvalConfig, {"max_images": 0}, "eval.max_images=0: expected 1 or more"),
        (config.LoggerConfig, {"name": "tensorboard"}, "logger.name='tensorboard': expected one of wandb, none"),
        (config.OptimConfig, {"lr": 0}, "optim.lr=0.0: expected a positive learning rate"),
        (config.OptimConfig, {"momentum": 1.0}, "optim.momentum=1.0: expected a number in [0, 1)"),
        (config.ScheduleConfig, {"gamma": 0}, "schedule.gamma=0.0: expected a positive factor"),
        (config.DatasetTrainConfig, {"hflip": 2}, "dataset.train.hflip=2.0: expected a probability in [0, 1]"),
        (config.DatasetTrainConfig, {"crop_size": [64]}, "dataset.train.crop_size=[64]: expected [height, width]"),
        (config.ExportAppConfig, {"ckpt": "a.pt", "format": "tflite"}, "format='tflite': expected one of onnx"),
        (config.ExportOptions, {"tolerance": 0}, "export.tolerance=0.0: expected a positive relative difference"),
        (config.PredictAppConfig, {"input": "x", "batch_size": 0}, "batch_size=0: expected 1 or more"),
        (config.PredictAppConfig, {"input": "x", "mode": "tiles"}, "mode='tiles': expected one of whole, slide"),
        (config.PredictAppConfig, {"input": "x", "ckpt": "a.pt", "threads": 2}, "threads=2: expected null unless"),
        (config.PredictAppConfig, {"input": "x", "overlay_alpha": 2}, "overlay_alpha=2.0: expected a weight in"),
        (config.EvalAppConfig, {"ckpt": "a.pt", "device": "tpu"}, "device='tpu': expected auto, cpu, cuda or cuda:K"),
    ],
)
def test_each_check_names_the_key(cls, data, message):
    with pytest.raises(ConfigError) as error:
        cls.from_config(data)
    assert str(error.value).startswith(message), str(error.value)


def test_missing_keys_and_wrong_types_name_the_key():
    with pytest.raises(ConfigError, match="missing key dataset.name"):
        config.DatasetConfig.from_config({"root": "x", "num_classes": 6})
    with pytest.raises(ConfigError, match=r"trainer.max_iters=1.5: expected an integer"):
        config.TrainerConfig.from_config({"max_iters": 1.5})
    with pytest.raises(ConfigError, match=r"optim.betas=\['a', 0.9\]: expected a list of numbers"):
        config.OptimConfig.from_config({"name": "adamw", "betas": ["a", 0.9]})


def test_a_partial_mapping_merges_into_its_default_as_in_hydra():
    raw = {"name": "voc_aug", "root": "x", "num_classes": 21, "image_dir": "JPEGImages", "mask_dir": "M"}
    from_dict = config.DatasetConfig.from_config({**raw, "splits": {"train": "trainaug"}})
    assert from_dict.splits == {"train": "trainaug", "val": "val"}
    assert from_dict.splits == config.DatasetConfig.from_config(compose("train", ["dataset=voc_aug"]).dataset).splits


def test_compose_gives_the_typed_config_the_app_uses():
    cfg = compose("train", ["experiment=demo", "model.dcn.layers=3"])
    settings = config.TrainConfig.from_config(cfg)
    assert isinstance(settings.model.dcn, config.DCNConfig) and settings.model.dcn.layers == 3
    assert settings.optim.name == "adamw" and settings.model.backbone.width == 16
    # the same object as OmegaConf's own conversion, which runs the same checks
    assert OmegaConf.to_object(cfg) == settings
    assert "hydra" in compose("train", hydra_node=True)
    with pytest.raises(ConfigError, match="model.dcn.layers=-1: expected 0 or more"):
        OmegaConf.to_object(compose("train", ["model.dcn.layers=-1"]))


def test_a_lab_config_folder_on_the_search_path(tmp_path):
    """hydra.searchpath adds a folder of one's own experiment files (docs/experiments.md)."""
    lab = tmp_path / "lab_conf" / "experiment"
    lab.mkdir(parents=True)
    (lab / "my_ablation.yaml").write_text(
        "# @package _global_\nexperiment: my_ablation\nmodel:\n  dcn:\n    layers: 2\n    modulated: true\n"
    )
    cfg = compose("train", [f"hydra.searchpath=[file://{tmp_path / 'lab_conf'}]", "experiment=my_ablation"])
    assert cfg.experiment == "my_ablation" and cfg.model.dcn.layers == 2 and cfg.model.dcn.modulated


def test_importing_the_schemas_does_not_load_torch():
    # `segdcn-train --help` and Hydra's composition stay quick: torch loads when a run starts
    code = "import sys, segdcn.config; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=120).returncode == 0


def test_conf_dir_is_the_checkout_or_the_package_copy():
    assert Path(config.CONF_DIR) == ROOT / "conf"
