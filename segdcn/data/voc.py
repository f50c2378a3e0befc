"""PASCAL VOC 2012 layout reader (also reads the synthetic set, which uses the same layout).

    ROOT/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    ROOT/VOCdevkit/VOC2012/<mask_dir>/<id>.png          palette PNG, index = class, 255 = ignore
    ROOT/VOCdevkit/VOC2012/ImageSets/Segmentation/<split>.txt   one <id> per line

ROOT is the folder torchvision's VOCSegmentation takes as `root`. For VOC + SBD the masks live in
SegmentationClassAug and the training list is trainaug.txt, both written by scripts/prepare_voc.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from segdcn.data.errors import DatasetLayoutError, UnreadableFileError
from segdcn.data.io import check_label_values, read_image, read_label, reduce_zero_label
from segdcn.data.labels import VOC, LabelSet

VOC_BASE = Path("VOCdevkit") / "VOC2012"
SPLITS_DIR = Path("ImageSets") / "Segmentation"
VOC_PREPARE = "python scripts/prepare_voc.py --voc-root ROOT --sbd-root SBD_ROOT [--download]"

Transforms = Callable[[np.ndarray, np.ndarray], tuple[torch.Tensor, torch.Tensor]]


def voc_layout(image_dir: str, mask_dir: str, split: str) -> str:
    return (
        f"  ROOT/VOCdevkit/VOC2012/{image_dir}/<id>.jpg\n"
        f"  ROOT/VOCdevkit/VOC2012/{mask_dir}/<id>.png   (palette PNG: index = class, 255 = ignore)\n"
        f"  ROOT/VOCdevkit/VOC2012/ImageSets/Segmentation/{split}.txt   (one <id> per line)"
    )


def read_split(path: Path) -> list[str]:
    """The ids of a split list: one per line, blank lines and surrounding spaces ignored."""
    with open(path) as lines:
        return [line.strip() for line in lines if line.strip()]


def to_tensors(image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Without transforms: uint8 [3, H, W] image and int64 [H, W] label."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), torch.from_numpy(label.astype(np.int64))


class SegmentationFiles(Dataset):
    """Pairs of image and label files: reads them, checks them, applies the transforms.

    `transforms(image, label)` takes uint8 arrays ([H, W, 3] RGB and [H, W] indices) and returns
    the tensors; without it, items are a uint8 [3, H, W] image and an int64 [H, W] label. With
    `reduce_zero_label` the files hold 0 for unlabelled pixels and k + 1 for class k (ADE20K's
    convention): 0 is read as ignore_index. `layout_problems` holds the (kind, message) pairs that a
    reader found in the dataset's files but did not raise (readers built with verify_files=False, for
    scripts/check_dataset.py to report).
    """

    def __init__(
        self,
        images: list[Path],
        labels: list[Path],
        label_set: LabelSet,
        transforms: Transforms | None = None,
        check_labels: bool = True,
        reduce_zero_label: bool = False,
    ):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} label files")
        self.images = images
        self.labels = labels
        self.label_set = label_set
        self.transforms = transforms
        self.check_labels = check_labels
        self.reduce_zero_label = reduce_zero_label
        self.layout_problems: list[tuple[str, str]] = []

    @property
    def num_classes(self) -> int:
        return self.label_set.num_classes

    @property
    def ignore_index(self) -> int:
        return self.label_set.ignore_index

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The image and label (class indices, 255 = ignore) of item `index`, as read and checked: same size,
        known label values."""
        image_path, label_path = self.images[index], self.labels[index]
        image = read_image(image_path)
        label = read_label(label_path)
        if image.shape[:2] != label.shape:
            raise UnreadableFileError(
                f"image {image_path} is {image.shape[1]}x{image.shape[0]} but its label {label_path} is "
                f"{label.shape[1]}x{label.shape[0]} (width x height); they must be the same size"
            )
        if self.check_labels:
            check_label_values(label, self.num_classes, label_path, self.ignore_index, self.reduce_zero_label)
        if self.reduce_zero_label:
            label = reduce_zero_label(label, self.ignore_index)
        return image, label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.load(index)
        if self.transforms is None:
            return to_tensors(image, label)
        return self.transforms(image, label)

    def missing_files(self) -> list[Path]:
        return [path for pair in zip(self.images, self.labels, strict=True) for path in pair if not path.is_file()]


class VOCSegmentation(SegmentationFiles):
    """A split of a dataset in the VOC 2012 layout (see the module docstring)."""

    def __init__(
        self,
        root: str | Path,
        split: str = "trainaug",
        *,
        image_dir: str = "JPEGImages",
        mask_dir: str = "SegmentationClassAug",
        label_set: LabelSet = VOC,
        transforms: Transforms | None = None,
        check_labels: bool = True,
        verify_files: bool = True,
        prepare_command: str = VOC_PREPARE,
    ):
        self.root = Path(root)
        self.split = split
        base = self.root / VOC_BASE
        layout = voc_layout(image_dir, mask_dir, split)

        def missing(what: str) -> DatasetLayoutError:
            return DatasetLayoutError(
                f"{what}\nexpected the VOC 2012 layout:\n{layout}\nprepare it with: {prepare_command}"
            )

        if not self.root.is_dir():
            raise missing(f"dataset root {self.root} does not exist")
        if not base.is_dir():
            raise missing(f"{base} does not exist (dataset root {self.root})")
        split_file = base / SPLITS_DIR / f"{split}.txt"
        if not split_file.is_file():
            raise missing(f"split list {split_file} does not exist")
        for folder in (image_dir, mask_dir):
            if not (base / folder).is_dir():
                raise missing(f"folder {base / folder} does not exist")
        self.ids = read_split(split_file)
        if not self.ids:
            raise missing(f"split list {split_file} is empty")
        super().__init__(
            [base / image_dir / f"{id_}.jpg" for id_ in self.ids],
            [base / mask_dir / f"{id_}.png" for id_ in self.ids],
            label_set,
            transforms,
            check_labels,
        )
        if verify_files:
            absent = self.missing_files()
            if absent:
                shown = "\n".join(f"  {path}" for path in absent[:5])
                more = f"\n  ... and {len(absent) - 5} more" if len(absent) > 5 else ""
                raise missing(f"{len(absent)} files listed in {split_file} are missing:\n{shown}{more}")
