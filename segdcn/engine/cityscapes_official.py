"""Cityscapes' own evaluation of segdcn's predictions, next to segdcn's mIoU.

The benchmark's number is the one cityscapesscripts computes (evaluation.evalPixelLevelSemanticLabeling)
from full-size PNGs of label *ids* (not trainIds), one per image, found by the
`<city>_<seq>_<frame>*.png` pattern. This module writes those PNGs while segdcn evaluates and then
runs the official code on them:

    writer = PredictionWriter(dataset.images, run_dir / "cityscapes_results")
    evaluate(model, dataset, cfg.eval, ..., on_prediction=writer)
    official = official_evaluation(writer.predictions, writer.ground_truths, export_file=run_dir / "x.json")
    official.miou, official.per_class_iou["road"]

trainId -> id goes through cityscapesscripts' label table, never a copy of it. The ground truth is
the `*_gtFine_labelIds.png` (and, for the instance-weighted nIoU, `*_gtFine_instanceIds.png`) that
gtFine_trainvaltest.zip ships next to the polygon files.

cityscapesscripts is written as a command-line script: it builds a global `args` from environment
variables (CITYSCAPES_DATASET, CITYSCAPES_RESULTS, CITYSCAPES_EXPORT_DIR) when first imported and
calls sys.exit on any error (a missing file, a size mismatch). Here it runs on a private copy of
those args, with the environment set for the call and restored after it, its console output
captured, and a sys.exit turned into an OfficialEvaluationError carrying its message, so a
training or evaluation job reports the problem instead of ending.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from segdcn.data.cityscapes import IMAGE_SUFFIX

PREDICTION_SUFFIX = "_pred_labelIds.png"  # <city>_<seq>_<frame> + this matches the official search pattern
GT_LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
GT_INSTANCE_IDS_SUFFIX = "_gtFine_instanceIds.png"
ENVIRONMENT = ("CITYSCAPES_DATASET", "CITYSCAPES_RESULTS", "CITYSCAPES_EXPORT_DIR")


class OfficialEvaluationError(RuntimeError):
    """cityscapesscripts' evaluation could not run or stopped with an error."""


@lru_cache(maxsize=1)
def train_id_to_id() -> np.ndarray:
    """A 256-entry lookup: label id of each trainId, from cityscapesscripts.helpers.labels.

    Values that are no trainId (255, the ignore value, never predicted by argmax) map to the id
    of trainId 255's first label ("unlabeled"), which the official evaluation ignores."""
    from cityscapesscripts.helpers.labels import trainId2label

    lookup = np.full(256, trainId2label[255].id, dtype=np.uint8)
    for train_id, label in trainId2label.items():
        if 0 <= train_id < 255:
            lookup[train_id] = label.id
    return lookup


def to_label_ids(train_ids: np.ndarray | torch.Tensor) -> np.ndarray:
    """uint8 label ids of an [H, W] map of trainIds."""
    if isinstance(train_ids, torch.Tensor):
        train_ids = train_ids.cpu().numpy()
    train_ids = np.asarray(train_ids)
    if train_ids.min(initial=0) < 0 or train_ids.max(initial=0) > 255:
        raise ValueError(f"trainIds must lie in 0..255, got {train_ids.min()}..{train_ids.max()}")
    return train_id_to_id()[train_ids.astype(np.uint8)]


def frame_prefix(image_path: str | Path) -> str:
    """<city>_<seq>_<frame> of a *_leftImg8bit.png image."""
    name = Path(image_path).name
    if not name.endswith(IMAGE_SUFFIX):
        raise ValueError(f"{image_path} is not a Cityscapes image (expected <city>_<seq>_<frame>{IMAGE_SUFFIX})")
    return name[: -len(IMAGE_SUFFIX)]


def ground_truth_path(image_path: str | Path) -> Path:
    """ROOT/gtFine/<split>/<city>/<prefix>_gtFine_labelIds.png of ROOT/leftImg8bit/<split>/<city>/<image>."""
    image_path = Path(image_path)
    city_dir = image_path.parent
    root = city_dir.parent.parent.parent
    return root / "gtFine" / city_dir.parent.name / city_dir.name / (frame_prefix(image_path) + GT_LABEL_IDS_SUFFIX)


