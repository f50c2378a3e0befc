#!/usr/bin/env python
"""Turns colour masks (one RGB colour per class) into the index masks that dataset=folder reads.

    python scripts/prepare_folder.py --root data/own --palette-from-masks       # the table from the masks
    python scripts/prepare_folder.py --root data/own --colors data/own/classes.yaml
    python scripts/prepare_folder.py --root data/own --colors labels.yaml --from export/SegmentationClass \\
        --ignore-color 224,224,192

It reads every <stem>.png in --from (default ROOT/masks) and writes ROOT/masks/<stem>.png: a palette PNG
whose values are the class indices and whose palette is the table's colours, so it looks as before and
converting it again changes nothing. --palette-from-masks makes the table: each colour found is a class,
in the order of its 0xRRGGBB value (black first), named class_0, class_1, ... in a new ROOT/classes.yaml,
where you rename them. --colors takes the names and colours of a classes.yaml (or a classes.txt: the VOC
palette's colours) and copies it to ROOT when it is elsewhere. --ignore-color marks unlabelled pixels
(written as 255). A colour that is not in the table stops the run, naming each file and colour. Then:

    python scripts/check_dataset.py dataset=folder dataset.root=ROOT
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from segdcn.atomic import replace_atomically
from segdcn.data.classes import CLASSES_FILES, MAX_CLASSES, read_classes_txt, read_classes_yaml
from segdcn.data.color_masks import ColorTable, ConvertJob, colors_or_error, run_convert_job
from segdcn.data.errors import DatasetError
from segdcn.data.labels import LabelSet
from segdcn.data.parallel import default_workers, parallel_map


class PrepareError(DatasetError):
    """A bad argument or input of this script; the message says what to do."""


def parse_color(text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() and 0 <= int(p) <= 255 for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: expected R,G,B with integers 0-255, e.g. 224,224,192")
    return int(parts[0]), int(parts[1]), int(parts[2])


def color_masks(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise PrepareError(f"mask folder {folder} does not exist; expected the colour masks there (--from)")
    masks, others = [], []
    for path in sorted(folder.iterdir()):
        if not path.name.startswith("."):
            (masks if path.is_file() and path.suffix.lower() == ".png" else others).append(path)
    if others:
        raise PrepareError(f"{folder} holds files that are not PNG masks, e.g. {others[0]}; masks are <stem>.png")
    if not masks:
        raise PrepareError(f"no <stem>.png masks in {folder}")
    return masks


def table_from_masks(masks: list[Path], ignore, workers: int, progress: bool) -> LabelSet:
    """Every colour of the masks but the ignore colour is a class, in the order of its 0xRRGGBB value."""
    found, errors = set(), []
    for result in parallel_map(colors_or_error, masks, workers, "colours", progress):
        (errors.append(result) if isinstance(result, str) else found.update(result))
    if errors:
        raise PrepareError("\n".join(errors))
    colors = sorted(found - {ignore}, key=lambda c: (c[0] << 16) | (c[1] << 8) | c[2])
    if len(colors) > MAX_CLASSES:
        raise PrepareError(
            f"the masks hold {len(colors)} colours, more than {MAX_CLASSES} classes fit: are they anti-aliased or "
            "were they saved as JPEG? Colour masks need exactly one colour per class"
        )
    return LabelSet("folder", tuple(f"class_{i}" for i in range(len(colors))), tuple(colors))


def write_classes_yaml(path: Path, labels: LabelSet) -> None:
    lines = [
        "# written by scripts/prepare_folder.py --palette-from-masks: one class per colour of the masks, in",
        "# label order; rename the classes here (names: and colors: go together, one entry per class)",
        "names:",
        *(f"  - {name}" for name in labels.names),
        "colors:",
        *(f"  - [{r}, {g}, {b}]" for r, g, b in labels.colors),
    ]
    replace_atomically(path, lambda handle: handle.write(("\n".join(lines) + "\n").encode("utf-8")))


def existing_classes_file(root: Path) -> Path | None:
    return next((root / name for name in CLASSES_FILES if (root / name).is_file()), None)


def table_from_file(root: Path, colors: Path) -> LabelSet:
    if not colors.is_file():
        raise PrepareError(f"--colors {colors}: no such file; expected a classes.yaml (names, colors) or classes.txt")
    labels = read_classes_yaml(colors) if colors.suffix in (".yaml", ".yml") else read_classes_txt(colors)
    present = existing_classes_file(root)
    if present is None:
        shutil.copyfile(colors, root / ("classes.yaml" if colors.suffix in (".yaml", ".yml") else "classes.txt"))
    elif present.resolve() != colors.resolve() and present.read_bytes() != colors.read_bytes():
        raise PrepareError(f"{present} already names the classes and differs from --colors {colors}; keep one")
    return labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="the dataset root (images/, masks/)")
    table = parser.add_mutually_exclusive_group(required=True)
    table.add_argument("--palette-from-masks", action="store_true", help="one class per colour found in the masks")
    table.add_argument("--colors", type=Path, help="a classes.yaml with names and colors (or a classes.txt)")
    parser.add_argument("--from", dest="source", type=Path, help="folder of the colour masks (default: ROOT/masks)")
    parser.add_argument("--ignore-color", type=parse_color, help="R,G,B of unlabelled pixels, written as 255")
    parser.add_argument("--workers", type=int, default=default_workers(), help="processes (default: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    root: Path = args.root.expanduser()
    source = (args.source or root / "masks").expanduser()

    try:
        if not root.is_dir():
            raise PrepareError(f"--root {root} does not exist")
        masks = color_masks(source)
        if args.palette_from_masks:
            if (present := existing_classes_file(root)) is not None:
                raise PrepareError(
                    f"{present} already names the classes: convert with --colors {present}, or remove it to make "
                    "a new table from the masks"
                )
            labels = table_from_masks(masks, args.ignore_color, args.workers, not args.no_progress)
            write_classes_yaml(root / "classes.yaml", labels)
            origin = "the masks' colours"
        else:
            labels = table_from_file(root, args.colors)
            origin = str(args.colors)
        colors = ColorTable.from_labels(labels, args.ignore_color, origin)
    except (DatasetError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    (root / "masks").mkdir(exist_ok=True)
    jobs = [ConvertJob(mask, root / "masks" / mask.name, colors) for mask in masks]
    errors = [e for e in parallel_map(run_convert_job, jobs, args.workers, "masks", not args.no_progress) if e]
    for index, (name, color) in enumerate(zip(labels.names, labels.colors, strict=True)):
        print(f"{index:>3}  {name:<24} {color}")
    if args.ignore_color is not None:
        print(f"255  {'(ignore)':<24} {args.ignore_color}")
    print(f"{len(jobs) - len(errors):,} of {len(jobs):,} masks written to {root / 'masks'} as index masks")
    if errors:
        print(f"error: {len(errors):,} masks were not converted:\n" + "\n".join(errors), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
