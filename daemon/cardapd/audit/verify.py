"""Verifying the audit chain: proves no row was changed, deleted, reordered or inserted.

Walks rows in seq order, recomputes each hash from the previous row's hash, and compares
the database's tail with the head anchor file (`audit.head`), so that rows cut off the
*end* are detected too. When a row is wrong, the chain links are followed back to tell
what happened (the row belongs elsewhere: `reordered`; rows before it do not belong:
`inserted`; its predecessor is gone: `deleted`; otherwise `changed`). The classification
is a diagnosis; `ok` and `first_bad_seq` are the proof.

Segments (docs/decisions.md D32). The kept chain starts at its first row: seq 1 from the
genesis, or, once segments were dropped after export, from the last hash of the dropped
segment before it (its tombstone in `audit_segments`). The sealed segments are checked as
a structure (numbered in order, each starting where the one before ended, each ending in
its seal row with the recorded hash). A **full** check walks every kept row; the
**incremental** check (the daily one) walks only what follows the last segment already
verified, plus the one kept segment walked longest ago, so every segment is walked again
in turn while the daily cost stays that of a day.

Anchor resets. When the daemon finds its database disagreeing with the head anchor it
writes an `audit_anchor_reset` row and carries on. Such a row is a verification failure
(`anchor_reset`) until an `audit_reset_acknowledged` row (an administrator, a reason)
names it; acknowledged resets stay listed in every result.

Honest limits. The chain carries no secret: whoever can write both the database and the
head file (the service user, root) can recompute a whole consistent chain, and nothing
on the terminal alone can tell. That is what checkpoints kept off the terminal are for
(`cardapd.audit.checkpoints`): this module proves the chain is consistent with itself and
its anchor; the checkpoints prove it is the chain that was there. Rows written after the
last head update (a crash between commit and anchor write) are accepted and counted as
`unanchored`.
"""

from __future__ import annotations

import enum
import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from cardapd.audit.head import head_path_for, read_head
from cardapd.audit.log import GENESIS_HASH, AuditRecord, Segment
from cardapd.audit.schema import (
    ANCHOR_RESET,
    AUDIT_SCHEMA,
    MARKS_SQL,
    RESET_ACKNOWLEDGED,
    SEGMENT_SEALED,
)
from cardapd.errors import Cancelled, StoreError
from cardapd.storage import open_database


class Problem(enum.StrEnum):
    """What verification found wrong (stable strings, shown to operators)."""

    CHANGED = "changed"
    DELETED = "deleted"
    REORDERED = "reordered"
    INSERTED = "inserted"
    HEAD_MISSING = "head_missing"
    HEAD_CORRUPT = "head_corrupt"
    ANCHOR_RESET = "anchor_reset"
    SEGMENT_MISMATCH = "segment_mismatch"
    # against checkpoints kept off the terminal (cardapd.audit.checkpoints)
    TRUNCATED = "truncated"
    EMPTIED = "emptied"
    REWRITTEN = "rewritten"
    REPLACED = "replaced"


class Mode(enum.StrEnum):
    """How much of the chain a verification walks."""

    FULL = "full"
    INCREMENTAL = "incremental"