MISSING_SHOWN = 5  # missing ground-truth files named in the error; the rest are counted


def check_ground_truths(image_paths: Sequence[str | Path]) -> list[Path]:
    """The *_gtFine_labelIds.png of each image, in order; raises OfficialEvaluationError naming the
    first few missing ones (and how many there are) if any is not a file."""
    ground_truths = [ground_truth_path(p) for p in image_paths]
    missing = [path for path in ground_truths if not path.is_file()]
    if missing:
        shown = ", ".join(str(path) for path in missing[:MISSING_SHOWN])
        more = f" and {len(missing) - MISSING_SHOWN} more" if len(missing) > MISSING_SHOWN else ""
        raise OfficialEvaluationError(
            f"{len(missing)} of {len(ground_truths)} ground-truth label-id images for the official Cityscapes "
            f"evaluation are missing: {shown}{more}. They are the *{GT_LABEL_IDS_SUFFIX} files of the gtFine "
            "release (gtFine_trainvaltest.zip from cityscapes-dataset.com, or cityscapesscripts' csDownload); "
            "unzip it over the dataset root. scripts/prepare_cityscapes.py writes *_gtFine_labelTrainIds.png "
            "(trainIds), not these; cityscapesscripts' preparation/json2labelImg.py can draw them from the "
            "polygons with the 'ids' encoding. Or run without eval.official=true"
        )
    return ground_truths


class PredictionWriter:
    """An evaluate() hook (on_prediction) that writes each prediction as the labelId PNG
    `results_dir/<city>/<city>_<seq>_<frame>_pred_labelIds.png` and records the pairs to score.

    The constructor checks that every image's *_gtFine_labelIds.png exists (check_ground_truths), so a
    missing ground truth stops the job before inference, not after the whole split has been run."""

    def __init__(self, image_paths: Sequence[str | Path], results_dir: str | Path):
        self.image_paths = [Path(p) for p in image_paths]
        check_ground_truths(self.image_paths)
        self.results_dir = Path(results_dir)
        self.predictions: list[Path] = []
        self.ground_truths: list[Path] = []

    def __call__(self, index: int, pred: torch.Tensor, label: torch.Tensor | None = None) -> None:
        image_path = self.image_paths[index]
        target = self.results_dir / image_path.parent.name / (frame_prefix(image_path) + PREDICTION_SUFFIX)
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(to_label_ids(pred)).save(target)  # uint8 [H, W]: a grey PNG
        self.predictions.append(target)
        self.ground_truths.append(ground_truth_path(image_path))


@dataclass
class OfficialResult:
    miou: float  # cityscapesscripts' "Score Average" over the 19 classes (those with a score)
    per_class_iou: dict[str, float | None]  # the 19 evaluated classes in trainId order; None: no pixels
    niou: float | None = None  # instance-weighted mean IoU (None without *_gtFine_instanceIds.png)
    per_class_niou: dict[str, float | None] = field(default_factory=dict)
    num_images: int = 0
    log: str = ""  # what cityscapesscripts printed

    def as_dict(self) -> dict:
        return {
            "miou": self.miou,
            "per_class_iou": self.per_class_iou,
            "niou": self.niou,
            "per_class_niou": self.per_class_niou,
            "num_images": self.num_images,
        }


@contextlib.contextmanager
def _numpy_in1d() -> Iterator[None]:
    """np.in1d for the duration of the call: cityscapesscripts' instance-level (nIoU) code uses it, and
    numpy 2.4 removed it. in1d(a, b) is isin(a, b) flattened."""
    if hasattr(np, "in1d"):
        yield
        return

    def in1d(ar1, ar2, assume_unique=False, invert=False):
        return np.isin(ar1, ar2, assume_unique=assume_unique, invert=invert).ravel()

    np.in1d = in1d
    try:
        yield
    finally:
        del np.in1d


