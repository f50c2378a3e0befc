"""VOC 2012 + SBD ("trainaug"): SBD's class masks as PNGs beside VOC's, and the training list.

SBD (Hariharan et al. 2011) annotates 11,355 VOC 2011 images; its `cls/<id>.mat` files hold a
MATLAB struct GTcls with fields Segmentation (uint8 HxW class indices), Boundaries and
CategoriesPresent. The paper's training set is

    trainaug = (VOC train + SBD train + SBD val) - VOC val        10,582 images; val 1,449

since SBD's own splits overlap VOC 2012 val. Masks go to VOC2012/SegmentationClassAug/<id>.png
for every trainaug and val id: VOC's own annotation where it exists (finer, with 255 on object
borders), SBD's otherwise. VOC 2012's JPEGImages already holds every SBD image; any that is missing
is copied from SBD's img/.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.io import loadmat

from segdcn.data.errors import DatasetLayoutError, UnreadableFileError
from segdcn.data.io import write_label
from segdcn.data.labels import VOC, flat_palette
from segdcn.data.voc import SPLITS_DIR, VOC_BASE, read_split

# Sizes of the published lists, and of the sets built from them.
PUBLISHED = {"voc_train": 1464, "voc_val": 1449, "sbd_train": 8498, "sbd_val": 2857, "trainaug": 10582, "val": 1449}

SBD_LAYOUT = (
    "  SBD_ROOT/img/<id>.jpg\n"
    "  SBD_ROOT/cls/<id>.mat   (MATLAB struct GTcls: Segmentation, Boundaries, CategoriesPresent)\n"
    "  SBD_ROOT/train.txt, SBD_ROOT/val.txt\n"
    "(SBD_ROOT is benchmark_RELEASE/dataset of SBD's benchmark.tgz; --download fetches it)"
)
VOC_LAYOUT = (
    "  VOC_ROOT/VOCdevkit/VOC2012/JPEGImages/<id>.jpg\n"
    "  VOC_ROOT/VOCdevkit/VOC2012/SegmentationClass/<id>.png\n"
    "  VOC_ROOT/VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt, val.txt\n"
    "(VOC_ROOT is where VOCtrainval_11-May-2012.tar was extracted; --download fetches it)"
)


def trainaug_ids(voc_train: list[str], voc_val: list[str], sbd_train: list[str], sbd_val: list[str]) -> list[str]:
    """(VOC train + SBD train + SBD val) - VOC val, sorted."""
    return sorted((set(voc_train) | set(sbd_train) | set(sbd_val)) - set(voc_val))


def read_sbd_segmentation(path: str | Path) -> np.ndarray:
    """GTcls.Segmentation of an SBD cls/*.mat file: uint8 [H, W] class indices."""
    try:
        mat = loadmat(path, variable_names=["GTcls"])
    except (OSError, ValueError, TypeError) as error:
        raise UnreadableFileError(f"cannot read SBD annotation {path}: {error}") from error
    try:
        segmentation = mat["GTcls"]["Segmentation"][0, 0]
    except (KeyError, ValueError, IndexError) as error:
        raise UnreadableFileError(
            f"{path} has no struct GTcls with a field Segmentation (found variables {sorted(mat)}); "
            "expected an SBD cls/*.mat file"
        ) from error
    segmentation = np.asarray(segmentation)
    if segmentation.ndim != 2:
        raise UnreadableFileError(f"{path}: GTcls.Segmentation has shape {segmentation.shape}; expected H x W")
    return segmentation.astype(np.uint8)


@dataclass(frozen=True)
class MaskJob:
    """Write one SegmentationClassAug PNG from a VOC PNG (copied) or an SBD .mat (converted)."""

    source: Path
    target: Path
    force: bool = False

    def run(self) -> str:
        if not self.force and self.target.is_file() and self.target.stat().st_mtime >= self.source.stat().st_mtime:
            return "up to date"
        if self.source.suffix == ".mat":
            write_label(self.target, read_sbd_segmentation(self.source), flat_palette(VOC.colors))
            return "from SBD"
        tmp = self.target.with_name(self.target.name + ".tmp.png")
        shutil.copyfile(self.source, tmp)
        tmp.replace(self.target)
        return "from VOC"


def run_mask_job(job: MaskJob) -> str:
    return job.run()


@dataclass
class TrainAugPlan:
    voc_base: Path
    sbd_root: Path
    lists: dict[str, list[str]]
    trainaug: list[str]
    val: list[str]
    jobs: list[MaskJob] = field(default_factory=list)
    image_copies: list[tuple[Path, Path]] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {
            **{name: len(ids) for name, ids in self.lists.items()},
            "trainaug": len(self.trainaug),
            "val": len(self.val),
        }


def _require(path: Path, what: str, layout: str, is_dir: bool = False) -> None:
    if not (path.is_dir() if is_dir else path.is_file()):
        raise DatasetLayoutError(
            f"{what} {path} does not exist\nexpected:\n{layout}\n"
            "prepare it with: python scripts/prepare_voc.py --voc-root VOC_ROOT --sbd-root SBD_ROOT --download"
        )


def plan_trainaug(voc_root: str | Path, sbd_root: str | Path, force: bool = False) -> TrainAugPlan:
    """Reads the four split lists and lists the mask and image files to write."""
    voc_base = Path(voc_root) / VOC_BASE
    sbd_root = Path(sbd_root)
    _require(Path(voc_root), "VOC root", VOC_LAYOUT, is_dir=True)
    _require(voc_base, "VOC 2012 folder", VOC_LAYOUT, is_dir=True)
    _require(sbd_root, "SBD root", SBD_LAYOUT, is_dir=True)
    lists = {}
    for name, path, layout in (
        ("voc_train", voc_base / SPLITS_DIR / "train.txt", VOC_LAYOUT),
        ("voc_val", voc_base / SPLITS_DIR / "val.txt", VOC_LAYOUT),
        ("sbd_train", sbd_root / "train.txt", SBD_LAYOUT),
        ("sbd_val", sbd_root / "val.txt", SBD_LAYOUT),
    ):
        _require(path, "split list", layout)
        lists[name] = read_split(path)
    for folder, layout in ((voc_base / "JPEGImages", VOC_LAYOUT), (voc_base / "SegmentationClass", VOC_LAYOUT)):
        _require(folder, "folder", layout, is_dir=True)
    _require(sbd_root / "cls", "folder", SBD_LAYOUT, is_dir=True)

    trainaug = trainaug_ids(lists["voc_train"], lists["voc_val"], lists["sbd_train"], lists["sbd_val"])
    val = sorted(set(lists["voc_val"]))
    plan = TrainAugPlan(voc_base, sbd_root, lists, trainaug, val)
    out_dir = voc_base / "SegmentationClassAug"
    missing = []
    for id_ in sorted(set(trainaug) | set(val)):
        voc_png = voc_base / "SegmentationClass" / f"{id_}.png"
        sbd_mat = sbd_root / "cls" / f"{id_}.mat"
        source = voc_png if voc_png.is_file() else sbd_mat if sbd_mat.is_file() else None
        if source is None:
            missing.append(id_)
            continue
        plan.jobs.append(MaskJob(source, out_dir / f"{id_}.png", force))
        image = voc_base / "JPEGImages" / f"{id_}.jpg"
        if not image.is_file():
            sbd_image = sbd_root / "img" / f"{id_}.jpg"
            if not sbd_image.is_file():
                raise DatasetLayoutError(f"image {id_}.jpg is in neither {image.parent} nor {sbd_image.parent}")
            plan.image_copies.append((sbd_image, image))
    if missing:
        shown = ", ".join(missing[:5]) + (f" ... ({len(missing)} in all)" if len(missing) > 5 else "")
        raise DatasetLayoutError(
            f"no annotation for {len(missing)} listed images ({shown}): each needs "
            f"{voc_base / 'SegmentationClass'}/<id>.png or {sbd_root / 'cls'}/<id>.mat"
        )
    return plan


def write_trainaug_list(plan: TrainAugPlan) -> Path:
    """Writes ImageSets/Segmentation/trainaug.txt (sorted ids; rewriting gives the same file)."""
    path = plan.voc_base / SPLITS_DIR / "trainaug.txt"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{id_}\n" for id_ in plan.trainaug))
    tmp.replace(path)
    return path


def count_warnings(counts: dict[str, int]) -> list[str]:
    """Warnings when the sets do not have the published sizes, saying whether the inputs do."""
    if counts["trainaug"] == PUBLISHED["trainaug"] and counts["val"] == PUBLISHED["val"]:
        return []
    full_inputs = all(counts[name] == PUBLISHED[name] for name in ("voc_train", "voc_val", "sbd_train", "sbd_val"))
    got = f"trainaug has {counts['trainaug']:,} images and val {counts['val']:,}, not the published 10,582 / 1,449"
    if full_inputs:
        return [f"{got}, although the four input lists have their published sizes: the lists are not the official ones"]
    inputs = ", ".join(
        f"{name} {counts[name]:,} (published {PUBLISHED[name]:,})"
        for name in ("voc_train", "voc_val", "sbd_train", "sbd_val")
    )
    return [f"{got}: the inputs are not the full VOC 2012 + SBD lists: {inputs}"]
