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


def read_image(path: str | Path) -> np.ndarray:
    """An RGB image as uint8 [H, W, 3]."""
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))  # writable: torch.from_numpy warns on read-only arrays
    except FileNotFoundError:
        raise
    except (OSError, ValueError, SyntaxError) as error:
        raise UnreadableFileError(f"cannot read image {path}: {error}") from error


def read_label(path: str | Path) -> np.ndarray:
    """A label image as uint8 [H, W] of class indices (255 = ignore)."""
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            label = np.array(image)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, SyntaxError) as error:
        raise UnreadableFileError(f"cannot read label image {path}: {error}") from error
    if mode not in LABEL_MODES:
        raise UnreadableFileError(
            f"label image {path} has PIL mode {mode!r}; expected a single-channel index image "
            f"(palette 'P' or grey 'L') whose values are class indices"
        )
    return label


def invalid_label_values(label: np.ndarray, num_classes: int, ignore_index: int = 255) -> list[int]:
    """The values in `label` that are neither a class index (0..num_classes-1) nor ignore_index."""
    counts = np.bincount(label.ravel(), minlength=256)
    present = np.flatnonzero(counts)
    return [int(v) for v in present if v >= num_classes and v != ignore_index]


def check_label_values(label: np.ndarray, num_classes: int, path: str | Path, ignore_index: int = 255) -> None:
    bad = invalid_label_values(label, num_classes, ignore_index)
    if bad:
        raise LabelValueError(
            f"label image {path} holds values {bad}; expected class indices 0..{num_classes - 1} "
            f"or {ignore_index} (ignore)"
        )


def write_label(path: str | Path, label: np.ndarray, palette: list[int]) -> None:
    """Writes class indices as a palette PNG (viewable in colour, read back as indices)."""
    label = np.ascontiguousarray(label, dtype=np.uint8)
    image = Image.frombytes("P", (label.shape[1], label.shape[0]), label.tobytes())
    image.putpalette(palette)
    tmp = Path(path).with_name(Path(path).name + ".tmp.png")
    image.save(tmp, optimize=False)
    tmp.replace(path)  # atomic: an interrupted run leaves no truncated label behind
