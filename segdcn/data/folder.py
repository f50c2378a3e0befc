"""A dataset of one's own: a folder of images and index masks (dataset=folder dataset.root=R).

    R/images/<stem>.jpg|.jpeg|.png     RGB images
    R/masks/<stem>.png                 index masks: value = class, 255 = ignore (palette or grey PNG)
    R/classes.txt | R/classes.yaml     the class names in label order (segdcn.data.classes)
    R/splits/train.txt, val.txt        optional: the stems of each split, one per line

Every image needs a mask of the same stem and size, and every mask an image. Without split lists, the
reader splits the stems itself, by dataset.val_fraction and dataset.split_seed, and writes the lists to
R/splits/ (with split.json recording how) so that every later run, evaluation and process uses the
same split. The split of a stem depends only on the seed and the stem (a hash), never on the machine,
the file system's listing order or the training seed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from segdcn.atomic import replace_atomically
from segdcn.config import DatasetConfig
from segdcn.data.classes import folder_labels
from segdcn.data.errors import DatasetConfigError, DatasetLayoutError, UnpairedFilesError
from segdcn.data.labels import LabelSet
from segdcn.data.voc import SegmentationFiles, Transforms, read_split

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MASK_SUFFIXES = (".png",)  # lossless only: JPEG would blur the class values at every border
SPLITS_DIR = "splits"
SPLIT_RECORD = "split.json"  # written with the lists segdcn made; absent, the lists are the user's
AUTO_LISTS = ("train", "val")
FOLDER_PREPARE = "python scripts/prepare_folder.py --root ROOT --palette-from-masks   (colour masks -> index masks)"
FOLDER_LAYOUT = (
    "  ROOT/images/<stem>.jpg|.jpeg|.png\n"
    "  ROOT/masks/<stem>.png          (index PNG: value = class, 255 = ignore)\n"
    "  ROOT/classes.txt               (one class name per line, in label order) or ROOT/classes.yaml\n"
    "  ROOT/splits/{train,val}.txt    (optional: stems; without them a split is written there)"
)


def layout_error(what: str, error: type[DatasetLayoutError] = DatasetLayoutError) -> DatasetLayoutError:
    return error(f"{what}\nexpected the folder layout:\n{FOLDER_LAYOUT}\nprepare colour masks with: {FOLDER_PREPARE}")


@dataclass
class FolderContents:
    """The image and mask of each stem, and what does not pair up, as (kind, message) pairs."""

    images: dict[str, Path] = field(default_factory=dict)
    masks: dict[str, Path] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def stems(self) -> list[str]:
        return sorted(self.images.keys() & self.masks.keys())


def _files(folder: Path, suffixes: tuple[str, ...], what: str, contents: FolderContents) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):  # .DS_Store, editors' swap files
            continue
        if not path.is_file() or path.suffix.lower() not in suffixes:
            kind = "folder" if path.is_dir() else f"extension {path.suffix or '(none)'}"
            contents.problems.append(
                (f"unknown {what} file", f"{path}: {kind}; {what}s are {' '.join(suffixes)} files")
            )
            continue
        if path.stem in found:
            contents.problems.append((f"two {what}s of one stem", f"{found[path.stem]} and {path}"))
            continue
        found[path.stem] = path
    return found


def scan_folder(root: Path) -> FolderContents:
    """Lists R/images and R/masks and pairs them by stem."""
    contents = FolderContents()
    for name in ("images", "masks"):
        if not (root / name).is_dir():
            raise layout_error(f"folder {root / name} does not exist (dataset root {root})")
    contents.images = _files(root / "images", IMAGE_SUFFIXES, "image", contents)
    contents.masks = _files(root / "masks", MASK_SUFFIXES, "mask", contents)
    for stem in sorted(contents.images.keys() - contents.masks.keys()):
        contents.problems.append(("image without mask", f"{contents.images[stem]}: no {root / 'masks'}/{stem}.png"))
    for stem in sorted(contents.masks.keys() - contents.images.keys()):
        contents.problems.append(
            ("mask without image", f"{contents.masks[stem]}: no image {root / 'images' / stem}.jpg|.jpeg|.png")
        )
    return contents


# ---- the split ----


def split_rank(stem: str, seed: int) -> str:
    """A stem's place in the seeded order: a hash, so the split of a stem never depends on the others."""
    return hashlib.sha256(f"{seed}/{stem}".encode()).hexdigest()


