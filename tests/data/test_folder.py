"""dataset=folder on folders written as users have them (tests.fixtures.write_folder): JPEG and PNG images,
palette and grey index masks, classes.txt or classes.yaml, colour masks for the converter. The reader, the
split it writes, reduce_zero_label, each error naming its file, check_dataset, and the converter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from segdcn.config import ConfigError, DatasetConfig, compose
from segdcn.data import build_dataset
from segdcn.data.errors import (
    ClassesFileError,
    DatasetLayoutError,
    LabelValueError,
    UnpairedFilesError,
    UnreadableFileError,
)
from segdcn.data.folder import FolderDataset
from tests.fixtures import FOLDER_CLASSES, MASK_COLORS, VOID_COLOR, classes_from_colors, script_main, write_folder


@pytest.fixture
def own(tmp_path):
    return write_folder(tmp_path)


def folder_cfg(root: Path, *overrides: str):
    return compose("train", ["dataset=folder", f"dataset.root={root}", *overrides]).dataset


def both_splits(root: Path, *overrides: str) -> dict[str, FolderDataset]:
    cfg = folder_cfg(root, *overrides)
    return {split: build_dataset(cfg, split, transforms=None) for split in ("train", "val")}


# ---- the reader ----


def test_reads_every_image_format_and_mask_kind_as_written(own):
    sets = both_splits(own.root)
    assert sets["train"].label_set.names == FOLDER_CLASSES and sets["train"].num_classes == len(FOLDER_CLASSES)
    suffixes = {path.suffix for dataset in sets.values() for path in dataset.images}
    assert suffixes == {".jpg", ".jpeg", ".png"}
    seen = []
    for dataset in sets.values():
        for index, stem in enumerate(dataset.ids):
            image, label = dataset[index]
            np.testing.assert_array_equal(label.numpy(), own.labels[stem], err_msg=stem)
            # the image was painted from its label: its pixels still tell the classes (JPEG included)
            painted = classes_from_colors(image.permute(1, 2, 0).numpy())
            labelled = own.labels[stem] != 255
            assert (painted[labelled] == own.labels[stem][labelled]).mean() > 0.97, stem
            seen.append(stem)
    assert sorted(seen) == sorted(own.labels)


def test_the_num_classes_key_comes_from_the_classes_file_and_is_checked(own):
    assert DatasetConfig.from_config(folder_cfg(own.root)).num_classes == len(FOLDER_CLASSES)
    with pytest.raises(ConfigError, match=r"dataset\.num_classes=7: expected 4, the classes in the class table under"):
        DatasetConfig.from_config(folder_cfg(own.root, "dataset.num_classes=7"))


def test_classes_yaml_gives_names_and_colours(own):
    (own.root / "classes.txt").unlink()
    colors = [[0, 0, 0], [128, 64, 128], [0, 0, 142], [220, 20, 60]]
    (own.root / "classes.yaml").write_text(yaml.safe_dump({"names": list(FOLDER_CLASSES), "colors": colors}))
    labels = build_dataset(folder_cfg(own.root), "train").label_set
    assert labels.names == FOLDER_CLASSES and [list(c) for c in labels.colors] == colors


def test_reduce_zero_label_ignores_label_0_and_shifts_the_classes(tmp_path):
    own = write_folder(tmp_path, count=4, void_borders=False)
    stem = sorted(own.labels)[0]
    raw = np.array([[0, 1, 2], [3, 4, 255]], np.uint8)  # 0 unlabelled; 1..4 the classes; 255 ignore
    for path in (own.root / "images").glob(f"{stem}.*"):
        path.unlink()
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(own.root / "images" / f"{stem}.png")
    Image.fromarray(raw, "L").save(own.root / "masks" / f"{stem}.png")
    sets = both_splits(own.root, "dataset.reduce_zero_label=true")
    dataset = next(d for d in sets.values() if stem in d.ids)
    _, label = dataset[dataset.ids.index(stem)]
    np.testing.assert_array_equal(label.numpy(), [[255, 0, 1], [2, 3, 255]])
    # with four classes, 5 is outside: the message says what the values mean under reduce_zero_label
    Image.fromarray(np.array([[0, 5, 1], [1, 1, 1]], np.uint8), "L").save(own.root / "masks" / f"{stem}.png")
    with pytest.raises(LabelValueError, match=rf"{stem}\.png holds values \[5\]; expected 0 \(unlabelled"):
        dataset[dataset.ids.index(stem)]


# ---- the split ----


def test_without_lists_a_split_is_written_once_and_reused(own):
    first = both_splits(own.root)
    train, val = first["train"].ids, first["val"].ids
    assert not set(train) & set(val) and sorted(train + val) == sorted(own.labels)
    assert len(val) == round(0.1 * len(own.labels))
    split_dir = own.root / "splits"
    assert (split_dir / "train.txt").read_text().split() == train and (split_dir / "val.txt").read_text().split() == val
    assert json.loads((split_dir / "split.json").read_text())["val_fraction"] == 0.1
    written = {p.name: p.stat().st_mtime_ns for p in split_dir.iterdir()}
    again = both_splits(own.root)
    assert again["train"].ids == train and again["val"].ids == val
    assert {p.name: p.stat().st_mtime_ns for p in split_dir.iterdir()} == written  # read, not written again


def test_the_split_depends_on_the_seed_and_the_stems_only(tmp_path):
    a = write_folder(tmp_path / "a", count=20)
    b = write_folder(tmp_path / "b", count=20, seed=5)  # other pixels and sizes, the same stems
    split_a = both_splits(a.root, "dataset.val_fraction=0.25")
    split_b = both_splits(b.root, "dataset.val_fraction=0.25")
    assert split_a["val"].ids == split_b["val"].ids and len(split_a["val"].ids) == 5
    c = write_folder(tmp_path / "c", count=20)
    other_seed = both_splits(c.root, "dataset.val_fraction=0.25", "dataset.split_seed=1")
    assert other_seed["val"].ids != split_a["val"].ids


def test_a_written_split_refuses_other_split_keys_and_new_images(own):
    both_splits(own.root)
    with pytest.raises(ConfigError, match=r"dataset\.val_fraction=0\.3 .* written with val_fraction=0\.1"):
        both_splits(own.root, "dataset.val_fraction=0.3")
    shutil.copy(next((own.root / "images").glob("*.png")), own.root / "images" / "late.png")
    shutil.copy(next((own.root / "masks").glob("*.png")), own.root / "masks" / "late.png")
    with pytest.raises(DatasetLayoutError, match=r"1 image\(s\) came after .*splits was written .* late"):
        both_splits(own.root)


def test_lists_of_ones_own_are_used_and_the_split_keys_refused(own):
    stems = sorted(own.labels)
    (own.root / "splits").mkdir()
    (own.root / "splits" / "train.txt").write_text("\n".join(stems[:3]) + "\n")
    (own.root / "splits" / "val.txt").write_text("\n".join(stems[3:5]) + "\n")
    sets = both_splits(own.root)
    assert sets["train"].ids == stems[:3] and sets["val"].ids == stems[3:5]
    assert not (own.root / "splits" / "split.json").exists()
    with pytest.raises(ConfigError, match=r"dataset\.val_fraction=0\.2 and dataset\.split_seed=0 make a split only"):
        both_splits(own.root, "dataset.val_fraction=0.2")
    (own.root / "splits" / "val.txt").write_text("no_such_stem\n")
    with pytest.raises(DatasetLayoutError, match=r"splits/val\.txt have no image and mask pair, e\.g\. no_such_stem"):
        both_splits(own.root)


def test_a_list_of_ones_own_beside_the_written_split_is_read(own):
    both_splits(own.root)
    (own.root / "splits" / "test.txt").write_text("scene_004\nscene_007\n")
    test = build_dataset(folder_cfg(own.root, "+dataset.splits.test=test"), "test", transforms=None)
    assert test.ids == ["scene_004", "scene_007"]
    with pytest.raises(DatasetLayoutError, match=r"split list .*splits/extra\.txt does not exist"):
        build_dataset(folder_cfg(own.root, "+dataset.splits.extra=extra"), "extra")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["dataset=voc_aug", "dataset.val_fraction=0.2"], r"dataset\.val_fraction=0\.2: expected 0\.1 \(the default\)"),
        (["dataset=synthetic", "dataset.split_seed=3"], r"dataset\.split_seed=3: expected 0 .* dataset=folder only"),
        (["dataset=voc_aug", "dataset.reduce_zero_label=true"], r"reduce_zero_label=true: expected false"),
        (["dataset=ade20k", "dataset.reduce_zero_label=false"], r"reduce_zero_label=false: expected true"),
        (["dataset=synthetic", "dataset.layout=folder"], r"dataset\.layout='folder': expected voc or cityscapes"),
        (["dataset=folder", "dataset.root=.", "dataset.layout=voc"], r"dataset\.layout='voc': expected folder"),
        (["dataset=folder", "dataset.root=.", "dataset.val_fraction=1.0"], r"val_fraction=1\.0: expected a fraction"),
    ],
)
def test_keys_of_another_dataset_are_refused_by_name(overrides, message, tmp_path):
    write_folder(tmp_path, count=2)
    overrides = [o.replace("dataset.root=.", f"dataset.root={tmp_path / 'own'}") for o in overrides]
    with pytest.raises(ConfigError, match=message):
        DatasetConfig.from_config(compose("train", overrides).dataset)


# ---- errors that name the file ----


def break_folder(root: Path, how: str) -> str:
    """Spoils a fixture folder in one way; returns what the error must name."""
    stem = sorted(p.stem for p in (root / "masks").glob("*.png"))[0]
    if how == "unknown extension":
        (root / "images" / "notes.gif").write_bytes(b"GIF89a")
        return "notes.gif: extension .gif"
    if how == "image without mask":
        (root / "masks" / f"{stem}.png").unlink()
        return f"image without mask: .*{stem}.*: no .*masks/{stem}.png"
    if how == "mask without image":
        next((root / "images").glob(f"{stem}.*")).unlink()
        return f"mask without image: .*masks/{stem}.png: no image"
    if how == "two images of one stem":
        image = next((root / "images").glob(f"{stem}.*"))
        shutil.copy(image, image.with_suffix(".png" if image.suffix != ".png" else ".jpg"))
        return f"two images of one stem: .*{stem}"
    raise ValueError(how)


@pytest.mark.parametrize(
    "how", ["unknown extension", "image without mask", "mask without image", "two images of one stem"]
)
def test_files_that_do_not_pair_up_are_named(own, how):
    expected = break_folder(own.root, how)
    with pytest.raises(UnpairedFilesError, match=expected):
        both_splits(own.root)


def test_a_mask_of_another_size_or_with_unknown_values_is_named_when_read(own):
    train = both_splits(own.root)["train"]
    stem, path = train.ids[0], train.labels[0]
    Image.fromarray(np.zeros((5, 7), np.uint8), "L").save(path)
    with pytest.raises(UnreadableFileError, match=rf"{stem}.* but its label .*{stem}\.png is 7x5"):
        train[0]
    bad = own.labels[stem].copy()
    bad[0, 0] = 9
    Image.fromarray(bad, "L").save(path)
    with pytest.raises(LabelValueError, match=rf"{stem}\.png holds values \[9\]; expected class indices 0\.\.3"):
        train[0]
    Image.fromarray(np.zeros((*bad.shape, 3), np.uint8)).save(path)  # a colour mask where an index mask belongs
    with pytest.raises(UnreadableFileError, match=rf"{stem}\.png has PIL mode 'RGB'"):
        train[0]


@pytest.mark.parametrize(
    "files, error, message",
    [
        ({}, DatasetLayoutError, r"has no classes\.txt or classes\.yaml"),
        ({"classes.txt": "road\n\ncar\n"}, ClassesFileError, r"classes\.txt:2 is blank"),
        ({"classes.txt": "road\ncar\nroad\n"}, ClassesFileError, r"classes 0 and 2 are both named 'road'"),
        ({"classes.yaml": "names: [a, b]\ncolors: [[0, 0, 0]]\n"}, ClassesFileError, r"2 names but 1 colors"),
        ({"classes.yaml": "names: [a, b]\ncolors: [[0, 0, 0], [0, 0, 300]]\n"}, ClassesFileError, r"colors\[1\]"),
        ({"classes.yaml": "names: [a]\npalette: [[0, 0, 0]]\n"}, ClassesFileError, r"unknown key 'palette'"),
        ({"classes.txt": "a\n", "classes.yaml": "names: [a]\n"}, ClassesFileError, r"both classes\.txt and classes"),
    ],
)
def test_a_missing_or_malformed_classes_file_is_named(own, files, error, message):
    (own.root / "classes.txt").unlink()
    for name, text in files.items():
        (own.root / name).write_text(text)
    with pytest.raises(error, match=message):
        DatasetConfig.from_config(folder_cfg(own.root))


# ---- check_dataset ----


def check(root: Path, capsys) -> tuple[int, str]:
    code = script_main("check_dataset")(["dataset=folder", f"dataset.root={root}", "--workers", "1", "--no-progress"])
    return code, capsys.readouterr().out


def test_check_dataset_passes_a_good_folder_and_lists_every_problem_of_a_bad_one(own, capsys):
    code, out = check(own.root, capsys)
    assert code == 0 and "no problems found" in out and "background" in out
    # every kind at once, each named with its file (outside the split it wrote, or in it)
    (own.root / "images" / "notes.gif").write_bytes(b"GIF89a")
    shutil.copy(next((own.root / "images").glob("*.png")), own.root / "images" / "orphan_image.png")
    shutil.copy(next((own.root / "masks").glob("*.png")), own.root / "masks" / "orphan_mask.png")
    listed = (own.root / "splits" / "train.txt").read_text().split()
    Image.fromarray(np.zeros((3, 3), np.uint8), "L").save(own.root / "masks" / f"{listed[0]}.png")
    bad = own.labels[listed[1]].copy()
    bad[0, 0] = 200
    Image.fromarray(bad, "L").save(own.root / "masks" / f"{listed[1]}.png")
    code, out = check(own.root, capsys)
    assert code == 1
    for kind, named in [
        ("unknown image file", "notes.gif"),
        ("image without mask", "orphan_image.png: no "),
        ("mask without image", "orphan_mask.png: no image"),
        ("image and label sizes differ", f"{listed[0]}.png is 3x3"),
        ("label values outside the classes and ignore", f"{listed[1]}.png: values [200]"),
    ]:
        assert f"x {kind}" in out and named in out, (kind, out)


# ---- the colour-mask converter ----


def convert(root: Path, *args: str) -> int:
    return script_main("prepare_folder")(["--root", str(root), *args, "--workers", "1", "--no-progress"])


def test_palette_from_masks_makes_a_class_per_colour_and_index_masks_in_those_colours(own, capsys):
    (own.root / "classes.txt").unlink()
    own.write_color_masks(own.root / "masks")
    assert convert(own.root, "--palette-from-masks", "--ignore-color", ",".join(map(str, VOID_COLOR))) == 0
    table = yaml.safe_load((own.root / "classes.yaml").read_text())
    used = np.unique(np.concatenate([label.ravel() for label in own.labels.values()]))
    colors = sorted(tuple(int(c) for c in MASK_COLORS[v]) for v in used if v != 255)
    assert [tuple(c) for c in table["colors"]] == colors and table["names"] == [
        f"class_{i}" for i in range(len(colors))
    ]
    palette = np.array(table["colors"] + [list(VOID_COLOR)], np.uint8)
    for stem, label in own.labels.items():
        with Image.open(own.root / "masks" / f"{stem}.png") as mask:
            index = np.array(mask)
        shown = palette[np.where(index == 255, len(colors), index)]  # 255 drawn in the ignore colour
        expected = np.where((label == 255)[..., None], np.array(VOID_COLOR, np.uint8), MASK_COLORS[label % 255])
        np.testing.assert_array_equal(shown, expected, err_msg=stem)
    # the index masks are what the reader takes, and converting them again changes nothing
    assert both_splits(own.root)["train"].num_classes == len(colors)
    before = {p.name: np.array(Image.open(p)) for p in (own.root / "masks").glob("*.png")}
    assert convert(own.root, "--colors", str(own.root / "classes.yaml"), "--ignore-color", "224,224,192") == 0
    assert all(np.array_equal(np.array(Image.open(own.root / "masks" / n)), a) for n, a in before.items())
    # and the table is not overwritten by another --palette-from-masks
    assert convert(own.root, "--palette-from-masks") == 2
    assert "already names the classes" in capsys.readouterr().err


def test_a_table_of_ones_own_maps_each_colour_to_its_class(own, tmp_path):
    own.write_color_masks(tmp_path / "exported")
    (own.root / "classes.txt").unlink()
    shutil.rmtree(own.root / "masks")
    labels_yaml = tmp_path / "labels.yaml"
    labels_yaml.write_text(yaml.safe_dump({"names": list(FOLDER_CLASSES), "colors": MASK_COLORS.tolist()}))
    args = ["--colors", str(labels_yaml), "--from", str(tmp_path / "exported"), "--ignore-color", "224,224,192"]
    assert convert(own.root, *args) == 0
    assert (own.root / "classes.yaml").read_text() == labels_yaml.read_text()  # copied next to the masks
    for stem, label in own.labels.items():
        np.testing.assert_array_equal(np.array(Image.open(own.root / "masks" / f"{stem}.png")), label, err_msg=stem)


def test_a_colour_outside_the_table_is_refused_with_the_file_and_the_colour(own, capsys):
    own.write_color_masks(own.root / "masks")
    stem = sorted(own.labels)[2]
    rgb = np.array(Image.open(own.root / "masks" / f"{stem}.png"))
    rgb[:2, :2] = (1, 2, 3)
    Image.fromarray(rgb).save(own.root / "masks" / f"{stem}.png")
    (own.root / "classes.txt").unlink()
    (own.root / "classes.yaml").write_text(
        yaml.safe_dump({"names": list(FOLDER_CLASSES), "colors": MASK_COLORS.tolist()})
    )
    assert convert(own.root, "--colors", str(own.root / "classes.yaml"), "--ignore-color", "224,224,192") == 2
    err = capsys.readouterr().err
    assert f"{stem}.png has colours that are not in" in err and "(1, 2, 3) (4 px)" in err
    with Image.open(own.root / "masks" / f"{stem}.png") as mask:
        assert mask.mode == "RGB"  # the refused mask is left as it was
