"""Tiny datasets written in exactly the published formats, for the data tests.

- VOC 2012: VOCdevkit/VOC2012/{JPEGImages/*.jpg, SegmentationClass/*.png (palette PNG, 255 on
  object borders), ImageSets/Segmentation/{train,val,trainval}.txt}.
- SBD: {img/*.jpg, cls/*.mat, train.txt, val.txt}; each .mat holds the MATLAB struct GTcls with
  Segmentation (uint8 HxW), Boundaries (20x1 cell of sparse HxW) and CategoriesPresent, written by
  scipy.io.savemat as SBD's MATLAB files are laid out.
- Cityscapes: leftImg8bit/<split>/<city>/*_leftImg8bit.png and gtFine/<split>/<city>/*_gtFine_polygons.json
  ({"imgHeight", "imgWidth", "objects": [{"label", "polygon"}]}).
- A folder dataset (docs/own_data.md): images/ (.jpg, .jpeg and .png), masks/ (palette and grey index PNGs,
  255 on object borders), classes.txt; colour (RGB) masks of the same labels for the converter.
- ADE20K (ADEChallengeData2016): images/{training,validation}/ADE_*_<8 digits>.jpg, 8-bit grey annotation
  PNGs with 0 (other) and values up to 150, and objectInfo150.csv (Idx,Ratio,Train,Val,Name).

Every image is painted with one flat colour per class (FIXTURE_COLORS), so its label can be
recomputed from its pixels: the tests check alignment after augmentation with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image

from segdcn.data.labels import VOC, flat_palette

# Well-separated colours, so a JPEG's pixels still tell their class: index = class.
FIXTURE_COLORS = np.array(
    [(20, 20, 20), (230, 40, 40), (40, 200, 40), (40, 60, 230), (230, 220, 40), (220, 40, 220), (40, 220, 220)],
    dtype=np.uint8,
)


def classes_from_colors(image: np.ndarray, colors: np.ndarray = FIXTURE_COLORS) -> np.ndarray:
    """Each pixel's nearest fixture colour: the label that the image was painted from."""
    distance = ((image[..., None, :].astype(np.int32) - colors[None, None].astype(np.int32)) ** 2).sum(-1)
    return distance.argmin(-1).astype(np.uint8)


