"""Reads the records of a W&B run file (`run-<id>.wandb`) for the tests.

wandb 0.31 ships no Python reader of its run files (the datastore module of older versions
is gone; its Go service reads them). The file is a LevelDB-style log: a 7-byte header
(":W&B", magic, version), then 32 KiB blocks of chunks, each with a 7-byte header (CRC-32
of type + data, length, type: full/first/middle/last). Each assembled record is a
`wandb_internal_pb2.Record`, decoded with wandb's own protobuf classes.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
CHUNK_HEADER = struct.Struct("<IHB")  # crc32, length, type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: str | Path, timeout: float = 20.0) -> list[wandb_internal_pb2.Record]:
    """The records of a finished run, waiting for its exit record.

    run.finish() returns before W&B's service has written everything, so the file may still grow.
    """
    deadline = time.monotonic() + timeout
    while True:
        records = _parse(Path(path))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def _parse(path: Path) -> list[wandb_internal_pb2.Record]:
    """The complete records so far; a chunk still being written ends the read."""
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B run file (header {data[:7]!r})")
    records, pending, pos = [], b"", 7
    while pos + CHUNK_HEADER.size <= len(data):
        room = BLOCK - pos % BLOCK
        if room < CHUNK_HEADER.size:  # a block's tail too short for a header is padding
            pos += room
            continue
        crc, length, kind = CHUNK_HEADER.unpack_from(data, pos)
        if kind == 0 and length == 0:  # zero padding up to the block's end
            pos += room
            continue
        payload = data[pos + CHUNK_HEADER.size : pos + CHUNK_HEADER.size + length]
        if len(payload) < length:
            break
        if zlib.crc32(bytes([kind]) + payload) != crc:
            raise ValueError(f"{path}: bad checksum of the chunk at byte {pos}")
        pos += CHUNK_HEADER.size + length
        if kind == FULL:
            records.append(payload)
        elif kind == FIRST:
            pending = payload
        elif kind == MIDDLE:
            pending += payload
        elif kind == LAST:
            records.append(pending + payload)
        else:
            raise ValueError(f"{path}: unknown chunk type {kind} at byte {pos}")
    out = []
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        out.append(record)
    return out


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def history_rows(records) -> list[dict[str, Any]]:
    """Each history record as {key: decoded value}; nested keys (media fields) joined by "/"."""
    return [
        {_key(item): json.loads(item.value_json) for item in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]


def summary_values(records) -> dict[str, Any]:
    """The run summary as the last update of each key left it."""
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update({_key(item): json.loads(item.value_json) for item in r.summary.update})
    return summary


def run_record(records):
    return next(r.run for r in records if r.WhichOneof("record_type") == "run")


def config_values(records) -> dict[str, Any]:
    config = {}
    for r in records:
        kind = r.WhichOneof("record_type")
        updates = r.config.update if kind == "config" else r.run.config.update if kind == "run" else ()
        config.update({_key(item): json.loads(item.value_json) for item in updates})
    return config
