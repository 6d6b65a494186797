"""W&B's offline run files read back with W&B's own record type (``wandb_internal_pb2.Record``): what
``wandb sync`` would upload. A .wandb file is W&B's transaction log: a 7-byte header, then 32 KiB blocks
of records, each a 7-byte header (CRC, length, type: full, first, middle, last) and its bytes."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

BLOCK, HEADER = 32 * 1024, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    path: Path
    run_id: str = ""
    project: str = ""
    group: str = ""
    name: str = ""
    job_type: str = ""
    tags: tuple[str, ...] = ()
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)  # one dict per logged row (by _step)
    summary: dict = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)  # file paths of logged artifacts
    exit_code: int | None = None  # None: the run never finished (left RUNNING)


def _records(data: bytes):
    pos, parts = HEADER, b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        pos += HEADER
        if kind == 0 and length == 0:
            break
        chunk, pos = data[pos:pos + length], pos + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            parts = chunk
        elif kind == MIDDLE:
            parts += chunk
        elif kind == LAST:
            yield parts + chunk


def read_run(run_dir: Path) -> OfflineRun:
    """An offline run folder (wandb/offline-run-DATE-ID) as what it recorded."""
    from wandb.proto import wandb_internal_pb2 as pb

    (log,) = run_dir.glob("*.wandb")
    run = OfflineRun(run_dir)
    for raw in _records(log.read_bytes()):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id, run.project, run.group, run.name, run.job_type = (
                r.run_id, r.project, r.run_group, r.display_name, r.job_type)
            run.tags = tuple(r.tags)
            run.config.update({i.key: json.loads(i.value_json) for i in r.config.update})
        elif kind == "config":
            run.config.update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            run.history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                for i in record.history.item})
        elif kind == "summary":
            run.summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                for i in record.summary.update})
        elif kind == "artifact":
            run.artifacts += [m.path for m in record.artifact.manifest.contents]
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    run.config.pop("_wandb", None)
    return run


def read_runs(wandb_dir: Path) -> list[OfflineRun]:
    return [read_run(d) for d in sorted(wandb_dir.glob("offline-run-*"))]
