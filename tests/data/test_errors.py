"""Bad input: each case gives an error that names the file or key and says what was expected."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from segdcn.data.builder import build_dataset
from segdcn.data.cityscapes import Cityscapes
from segdcn.data.errors import DatasetConfigError, DatasetLayoutError, LabelValueError, UnreadableFileError
from segdcn.data.voc import VOCSegmentation
from tests.fixtures import script_main, write_cityscapes, write_palette_png, write_voc_sbd


def synthetic_cfg(root):
    cfg = OmegaConf.load("conf/dataset/synthetic.yaml")
    cfg.root = str(root)
    return cfg


@pytest.fixture
def tiny_set(synthetic_set, tmp_path):
    """A copy of the session's tiny set, for the tests to break."""
    shutil.copytree(synthetic_set(), tmp_path, dirs_exist_ok=True)
    return tmp_path


def test_missing_root_names_layout_and_prepare_command(tmp_path):
    with pytest.raises(DatasetLayoutError) as error:
        VOCSegmentation(tmp_path / "nowhere", "trainaug")
    message = str(error.value)
    assert "nowhere" in message and "VOCdevkit/VOC2012/SegmentationClassAug/<id>.png" in message
    assert "python scripts/prepare_voc.py --voc-root ROOT --sbd-root SBD_ROOT" in message
    with pytest.raises(DatasetLayoutError, match="make_synthetic.py --out ROOT"):
        build_dataset(synthetic_cfg(tmp_path / "nowhere"), "train")
    with pytest.raises(DatasetLayoutError, match=r"(?s)leftImg8bit/train/<city>.*prepare_cityscapes.py --root ROOT"):
        Cityscapes(tmp_path / "nowhere", "train")
    with pytest.raises(FileNotFoundError):  # also a FileNotFoundError, for callers that catch that
        VOCSegmentation(tmp_path, "train")


def test_missing_split_file_is_named(tiny_set):
    (tiny_set / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").unlink()
    with pytest.raises(DatasetLayoutError, match=r"(?s)split list .*val\.txt does not exist.*make_synthetic"):
        build_dataset(synthetic_cfg(tiny_set), "val")


def test_missing_trainaug_points_to_prepare_voc(tmp_path):
    fixture = write_voc_sbd(tmp_path)  # not prepared yet
    with pytest.raises(DatasetLayoutError, match=r"(?s)trainaug\.txt does not exist.*prepare_voc\.py"):
        VOCSegmentation(fixture.voc_root, "trainaug")


def test_missing_cityscapes_labels_point_to_prepare(tmp_path):
    fixture = write_cityscapes(tmp_path)  # polygons only, no labelTrainIds yet
    with pytest.raises(DatasetLayoutError, match=r"(?s)labelTrainIds.*prepare_cityscapes\.py --root"):
        Cityscapes(fixture.root, "train")


def test_unreadable_image_names_the_file(tiny_set):
    path = tiny_set / "VOCdevkit/VOC2012/JPEGImages/train_00001.jpg"
    path.write_bytes(b"not a jpeg")
    dataset = build_dataset(synthetic_cfg(tiny_set), "train")
    dataset[0]
    with pytest.raises(UnreadableFileError, match=str(path)):
        dataset[1]


def test_bad_label_values_name_file_and_values(tiny_set):
    path = tiny_set / "VOCdevkit/VOC2012/SegmentationClass/train_00002.png"
    label = np.array(Image.open(path))
    label[0, :3] = [7, 77, 7]
    write_palette_png(path, label)
    dataset = build_dataset(synthetic_cfg(tiny_set), "train", transforms=None)
    with pytest.raises(LabelValueError) as error:
        dataset[2]
    assert str(path) in str(error.value) and "[7, 77]" in str(error.value) and "0..5 or 255" in str(error.value)


def test_colour_label_image_is_refused(tiny_set):
    path = tiny_set / "VOCdevkit/VOC2012/SegmentationClass/val_00000.png"
    Image.new("RGB", (32, 32), (128, 0, 0)).save(path)
    with pytest.raises(UnreadableFileError, match="mode 'RGB'"):
        build_dataset(synthetic_cfg(tiny_set), "val")[0]


def test_config_errors_name_the_key(tmp_path):
    cfg = synthetic_cfg(tmp_path)
    del cfg["root"]
    with pytest.raises(DatasetConfigError, match=r"dataset\.root"):
        build_dataset(cfg, "train")
    for key, value, pattern in (
        ("num_classes", 21, r"dataset\.num_classes=21: expected 6, the classes of synthetic"),
        ("layout", "coco", r"dataset\.layout"),
        ("name", "imagenet", r"dataset\.name"),
    ):
        cfg = synthetic_cfg(tmp_path)
        cfg[key] = value
        with pytest.raises(DatasetConfigError, match=pattern):
            build_dataset(cfg, "train")
    cfg = synthetic_cfg(tmp_path)
    cfg.train.scale_range = [2.0, 0.5]
    with pytest.raises(DatasetConfigError, match=r"dataset\.train\.scale_range"):
        build_dataset(cfg, "train")
    with pytest.raises(DatasetConfigError, match=r"dataset\.splits\.test"):
        build_dataset(dict(OmegaConf.to_container(synthetic_cfg(tmp_path))), "test")


def test_prepare_voc_without_sbd_names_layout(tmp_path, capsys):
    fixture = write_voc_sbd(tmp_path)
    assert script_main("prepare_voc")(["--voc-root", str(fixture.voc_root), "--sbd-root", str(tmp_path / "no")]) == 2
    err = capsys.readouterr().err
    assert "SBD root" in err and "cls/<id>.mat" in err and "--download" in err


def test_check_dataset_reports_every_problem_with_a_count(tiny_set, capsys):
    base = tiny_set / "VOCdevkit/VOC2012"
    (base / "JPEGImages/train_00000.jpg").write_bytes(b"garbage")
    (base / "JPEGImages/train_00001.jpg").write_bytes(b"garbage")
    (base / "SegmentationClass/train_00002.png").unlink()
    label = np.full((32, 32), 9, np.uint8)
    write_palette_png(base / "SegmentationClass/val_00001.png", label)
    Image.new("RGB", (20, 32)).save(base / "JPEGImages/val_00000.jpg")
    main = script_main("check_dataset")
    assert main([f"dataset.root={tiny_set}", "--workers", "1", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "2 x unreadable image" in out and "train_00000.jpg" in out and "train_00001.jpg" in out
    assert "1 x missing label file" in out and "train_00002.png" in out
    assert "1 x label values outside the classes and ignore" in out and "values [9]" in out
    assert "1 x image and label sizes differ" in out and "val_00000.jpg is 20x32" in out
    assert "5 problems" in out


def test_check_dataset_passes_a_clean_set(tiny_set, capsys):
    assert script_main("check_dataset")([f"dataset.root={tiny_set}", "--no-progress", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "no problems found" in out and "train 4 items" in out and "val 2 items" in out
