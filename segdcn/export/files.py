"""Writing exported files so that a reader never finds half of one."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def written_atomically(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a path with `path`'s file name in a temporary folder next to it; afterwards every file written
    there (the model, and an ONNX model's external `<name>.data` when it exceeds 2 GB) is moved into place.

    A folder rather than a temporary name: ONNX's external data file is referenced by its name, which must
    match the final one. An exception leaves the previous files and removes the folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield staging / path.name
        for item in staging.iterdir():
            os.replace(item, path.parent / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
