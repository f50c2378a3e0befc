"""Colour masks (one RGB colour per class, as labelling tools export them) to index masks, with a table.

    table = ColorTable.from_labels(folder_labels(root), ignore=(224, 224, 192))
    ConvertJob(Path("R/masks/a.png"), Path("R/masks/a.png"), table).run()    # in place is fine

The index masks are palette PNGs whose palette is the table's colours (and the ignore colour at 255),
so they look like the colour masks they came from, and converting one again gives the same file.
A colour that is not in the table is an error naming the file and the colour: a mask drawn with
anti-aliased edges, or saved as JPEG, has colours between the classes that no table can place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segdcn.data.errors import LabelValueError, UnreadableFileError
from segdcn.data.io import decode, write_label
from segdcn.data.labels import IGNORE_INDEX, LabelSet, flat_palette

Color = tuple[int, int, int]
COLOR_MODES = ("RGB", "RGBA", "P")  # P: converted through its own palette


def read_color_mask(path: Path) -> np.ndarray:
    """A colour mask as uint8 [H, W, 3]."""
    mode, rgba = decode(path, "mask", "RGBA")
    if mode not in COLOR_MODES:
        raise UnreadableFileError(
            f"mask {path} has PIL mode {mode!r}; expected a colour mask (RGB, or a palette PNG): a grey mask "
            "already holds class indices and needs no conversion"
        )
    if rgba[..., 3].min() < 255:
        raise UnreadableFileError(f"mask {path} is partly transparent; expected opaque colours, one per class")
    return np.ascontiguousarray(rgba[..., :3])


def color_codes(rgb: np.ndarray) -> np.ndarray:
    """One int per pixel: 0xRRGGBB."""
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def code_color(code: int) -> Color:
    return (int(code) >> 16 & 255, int(code) >> 8 & 255, int(code) & 255)


def mask_colors(path: Path) -> set[Color]:
    """The colours that a colour mask uses."""
    return {code_color(code) for code in np.unique(color_codes(read_color_mask(path)))}


@dataclass(frozen=True)
class ColorTable:
    """Class k is drawn in colors[k]; `ignore`, if given, marks unlabelled pixels (index 255)."""

    colors: tuple[Color, ...]
    ignore: Color | None = None
    source: str = "the colour table"  # named in errors: the classes.yaml, or "the masks' colours"

    @classmethod
    def from_labels(cls, labels: LabelSet, ignore: Color | None = None, source: str = "") -> ColorTable:
        return cls(tuple(labels.colors), ignore, source or "the colour table")

    def __post_init__(self) -> None:
        if self.ignore is not None and self.ignore in self.colors:
            raise ValueError(f"the ignore colour {self.ignore} is also class {self.colors.index(self.ignore)}'s")

    @property
    def palette(self) -> list[int]:
        """The PNG palette of the index masks: class colours, then the ignore colour at 255."""
        palette = flat_palette(self.colors)
        if self.ignore is not None:
            palette[3 * IGNORE_INDEX : 3 * IGNORE_INDEX + 3] = list(self.ignore)
        return palette

    def to_index(self, rgb: np.ndarray, path: Path) -> np.ndarray:
        colors = list(self.colors) + ([self.ignore] if self.ignore is not None else [])
        values = np.array(list(range(len(self.colors))) + ([IGNORE_INDEX] if self.ignore is not None else []))
        table = color_codes(np.array(colors, dtype=np.uint8))
        order = np.argsort(table)
        codes = color_codes(rgb)
        position = np.searchsorted(table[order], codes).clip(max=len(table) - 1)
        known = table[order][position] == codes
        if not known.all():
            unknown, counts = np.unique(codes[~known], return_counts=True)
            shown = ", ".join(f"{code_color(c)} ({n} px)" for c, n in list(zip(unknown, counts, strict=True))[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise LabelValueError(
                f"mask {path} has colours that are not in {self.source}: {shown}{more}; expected only the classes' "
                "colours" + (f" and the ignore colour {self.ignore}" if self.ignore is not None else "")
            )
        return values[order][position].astype(np.uint8)


@dataclass(frozen=True)
class ConvertJob:
    """Write `target` (index mask) from `source` (colour mask); they may be the same file."""

    source: Path
    target: Path
    table: ColorTable

    def run(self) -> str | None:
        """None when written; else the error, so that one run reports every bad mask."""
        try:
            index = self.table.to_index(read_color_mask(self.source), self.source)
        except (LabelValueError, UnreadableFileError) as error:
            return str(error)
        write_label(self.target, index, self.table.palette)
        return None


def run_convert_job(job: ConvertJob) -> str | None:
    return job.run()


def colors_or_error(path: Path) -> set[Color] | str:
    """mask_colors, or the error message (for a run that reports every unreadable mask)."""
    try:
        return mask_colors(path)
    except UnreadableFileError as error:
        return str(error)
