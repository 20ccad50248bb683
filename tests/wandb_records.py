"""What an offline W&B run recorded, read back from its `.wandb` file, for the tests.

W&B has no public reader of this file. Its format is W&B's own and private: a LevelDB-style log
(a 7-byte header ':W&B', magic 0xBEE1, version 0; then 32 KiB blocks of chunks, each with a CRC32,
a length and a type: full, first, middle or last) of protobuf `Record` messages, whose schema is
the one public part (`wandb.proto.wandb_internal_pb2`). Everything that depends on the private
part is here, and `check_format` fails loudly when a W&B release changes it.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
FILE_HEADER = struct.Struct("<4sHB")
CHUNK_HEADER = struct.Struct("<IHB")
KNOWN_HEADER = (b":W&B", 0xBEE1, 0)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class UnknownFormat(AssertionError):
    """The `.wandb` file is not in the format this reader knows: W&B changed it."""


def check_format(path: Path) -> None:
    header = FILE_HEADER.unpack_from(Path(path).read_bytes())
    if header != KNOWN_HEADER:
        raise UnknownFormat(
            f"{path}: header {header}, this reader knows {KNOWN_HEADER}; W&B changed its private "
            f"record format (tests/wandb_records.py)"
        )


def records(path: Path) -> list:
    """The file's protobuf Records, in order."""
    check_format(path)
    data = Path(path).read_bytes()
    position, pending, found = FILE_HEADER.size, b"", []
    while position + CHUNK_HEADER.size <= len(data):
        left = BLOCK - position % BLOCK
        if left < CHUNK_HEADER.size:  # a block's tail too short for a header is padding
            position += left
            continue
        _, length, kind = CHUNK_HEADER.unpack_from(data, position)
        position += CHUNK_HEADER.size
        if kind == 0 and length == 0:  # zeros: the end of what was written
            break
        if kind not in (FULL, FIRST, MIDDLE, LAST):
            raise UnknownFormat(f"{path}: chunk type {kind} at byte {position}")
        chunk, position = data[position : position + length], position + length
        if kind == FULL:
            found.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        else:
            found.append(pending + chunk)
    parsed = []
    for raw in found:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        parsed.append(record)
    return parsed


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


@dataclass
class RunRecord:
    """The parts of a run a dashboard shows: its names, config, history rows and summary."""

    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    exit_code: int | None = None


def finished_records(path: Path, timeout_s: float = 60.0) -> list:
    """The records once the run's exit record is in: W&B's service process writes the file and
    may still be flushing it when `run.finish()` has returned."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{path}: no exit record after {timeout_s:g} s")
        time.sleep(0.2)


def read_run(path: Path) -> RunRecord:
    run = RunRecord()
    for record in finished_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.name, run.group = record.run.display_name, record.run.run_group
            run.job_type, run.tags = record.run.job_type, list(record.run.tags)
        elif kind == "config":
            for item in record.config.update:
                run.config[_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[_key(item)] = json.loads(item.value_json)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def wandb_file(run_dir: Path) -> Path:
    """The one `.wandb` file under a run folder."""
    (found,) = Path(run_dir).glob("wandb/*run-*/run-*.wandb")  # not the latest-run link
    return found