@dataclass(frozen=True, slots=True)
class Reset:
    """An anchor reset row and, once given, its acknowledgement."""

    seq: int
    ts_us: int
    kind: str
    problem: str
    acknowledged_seq: int = 0
    acknowledged_by: str = ""
    reason: str = ""

    @property
    def acknowledged(self) -> bool:
        """Whether an administrator acknowledged it."""
        return self.acknowledged_seq > 0


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome: `ok`, rows checked, the first bad seq and why; the chain's extent,
    its anchor, its resets and which sealed segments were walked and found sound."""

    ok: bool
    rows_checked: int
    first_bad_seq: int | None = None
    problem: Problem | None = None
    head_seq: int = 0
    head_hash: str = GENESIS_HASH.hex()
    unanchored: int = 0
    anchor_resets: tuple[int, ...] = ()
    resets: tuple[Reset, ...] = ()
    mode: Mode = Mode.FULL
    first_seq: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS_HASH.hex()
    segments_sealed: int = 0
    segments_dropped: int = 0
    walked_segments: tuple[int, ...] = ()
    detail: str = ""

    @property
    def unacknowledged(self) -> tuple[Reset, ...]:
        """The resets nobody acknowledged yet."""
        return tuple(r for r in self.resets if not r.acknowledged)

    def to_json(self) -> str:
        """The result as JSON (the verification worker's answer)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> VerifyResult:
        """Back from `to_json`."""
        data: dict[str, Any] = json.loads(text)
        data["problem"] = Problem(data["problem"]) if data["problem"] else None
        data["mode"] = Mode(data["mode"])
        data["anchor_resets"] = tuple(data["anchor_resets"])
        data["walked_segments"] = tuple(data["walked_segments"])
        data["resets"] = tuple(Reset(**r) for r in data["resets"])
        return cls(**data)


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


class _Broken(Exception):
    """The first problem found (carries what the result needs)."""

    def __init__(self, seq: int, problem: Problem, detail: str) -> None:
        super().__init__(detail)
        self.seq, self.problem, self.detail = seq, problem, detail


@dataclass
class _Walk:
    """State shared by the walks of one verification."""

    conn: sqlite3.Connection
    cancel: threading.Event | None
    head_seq: int
    limit: int
    checked: int = 0
    ranges: list[tuple[int, int]] = field(default_factory=list)

    def walk(self, first: int, last: int | None, expected_prev: bytes) -> tuple[int, bytes]:
        """Check rows `first`..`last` (None: to the end) chain from `expected_prev`;
        returns the last row's (seq, hash)."""
        expected_seq, prev = first, expected_prev
        bound = "" if last is None else " AND seq <= ?"
        params = (first,) if last is None else (first, last)
        cursor = self.conn.execute(
            f"SELECT {AuditRecord.COLUMNS} FROM audit WHERE seq >= ?{bound} "  # noqa: S608
            "ORDER BY seq", params)
        for row in cursor:
            record = AuditRecord.from_row(row)
            if record.seq != expected_seq:
                raise _Broken(expected_seq, Problem.DELETED,
                              f"row {expected_seq} is missing")
            if record.prev_hash != prev or record.expected_hash() != record.hash:
                bad, problem = _diagnose(self.conn, record, prev, self.limit, self.head_seq)
                raise _Broken(bad, problem, f"row {bad} does not chain ({problem})")
            self.checked += 1
            expected_seq, prev = expected_seq + 1, record.hash
            if (self.cancel is not None and self.checked % CANCEL_EVERY == 0
                    and self.cancel.is_set()):
                raise Cancelled("audit chain verification cancelled")
        if last is not None and expected_seq <= last:
            raise _Broken(expected_seq, Problem.DELETED, f"row {expected_seq} is missing")
        self.ranges.append((first, expected_seq - 1))
        return expected_seq - 1, prev


def verify(path: Path, *, head_path: Path | None = None,
           cancel: threading.Event | None = None, mode: Mode = Mode.FULL) -> VerifyResult:
    """Check the chain kept in the audit database at `path` and its head anchor.

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
        conn.execute("BEGIN")  # one consistent snapshot for the whole check
        return _check(conn, head, head_problem, cancel, mode)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot verify {path}: {exc}") from exc
    finally:
        conn.close()


def load_segments(conn: sqlite3.Connection) -> list[Segment]:
    """Every sealed segment in the snapshot, oldest first."""
    rows = conn.execute(f"SELECT {Segment.COLUMNS} FROM audit_segments "  # noqa: S608
                        "ORDER BY segment").fetchall()
    return [Segment.from_row(r) for r in rows]


def load_resets(conn: sqlite3.Connection) -> list[Reset]:
    """The anchor resets among the kept rows, with their acknowledgements."""
    marks = conn.execute(
        f"SELECT seq, ts_us, operation, actor, detail FROM audit "  # noqa: S608
        f"WHERE operation IN ({MARKS_SQL}) AND operation IN (?, ?) ORDER BY seq",
        (ANCHOR_RESET, RESET_ACKNOWLEDGED)).fetchall()
    resets: dict[int, Reset] = {}
    for seq, ts_us, operation, actor, detail_json in marks:
        try:
            detail = json.loads(detail_json)
        except ValueError:
            detail = {}
        if not isinstance(detail, dict):
            detail = {}
        if operation == ANCHOR_RESET:
            resets[seq] = Reset(seq, ts_us, str(detail.get("kind") or "unknown"),
                                str(detail.get("problem") or ""))
            continue
        target = detail.get("reset_seq")
        if not isinstance(target, int):
            continue
        reset = resets.get(target)
        if reset is not None and not reset.acknowledged:
            resets[target] = replace(reset, acknowledged_seq=seq,
                                     acknowledged_by=str(detail.get("administrator") or actor),
                                     reason=str(detail.get("reason") or ""))
    return list(resets.values())


def _start(first: tuple[int, bytes] | None, segments: Sequence[Segment]
           ) -> tuple[int, bytes] | None:
    """Where the kept chain starts and the hash its first row must chain from; None when
    no row is kept. Raises `_Broken` when rows are missing at the start."""
    if first is None:
        if segments and not segments[-1].dropped:
            raise _Broken(segments[-1].first_seq, Problem.DELETED,
                          f"segment {segments[-1].segment} was never dropped, its rows "
                          "are gone")
        return None
    seq, prev = first
    if seq == 1:
        return 1, GENESIS_HASH
    holder = next((s for s in segments if s.first_seq <= seq <= s.last_seq), None)
    before = [s for s in segments if s.last_seq < seq]
    kept_before = [s for s in before if not s.dropped]
    if kept_before:
        raise _Broken(kept_before[0].first_seq, Problem.DELETED,
                      f"the rows of segment {kept_before[0].segment} are gone but it was "
                      "never dropped")
    if holder is None:  # the first kept row follows the last dropped segment
        if before and seq == before[-1].last_seq + 1:
            return seq, before[-1].last_hash
        missing = before[-1].last_seq + 1 if before else 1
        raise _Broken(missing, Problem.DELETED, f"rows from {missing} on are missing")
    if seq == holder.first_seq:
        return seq, holder.prev_hash
    if holder.droppable and holder.dropping:  # cut short: the rows before are in its export
        return seq, prev
    raise _Broken(holder.first_seq, Problem.DELETED,
                  f"the first rows of segment {holder.segment} are gone")


def _check_segments(conn: sqlite3.Connection, segments: Sequence[Segment],
                    first_kept: int) -> None:
    """The segments form one chain and each kept one ends in its recorded seal row."""
    prev_last, prev_hash = 0, GENESIS_HASH
    for number, seg in enumerate(segments, start=1):
        if seg.segment != number:
            raise _Broken(seg.first_seq, Problem.SEGMENT_MISMATCH,
                          f"segment {number} is missing from the segment list")
        if number > 1 and (seg.first_seq != prev_last + 1 or seg.prev_hash != prev_hash):
            raise _Broken(seg.first_seq, Problem.SEGMENT_MISMATCH,
                          f"segment {number} does not start where segment {number - 1} "
                          "ended")
        prev_last, prev_hash = seg.last_seq, seg.last_hash
        if seg.dropped or seg.last_seq < first_kept:
            continue
        row = conn.execute("SELECT hash, operation FROM audit WHERE seq = ?",
                           (seg.last_seq,)).fetchone()
        if row is None:
            raise _Broken(seg.last_seq, Problem.DELETED,
                          f"the seal row {seg.last_seq} of segment {number} is missing")
        if bytes(row[0]) != seg.last_hash or row[1] != SEGMENT_SEALED:
            raise _Broken(seg.last_seq, Problem.SEGMENT_MISMATCH,
                          f"row {seg.last_seq} is not the seal of segment {number} as "
                          "recorded")


def _check(conn: sqlite3.Connection, head: tuple[int, bytes] | None,
           head_problem: Problem | None, cancel: threading.Event | None,
           mode: Mode) -> VerifyResult:
    """The whole check inside the caller's read transaction."""
    limit = int(conn.execute("SELECT count(*) FROM audit").fetchone()[0])
    head_seq, head_hash = head if head is not None else (0, GENESIS_HASH)
    segments = load_segments(conn)
    ends = conn.execute("SELECT (SELECT seq FROM audit ORDER BY seq LIMIT 1), "
                        "(SELECT prev_hash FROM audit ORDER BY seq LIMIT 1), "
                        "(SELECT seq FROM audit ORDER BY seq DESC LIMIT 1), "
                        "(SELECT hash FROM audit ORDER BY seq DESC LIMIT 1)").fetchone()
    first = None if ends[0] is None else (int(ends[0]), bytes(ends[1]))
    last_seq, last_hash = (0, GENESIS_HASH) if ends[2] is None else (int(ends[2]),
                                                                     bytes(ends[3]))
    if ends[2] is None and segments:
        last_seq, last_hash = segments[-1].last_seq, segments[-1].last_hash
    resets = load_resets(conn)
    walk = _Walk(conn, cancel, head_seq, limit)
    base = VerifyResult(
        True, 0, head_seq=head_seq, head_hash=head_hash.hex(),
        anchor_resets=tuple(r.seq for r in resets), resets=tuple(resets), mode=mode,
        first_seq=0 if first is None else first[0], last_seq=last_seq,
        last_hash=last_hash.hex(), segments_sealed=len(segments),
        segments_dropped=sum(1 for s in segments if s.dropped))
    try:
        start = _start(first, segments)
        _check_segments(conn, segments, 0 if first is None else first[0])
        if start is not None:
            _walk_chain(walk, start, segments, mode)
        anchor_seq = _check_anchor(conn, head, head_problem, last_seq, segments)
    except _Broken as broken:
        return replace(base, ok=False, rows_checked=walk.checked, first_bad_seq=broken.seq,
                       problem=broken.problem, detail=broken.detail,
                       walked_segments=_walked(segments, walk.ranges))
    done = replace(base, rows_checked=walk.checked,
                   unanchored=max(last_seq - anchor_seq, 0),
                   walked_segments=_walked(segments, walk.ranges))
    open_resets = [r for r in resets if not r.acknowledged]
    if open_resets:
        r = open_resets[0]
        return replace(done, ok=False, first_bad_seq=r.seq, problem=Problem.ANCHOR_RESET,
                       detail=f"anchor reset at row {r.seq} ({r.kind}: {r.problem}) is not "
                              "acknowledged")
    return done


def _walk_chain(walk: _Walk, start: tuple[int, bytes], segments: Sequence[Segment],
                mode: Mode) -> None:
    """Walk everything kept (full) or what is new plus one segment in rotation."""
    first, prev = start
    if mode is Mode.FULL:
        walk.walk(first, None, prev)
        return
    verified = None  # the newest segment with every segment up to it verified
    for seg in segments:
        if seg.verified_us is None:
            break
        verified = seg
    if verified is None or verified.last_seq < first:
        walk.walk(first, None, prev)
        return
    walk.walk(verified.last_seq + 1, None, verified.last_hash)
    kept = [s for s in segments if not s.dropped and s.first_seq >= first
            and s.verified_us is not None]
    if kept:  # the kept segment walked longest ago, walked again
        oldest = min(kept, key=lambda s: (s.verified_us or 0, s.segment))
        walk.walk(oldest.first_seq, oldest.last_seq, oldest.prev_hash)


def _check_anchor(conn: sqlite3.Connection, head: tuple[int, bytes] | None,
                  head_problem: Problem | None, last_seq: int,
                  segments: Sequence[Segment]) -> int:
    """The head anchor agrees with the chain; returns the anchored seq."""
    if head_problem is not None and last_seq > 0:
        raise _Broken(last_seq, head_problem, f"the head anchor is {head_problem}")
    head_seq, head_hash = head if head is not None else (0, GENESIS_HASH)
    if head_seq > last_seq:
        raise _Broken(last_seq + 1, Problem.DELETED,
                      f"the chain ends at {last_seq}, the head anchor says {head_seq}")
    if head_seq > 0:
        row = conn.execute("SELECT hash FROM audit WHERE seq = ?", (head_seq,)).fetchone()
        found = None if row is None else bytes(row[0])
        if found is None:
            found = next((s.last_hash for s in segments if s.last_seq == head_seq), None)
        if found is not None and found != head_hash:
            raise _Broken(head_seq, Problem.CHANGED,
                          f"row {head_seq} does not match the head anchor")
    return head_seq


def _walked(segments: Sequence[Segment], ranges: Sequence[tuple[int, int]]
            ) -> tuple[int, ...]:
    """The sealed segments lying wholly inside the walked ranges."""
    return tuple(s.segment for s in segments if not s.dropped and any(
        lo <= s.first_seq and s.last_seq <= hi for lo, hi in ranges))