def painted_label(rng: np.random.Generator, height: int, width: int, classes: list[int]) -> np.ndarray:
    """Background with 1-3 axis-aligned boxes of the given classes, each at least 6x6 px."""
    label = np.zeros((height, width), np.uint8)
    for cls in rng.choice(classes, size=int(rng.integers(1, 4))):
        h, w = int(rng.integers(6, height // 2 + 1)), int(rng.integers(6, width // 2 + 1))
        y, x = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
        label[y : y + h, x : x + w] = cls
    return label


def paint(label: np.ndarray) -> np.ndarray:
    return FIXTURE_COLORS[label]


def write_jpeg(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=95)


def write_palette_png(path: Path, label: np.ndarray) -> None:
    """Class indices as a palette PNG with VOC's 256 colours (without a full palette, Pillow may
    renumber the indices when it saves)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.frombytes("P", (label.shape[1], label.shape[0]), np.ascontiguousarray(label).tobytes())
    image.putpalette(flat_palette(VOC.colors))
    image.save(path)


def with_void_borders(label: np.ndarray) -> np.ndarray:
    """VOC's annotation style: 255 on the one-pixel outline of each object."""
    padded = np.pad(label, 1, mode="edge")
    edge = np.zeros(label.shape, bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        edge |= padded[dy : dy + label.shape[0], dx : dx + label.shape[1]] != label
    out = label.copy()
    out[edge & (label != 0)] = 255
    return out


def write_sbd_mat(path: Path, segmentation: np.ndarray) -> None:
    """An SBD cls/*.mat: struct GTcls {Segmentation, Boundaries (20x1 cell, sparse), CategoriesPresent}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    boundaries = np.empty((20, 1), dtype=object)
    for cls in range(1, 21):
        region = segmentation == cls
        edge = region & ~_eroded(region)  # the object's outline, as SBD's Boundaries
        boundaries[cls - 1, 0] = scipy.sparse.csc_matrix(edge.astype(np.uint8))
    present = np.array([c for c in np.unique(segmentation) if 0 < c < 255], dtype=np.uint8).reshape(-1, 1)
    gtcls = {"Segmentation": segmentation.astype(np.uint8), "Boundaries": boundaries, "CategoriesPresent": present}
    scipy.io.savemat(path, {"GTcls": gtcls})


def _eroded(region: np.ndarray) -> np.ndarray:
    padded = np.pad(region, 1)
    out = region.copy()
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        out &= padded[dy : dy + region.shape[0], dx : dx + region.shape[1]]
    return out


@dataclass
class VocSbdFixture:
    voc_root: Path
    sbd_root: Path
    voc_train: list[str]
    voc_val: list[str]
    sbd_train: list[str]
    sbd_val: list[str]
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # the painted label of every id
    only_in_sbd_images: list[str] = field(default_factory=list)  # ids whose JPEG is only in SBD's img/

    @property
    def expected_trainaug(self) -> set[str]:
        return (set(self.voc_train) | set(self.sbd_train) | set(self.sbd_val)) - set(self.voc_val)


def write_voc_sbd(tmp: Path, seed: int = 0) -> VocSbdFixture:
    """VOC 2012 and SBD with overlapping splits, as in the real data: SBD's lists hold some VOC
    val images (which trainaug must drop) and VOC train images (which it must not count twice)."""
    rng = np.random.default_rng(seed)
    ids = [f"2008_{n:06d}" for n in range(1, 13)]
    a, b, c, d, e, f, g, h, i, j, k, m = ids
    fixture = VocSbdFixture(
        voc_root=tmp / "voc",
        sbd_root=tmp / "sbd",
        voc_train=[a, b, c, d],
        voc_val=[e, f, g],
        sbd_train=[b, e, h, i, k],
        sbd_val=[c, f, j, m],
        only_in_sbd_images=[m],
    )
    base = fixture.voc_root / "VOCdevkit" / "VOC2012"
    voc_annotated = set(fixture.voc_train) | set(fixture.voc_val)
    sbd_annotated = set(fixture.sbd_train) | set(fixture.sbd_val)
    for id_ in ids:
        height, width = int(rng.integers(28, 44)), int(rng.integers(30, 52))
        label = painted_label(rng, height, width, [1, 2, 3, 4, 5, 6])
        fixture.labels[id_] = label
        if id_ not in fixture.only_in_sbd_images:
            write_jpeg(base / "JPEGImages" / f"{id_}.jpg", paint(label))
        if id_ in voc_annotated:
            write_palette_png(base / "SegmentationClass" / f"{id_}.png", with_void_borders(label))
        if id_ in sbd_annotated:
            write_jpeg(fixture.sbd_root / "img" / f"{id_}.jpg", paint(label))
            write_sbd_mat(fixture.sbd_root / "cls" / f"{id_}.mat", label)
    splits = base / "ImageSets" / "Segmentation"
    splits.mkdir(parents=True, exist_ok=True)
    (splits / "train.txt").write_text("".join(f"{x}\n" for x in fixture.voc_train))
    (splits / "val.txt").write_text("".join(f"{x}\n" for x in fixture.voc_val))
    (splits / "trainval.txt").write_text("".join(f"{x}\n" for x in fixture.voc_train + fixture.voc_val))
    (fixture.sbd_root / "train.txt").write_text("".join(f"{x}\n" for x in fixture.sbd_train))
    (fixture.sbd_root / "val.txt").write_text("".join(f"{x}\n" for x in fixture.sbd_val))
    return fixture


# Cityscapes: rectangles of these labels, so the test knows which label covers which pixels.
CITYSCAPES_BOXES = [
    # (label, x0, y0, x1, y1) on a 64x32 image; later objects are drawn over earlier ones
    ("sky", 0, 0, 63, 9),
    ("road", 0, 20, 63, 31),
    ("building", 2, 10, 15, 19),
    ("car", 20, 12, 31, 24),
    ("cargroup", 36, 12, 45, 24),  # "group" labels fall back to their class
    ("license plate", 24, 20, 27, 22),  # id -1: json2labelImg does not draw it
    ("ego vehicle", 50, 26, 63, 31),  # trainId 255
    ("person", 50, 8, 55, 20),
]


@dataclass
class CityscapesFixture:
    root: Path
    frames: dict[str, list[str]]  # split -> file prefixes (<city>_<seq>_<frame>)
    width: int = 64
    height: int = 32


def write_cityscapes(tmp: Path) -> CityscapesFixture:
    root = tmp / "cityscapes"
    frames = {"train": ["aachen_000000_000019", "aachen_000001_000019"], "val": ["frankfurt_000000_000294"]}
    fixture = CityscapesFixture(root, frames)
    for split, prefixes in frames.items():
        for number, prefix in enumerate(prefixes):
            city = prefix.split("_")[0]
            image = np.full((fixture.height, fixture.width, 3), 90, np.uint8)
            image[:, :, number % 3] = 160
            path = root / "leftImg8bit" / split / city / f"{prefix}_leftImg8bit.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)
            objects = [
                {"label": label, "polygon": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]}
                for label, x0, y0, x1, y1 in CITYSCAPES_BOXES
            ]
            annotation = {"imgHeight": fixture.height, "imgWidth": fixture.width, "objects": objects}
            json_path = root / "gtFine" / split / city / f"{prefix}_gtFine_polygons.json"
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(annotation))
    return fixture


# ---- a folder dataset ----

FOLDER_CLASSES = ("background", "road", "car", "person")
# Colour masks as a labelling tool exports them: one colour per class (index = class), and a void colour.
MASK_COLORS = np.array([(0, 0, 0), (128, 64, 128), (0, 0, 142), (220, 20, 60)], dtype=np.uint8)
VOID_COLOR = (224, 224, 192)


@dataclass
class FolderFixture:
    root: Path
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # stem -> the index mask as written

    def write_color_masks(self, folder: Path) -> None:
        """The labels as RGB colour masks in MASK_COLORS, 255 in VOID_COLOR."""
        folder.mkdir(parents=True, exist_ok=True)
        for stem, label in self.labels.items():
            rgb = np.zeros((*label.shape, 3), np.uint8)
            rgb[label != 255] = MASK_COLORS[label[label != 255]]
            rgb[label == 255] = VOID_COLOR
            Image.fromarray(rgb, "RGB").save(folder / f"{stem}.png")


def write_folder(
    tmp: Path, count: int = 10, seed: int = 0, name: str = "own", void_borders: bool = True
) -> FolderFixture:
    """`count` images of 28-44 x 30-52 px as .jpg, .jpeg and .png, their masks as palette and grey PNGs
    (half of them with VOC-style 255 borders, unless not `void_borders`), and classes.txt."""
    rng = np.random.default_rng(seed)
    fixture = FolderFixture(tmp / name)
    for index in range(count):
        stem = f"scene_{index:03d}"
        height, width = int(rng.integers(28, 45)), int(rng.integers(30, 53))
        label = painted_label(rng, height, width, list(range(1, len(FOLDER_CLASSES))))
        suffix = (".jpg", ".jpeg", ".png")[index % 3]
        image_path = fixture.root / "images" / f"{stem}{suffix}"
        if suffix == ".png":
            image_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(paint(label)).save(image_path)
        else:
            write_jpeg(image_path, paint(label))
        mask = with_void_borders(label) if index % 2 and void_borders else label
        mask_path = fixture.root / "masks" / f"{stem}.png"
        if index % 4 < 2:
            write_palette_png(mask_path, mask)
        else:
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask, "L").save(mask_path)
        fixture.labels[stem] = mask
    (fixture.root / "classes.txt").write_text("".join(f"{name}\n" for name in FOLDER_CLASSES))
    return fixture


# ---- ADE20K ----

# The values an ADE20K fixture annotation holds: 0 (other) and classes up to the last one, 150.
ADE20K_VALUES = (1, 2, 13, 150)


def write_object_info(path: Path) -> list[str]:
    """objectInfo150.csv as the release has it (Idx,Ratio,Train,Val,Name; synonyms and the words of a name
    ';'-separated), from segdcn's table; returns the Name column."""
    import csv

    from segdcn.data.classes import ADE20K_TABLE

    rows = list(csv.DictReader(line for line in ADE20K_TABLE.read_text().splitlines() if not line.startswith("#")))
    names = [row["Name"].replace(" ", ";") for row in rows]
    lines = ["Idx,Ratio,Train,Val,Name"]
    lines += [f"{r['Idx']},{r['Ratio']},{r['Train']},{r['Val']},{name}" for r, name in zip(rows, names, strict=True)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return names


@dataclass
class Ade20kFixture:
    root: Path
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # stem -> annotation as written (0..150)


def write_ade20k(tmp: Path, training: int = 4, validation: int = 2, seed: int = 0) -> Ade20kFixture:
    """ROOT/ADEChallengeData2016 with a few images per split: JPEGs painted by class, 8-bit grey annotations."""
    rng = np.random.default_rng(seed)
    fixture = Ade20kFixture(tmp / "ade20k")
    base = fixture.root / "ADEChallengeData2016"
    paint_index = {0: 0, **{value: i + 1 for i, value in enumerate(ADE20K_VALUES)}}
    for split, prefix, count in (("training", "train", training), ("validation", "val", validation)):
        for number in range(1, count + 1):
            stem = f"ADE_{prefix}_{number:08d}"
            height, width = int(rng.integers(30, 45)), int(rng.integers(34, 53))
            label = painted_label(rng, height, width, list(ADE20K_VALUES))
            write_jpeg(base / "images" / split / f"{stem}.jpg", paint(np.vectorize(paint_index.get)(label)))
            annotation = base / "annotations" / split / f"{stem}.png"
            annotation.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(label, "L").save(annotation)
            fixture.labels[stem] = label
    write_object_info(base / "objectInfo150.csv")
    return fixture


SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def script_main(name: str):
    """The main(argv) of scripts/<name>.py, loaded as the script file (not a copy of its code)."""
    import runpy

    return runpy.run_path(str(SCRIPTS / f"{name}.py"), run_name=f"scripts.{name}")["main"]
