"""One way to run a per-file job over many files: a process pool with a progress bar."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def parallel_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    workers: int | None = None,
    desc: str | None = None,
    progress: bool = True,
    chunksize: int | None = None,
) -> Iterator[R]:
    """fn over items, in order, on `workers` processes (inline for one worker, which keeps
    tracebacks plain); a tqdm bar on stderr counts the finished items."""
    items = list(items)
    workers = default_workers() if workers is None else max(1, workers)
    bar = tqdm(total=len(items), desc=desc, disable=not progress, unit="file", dynamic_ncols=True)
    try:
        if workers == 1 or len(items) <= 1:
            for item in items:
                yield fn(item)
                bar.update()
            return
        chunksize = chunksize or max(1, min(64, len(items) // (8 * workers)))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(fn, items, chunksize=chunksize):
                yield result
                bar.update()
    finally:
        bar.close()
