"""The offsets in a training run's logs (segdcn.engine.offsets): a short synthetic run whose offset convs
hold known constant offsets (weights zero, a chosen bias, offset lr 0), checked against the mean length,
out-of-bounds share, effective dilation and mask computed here from the layers' geometry alone; the
offline W&B run's records; a run without deformable layers; the settings' checks.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from segdcn.config import ConfigError, TrainConfig, compose
from segdcn.data import build_dataset, label_set
from segdcn.engine.evaluate import evaluate
from segdcn.engine.offsets import OffsetMonitor
from segdcn.models import build_model, deformable_layers
from tests.wandb_records import history_rows, read_records, summary_values

# Per deformable layer, first to last: the offset of tap (i, j) is scale * d * (i - 1, j - 1) + shift, which
# stretches the d-dilated grid by (1 + scale) and moves it by shift; then the mask logit (modulated).
CONSTANTS = [
    {"scale": 0.5, "shift": (1.5, -0.25), "mask_logit": 0.8},
    {"scale": -0.25, "shift": (0.0, 3.0), "mask_logit": -1.2},
]
# model.dcn.layers=2 of ResNet-18 (basic blocks): the last two 3x3 convs, by their Caffe names
LAYER_NAMES = ["res5b_branch2a", "res5b_branch2b"]


def run_overrides(data_root: Path, *extra: str) -> list[str]:
    return [
        f"dataset.root={data_root}",
        "dataset.train.crop_size=[64,64]",
        "model.head.channels=16",
        "model.backbone.width=16",
        "trainer.batch_size=2",
        "trainer.num_workers=0",
        "trainer.checkpoint_every=0",
        "trainer.log_every=1",
        "trainer.progress=false",
        "eval.num_workers=0",
        *extra,
    ]


def tap_offsets(constants: dict, dilation: tuple[int, int]) -> np.ndarray:
    """[9, 2] (dy, dx) of the 3x3 taps, row-major."""
    dy, dx = dilation
    return np.array(
        [
            (
                constants["scale"] * dy * (i - 1) + constants["shift"][0],
                constants["scale"] * dx * (j - 1) + constants["shift"][1],
            )
            for i, j in itertools.product(range(3), range(3))
        ]
    )


def set_constant_offsets(model: torch.nn.Module) -> None:
    for layer, constants in zip(deformable_layers(model).values(), CONSTANTS, strict=True):
        bias = torch.tensor(tap_offsets(constants, layer.dilation).reshape(-1), dtype=torch.float32)
        with torch.no_grad():
            layer.conv_offset.weight.zero_()
            layer.conv_offset.bias[: bias.numel()] = bias
            layer.conv_offset.bias[bias.numel() :] = constants["mask_logit"]


def expected_statistics(layer, constants: dict, input_size: tuple[int, int]) -> dict[str, float]:
    """The statistics of a layer with constant offsets, by enumeration of its output positions and taps."""
    offsets = tap_offsets(constants, layer.dilation)
    grid = np.array([(layer.dilation[0] * i, layer.dilation[1] * j) for i, j in itertools.product(range(3), range(3))])
    height, width = input_size
    (sh, sw), (ph, pw) = layer.stride, layer.padding
    out_h = (height + 2 * ph - layer.dilation[0] * 2 - 1) // sh + 1
    out_w = (width + 2 * pw - layer.dilation[1] * 2 - 1) // sw + 1
    outside = 0
    for y, x in itertools.product(range(out_h), range(out_w)):
        for (gy, gx), (oy, ox) in zip(grid, offsets, strict=True):
            sy, sx = y * sh - ph + gy + oy, x * sw - pw + gx + ox
            outside += not (-1 < sy < height and -1 < sx < width)
    locations = (grid + offsets).reshape(3, 3, 2)
    pairs = [np.linalg.norm(locations[i, j + 1] - locations[i, j]) for i in range(3) for j in range(2)]
    pairs += [np.linalg.norm(locations[i + 1, j] - locations[i, j]) for i in range(2) for j in range(3)]
    return {
        "mean_abs_px": float(np.linalg.norm(offsets, axis=1).mean()),
        "out_of_bounds": outside / (out_h * out_w * 9),
        "mask_mean": 1 / (1 + math.exp(-constants["mask_logit"])),
        "effective_dilation": float(np.mean(pairs)),
    }


def input_sizes(model: torch.nn.Module, image: torch.Tensor) -> list[tuple[int, int]]:
    """The input map size of every deformable layer, seen by plain forward hooks."""
    sizes = []
    hooks = [
        m.register_forward_hook(lambda m, a, o: sizes.append(tuple(a[0].shape[-2:])))
        for m in deformable_layers(model).values()
    ]
    with torch.no_grad():
        model.eval()(image[None])
    for hook in hooks:
        hook.remove()
    return sizes


def test_constant_offsets_give_known_statistics_in_every_log(synthetic_set, tmp_path, wandb_env):
    from segdcn.engine.trainer import Trainer

    cfg = compose(
        "train",
        run_overrides(
            synthetic_set("small"),
            "model.dcn.layers=2",
            "model.dcn.modulated=true",
            "model.dcn.offset_lr_mult=0",  # the offsets stay what the test sets
            "trainer.max_iters=4",
            "trainer.eval_every=2",
            "logger.mode=offline",
            "logger.offset_every=2",
            "logger.offset_images=3",
        ),
    )
    trainer = Trainer(cfg, tmp_path)
    set_constant_offsets(trainer.model)
    layers = list(deformable_layers(trainer.model).values())
    image, _ = trainer.val_set[0]
    sizes = input_sizes(trainer.model, image)
    expected = {
        name: expected_statistics(layer, constants, size)
        for name, layer, constants, size in zip(LAYER_NAMES, layers, CONSTANTS, sizes, strict=True)
    }
    assert 0.05 < expected["res5b_branch2b"]["out_of_bounds"] < 0.95  # the shift of 3 reaches beyond the map
    trainer.fit()

    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for prefix in ("offsets/", "train/offsets/"):
        logged = [line for line in lines if any(key.startswith(prefix) for key in line)]
        assert [line["step"] for line in logged] == [2, 4], prefix
        for line in logged:
            for name, stats in expected.items():
                for stat, value in stats.items():
                    assert line[f"{prefix}{name}/{stat}"] == pytest.approx(value, abs=1e-5), (prefix, name, stat)
                groups = [key for key in line if key.startswith(f"{prefix}{name}/effective_dilation/")]
                # the synthetic images all have background and objects of some size
                assert f"{prefix}{name}/effective_dilation/background" in groups and len(groups) >= 2
                for key in groups:  # every filter is stretched alike, whatever lies under it
                    assert line[key] == pytest.approx(stats["effective_dilation"], abs=1e-5), key

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["offsets/res5b_branch2a/mean_abs_px"] == pytest.approx(expected["res5b_branch2a"]["mean_abs_px"])
    assert not any(key.startswith("train/offsets/") for key in summary)  # a training batch is no result

    pictures = sorted(p.name for p in (tmp_path / "analysis").glob("offsets_*.png"))
    assert pictures == ["offsets_2.png", "offsets_4.png"]
    assert (tmp_path / "analysis/offsets_4.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    (path,) = sorted(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    records = read_records(path)
    rows = [row for row in history_rows(records) if "offsets/sampling/_type" in row]
    assert [row["_step"] for row in rows] == [2, 4]
    assert rows[-1]["offsets/sampling/_type"] == "image-file"
    assert (path.parent / "files" / rows[-1]["offsets/sampling/path"]).is_file()
    assert rows[-1]["offsets/res5b_branch2b/out_of_bounds"] == pytest.approx(
        expected["res5b_branch2b"]["out_of_bounds"], abs=1e-5
    )
    assert summary_values(records)["offsets/res5b_branch2a/effective_dilation"] == pytest.approx(
        expected["res5b_branch2a"]["effective_dilation"], abs=1e-5
    )


def test_a_run_without_deformable_layers_logs_no_offsets(synthetic_set, tmp_path, caplog):
    from segdcn.engine.trainer import Trainer

    cfg = compose(
        "train",
        run_overrides(
            synthetic_set("small"), "model.dcn.layers=0", "trainer.max_iters=2", "logger=none", "logger.offset_every=1"
        ),
    )
    with caplog.at_level("INFO", logger="segdcn.engine.offsets"):
        miou = Trainer(cfg, tmp_path).fit()
    assert math.isfinite(miou)
    assert "no deformable layer, so there are no offsets to log" in caplog.text
    keys = {key for line in (tmp_path / "metrics.jsonl").read_text().splitlines() for key in json.loads(line)}
    assert "val/miou" in keys and not any("offsets" in key for key in keys)
    assert not any("offsets" in key for key in json.loads((tmp_path / "summary.json").read_text()))
    assert not (tmp_path / "analysis").exists()


def test_offset_picture_false_keeps_the_statistics_and_draws_nothing(synthetic_set, tmp_path):
    from segdcn.engine.trainer import Trainer

    overrides = ("model.dcn.layers=2", "trainer.max_iters=2", "logger=none", "logger.offset_picture=false")
    Trainer(compose("train", run_overrides(synthetic_set("small"), *overrides)), tmp_path).fit()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert any(key.startswith("offsets/") and key.endswith("/mean_abs_px") for key in summary)
    assert not list(tmp_path.glob("analysis/offsets_*.png"))


def test_segdcn_eval_records_the_statistics_of_the_trainers_last_evaluation(synthetic_set, tmp_path):
    """segdcn-eval on a run's last checkpoint: the same images, model and code give the same offset keys and
    values as the trainer's final evaluation wrote to summary.json; offset_images=0 gives none."""
    from segdcn.engine.trainer import Trainer
    from segdcn.eval import run

    root = synthetic_set("small")
    overrides = ("model.dcn.layers=2", "trainer.max_iters=2", "logger=none", "logger.offset_images=3")
    Trainer(compose("train", run_overrides(root, *overrides)), tmp_path / "run").fit()
    trained = json.loads((tmp_path / "run" / "summary.json").read_text())
    expected = {key: value for key, value in trained.items() if key.startswith("offsets/")}
    assert len(expected) >= 2 * 3  # two layers' length, out-of-bounds share, effective dilation...

    common = [f"ckpt={tmp_path / 'run' / 'checkpoints' / 'last.pt'}", "eval.num_workers=0", "progress=false"]
    summary = run(compose("eval", [*common, "offset_images=3"]), tmp_path / "eval", None, [])
    assert {key: value for key, value in summary.items() if key.startswith("offsets/")} == pytest.approx(expected)
    written = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert written["offsets/res5b_branch2b/mean_abs_px"] == pytest.approx(
        expected["offsets/res5b_branch2b/mean_abs_px"]
    )
    none = run(compose("eval", [*common, "offset_images=0"]), tmp_path / "none", None, [])
    assert not any(key.startswith("offsets/") for key in none)


