"""Class tables read from files: a folder dataset's classes.txt or classes.yaml, and ADE20K's objectInfo150.

    R/classes.txt     one class name per line, in label order (colours: the VOC palette)
    R/classes.yaml    names: [road, car, ...]   and optionally   colors: [[128, 64, 128], [0, 0, 142], ...]

ADE20K's 150 classes ship with segdcn (ade20k150.csv, in the release's objectInfo150.csv format plus the
colours); the release's own objectInfo150.csv, when the dataset root holds it, names the classes instead.
Nothing here imports torch: the dataset schema reads these files to check dataset.num_classes.
"""

from __future__ import annotations

import csv
from pathlib import Path

import yaml

from segdcn.data.errors import ClassesFileError, DatasetLayoutError
from segdcn.data.labels import IGNORE_INDEX, LabelSet, voc_palette

CLASSES_FILES = ("classes.txt", "classes.yaml")
# Values 0..254 can be classes: 255 marks ignored pixels in every mask.
MAX_CLASSES = IGNORE_INDEX

ADE20K_TABLE = Path(__file__).with_name("ade20k150.csv")
ADE20K_NUM_CLASSES = 150
ADE20K_BASE = "ADEChallengeData2016"
OBJECT_INFO = "objectInfo150.csv"


def check_names(names: list[str], path: Path) -> None:
    """At least one class, no more than fit, each name once: metrics are keyed by class name
    (summary.json's per_class_iou), so two classes sharing a name would lose one's score."""
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in seen:
            raise ClassesFileError(f"{path}: classes {seen[name]} and {index} are both named {name!r}; rename one")
        seen[name] = index
    if not names:
        raise ClassesFileError(f"{path} names no classes; expected one class name per class, in label order")
    if len(names) > MAX_CLASSES:
        raise ClassesFileError(f"{path} names {len(names)} classes; at most {MAX_CLASSES} fit (255 means ignore)")


def read_classes_txt(path: Path) -> LabelSet:
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    names = []
    for number, line in enumerate(lines, 1):
        name = line.strip()
        if not name:
            raise ClassesFileError(f"{path}:{number} is blank; expected one class name per line, in label order")
        names.append(name)
    check_names(names, path)
    return LabelSet("folder", tuple(names), tuple(voc_palette(len(names))))


def _color(value, path: Path, index: int) -> tuple[int, int, int]:
    ok = isinstance(value, list | tuple) and len(value) == 3
    ok = ok and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in value)
    if not ok:
        raise ClassesFileError(f"{path}: colors[{index}]={value!r}; expected [r, g, b] with integers 0-255")
    return (int(value[0]), int(value[1]), int(value[2]))


def read_classes_yaml(path: Path) -> LabelSet:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ClassesFileError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(data, dict) or "names" not in data:
        raise ClassesFileError(f"{path}: expected a mapping with names: [...] and optionally colors: [[r, g, b], ...]")
    unknown = sorted(set(data) - {"names", "colors"})
    if unknown:
        raise ClassesFileError(f"{path}: unknown key {unknown[0]!r}; a classes.yaml has the keys names and colors")
    names = data["names"]
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise ClassesFileError(f"{path}: names={names!r}; expected a list of class names (non-empty strings)")
    names = [n.strip() for n in names]
    check_names(names, path)
    colors = data.get("colors")
    if colors is None:
        palette = tuple(voc_palette(len(names)))
    elif not isinstance(colors, list) or len(colors) != len(names):
        count = len(colors) if isinstance(colors, list) else colors
        raise ClassesFileError(f"{path}: {len(names)} names but {count!r} colors; expected one [r, g, b] per name")
    else:
        palette = tuple(_color(c, path, i) for i, c in enumerate(colors))
        if len(set(palette)) != len(palette):
            raise ClassesFileError(f"{path}: two classes have the same colour; each class needs its own")
    return LabelSet("folder", tuple(names), palette)


