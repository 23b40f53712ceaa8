"""Exported segments: one gzip-compressed JSON Lines file per sealed segment.

The first line is a header (format, terminal id, segment number, seq range, the hash the
segment starts from and its last hash, its row count); every other line is one row exactly
as hashed (`detail_json` verbatim, `prev_hash` and `hash` in hex), so the file verifies
away from the terminal with `cardapctl audit verify --segments DIR` — code of the client
library that shares nothing with the daemon's (docs/decisions.md D32). A file is written
to a temporary name, fsynced, renamed into place and the directory fsynced: a crash leaves
the old file or the new one. Its SHA-256 is recorded with the segment.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from cardapd.audit.log import AuditRecord, Segment
from cardapd.audit.schema import AUDIT_SCHEMA
from cardapd.errors import StoreError
from cardapd.storage import open_database

FORMAT = "cardapd-audit-segment/1"


def file_name(segment: int) -> str:
    """The export file of segment `segment`."""
    return f"audit-segment-{segment:08d}.jsonl.gz"


def header(seg: Segment, terminal_id: str) -> dict[str, Any]:
    """The first line of a segment file."""
    return {"format": FORMAT, "terminal_id": terminal_id, "segment": seg.segment,
            "first_seq": seg.first_seq, "last_seq": seg.last_seq, "rows": seg.rows,
            "prev_hash": seg.prev_hash.hex(), "last_hash": seg.last_hash.hex(),
            "first_ts_us": seg.first_ts_us, "last_ts_us": seg.last_ts_us}


def row_line(r: AuditRecord) -> dict[str, Any]:
    """One row of a segment file, exactly as hashed."""
    return {"seq": r.seq, "ts": r.ts.isoformat(), "ts_us": r.ts_us, "actor": r.actor,
            "operation": r.operation, "card_id": r.card_id, "reader": r.reader,
            "result": r.result, "reason": r.reason, "request_id": r.request_id,
            "detail_json": r.detail_json, "prev_hash": r.prev_hash.hex(),
            "hash": r.hash.hex()}


def export_segment(db_path: Path, seg: Segment, directory: Path, terminal_id: str
                   ) -> tuple[Path, str]:
    """Write segment `seg` of the database at `db_path` into `directory`; returns the
    file and its SHA-256 (hex). Raises StoreError when the rows are not all there."""
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o750)
    except OSError as exc:
        raise StoreError(f"cannot make the audit export directory {directory}: "
                         f"{exc.strerror or exc}") from exc
    target = directory / file_name(seg.segment)
    tmp = target.with_name(f".{target.name}.tmp")
    conn = open_database(Path(db_path), AUDIT_SCHEMA, readonly=True).conn
    try:
        conn.execute("BEGIN")
        cursor = conn.execute(f"SELECT {AuditRecord.COLUMNS} FROM audit "  # noqa: S608
                              "WHERE seq BETWEEN ? AND ? ORDER BY seq",
                              (seg.first_seq, seg.last_seq))
        count = 0
        with open(tmp, "wb") as raw:
            # mtime=0: the same rows give the same file, whenever it is written
            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
                gz.write((json.dumps(header(seg, terminal_id), sort_keys=True) + "\n")
                         .encode("utf-8"))
                while rows := cursor.fetchmany(1000):
                    lines = [json.dumps(row_line(AuditRecord.from_row(r)), sort_keys=True,
                                        ensure_ascii=False) for r in rows]
                    gz.write(("\n".join(lines) + "\n").encode("utf-8"))
                    count += len(rows)
            raw.flush()
            os.fsync(raw.fileno())
        if count != seg.rows:
            raise StoreError(f"audit segment {seg.segment}: {count} of its {seg.rows} rows "
                             "are in the database; not exported")
        os.replace(tmp, target)
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot export audit segment {seg.segment}: {exc}") from exc
    except OSError as exc:
        raise StoreError(f"cannot write the export of audit segment {seg.segment} to "
                         f"{directory}: {exc.strerror or exc}") from exc
    finally:
        conn.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    digest = hashlib.sha256()
    with open(target, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return target, digest.hexdigest()
