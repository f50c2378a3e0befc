"""Errors of segdcn-export and segdcn-predict. Each names the key or file at fault and what was expected."""

from __future__ import annotations


class ExportError(Exception):
    """Base class of the export errors."""


class ExportConfigError(ExportError, ValueError):
    """A setting of segdcn-export or segdcn-predict that cannot work (an unknown format, a bad size)."""


class ExportVerificationError(ExportError, RuntimeError):
    """An exported file computes something else than the PyTorch model it came from."""


class MetadataError(ExportError, FileNotFoundError):
    """An exported model without its metadata JSON (or with one that is not segdcn-export's)."""
