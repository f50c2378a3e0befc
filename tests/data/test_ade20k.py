"""dataset=ade20k on a tiny ADEChallengeData2016 in the release's layout (tests.fixtures.write_ade20k: JPEG
images, 8-bit grey annotations with 0 and values up to 150, objectInfo150.csv): the reader and its label
reduction, the class names, errors, check_dataset, prepare_ade20k.py's download (served over HTTP from a
local zip), experiment=ade20k_deeplab, and a 2-iteration training, evaluation and prediction."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segdcn.config import ConfigError, DatasetConfig, TrainConfig, compose
from segdcn.data import build_dataset
from segdcn.data.classes import ADE20K_TABLE, read_object_info
from segdcn.data.errors import ClassesFileError, DatasetLayoutError, LabelValueError
from segdcn.data.labels import label_set
from tests.fixtures import ADE20K_VALUES, script_main, write_ade20k
from tests.helpers import run_python


@pytest.fixture
def ade(tmp_path):
    return write_ade20k(tmp_path)


def ade_cfg(root: Path, *overrides: str):
    return compose("train", ["dataset=ade20k", f"dataset.root={root}", *overrides]).dataset


def test_reads_both_splits_with_0_ignored_and_the_classes_shifted_down(ade):
    cfg = ade_cfg(ade.root)
    for split, count in (("train", 4), ("val", 2)):
        dataset = build_dataset(cfg, split, transforms=None)
        assert len(dataset) == count and dataset.num_classes == 150
        for index, path in enumerate(dataset.labels):
            raw = ade.labels[path.stem]
            _, label = dataset[index]
            expected = np.where(raw == 0, 255, raw.astype(np.int64) - 1)  # 0 = other: ignored; k: class k - 1
            np.testing.assert_array_equal(label.numpy(), expected, err_msg=path.stem)
    assert {int(v) for raw in ade.labels.values() for v in np.unique(raw)} == {0, *ADE20K_VALUES}


def test_names_come_from_the_releases_table_when_it_is_there(ade):
    base = ade.root / "ADEChallengeData2016"
    release = read_object_info(base / "objectInfo150.csv")
    names = label_set("ade20k", ade.root).names
    # the first ';'-separated synonym; one that two classes share gets its Idx
    firsts = [row["Name"].split(";")[0] for row in release]
    assert [n.split(" (")[0] for n in names] == firsts
    assert names[58] == "screen (59)" and names[130] == "screen (131)" and names[44] == "chest"
    assert len(set(names)) == 150
    colors = label_set("ade20k", ade.root).colors
    (base / "objectInfo150.csv").unlink()
    shipped = label_set("ade20k", ade.root)
    assert shipped.names[44] == "chest of drawers" and shipped.names[58] == "screen door"
    assert shipped.colors == colors  # the colours are segdcn's either way: the release's table has none


def test_the_shipped_table_is_in_the_releases_format_with_a_colour_per_class():
    rows = read_object_info(ADE20K_TABLE)
    assert list(rows[0])[:5] == ["Idx", "Ratio", "Train", "Val", "Name"] and len(rows) == 150
    colors = [tuple(int(row[c]) for c in "RGB") for row in rows]
    assert all(0 <= c <= 255 for color in colors for c in color)
    labels = label_set("ade20k")
    assert len(set(labels.names)) == 150 and list(labels.colors) == colors


def test_a_malformed_release_table_is_named(ade):
    path = ade.root / "ADEChallengeData2016" / "objectInfo150.csv"
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")  # 149 classes
    with pytest.raises(ClassesFileError, match=r"objectInfo150\.csv: Idx runs 1, 2, 3 \.\.\. 149 \(149 rows\)"):
        label_set("ade20k", ade.root)


def test_missing_annotations_and_values_above_150_are_named(ade):
    cfg = ade_cfg(ade.root)
    val = build_dataset(cfg, "val", transforms=None)
    raw = ade.labels[val.labels[0].stem].copy()
    raw[0, 0] = 151
    Image.fromarray(raw, "L").save(val.labels[0])
    with pytest.raises(LabelValueError, match=r"ADE_val_00000001\.png holds values \[151\]; expected 0 \(unlabelled"):
        val[0]
    val.labels[1].unlink()
    with pytest.raises(DatasetLayoutError, match=r"1 of 2 images have no annotation, e\.g\. .*ADE_val_00000002\.png"):
        build_dataset(cfg, "val")
    with pytest.raises(DatasetLayoutError, match=r"images/testing does not exist\nexpected the ADE20K layout"):
        build_dataset(ade_cfg(ade.root, "dataset.splits.val=testing"), "val")


def test_check_dataset_passes_the_release_and_names_a_bad_annotation(ade, capsys):
    args = ["dataset=ade20k", f"dataset.root={ade.root}", "--workers", "1", "--no-progress"]
    assert script_main("check_dataset")(args) == 0
    out = capsys.readouterr().out
    assert "train 4 items, val 2 items" in out and "no problems found" in out
    path = ade.root / "ADEChallengeData2016" / "annotations" / "training" / "ADE_train_00000003.png"
    raw = ade.labels[path.stem].copy()
    raw[:2, :2] = 200
    Image.fromarray(raw, "L").save(path)
    assert script_main("check_dataset")(args) == 1
    assert "ADE_train_00000003.png: values [200]" in capsys.readouterr().out


def test_schema_refuses_another_class_count():
    with pytest.raises(ConfigError, match=r"dataset\.num_classes=151: expected 150, the classes of ade20k"):
        DatasetConfig.from_config(compose("train", ["dataset=ade20k", "dataset.num_classes=151"]).dataset)


# ---- prepare_ade20k.py ----


@pytest.fixture
def served_release(ade, tmp_path):
    """The fixture release zipped as ADEChallengeData2016.zip and served over HTTP on 127.0.0.1."""
    served = tmp_path / "served"
    served.mkdir()
    archive = served / "ADEChallengeData2016.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted((ade.root / "ADEChallengeData2016").rglob("*")):
            bundle.write(path, path.relative_to(ade.root).as_posix())
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/ADEChallengeData2016.zip", archive
    server.shutdown()
    server.server_close()


def test_download_fetches_checks_unpacks_and_counts(served_release, ade, tmp_path, capsys):
    url, archive = served_release
    sha1 = hashlib.sha1(archive.read_bytes()).hexdigest()
    root = tmp_path / "fresh"
    prepare = script_main("prepare_ade20k")
    assert prepare(["--root", str(root), "--download", "--url", url, "--sha1", sha1]) == 0
    out, err = capsys.readouterr()
    assert "training: 4 images with annotations (the release: 20,210)" in out
    assert "WARNING: training: 4 images and 4 annotations, not the release's 20,210" in err
    for stem, raw in ade.labels.items():
        split = "training" if "train" in stem else "validation"
        unpacked = root / "ADEChallengeData2016" / "annotations" / split / f"{stem}.png"
        np.testing.assert_array_equal(np.array(Image.open(unpacked)), raw)
    assert not list(root.glob(".*partial"))
    # again: nothing fetched
    assert prepare(["--root", str(root), "--download", "--url", url + ".gone", "--sha1", sha1]) == 0
    assert "already there" in capsys.readouterr().out


def test_download_with_another_checksum_is_refused(served_release, tmp_path, capsys):
    url, archive = served_release
    root = tmp_path / "fresh"
    assert script_main("prepare_ade20k")(["--root", str(root), "--download", "--url", url]) == 2
    err = capsys.readouterr().err
    found = hashlib.sha1(archive.read_bytes()).hexdigest()
    assert f"has SHA-1 {found}, not the release's 219e1696abb36c8ba3a3afe7fb2f4b4606a897c7" in err
    assert not (root / "ADEChallengeData2016").exists()


def test_prepare_names_an_image_without_annotation(ade, capsys):
    (ade.root / "ADEChallengeData2016" / "annotations" / "training" / "ADE_train_00000002.png").unlink()
    assert script_main("prepare_ade20k")(["--root", str(ade.root)]) == 2
    assert "1 training images have no annotation, e.g. " in capsys.readouterr().err


# ---- the experiment and the apps ----


def test_the_experiment_composes_with_the_model_of_paper_voc():
    cfg = compose("train", ["experiment=ade20k_deeplab"])
    settings = TrainConfig.from_config(cfg)
    assert cfg.model == compose("train", ["experiment=paper_voc"]).model
    assert settings.dataset.name == "ade20k" and settings.dataset.num_classes == 150
    assert settings.dataset.train.short_side == 512 and settings.dataset.train.crop_size == [512, 512]
    assert settings.dataset.train.scale_range == [0.5, 2.0] and settings.experiment == "ade20k_deeplab"


def test_train_eval_and_predict_on_the_release_layout(ade, tmp_path):
    run = tmp_path / "run"
    tiny = ["trainer.max_iters=2", "trainer.batch_size=2", "trainer.num_workers=0", "trainer.checkpoint_every=0"]
    tiny += ["trainer.progress=false", "eval.num_workers=0", "logger=none", "model.backbone.width=16"]
    tiny += ["model.head.channels=16", "dataset.train.crop_size=[32,32]", "dataset.train.short_side=40"]
    tiny += ["dataset.eval.short_side=40"]
    done = run_python("-m", "segdcn.train", "dataset=ade20k", f"dataset.root={ade.root}", *tiny, f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr[-3000:]
    names = list(label_set("ade20k", ade.root).names)
    summary = json.loads((run / "summary.json").read_text())
    assert list(summary["per_class_iou"]) == names and summary["config"]["dataset.name"] == "ade20k"

    ckpt = run / "checkpoints" / "best.pt"
    done = run_python("-m", "segdcn.eval", f"ckpt={ckpt}", "progress=false", f"hydra.run.dir={tmp_path / 'eval'}")
    assert done.returncode == 0, done.stderr[-3000:]
    evaluated = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert list(evaluated["per_class_iou"]) == names and evaluated["num_images"] == 2
    # mIoU over the classes present: 255 (and the reduced 0) are left out of the pixel count
    val = build_dataset(ade_cfg(ade.root), "val", transforms=None)
    labelled = sum(int((val[i][1] != 255).sum()) for i in range(len(val)))
    assert evaluated["num_pixels"] == labelled

    images = ade.root / "ADEChallengeData2016" / "images" / "validation"
    out = tmp_path / "predicted"
    done = run_python("-m", "segdcn.predict", f"ckpt={ckpt}", f"input={images}", f"out={out}", "progress=false",
                      f"hydra.run.dir={tmp_path / 'predict'}")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    predicted = sorted((out / "labels").glob("*.png"))
    assert [p.stem for p in predicted] == sorted(p.stem for p in images.glob("*.jpg"))
    with Image.open(predicted[0]) as image:
        palette = image.getpalette()[: 3 * 150]
    assert [tuple(palette[i : i + 3]) for i in range(0, 450, 3)] == list(label_set("ade20k").colors)

    from omegaconf import OmegaConf

    from segdcn.engine.checkpoint import load_checkpoint
    from segdcn.export.metadata import model_metadata

    metadata = model_metadata(OmegaConf.create(load_checkpoint(ckpt)["config"]))
    assert metadata["classes"] == names and metadata["palette"] == [list(c) for c in label_set("ade20k").colors]
