"""The images segdcn-predict reads: one file, a folder (searched recursively) or a glob pattern.

Each image keeps its path relative to the folder (or to the fixed part of the pattern) as its output
name, so images of the same name in different folders (Cityscapes' cities) do not overwrite each other.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from segdcn.data.errors import UnreadableFileError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


class PredictInputError(FileNotFoundError):
    """`input` names nothing that holds images."""


@dataclass(frozen=True)
class InputImage:
    path: Path
    name: Path  # relative output name without suffix, e.g. frankfurt/frankfurt_000000_000294_leftImg8bit


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def _fixed_root(pattern: str) -> Path:
    """The folder part of a glob pattern before its first wildcard: names are relative to it."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def find_images(spec: str | os.PathLike) -> list[InputImage]:
    """The images of `spec` in sorted order; PredictInputError when there are none."""
    spec = str(spec)
    path = Path(spec)
    expected = (
        f"an image file, a folder of images ({', '.join(IMAGE_SUFFIXES)}) or a glob pattern such as 'photos/*.jpg'"
    )
    if path.is_file():
        return [InputImage(path, Path(path.stem))]
    if path.is_dir():
        files, root = sorted(p for p in path.rglob("*") if _is_image(p)), path
    elif glob.has_magic(spec):
        files, root = sorted(p for p in map(Path, glob.glob(spec, recursive=True)) if _is_image(p)), _fixed_root(spec)
    else:
        raise PredictInputError(f"input={spec}: no such file or folder; expected {expected}")
    if not files:
        raise PredictInputError(f"input={spec}: no images found; expected {expected}")
    return [InputImage(p, p.relative_to(root).with_suffix("")) for p in files]


def check_readable(images: list[InputImage]) -> None:
    """Opens every image's header before any inference, so a bad file fails the run at once, by name."""
    bad = []
    for item in images:
        try:
            with Image.open(item.path) as image:
                image.verify()
        except Exception as error:  # PIL raises OSError, SyntaxError, ValueError... for undecodable files
            bad.append(f"{item.path} ({type(error).__name__}: {error})")
    if bad:
        listed = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise UnreadableFileError(f"cannot read {len(bad)} input image(s): {listed}")