def test_inference_settings_beyond_one_pass_watch_the_whole_image(synthetic_set):
    """eval.flip (two passes per image) takes one extra whole-image pass: the same statistics as the default."""
    cfg = TrainConfig.from_config(
        compose("train", run_overrides(synthetic_set("small"), "model.dcn.layers=2", "logger=none"))
    )
    model = build_model(cfg.model, int(cfg.dataset.num_classes))
    torch.nn.init.normal_(next(iter(deformable_layers(model).values())).conv_offset.weight, std=0.05)
    val_set = build_dataset(cfg.dataset, "val", augment=False)
    results = []
    for flip in (False, True):
        cfg.eval.flip = flip
        monitor = OffsetMonitor.build(model, val_set, cfg, Path("unused"), label_set(cfg.dataset.name).names)
        assert monitor.single_pass is not flip
        evaluate(
            model,
            val_set,
            cfg.eval,
            device="cpu",
            num_classes=int(cfg.dataset.num_classes),
            progress=False,
            probe=monitor,
        )
        results.append(monitor.eval_metrics(lambda t: t))
    assert results[0].keys() == results[1].keys() and results[0]
    for key, value in results[0].items():
        assert results[1][key] == pytest.approx(value, rel=1e-6), key
    assert results[0]["offsets/res5b_branch2a/mean_abs_px"] > 0  # the random offset conv moved the samples


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("logger.offset_every=-1", "logger.offset_every=-1: expected 0 or more"),
        ("logger.offset_images=0", "logger.offset_images=0: expected 1 or more"),
    ],
)
def test_bad_offset_settings_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_config(compose("train", [override]))


def test_offset_settings_apply_without_wandb():
    """The offsets go to metrics.jsonl and summary.json, so logger=none keeps the settings (unlike W&B's)."""
    cfg = TrainConfig.from_config(compose("train", ["logger=none", "logger.offset_every=5", "logger.offset_images=2"]))
    assert (cfg.logger.offset_every, cfg.logger.offset_images) == (5, 2)