@contextlib.contextmanager
def _environment(values: dict[str, str | None]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    try:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _check_files(predictions: Sequence[Path], ground_truths: Sequence[Path]) -> None:
    if len(predictions) != len(ground_truths):
        raise OfficialEvaluationError(f"{len(predictions)} predictions but {len(ground_truths)} ground-truth files")
    if not predictions:
        raise OfficialEvaluationError("no predictions to evaluate")
    for path in predictions:
        if not path.is_file():
            raise OfficialEvaluationError(f"prediction {path} does not exist")
    missing = [path for path in ground_truths if not path.is_file()]
    if missing:
        raise OfficialEvaluationError(
            f"{len(missing)} of {len(ground_truths)} ground-truth label-id images are missing, e.g. {missing[0]}; "
            f"the official evaluation reads the *{GT_LABEL_IDS_SUFFIX} files of gtFine_trainvaltest.zip "
            "(cityscapesscripts' preparation/json2labelImg.py draws them from the polygons with the 'ids' encoding)"
        )


def _nan_to_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def official_evaluation(
    predictions: Sequence[str | Path],
    ground_truths: Sequence[str | Path],
    *,
    export_file: str | Path | None = None,
) -> OfficialResult:
    """Runs cityscapesscripts' evaluateImgLists on labelId PNG predictions and their *_gtFine_labelIds.png.

    export_file: where its JSON result (confusion matrix, all scores) goes; a temporary folder's
    file if None. The nIoU is computed when every *_gtFine_instanceIds.png is present.
    Raises OfficialEvaluationError (never SystemExit) if the files are missing or the evaluation stops.
    """
    predictions = [Path(p) for p in predictions]
    ground_truths = [Path(p) for p in ground_truths]
    _check_files(predictions, ground_truths)
    with contextlib.ExitStack() as stack:
        if export_file is None:
            import tempfile

            export_file = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "result.json"
        export_file = Path(export_file)
        export_file.parent.mkdir(parents=True, exist_ok=True)
        dataset_root = ground_truths[0].parents[3]
        results_dir = predictions[0].parent.parent
        with_instances = all(
            Path(str(gt).replace(GT_LABEL_IDS_SUFFIX, GT_INSTANCE_IDS_SUFFIX)).is_file() for gt in ground_truths
        )
        output = io.StringIO()
        env = {"CITYSCAPES_DATASET": str(dataset_root), "CITYSCAPES_RESULTS": str(results_dir)}
        env["CITYSCAPES_EXPORT_DIR"] = None  # read at import: a stale value would make the import raise
        with _environment(env), _numpy_in1d(), contextlib.redirect_stdout(output):
            try:
                from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

                # a private copy: the module's global args stays as it was for any other user of it
                args = copy.copy(official.args)
                args.cityscapesPath = str(dataset_root)
                args.exportFile = str(export_file)
                args.predictionPath = str(results_dir)
                args.predictionWalk = None
                args.evalInstLevelScore = with_instances
                args.evalPixelAccuracy = False
                args.JSONOutput = True
                args.quiet = False  # its table goes to the captured log
                args.colorized, args.bold, args.nocol = False, "", ""
                scores = official.evaluateImgLists([str(p) for p in predictions], [str(g) for g in ground_truths], args)
            except SystemExit as stop:
                lines = [line.strip() for line in output.getvalue().splitlines() if line.strip()]
                reason = next(
                    (line for line in reversed(lines) if line.startswith("ERROR")), lines[-1] if lines else ""
                )
                raise OfficialEvaluationError(
                    f"cityscapesscripts' evaluation stopped (sys.exit({stop.code})): {reason or 'no message'}"
                ) from None
    return _result(scores, len(predictions), output.getvalue(), with_instances)


def _result(scores: dict, num_images: int, log: str, with_instances: bool) -> OfficialResult:
    from segdcn.data.labels import cityscapes_labels

    names = cityscapes_labels().names  # the evaluated classes, trainId order
    iou = {name: _nan_to_none(scores["classScores"][name]) for name in names}
    niou = {name: _nan_to_none(scores["classInstScores"][name]) for name in names} if with_instances else {}
    return OfficialResult(
        miou=float(scores["averageScoreClasses"]),
        per_class_iou=iou,
        niou=_nan_to_none(scores["averageScoreInstClasses"]) if with_instances else None,
        per_class_niou=niou,
        num_images=num_images,
        log=log,
    )
