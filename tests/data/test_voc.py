"""VOC 2012 + SBD: prepare_voc.py on a fixture in the published formats, then the reader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import SBDataset
from torchvision.datasets import VOCSegmentation as TorchvisionVOC

from segdcn.data.builder import build_dataset
from segdcn.data.labels import voc_palette
from segdcn.data.voc import VOCSegmentation
from segdcn.data.voc_aug import PUBLISHED, count_warnings, read_sbd_segmentation, trainaug_ids
from tests.fixtures import classes_from_colors, script_main, with_void_borders, write_voc_sbd


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    fixture = write_voc_sbd(tmp_path_factory.mktemp("vocsbd"))
    main = script_main("prepare_voc")
    assert main(["--voc-root", str(fixture.voc_root), "--sbd-root", str(fixture.sbd_root), "--workers", "2"]) == 0
    return fixture


def test_fixture_is_read_by_torchvision(tmp_path):
    """The fixture's formats are the real ones: torchvision's own readers load them."""
    fixture = write_voc_sbd(tmp_path)
    sbd = SBDataset(str(fixture.sbd_root), image_set="train", mode="segmentation")
    _, target = sbd[0]
    np.testing.assert_array_equal(np.asarray(target), fixture.labels[fixture.sbd_train[0]])
    boundaries = SBDataset(str(fixture.sbd_root), image_set="val", mode="boundaries")[0][1]
    assert boundaries.shape[0] == 20 and boundaries.sum() > 0
    voc = TorchvisionVOC(str(fixture.voc_root), year="2012", image_set="val")
    assert len(voc) == len(fixture.voc_val) and voc[0][1].mode == "P"


def test_trainaug_set_arithmetic(prepared):
    base = prepared.voc_root / "VOCdevkit" / "VOC2012"
    listed = (base / "ImageSets" / "Segmentation" / "trainaug.txt").read_text().split()
    assert listed == sorted(prepared.expected_trainaug)
    assert not set(listed) & set(prepared.voc_val)  # SBD's lists hold VOC val images: dropped
    assert len(listed) == len(set(listed))  # ids in both VOC train and SBD counted once
    assert trainaug_ids(["a", "b"], ["c"], ["b", "c", "d"], ["e", "a"]) == ["a", "b", "d", "e"]


def test_masks_come_from_voc_where_annotated_else_sbd(prepared):
    aug = prepared.voc_root / "VOCdevkit" / "VOC2012" / "SegmentationClassAug"
    for id_ in prepared.expected_trainaug | set(prepared.voc_val):
        mask = np.asarray(Image.open(aug / f"{id_}.png"))
        assert Image.open(aug / f"{id_}.png").mode == "P"
        if id_ in set(prepared.voc_train) | set(prepared.voc_val):
            np.testing.assert_array_equal(mask, with_void_borders(prepared.labels[id_]))
        else:
            np.testing.assert_array_equal(mask, prepared.labels[id_])
            np.testing.assert_array_equal(mask, read_sbd_segmentation(prepared.sbd_root / "cls" / f"{id_}.mat"))


def test_missing_voc_image_is_copied_from_sbd(prepared):
    for id_ in prepared.only_in_sbd_images:
        assert (prepared.voc_root / "VOCdevkit" / "VOC2012" / "JPEGImages" / f"{id_}.jpg").is_file()


def test_prepare_is_idempotent_and_reports_counts(prepared, capsys):
    aug = prepared.voc_root / "VOCdevkit" / "VOC2012" / "SegmentationClassAug"
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in aug.iterdir()}
    main = script_main("prepare_voc")
    assert main(["--voc-root", str(prepared.voc_root), "--sbd-root", str(prepared.sbd_root), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert f"{len(before)} up to date" in out
    assert f"trainaug = (VOC train + SBD train + SBD val) - VOC val: {len(prepared.expected_trainaug)} images" in out
    assert f"val: {len(prepared.voc_val)} images" in out
    assert "WARNING" in err and "10,582" in err  # a subset: says so
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in aug.iterdir()} == before


def test_count_warning_only_when_full_data_is_off():
    full = {name: PUBLISHED[name] for name in PUBLISHED}
    assert count_warnings(full) == []
    wrong = {**full, "trainaug": 10581}
    (warning,) = count_warnings(wrong)
    assert "10,581" in warning and "not the official" in warning
    subset = {"voc_train": 4, "voc_val": 3, "sbd_train": 5, "sbd_val": 4, "trainaug": 9, "val": 3}
    (warning,) = count_warnings(subset)
    assert "not the full" in warning and "sbd_train 5 (published 8,498)" in warning


def test_reader_reads_trainaug_and_val(prepared):
    train = VOCSegmentation(prepared.voc_root, "trainaug")
    assert sorted(train.ids) == sorted(prepared.expected_trainaug)
    for index in range(len(train)):
        image, label = train[index]
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        assert label.dtype == torch.int64 and label.shape == image.shape[1:]
        painted = classes_from_colors(image.permute(1, 2, 0).numpy())
        valid = label != 255
        assert (torch.from_numpy(painted.astype(np.int64))[valid] == label[valid]).float().mean() > 0.98
    val = VOCSegmentation(prepared.voc_root, "val")
    assert val.ids == prepared.voc_val


def test_config_builds_voc_aug_with_transforms(prepared):
    from omegaconf import OmegaConf

    cfg = OmegaConf.load("conf/dataset/voc_aug.yaml")
    cfg.root = str(prepared.voc_root)
    cfg.train.short_side = None
    cfg.train.crop_size = [24, 32]
    train = build_dataset(cfg, "train")
    image, label = train[0]
    assert image.shape == (3, 24, 32) and image.dtype == torch.float32
    assert label.shape == (24, 32) and label.dtype == torch.int64
    val = build_dataset(cfg, "val")  # eval: short side 360, labels at full resolution
    image, label = val[0]
    h, w = prepared.labels[prepared.voc_val[0]].shape
    assert min(image.shape[1:]) == 360 and label.shape == (h, w)


def test_voc_palette_follows_the_devkit_rule():
    palette = voc_palette()
    assert palette[0] == (0, 0, 0) and palette[1] == (128, 0, 0) and palette[15] == (192, 128, 128)  # person
    assert palette[255] == (224, 224, 192)  # VOC's void colour on object borders
    assert len(set(palette)) == 256
