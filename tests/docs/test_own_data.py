"""docs/own_data.md: every command of its walk-through runs as written, in a temporary folder, on a tiny
folder of images and colour masks, and leaves the files the page says it writes, with the classes the
masks' colours make."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.docs.test_docs import block_commands, command_env, runnable
from tests.fixtures import MASK_COLORS, write_folder
from tests.helpers import ROOT

PAGE = ROOT / "docs" / "own_data.md"
MARK = "<!-- own-data"

# Appended so that the page's commands finish in seconds: 2 iterations of a quarter-width ResNet-18.
TINY = {
    "prepare_folder.py": ["--workers", "1", "--no-progress"],
    "check_dataset.py": ["--workers", "1", "--no-progress"],
    "segdcn-train": [
        "trainer.max_iters=2",
        "trainer.batch_size=2",
        "trainer.num_workers=0",
        "trainer.checkpoint_every=0",
        "trainer.progress=false",
        "eval.num_workers=0",
        "logger=none",
        "model.backbone.width=16",
        "model.head.channels=16",
        "dataset.train.crop_size=[32,32]",
    ],
    "segdcn-eval": ["progress=false"],
    "segdcn-predict": ["progress=false"],
}


def palette_of(path: Path, count: int) -> list[list[int]]:
    with Image.open(path) as image:
        assert image.mode == "P", f"{path} is not a palette PNG"
        flat = image.getpalette()[: 3 * count]
    return [flat[i : i + 3] for i in range(0, len(flat), 3)]


@pytest.mark.slow  # the whole walk-through, its trainings included: about a minute on 2 cores
def test_the_pages_commands_run_from_colour_masks_to_an_ablation_table(tmp_path):
    fixture = write_folder(tmp_path / "data", count=8, void_borders=False)
    # the page starts from colour masks and no classes file
    (fixture.root / "classes.txt").unlink()
    fixture.write_color_masks(fixture.root / "masks")
    env = command_env()
    commands = block_commands(PAGE, MARK)
    for words in commands:
        done = subprocess.run(runnable(words, TINY), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{' '.join(words)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    # one class per colour, in the order of 0xRRGGBB; each index mask maps back to its colour mask's colours
    table = yaml.safe_load((fixture.root / "classes.yaml").read_text())
    used = np.unique(np.concatenate([label.ravel() for label in fixture.labels.values()]))
    expected = sorted(tuple(int(c) for c in MASK_COLORS[value]) for value in used)  # (r, g, b) order = 0xRRGGBB's
    assert [tuple(c) for c in table["colors"]] == expected
    assert table["names"] == [f"class_{i}" for i in range(len(expected))]
    colors = np.array(table["colors"], np.uint8)
    for stem, label in fixture.labels.items():
        with Image.open(fixture.root / "masks" / f"{stem}.png") as mask:
            assert mask.mode == "P"
            np.testing.assert_array_equal(colors[np.array(mask)], MASK_COLORS[label], err_msg=stem)

    # the split: written once, disjoint, covering every stem
    splits = {name: (fixture.root / "splits" / f"{name}.txt").read_text().split() for name in ("train", "val")}
    assert not set(splits["train"]) & set(splits["val"]) and len(splits["val"]) == 1
    assert sorted(splits["train"] + splits["val"]) == sorted(fixture.labels)

    # every app names and colours the classes from classes.yaml
    summary = json.loads((tmp_path / "outputs" / "own" / "summary.json").read_text())
    assert list(summary["per_class_iou"]) == table["names"] and summary["config"]["dataset.name"] == "folder"
    (evaluation,) = (tmp_path / "outputs" / "eval").glob("*/*/summary.json")
    assert list(json.loads(evaluation.read_text())["per_class_iou"]) == table["names"]
    predicted = sorted((tmp_path / "predictions" / "own" / "labels").glob("*.png"))
    assert [p.stem for p in predicted] == sorted(fixture.labels)
    assert palette_of(predicted[0], len(expected)) == table["colors"]
    metadata = json.loads((tmp_path / "exports" / "own.onnx.json").read_text())
    assert metadata["classes"] == table["names"] and metadata["palette"] == table["colors"]
    table_md = (tmp_path / "multirun" / "own" / "ablation_table1.md").read_text()
    assert "folder" in table_md
    # what the deformable layers learned, on the folder's own classes
    assert (tmp_path / "multirun" / "own" / "curves.png").stat().st_size > 0
    assert (tmp_path / "offsets_own.png").stat().st_size > 0
