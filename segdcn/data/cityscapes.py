"""Cityscapes (fine annotations): the reader, and trainId label images from the polygon files.

    ROOT/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    ROOT/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_polygons.json
    ROOT/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png   (prepare_cityscapes.py)

The trainIds (19 classes, 255 = ignore) are drawn from the polygons by cityscapesscripts'
json2labelImg with its label table, so no id is retyped here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from segdcn.data.errors import DatasetLayoutError, LabelValueError, UnreadableFileError
from segdcn.data.labels import LabelSet, cityscapes_labels
from segdcn.data.voc import SegmentationFiles, Transforms

IMAGE_SUFFIX = "_leftImg8bit.png"
POLYGON_SUFFIX = "_gtFine_polygons.json"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
CITYSCAPES_PREPARE = "python scripts/prepare_cityscapes.py --root ROOT"
CITYSCAPES_LAYOUT = (
    "  ROOT/leftImg8bit/{split}/<city>/<city>_<seq>_<frame>_leftImg8bit.png\n"
    "  ROOT/gtFine/{split}/<city>/<city>_<seq>_<frame>_gtFine_polygons.json\n"
    "  ROOT/gtFine/{split}/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png   (written by the prepare command)\n"
    "(leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from cityscapes-dataset.com, extracted in ROOT)"
)


def _layout_error(what: str, split: str) -> DatasetLayoutError:
    return DatasetLayoutError(
        f"{what}\nexpected the Cityscapes layout:\n{CITYSCAPES_LAYOUT.format(split=split)}\n"
        f"prepare it with: {CITYSCAPES_PREPARE}"
    )


class Cityscapes(SegmentationFiles):
    """One split (train, val, test) of Cityscapes' fine annotations, labels in trainIds."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        label_set: LabelSet | None = None,
        transforms: Transforms | None = None,
        check_labels: bool = True,
        verify_files: bool = True,
    ):
        self.root = Path(root)
        self.split = split
        if not self.root.is_dir():
            raise _layout_error(f"dataset root {self.root} does not exist", split)
        image_dir = self.root / "leftImg8bit" / split
        label_dir = self.root / "gtFine" / split
        for folder in (image_dir, label_dir):
            if not folder.is_dir():
                raise _layout_error(f"folder {folder} does not exist", split)
        images = sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}"))
        if not images:
            raise _layout_error(f"no *{IMAGE_SUFFIX} images in {image_dir}/<city>/", split)
        labels = [
            label_dir / path.parent.name / (path.name[: -len(IMAGE_SUFFIX)] + TRAIN_IDS_SUFFIX) for path in images
        ]
        super().__init__(images, labels, label_set or cityscapes_labels(), transforms, check_labels)
        if verify_files:
            absent = [path for path in labels if not path.is_file()]
            if absent:
                raise _layout_error(
                    f"{len(absent)} of {len(labels)} trainId label images are missing, e.g. {absent[0]}", split
                )


def polygon_files(root: str | Path, splits: list[str] | None = None) -> list[Path]:
    gt_fine = Path(root) / "gtFine"
    if not Path(root).is_dir() or not gt_fine.is_dir():
        raise _layout_error(f"folder {gt_fine} does not exist", "<split>")
    found = []
    for split_dir in sorted(p for p in gt_fine.iterdir() if p.is_dir()):
        if splits is None or split_dir.name in splits:
            found += sorted(split_dir.glob(f"*/*{POLYGON_SUFFIX}"))
    if not found:
        raise _layout_error(f"no *{POLYGON_SUFFIX} files in {gt_fine}/<split>/<city>/", "<split>")
    return found


def check_polygon_labels(path: Path) -> None:
    """Checks that every polygon's label is in cityscapesscripts' table (json2labelImg would
    otherwise exit the process) and that the file has the annotation keys."""
    from cityscapesscripts.helpers.labels import name2label

    try:
        annotation = json.loads(path.read_text())
        objects = annotation["objects"]
        annotation["imgHeight"], annotation["imgWidth"]  # noqa: B018 - presence check
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UnreadableFileError(
            f"{path} is not a Cityscapes polygon file ({error!r}); expected JSON with imgHeight, imgWidth and "
            'objects: [{"label": ..., "polygon": [[x, y], ...]}, ...]'
        ) from error
    unknown = set()
    for obj in objects:
        label = obj.get("label", "")
        if label not in name2label and not (label.endswith("group") and label[: -len("group")] in name2label):
            unknown.add(label)
    if unknown:
        raise LabelValueError(f"{path} has labels {sorted(unknown)} that cityscapesscripts does not know")


@dataclass(frozen=True)
class TrainIdJob:
    polygons: Path
    force: bool = False

    @property
    def target(self) -> Path:
        return self.polygons.with_name(self.polygons.name[: -len(POLYGON_SUFFIX)] + TRAIN_IDS_SUFFIX)

    def run(self) -> str:
        from cityscapesscripts.preparation.json2labelImg import json2labelImg

        target = self.target
        if not self.force and target.is_file() and target.stat().st_mtime >= self.polygons.stat().st_mtime:
            return "up to date"
        check_polygon_labels(self.polygons)
        tmp = target.with_name(target.name + ".tmp.png")
        json2labelImg(str(self.polygons), str(tmp), "trainIds")
        tmp.replace(target)
        return "written"


def run_train_id_job(job: TrainIdJob) -> str:
    return job.run()
