"""ADE20K SceneParsing (the ADEChallengeData2016 release, 150 classes): the reader and the release's checks.

    ROOT/ADEChallengeData2016/images/{training,validation}/ADE_{train,val}_<8 digits>.jpg
    ROOT/ADEChallengeData2016/annotations/{training,validation}/ADE_{train,val}_<8 digits>.png
    ROOT/ADEChallengeData2016/objectInfo150.csv        (Idx,Ratio,Train,Val,Name)

Annotations are 8-bit grey PNGs: 0 is "other" (unlabelled), 1..150 the classes of objectInfo150.csv.
segdcn reads them with reduce_zero_label (0 -> ignore, k -> k - 1), as mmsegmentation does, so the
model predicts 150 classes and mIoU is over those 150. The release has 20,210 training and 2,000
validation images; scripts/prepare_ade20k.py downloads and unpacks it and checks those counts.
"""

from __future__ import annotations

import re
from pathlib import Path

from segdcn.data.classes import ADE20K_BASE, ade20k_labels
from segdcn.data.errors import DatasetLayoutError
from segdcn.data.labels import LabelSet
from segdcn.data.voc import SegmentationFiles, Transforms

# The official release and its SHA-1 (as published with gluoncv's and others' download scripts).
ADE20K_URL = "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip"
ADE20K_SHA1 = "219e1696abb36c8ba3a3afe7fb2f4b4606a897c7"
PUBLISHED = {"training": 20210, "validation": 2000}
FILE_NAME = re.compile(r"ADE_(train|val)_\d{8}$")
ADE20K_PREPARE = "python scripts/prepare_ade20k.py --root ROOT --download"
ADE20K_LAYOUT = (
    "  ROOT/ADEChallengeData2016/images/{split}/ADE_*_<8 digits>.jpg\n"
    "  ROOT/ADEChallengeData2016/annotations/{split}/ADE_*_<8 digits>.png   (0 = other, 1..150 = classes)\n"
    "  ROOT/ADEChallengeData2016/objectInfo150.csv\n"
    "(ADEChallengeData2016.zip, the SceneParsing release, unpacked in ROOT)"
)


def layout_error(what: str, split: str) -> DatasetLayoutError:
    return DatasetLayoutError(
        f"{what}\nexpected the ADE20K layout:\n{ADE20K_LAYOUT.format(split=split)}\nprepare it with: {ADE20K_PREPARE}"
    )


def split_files(root: str | Path, split: str) -> tuple[list[Path], list[Path]]:
    """The images of a split (training, validation) and the annotation each should have."""
    base = Path(root).expanduser() / ADE20K_BASE
    if not Path(root).expanduser().is_dir():
        raise layout_error(f"dataset root {root} does not exist", split)
    image_dir, annotation_dir = base / "images" / split, base / "annotations" / split
    for folder in (image_dir, annotation_dir):
        if not folder.is_dir():
            raise layout_error(f"folder {folder} does not exist", split)
    images = sorted(path for path in image_dir.glob("ADE_*.jpg") if FILE_NAME.match(path.stem))
    if not images:
        raise layout_error(f"no ADE_*_<8 digits>.jpg images in {image_dir}", split)
    return images, [annotation_dir / f"{path.stem}.png" for path in images]


class ADE20K(SegmentationFiles):
    """One split (training, validation) of ADEChallengeData2016, labels reduced to 0..149 (255 = ignore)."""

    def __init__(
        self,
        root: str | Path,
        split: str = "training",
        *,
        label_set: LabelSet | None = None,
        transforms: Transforms | None = None,
        check_labels: bool = True,
        verify_files: bool = True,
    ):
        self.root = Path(root).expanduser()
        self.split = split
        images, annotations = split_files(self.root, split)
        super().__init__(
            images, annotations, label_set or ade20k_labels(self.root), transforms, check_labels, reduce_zero_label=True
        )
        if verify_files:
            absent = [path for path in annotations if not path.is_file()]
            if absent:
                raise layout_error(f"{len(absent)} of {len(images)} images have no annotation, e.g. {absent[0]}", split)


def release_counts(root: str | Path) -> dict[str, dict[str, int]]:
    """Images and annotations per split of an unpacked release, for the prepare script's check."""
    base = Path(root).expanduser() / ADE20K_BASE
    counts = {}
    for split in PUBLISHED:
        counts[split] = {
            kind: sum(1 for path in (base / kind / split).glob(f"ADE_*.{suffix}") if FILE_NAME.match(path.stem))
            for kind, suffix in (("images", "jpg"), ("annotations", "png"))
        }
    return counts


def count_warnings(counts: dict[str, dict[str, int]]) -> list[str]:
    """Warnings when a split does not have the release's size."""
    return [
        f"{split}: {found['images']:,} images and {found['annotations']:,} annotations, not the release's "
        f"{PUBLISHED[split]:,}: the download or the unpacking is incomplete"
        for split, found in counts.items()
        if found["images"] != PUBLISHED[split] or found["annotations"] != PUBLISHED[split]
    ]