def folder_classes_file(root: str | Path) -> Path:
    """R/classes.txt or R/classes.yaml (exactly one of them)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetLayoutError(
            f"dataset root {root} does not exist; dataset=folder reads a folder with images/, masks/ and "
            "classes.txt (see docs/own_data.md)"
        )
    found = [root / name for name in CLASSES_FILES if (root / name).is_file()]
    if len(found) > 1:
        raise ClassesFileError(f"{root} holds both classes.txt and classes.yaml; keep one of them")
    if not found:
        raise DatasetLayoutError(
            f"dataset root {root} has no classes.txt or classes.yaml\n"
            "expected a class table next to images/ and masks/:\n"
            "  ROOT/classes.txt    one class name per line, in label order\n"
            "  ROOT/classes.yaml   names: [...] and optionally colors: [[r, g, b], ...]\n"
            "(python scripts/prepare_folder.py --root ROOT --palette-from-masks writes one from colour masks)"
        )
    return found[0]


def folder_labels(root: str | Path | None) -> LabelSet:
    """The classes of a folder dataset, from R/classes.txt or R/classes.yaml."""
    if root is None:
        raise DatasetLayoutError("dataset=folder needs dataset.root=<folder with images/, masks/ and classes.txt>")
    path = folder_classes_file(root)
    return read_classes_yaml(path) if path.suffix == ".yaml" else read_classes_txt(path)


# ---- ADE20K ----


def read_object_info(path: Path) -> list[dict[str, str]]:
    """The rows of an objectInfo150.csv (columns Idx, Ratio, Train, Val, Name; '#' lines are comments), checked:
    one row per class, Idx 1..150 in order."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ClassesFileError(f"{path} is not UTF-8 text: {error}") from error
    rows = list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))
    if not rows or not {"Idx", "Name"} <= set(rows[0]):
        raise ClassesFileError(
            f"{path}: expected ADE20K's objectInfo150.csv, with the columns Idx,Ratio,Train,Val,Name"
        )
    indices = [(row.get("Idx") or "").strip() for row in rows]
    if indices != [str(i) for i in range(1, ADE20K_NUM_CLASSES + 1)]:
        raise ClassesFileError(
            f"{path}: Idx runs {', '.join(indices[:3])} ... {indices[-1]} ({len(rows)} rows); "
            f"expected the {ADE20K_NUM_CLASSES} classes with Idx 1..{ADE20K_NUM_CLASSES} in order"
        )
    return rows


def first_synonyms(rows: list[dict[str, str]]) -> list[str]:
    """Each class's first synonym; one that two classes share gets its Idx, e.g. 'screen (59)'."""
    names = [(row.get("Name") or "").split(";")[0].strip() for row in rows]
    shared = {name for name in names if names.count(name) > 1}
    return [f"{name} ({row['Idx'].strip()})" if name in shared else name for name, row in zip(names, rows, strict=True)]


def object_info_path(root: str | Path) -> Path:
    """The release's class table: ROOT/ADEChallengeData2016/objectInfo150.csv."""
    return Path(root).expanduser() / ADE20K_BASE / OBJECT_INFO


def ade20k_labels(root: str | Path | None = None) -> LabelSet:
    """ADE20K's 150 classes in label order (annotation value k is class k - 1; 0 is ignored). Names: the
    release's objectInfo150.csv under root when there is one, else segdcn's copy; colours: segdcn's table."""
    table = read_object_info(ADE20K_TABLE)
    colors = tuple((int(row["R"]), int(row["G"]), int(row["B"])) for row in table)
    source = ADE20K_TABLE
    if root is not None and (release := object_info_path(root)).is_file():
        source = release
    names = first_synonyms(read_object_info(source) if source != ADE20K_TABLE else table)
    if any(not name for name in names):
        raise ClassesFileError(f"{source}: a row has an empty Name; expected ';'-separated synonyms")
    return LabelSet("ade20k", tuple(names), colors)
