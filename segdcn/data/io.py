"""Reading images and label images, with errors that name the file.

Label images are read as indices: a palette PNG (VOC, the synthetic set) holds the class index of
each pixel in its palette indices, a grey PNG (Cityscapes' labelTrainIds) in its values. Converting
either with PIL's convert("L") would turn palette colours into luminance, so it is never done.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from segdcn.data.errors import LabelValueError, UnreadableFileError

LABEL_MODES = ("P", "L")


def decode(path: str | Path, what: str, convert: str | None = None) -> tuple[str, np.ndarray]:
    """(PIL mode, pixels) of an image file, the pixels converted to mode `convert` when given; a file that
    cannot be decoded raises UnreadableFileError naming it as `what` (image, label image, mask)."""
    try:
        with Image.open(path) as image:
            image.load()
            # writable: torch.from_numpy warns on read-only arrays
            return image.mode, np.array(image.convert(convert) if convert else image)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, SyntaxError) as error:
        raise UnreadableFileError(f"cannot read {what} {path}: {error}") from error


def read_image(path: str | Path) -> np.ndarray:
    """An RGB image as uint8 [H, W, 3]."""
    return decode(path, "image", "RGB")[1]


def read_label(path: str | Path) -> np.ndarray:
    """A label image as uint8 [H, W] of class indices (255 = ignore)."""
    mode, label = decode(path, "label image")
    if mode not in LABEL_MODES:
        raise UnreadableFileError(
            f"label image {path} has PIL mode {mode!r}; expected a single-channel index image "
            f"(palette 'P' or grey 'L') whose values are class indices"
        )
    return label


def invalid_label_values(
    label: np.ndarray, num_classes: int, ignore_index: int = 255, reduce_zero_label: bool = False
) -> list[int]:
    """The values in `label` that are neither a class value nor ignore_index: classes are 0..num_classes-1, or
    1..num_classes with reduce_zero_label (where 0 means unlabelled)."""
    counts = np.bincount(label.ravel(), minlength=256)
    present = np.flatnonzero(counts)
    limit = num_classes + 1 if reduce_zero_label else num_classes
    return [int(v) for v in present if v >= limit and v != ignore_index]


def expected_label_values(num_classes: int, ignore_index: int = 255, reduce_zero_label: bool = False) -> str:
    if reduce_zero_label:
        return f"0 (unlabelled: dataset.reduce_zero_label), classes 1..{num_classes} or {ignore_index} (ignore)"
    return f"class indices 0..{num_classes - 1} or {ignore_index} (ignore)"


def check_label_values(
    label: np.ndarray, num_classes: int, path: str | Path, ignore_index: int = 255, reduce_zero_label: bool = False
) -> None:
    bad = invalid_label_values(label, num_classes, ignore_index, reduce_zero_label)
    if bad:
        expected = expected_label_values(num_classes, ignore_index, reduce_zero_label)
        raise LabelValueError(f"label image {path} holds values {bad}; expected {expected}")


def reduce_zero_label(label: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """ADE20K's convention (mmsegmentation's reduce_zero_label): 0, unlabelled, becomes ignore_index and every
    class value k becomes k - 1; ignore_index stays."""
    table = np.arange(256, dtype=np.int64) - 1
    table[0] = table[ignore_index] = ignore_index
    return table.astype(np.uint8)[label]


def write_label(path: str | Path, label: np.ndarray, palette: list[int]) -> None:
    """Writes class indices as a palette PNG (viewable in colour, read back as indices)."""
    label = np.ascontiguousarray(label, dtype=np.uint8)
    image = Image.frombytes("P", (label.shape[1], label.shape[0]), label.tobytes())
    image.putpalette(palette)
    tmp = Path(path).with_name(Path(path).name + ".tmp.png")
    image.save(tmp, optimize=False)
    tmp.replace(path)  # atomic: an interrupted run leaves no truncated label behind
