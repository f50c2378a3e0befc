"""The run directory's own records: config.yaml, metrics.jsonl and summary.json.

They are written whatever the W&B state, so a run can be read (and tables built) with no
W&B account. JSON is strict: NaN and infinities (an IoU of a class that never occurs) become null.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from segdcn.atomic import replace_atomically

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


def to_jsonable(value: Any) -> Any:
    """Plain JSON values from numbers, numpy/torch scalars and containers; non-finite floats become None."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays/scalars and torch tensors, without importing either
        return to_jsonable(value.tolist())
    if hasattr(value, "item"):
        return to_jsonable(value.item())
    raise TypeError(f"cannot log a value of type {type(value).__name__} ({value!r}): expected a number or string")


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` by `text` so that a reader (or a kill) never sees a half-written file."""
    replace_atomically(path, lambda handle: handle.write(text.encode("utf-8")))


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    write_atomic(path, json.dumps(to_jsonable(data), indent=2, allow_nan=False) + "\n")


class MetricsFile:
    """metrics.jsonl: one JSON object per logged step, `{"step": N, ...}`, appended as the run goes."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, step: int, values: Mapping[str, Any]) -> None:
        line = json.dumps({"step": int(step), **to_jsonable(values)}, allow_nan=False)
        # Flushed per line: the OS keeps what a killed process wrote, fsync per step would cost more.
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def truncate_after(self, step: int) -> int:
        """Drop the lines of steps after `step` (logged after the checkpoint a run resumes from).

        A torn last line (the process was killed mid-write) is dropped too. Returns the lines kept.
        """
        if not self.path.exists():
            return 0
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
                kept.append(line)
        write_atomic(self.path, "".join(f"{line}\n" for line in kept))
        return len(kept)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
