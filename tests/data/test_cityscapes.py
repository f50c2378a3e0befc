"""Cityscapes: polygon JSON fixture -> prepare_cityscapes.py -> the reader, trainIds from cityscapesscripts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cityscapesscripts.helpers.labels import labels as cs_labels
from cityscapesscripts.helpers.labels import name2label
from PIL import Image

from segdcn.data.cityscapes import Cityscapes
from segdcn.data.errors import LabelValueError
from segdcn.data.labels import cityscapes_labels
from tests.fixtures import CITYSCAPES_BOXES, script_main, write_cityscapes


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    fixture = write_cityscapes(tmp_path_factory.mktemp("cs"))
    assert script_main("prepare_cityscapes")(["--root", str(fixture.root), "--workers", "2", "--no-progress"]) == 0
    return fixture


def expected_train_ids(fixture) -> tuple[np.ndarray, np.ndarray]:
    """Each box's pixels (edges included) get the trainId, looked up in cityscapesscripts' table, of
    the last box drawn over them; a "group" label falls back to its class; id < 0 is not drawn.
    Returns the expected label and where it is known (everywhere but the edges of boxes)."""
    expected = np.full((fixture.height, fixture.width), name2label["unlabeled"].trainId, np.int64)
    edges = np.zeros_like(expected, dtype=bool)
    for label, x0, y0, x1, y1 in CITYSCAPES_BOXES:
        entry = name2label.get(label) or name2label[label[: -len("group")]]
        if entry.id < 0:
            continue
        expected[y0 : y1 + 1, x0 : x1 + 1] = entry.trainId
        edges[[y0, y1], x0 : x1 + 1] = True
        edges[y0 : y1 + 1, [x0, x1]] = True
    return expected, ~edges


def test_train_ids_match_cityscapesscripts(prepared):
    expected, known = expected_train_ids(prepared)
    for split, prefixes in prepared.frames.items():
        for prefix in prefixes:
            city = prefix.split("_")[0]
            path = prepared.root / "gtFine" / split / city / f"{prefix}_gtFine_labelTrainIds.png"
            label = np.asarray(Image.open(path))
            assert label.shape == (prepared.height, prepared.width)
            np.testing.assert_array_equal(label[known], expected[known])
            assert label[3, 30] == name2label["sky"].trainId == 10
            assert label[18, 40] == name2label["car"].trainId  # from "cargroup"
            assert label[21, 25] == name2label["car"].trainId  # the license plate is not drawn
            assert label[28, 55] == 255  # ego vehicle is ignored


def test_label_set_comes_from_cityscapesscripts():
    labels = cityscapes_labels()
    evaluated = [lb for lb in cs_labels if not lb.ignoreInEval]
    assert labels.num_classes == 19 == len(evaluated)
    for label in evaluated:
        assert labels.names[label.trainId] == label.name
        assert labels.colors[label.trainId] == tuple(label.color)


def test_reader(prepared):
    train = Cityscapes(prepared.root, "train")
    assert len(train) == len(prepared.frames["train"])
    image, label = train[0]
    assert image.shape == (3, prepared.height, prepared.width) and image.dtype == torch.uint8
    assert label.dtype == torch.int64
    expected, known = expected_train_ids(prepared)
    assert torch.equal(label[torch.from_numpy(known)], torch.from_numpy(expected[known]))
    assert len(Cityscapes(prepared.root, "val")) == 1


def test_prepare_skips_up_to_date_files(prepared, capsys):
    assert script_main("prepare_cityscapes")(["--root", str(prepared.root), "--no-progress", "--workers", "1"]) == 0
    assert "3 up to date" in capsys.readouterr().out


def test_unknown_polygon_label_names_file_and_label(tmp_path, capsys):
    fixture = write_cityscapes(tmp_path)
    path = next((fixture.root / "gtFine" / "val").rglob("*_polygons.json"))
    path.write_text(path.read_text().replace('"person"', '"unicorn"'))
    assert script_main("prepare_cityscapes")(["--root", str(fixture.root), "--workers", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "unicorn" in err
    with pytest.raises(LabelValueError, match="unicorn"):
        from segdcn.data.cityscapes import check_polygon_labels

        check_polygon_labels(path)
