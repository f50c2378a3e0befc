"""Errors of the data pipeline. Each names the file or key at fault and what was expected."""

from __future__ import annotations

from segdcn.errors import ConfigError


class DatasetError(Exception):
    """Base class of the data errors."""


class DatasetLayoutError(DatasetError, FileNotFoundError):
    """A dataset root, folder or split list is missing: the message shows the expected layout and
    the command that prepares it."""


class UnreadableFileError(DatasetError, OSError):
    """An image or label file exists but cannot be decoded."""


class LabelValueError(DatasetError, ValueError):
    """A label image holds values that are neither a class index nor the ignore value."""


class DatasetConfigError(DatasetError, ConfigError, KeyError):
    """A dataset config lacks a key or holds a value of the wrong kind (a ConfigError, and a KeyError
    for callers that catch a missing key)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ClassesFileError(DatasetError, ValueError):
    """A class table (a folder dataset's classes.txt or classes.yaml, ADE20K's objectInfo150.csv) that does not
    give one unique name (and colour) per class; the message names the file and the line or key."""


class UnpairedFilesError(DatasetLayoutError):
    """Files of a folder dataset that do not pair up: an unknown extension, an image without a mask, a mask
    without an image, two images of one stem; the message lists the files."""
