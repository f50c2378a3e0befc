"""segdcn's mIoU against cityscapesscripts' official evaluation, on a Cityscapes fixture in the published layout."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.helpers.labels import id2label, labels
from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
from cityscapesscripts.preparation.json2labelImg import json2labelImg
from omegaconf import OmegaConf
from PIL import Image
from torch import nn

from segdcn.config import EvalConfig
from segdcn.data.cityscapes import POLYGON_SUFFIX, Cityscapes, TrainIdJob, polygon_files
from segdcn.data.labels import cityscapes_labels
from segdcn.engine.cityscapes_official import (
    OfficialEvaluationError,
    PredictionWriter,
    official_evaluation,
    to_label_ids,
)
from segdcn.engine.evaluate import evaluate
from tests.fixtures import write_cityscapes

NAMES = cityscapes_labels().names
NOISE_CLASSES = [0, 2, 11, 13, 16]  # road, building, person, car, train: the other 14 stay absent


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory):
    """The fixture with what gtFine_trainvaltest.zip ships next to the polygons (labelIds, instanceIds),
    drawn by cityscapesscripts' own tools, and the trainIds of scripts/prepare_cityscapes.py."""
    fixture = write_cityscapes(tmp_path_factory.mktemp("cs"))
    for polygons in polygon_files(fixture.root):
        TrainIdJob(polygons).run()
        stem = str(polygons)[: -len(POLYGON_SUFFIX)]
        json2labelImg(str(polygons), stem + "_gtFine_labelIds.png", "ids")
        write_instance_ids(polygons, stem + "_gtFine_instanceIds.png")
    return fixture


def write_instance_ids(polygons, path):
    """The 16-bit instanceIds PNG of the dataset (json2instanceImg's 32-bit image is no longer writable as a
    PNG by Pillow), drawn by cityscapesscripts' createInstanceImage."""
    annotation = Annotation()
    annotation.fromJsonFile(str(polygons))
    instances = np.array(createInstanceImage(annotation, "ids"))
    assert instances.max() < 2**16
    Image.fromarray(instances.astype(np.uint16)).save(path)


class ImperfectPredictions(torch.utils.data.Dataset):
    """Items (one-hot "logits" of an imperfect prediction, trainId label): with nn.Identity as the model,
    evaluate() predicts exactly these maps. The prediction is the label shifted by a few pixels, with
    10 % of its pixels (and all ignored ones) set to random classes."""

    def __init__(self, dataset: Cityscapes):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        _, label = self.dataset[index]
        rng = np.random.default_rng(index)
        pred = np.roll(label.numpy(), shift=(index + 1, 2 * index - 1), axis=(0, 1))
        noise = (rng.random(pred.shape) < 0.1) | (pred == 255)
        pred[noise] = rng.choice(NOISE_CLASSES, size=int(noise.sum()))
        logits = F.one_hot(torch.from_numpy(pred), len(NAMES)).permute(2, 0, 1).float()
        return logits, label


def test_segdcn_miou_equals_the_official_evaluation(cityscapes, tmp_path):
    dataset = Cityscapes(cityscapes.root, "train", transforms=None)
    writer = PredictionWriter(dataset.images, tmp_path / "results")
    ours = evaluate(
        nn.Identity(),
        ImperfectPredictions(dataset),
        OmegaConf.structured(EvalConfig(num_workers=0)),
        device="cpu",
        num_classes=len(NAMES),
        class_names=NAMES,
        progress=False,
        on_prediction=writer,
    ).metrics
    official = official_evaluation(writer.predictions, writer.ground_truths, export_file=tmp_path / "official.json")

    assert [p.name for p in writer.predictions] == [
        "aachen_000000_000019_pred_labelIds.png",
        "aachen_000001_000019_pred_labelIds.png",
    ]
    assert 0.1 < ours["miou"] < 0.9  # imperfect: a non-trivial number
    assert official.miou == pytest.approx(ours["miou"], abs=1e-6)
    assert list(official.per_class_iou) == list(NAMES)
    present = [name for name, iou in ours["per_class_iou"].items() if iou is not None]
    assert 4 <= len(present) < len(NAMES)  # some classes present in only one side, others in neither
    for name in NAMES:
        if ours["per_class_iou"][name] is None:
            assert official.per_class_iou[name] is None, name
        else:
            assert official.per_class_iou[name] == pytest.approx(ours["per_class_iou"][name], abs=1e-6), name
    assert official.niou is not None  # the instanceIds are there, so the instance-weighted score ran
    assert (tmp_path / "official.json").is_file() and official.num_images == 2


def test_train_ids_become_label_ids_through_the_cityscapes_table():
    train_ids = np.array([[lb.trainId for lb in labels if 0 <= lb.trainId < 255]], dtype=np.uint8)
    ids = to_label_ids(torch.from_numpy(train_ids))
    assert [id2label[i].trainId for i in ids[0]] == train_ids[0].tolist()
    assert id2label[int(to_label_ids(np.array([255]))[0])].ignoreInEval