def make_split(stems: list[str], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """{"train": [...], "val": [...]}: round(val_fraction * n) stems (at least one, and one left for
    training) go to val, those first in the seeded order; both lists sorted."""
    if len(stems) < 2:
        raise DatasetConfigError(
            f"dataset.val_fraction: {len(stems)} image(s) cannot be split into train and val; "
            "add images, or give splits/train.txt and splits/val.txt yourself"
        )
    count = min(len(stems) - 1, max(1, round(val_fraction * len(stems))))
    ordered = sorted(stems, key=lambda stem: split_rank(stem, seed))
    val = set(ordered[:count])
    return {"train": sorted(set(stems) - val), "val": sorted(val)}


def _write_text(path: Path, text: str) -> None:
    replace_atomically(path, lambda handle: handle.write(text.encode("utf-8")))


def write_split(split_dir: Path, split: dict[str, list[str]], val_fraction: float, seed: int) -> None:
    """The lists first and the record last, each replaced atomically: processes that start together (DDP
    ranks, sweep jobs) compute the same split, so whichever writes last writes the same bytes."""
    split_dir.mkdir(parents=True, exist_ok=True)
    for name in AUTO_LISTS:
        _write_text(split_dir / f"{name}.txt", "".join(f"{stem}\n" for stem in split[name]))
    record = {"val_fraction": val_fraction, "split_seed": seed, **{name: len(split[name]) for name in AUTO_LISTS}}
    _write_text(split_dir / SPLIT_RECORD, json.dumps(record, indent=2) + "\n")


def split_stems(root: Path, list_name: str, stems: list[str], val_fraction: float, seed: int) -> list[str]:
    """The stems of split list `list_name`: R/splits/<list_name>.txt when it is the user's, else the split
    that segdcn wrote (or writes now) by val_fraction and seed. Only train and val are ever written."""
    split_dir = root / SPLITS_DIR
    own_list = split_dir / f"{list_name}.txt"
    record_path = split_dir / SPLIT_RECORD
    if list_name not in AUTO_LISTS or (not record_path.is_file() and any_list(split_dir)):
        if list_name in AUTO_LISTS and not is_default_split(val_fraction, seed):
            # the user's lists leave the split keys nothing to act on, so they are refused
            raise DatasetConfigError(
                f"dataset.val_fraction={val_fraction} and dataset.split_seed={seed} make a split only when "
                f"{split_dir} has no train.txt and val.txt, and it holds your lists: leave both keys at their "
                "defaults, or remove the lists"
            )
        if not own_list.is_file():
            raise layout_error(f"split list {own_list} does not exist (dataset.splits names {list_name!r})")
        return read_split(own_list)
    if not record_path.is_file():
        write_split(split_dir, make_split(stems, val_fraction, seed), val_fraction, seed)
    record = json.loads(record_path.read_text())
    if (record.get("val_fraction"), record.get("split_seed")) != (val_fraction, seed):
        raise DatasetConfigError(
            f"dataset.val_fraction={val_fraction} and dataset.split_seed={seed}, but {split_dir} holds the split "
            f"written with val_fraction={record.get('val_fraction')} and split_seed={record.get('split_seed')}; "
            f"use those values, or delete {split_dir} to write a new split (runs on the old one then differ)"
        )
    if not all((split_dir / f"{name}.txt").is_file() for name in AUTO_LISTS):
        raise layout_error(f"{split_dir} has {SPLIT_RECORD} but lacks train.txt or val.txt: delete it to split again")
    listed = {name: read_split(split_dir / f"{name}.txt") for name in AUTO_LISTS}
    unlisted = sorted(set(stems) - set(listed["train"]) - set(listed["val"]))
    if unlisted:
        raise DatasetLayoutError(
            f"{len(unlisted)} image(s) came after {split_dir} was written and are in no split, e.g. {unlisted[0]}; "
            f"delete {split_dir} to split all images again (runs on the old split are then not comparable)"
        )
    return listed[list_name]


def any_list(split_dir: Path) -> bool:
    return any((split_dir / f"{name}.txt").is_file() for name in AUTO_LISTS)


def is_default_split(val_fraction: float, seed: int) -> bool:
    defaults = (DatasetConfig.default_of("val_fraction"), DatasetConfig.default_of("split_seed"))
    return (val_fraction, seed) == defaults


class FolderDataset(SegmentationFiles):
    """One split of a folder dataset (see the module docstring)."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        label_set: LabelSet | None = None,
        transforms: Transforms | None = None,
        check_labels: bool = True,
        verify_files: bool = True,
        reduce_zero_label: bool = False,
        val_fraction: float | None = None,
        split_seed: int | None = None,
    ):
        """val_fraction, split_seed: the split's, when the reader writes one (default: the schema's)."""
        self.root = Path(root).expanduser()
        self.split = split
        if not self.root.is_dir():
            raise layout_error(f"dataset root {self.root} does not exist")
        labels = label_set or folder_labels(self.root)
        contents = scan_folder(self.root)
        if contents.problems and verify_files:
            shown = "\n".join(f"  {kind}: {message}" for kind, message in contents.problems[:10])
            more = f"\n  ... and {len(contents.problems) - 10} more" if len(contents.problems) > 10 else ""
            raise layout_error(
                f"{len(contents.problems)} file(s) in {self.root} do not pair up:\n{shown}{more}", UnpairedFilesError
            )
        val_fraction = DatasetConfig.default_of("val_fraction") if val_fraction is None else val_fraction
        split_seed = DatasetConfig.default_of("split_seed") if split_seed is None else split_seed
        self.ids = split_stems(self.root, split, contents.stems, val_fraction, split_seed)
        missing = [stem for stem in self.ids if stem not in contents.images or stem not in contents.masks]
        if missing:
            raise layout_error(
                f"{len(missing)} stem(s) of {self.root / SPLITS_DIR / split}.txt have no image and mask pair, "
                f"e.g. {missing[0]}"
            )
        super().__init__(
            [contents.images[stem] for stem in self.ids],
            [contents.masks[stem] for stem in self.ids],
            labels,
            transforms,
            check_labels,
            reduce_zero_label,
        )
        self.layout_problems = contents.problems
