"""Atomic file replacement: a reader (or a kill) sees the old file or the new one, never a part."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def temp_prefix(path: Path) -> str:
    """The name prefix of `path`'s temporary files (`.<name>.`), so stray ones can be found."""
    return f".{path.name}."


def replace_atomically(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """`write` fills a temporary file in `path`'s directory (so the rename does not cross file
    systems); it is flushed and fsynced, then os.replace puts it at `path`. On any error, the
    temporary file is removed and `path` is untouched."""
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