def test_a_sys_exit_inside_cityscapesscripts_becomes_an_error(cityscapes, tmp_path, monkeypatch):
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official_module

    monkeypatch.setenv("CITYSCAPES_DATASET", "/nowhere/dataset")
    monkeypatch.delenv("CITYSCAPES_RESULTS", raising=False)
    export_before = official_module.args.exportFile
    gt = cityscapes.root / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000294_gtFine_labelIds.png"
    wrong_size = tmp_path / "results" / "frankfurt" / "frankfurt_000000_000294_pred_labelIds.png"
    wrong_size.parent.mkdir(parents=True)
    Image.fromarray(np.zeros((cityscapes.height, cityscapes.width + 3), np.uint8)).save(wrong_size)

    with pytest.raises(OfficialEvaluationError, match=r"sys.exit\(-1\).*ERROR: Image widths of .* are not equal"):
        official_evaluation([wrong_size], [gt])
    # the process lives on, with its environment and cityscapesscripts' global args as they were
    assert os.environ["CITYSCAPES_DATASET"] == "/nowhere/dataset" and "CITYSCAPES_RESULTS" not in os.environ
    assert official_module.args.exportFile == export_before

    missing = gt.with_name("frankfurt_000000_000999_gtFine_labelIds.png")
    with pytest.raises(OfficialEvaluationError, match=r"missing, e.g. .*frankfurt_000000_000999_gtFine_labelIds.png"):
        official_evaluation([wrong_size], [missing])


def test_segdcn_eval_reports_both_numbers_on_cityscapes(cityscapes, tmp_path):
    from segdcn.eval import run
    from tests.apps.test_eval_app import compose_eval, write_checkpoint

    path = write_checkpoint(tmp_path / "best.pt", ["dataset=cityscapes", f"dataset.root={cityscapes.root}"])
    overrides = ["eval.official=true", "eval.split=train", "dataset.eval.short_side=null", "eval.num_workers=0"]
    cfg = compose_eval([f"ckpt={path}", "progress=false", "device=cpu", *overrides])
    summary = run(cfg, tmp_path / "run", None, ["eval.short_side"])

    official = summary["official"]
    assert official["num_images"] == summary["num_images"] == 2
    assert official["miou"] == pytest.approx(summary["miou"], abs=1e-6)
    assert list(official["per_class_iou"]) == list(summary["per_class_iou"]) == list(NAMES)
    results = sorted(p.name for p in (tmp_path / "run" / "cityscapes_results" / "aachen").iterdir())
    assert results == ["aachen_000000_000019_pred_labelIds.png", "aachen_000001_000019_pred_labelIds.png"]
    assert (tmp_path / "run" / "cityscapes_official.json").is_file()


@pytest.fixture
def cityscapes_without_one_label_ids(tmp_path):
    """The published layout (polygons, trainIds, labelIds) with the second train image's labelIds removed."""
    fixture = write_cityscapes(tmp_path / "cs")
    for polygons in polygon_files(fixture.root):
        TrainIdJob(polygons).run()
        json2labelImg(str(polygons), str(polygons)[: -len(POLYGON_SUFFIX)] + "_gtFine_labelIds.png", "ids")
    removed = fixture.root / "gtFine" / "train" / "aachen" / "aachen_000001_000019_gtFine_labelIds.png"
    removed.unlink()
    return fixture, removed


def test_a_missing_ground_truth_stops_the_writer_before_inference(cityscapes_without_one_label_ids, tmp_path):
    fixture, removed = cityscapes_without_one_label_ids
    dataset = Cityscapes(fixture.root, "train", transforms=None)
    with pytest.raises(OfficialEvaluationError) as error:
        PredictionWriter(dataset.images, tmp_path / "results")
    message = str(error.value)
    assert str(removed) in message and "1 of 2" in message
    assert "aachen_000000_000019_gtFine_labelIds.png" not in message  # only the missing one is named
    assert "gtFine_trainvaltest.zip" in message and "prepare_cityscapes.py" in message
    assert not (tmp_path / "results").exists()


def test_segdcn_eval_checks_the_ground_truth_before_it_evaluates(
    cityscapes_without_one_label_ids, tmp_path, monkeypatch
):
    import segdcn.engine.evaluate
    from segdcn.eval import run
    from tests.apps.test_eval_app import compose_eval, write_checkpoint

    fixture, removed = cityscapes_without_one_label_ids
    calls = []
    monkeypatch.setattr(segdcn.engine.evaluate, "evaluate", lambda *args, **kwargs: calls.append(args))
    path = write_checkpoint(tmp_path / "best.pt", ["dataset=cityscapes", f"dataset.root={fixture.root}"])
    overrides = ["eval.official=true", "eval.split=train", "dataset.eval.short_side=null", "eval.num_workers=0"]
    cfg = compose_eval([f"ckpt={path}", "progress=false", "device=cpu", *overrides])
    with pytest.raises(OfficialEvaluationError, match=r"1 of 2 .* missing: .*aachen_000001_000019_gtFine_labelIds"):
        run(cfg, tmp_path / "run", None, ["eval.short_side"])
    assert calls == []  # no inference ran
    assert not (tmp_path / "run" / "cityscapes_results").exists()


def test_the_missing_ground_truths_are_counted_and_the_first_few_named(tmp_path):
    from segdcn.engine.cityscapes_official import MISSING_SHOWN, check_ground_truths

    images = [tmp_path / "leftImg8bit" / "val" / "lindau" / f"lindau_{i:06d}_000019_leftImg8bit.png" for i in range(8)]
    with pytest.raises(OfficialEvaluationError) as error:
        check_ground_truths(images)
    message = str(error.value)
    assert "8 of 8 " in message and f"and {8 - MISSING_SHOWN} more" in message
    named = [i for i in range(8) if f"lindau_{i:06d}_000019_gtFine_labelIds.png" in message]
    assert named == list(range(MISSING_SHOWN))
    assert str(tmp_path / "gtFine" / "val" / "lindau" / "lindau_000000_000019_gtFine_labelIds.png") in message
