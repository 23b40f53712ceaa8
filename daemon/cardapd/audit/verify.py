"""Verifying the audit chain: proves no row was changed, deleted, reordered or inserted.

Walks the rows in seq order, recomputes each hash from the previous row's hash, and
compares the database's tail with the head anchor file (`audit.head`), so that rows
cut off the *end* are detected too. When a row is wrong, the chain links are followed
back to the genesis to tell what happened (the row belongs elsewhere: `reordered`; rows
before it do not belong: `inserted`; its predecessor is gone: `deleted`; otherwise
`changed`). The classification is a diagnosis; `ok` and `first_bad_seq` are the proof.

Honest limits. The chain carries no secret: whoever can write both the database and
the head file can recompute a whole consistent chain. What the chain and the head
prove is that the *daemon's* history was not edited by something that did not also
rewrite everything after the edit and the anchor. For stronger evidence the head
(seq, hash) must leave the machine: every JSONL export carries each row's hash (its
last line is a head), the yearly report should quote it, and an operator can compare
a copy kept elsewhere with the chain later. Rows written after the last head
update (a crash between commit and anchor write) are accepted and counted as
`unanchored`; a power loss can also legitimately lose the newest PROCESS rows, which
then shows as `deleted` at the tail until the daemon restarts and records an
`audit_anchor_reset` row (listed in `anchor_resets`, to be reviewed by a human).
"""

from __future__ import annotations

import enum
import sqlite3
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from cardapd.audit.head import head_path_for, read_head
from cardapd.audit.log import (
    ANCHOR_RESET_OPERATION,
    GENESIS_HASH,
    AuditRecord,
)
from cardapd.audit.schema import AUDIT_SCHEMA
from cardapd.errors import Cancelled, StoreError
from cardapd.storage import open_database


class Problem(enum.StrEnum):
    """What `verify` found wrong (stable strings, shown to operators)."""

    CHANGED = "changed"
    DELETED = "deleted"
    REORDERED = "reordered"
    INSERTED = "inserted"
    HEAD_MISSING = "head_missing"
    HEAD_CORRUPT = "head_corrupt"


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome: `ok`, how many rows were checked, and the first bad seq and why."""

    ok: bool
    rows_checked: int
    first_bad_seq: int | None = None
    problem: Problem | None = None
    head_seq: int = 0
    head_hash: str = GENESIS_HASH.hex()
    unanchored: int = 0
    anchor_resets: tuple[int, ...] = ()


def _origin(conn: sqlite3.Connection, record: AuditRecord, limit: int) -> int | None:
    """The seq the row was written at, by following hash links back; None if broken."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS links AS SELECT hash, prev_hash FROM audit")
    conn.execute("CREATE INDEX IF NOT EXISTS temp.links_hash ON links(hash)")
    depth, prev = 1, record.prev_hash
    while prev != GENESIS_HASH:
        row = conn.execute("SELECT prev_hash FROM links WHERE hash = ?", (prev,)).fetchone()
        if row is None or depth > limit:
            return None
        depth, prev = depth + 1, row[0]
    return depth


def _diagnose(conn: sqlite3.Connection, record: AuditRecord, expected_prev: bytes,
              limit: int, head_seq: int) -> tuple[int, Problem]:
    """Classify the first row that does not chain (see the module docstring)."""
    seq = record.seq
    if record.expected_hash(prev_hash=expected_prev) == record.hash:
        return seq, Problem.CHANGED  # content intact, its prev_hash column edited
    origin = _origin(conn, record, limit)
    if origin is not None and record.expected_hash(seq=origin) == record.hash:
        if origin == seq:
            return max(seq - 1, 1), Problem.CHANGED  # predecessor rewritten
        if origin > seq:
            return seq, Problem.REORDERED
        return origin, Problem.INSERTED
    if origin is None:
        if record.expected_hash() == record.hash:
            # Sound row, chained to a row that no longer exists: under the head it is
            # part of the anchored history, so its predecessor was rewritten; past the
            # head it was forged.
            if seq <= head_seq:
                return max(seq - 1, 1), Problem.CHANGED
            return seq, Problem.INSERTED
        return seq, Problem.DELETED  # predecessor gone, the rest renumbered
    return seq, Problem.CHANGED


CANCEL_EVERY = 4096  # rows between two looks at the cancel event


def verify(path: Path, *, head_path: Path | None = None,
           cancel: threading.Event | None = None) -> VerifyResult:
    """Check the whole chain and the head anchor of the audit database at `path`.

    `cancel` set (the daemon stopping) ends the walk early with `Cancelled`."""
    head_file = head_path or head_path_for(Path(path))
    # Read the head before the snapshot: the head never leads the committed rows.
    head_problem: Problem | None = None
    try:
        head = read_head(head_file)
        if head is None:
            head_problem = Problem.HEAD_MISSING
    except (ValueError, OSError):
        head, head_problem = None, Problem.HEAD_CORRUPT
    conn = open_database(Path(path), AUDIT_SCHEMA, readonly=True).conn
    try:
        conn.execute("BEGIN")  # one consistent snapshot for the whole walk
        return _walk(conn, head, head_problem, cancel)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot verify {path}: {exc}") from exc
    finally:
        conn.close()


def _walk(conn: sqlite3.Connection, head: tuple[int, bytes] | None,
          head_problem: Problem | None, cancel: threading.Event | None = None
          ) -> VerifyResult:
    """Walk the chain inside the caller's read transaction."""
    limit = int(conn.execute("SELECT count(*) FROM audit").fetchone()[0])
    expected_seq, expected_prev, checked = 1, GENESIS_HASH, 0
    head_seq, head_hash = head if head is not None else (0, GENESIS_HASH)
    head_row_hash = GENESIS_HASH if head_seq == 0 else None
    resets: list[int] = []
    cursor = conn.execute(f"SELECT {AuditRecord.COLUMNS} FROM audit ORDER BY seq")  # noqa: S608
    for row in cursor:
        record = AuditRecord.from_row(row)
        if record.seq != expected_seq:
            return VerifyResult(False, checked, expected_seq, Problem.DELETED, head_seq,
                                head_hash.hex())
        if record.prev_hash != expected_prev or record.expected_hash() != record.hash:
            bad, problem = _diagnose(conn, record, expected_prev, limit, head_seq)
            return VerifyResult(False, checked, bad, problem, head_seq, head_hash.hex())
        if record.operation == ANCHOR_RESET_OPERATION:
            resets.append(record.seq)
        if record.seq == head_seq:
            head_row_hash = record.hash
        checked += 1
        expected_seq, expected_prev = expected_seq + 1, record.hash
        if cancel is not None and checked % CANCEL_EVERY == 0 and cancel.is_set():
            raise Cancelled("audit chain verification cancelled")
    last = expected_seq - 1
    done = VerifyResult(True, checked, head_seq=head_seq, head_hash=head_hash.hex(),
                        unanchored=max(last - head_seq, 0), anchor_resets=tuple(resets))
    if head_problem is not None and last > 0:
        return replace(done, ok=False, first_bad_seq=last, problem=head_problem)
    if head_seq > last:
        return replace(done, ok=False, first_bad_seq=last + 1, problem=Problem.DELETED)
    if head_row_hash != head_hash:
        return replace(done, ok=False, first_bad_seq=head_seq, problem=Problem.CHANGED)
    return done
