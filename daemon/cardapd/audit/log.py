"""The audit log: every operation of the terminal, hash-chained, in SQLite WAL.

Each row records who (`actor`), what (`operation`), which card (a CPLC-based card id,
never the My Number), which reader, the result, a stable reason, the request id, the
time and a small JSON detail. Row `n` carries
`hash = sha256(prev_hash || canonical_json(row fields incl. seq and ts_us))` with the
first `prev_hash` 32 zero bytes, so `verify` proves no row was changed, removed from
the middle, reordered or inserted. The chain head (latest seq and hash) is also
written to a small side file, `audit.head` (see `cardapd.audit.head`), after each
commit, so that cutting rows off the *end* is detected too (see `cardapd.audit.verify`
for the honest limits).

Durability is chosen per row (`cardapd.storage.Durability`, docs/decisions.md D8):
`POWER` (an fsync per commit: survives a power loss) for loads, deletes, logins, roster
changes and the daemon's start and stop — rare, slow anyway and legally relevant;
`PROCESS` (no fsync: survives `kill -9` of the daemon, not a power loss) for the gate's
high-rate reads, whose latency budget (~0.1 ms for the log) is far below one fsync. A
later POWER commit hardens every earlier PROCESS row with it, so a power loss can only
lose a *suffix* of PROCESS rows after the last POWER commit, never a hole.

A batch that mixes both levels is committed with the strongest one asked for.
Every failure (disk full, database locked or corrupt) raises `StoreError`; the caller
must then refuse the operation, since an operation that is not logged must not happen.

The log is kept in segments (docs/decisions.md D32): `seal` closes the open segment with
an `audit_segment_sealed` row (its hash is the segment's last hash, which the next row
chains from) and records the segment in `audit_segments`; `drop_rows` deletes the rows of
a verified, exported segment, whose record stays as the tombstone the kept chain starts
from. The newest row committed with `Durability.POWER` is the `durable_head`: the only
row a checkpoint names, since a power loss may take the PROCESS rows after it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cardapd.audit.head import HeadWriter, head_path_for, read_head
from cardapd.audit.schema import ANCHOR_RESET, AUDIT_SCHEMA, SEGMENT_SEALED
from cardapd.errors import StoreError
from cardapd.mynumber import DeviceName, HexText, UserIdText, looks_like_my_number
from cardapd.storage import Durability, open_database

log = logging.getLogger(__name__)

GENESIS_HASH = bytes(32)
"""The `prev_hash` of the first row."""

MAX_FIELD_CHARS = 256
MAX_DETAIL_BYTES = 4096
ANCHOR_RESET_OPERATION = ANCHOR_RESET
"""Operation of the row the log writes itself when `audit.head` disagrees with the DB."""
DROP_CHUNK = 2000
"""Rows deleted per transaction when a segment is dropped (the write lock stays short)."""


def grouped_hex(digest: bytes) -> str:
    """A hash for an audit row's detail: hex in groups of 8 joined by ':', so that it can
    never hold the 12-digit run the My Number guard refuses."""
    text = digest.hex()
    return ":".join(text[i:i + 8] for i in range(0, len(text), 8))


def now_us() -> int:
    """The wall clock in microseconds (the default clock of the log)."""
    return time.time_ns() // 1000

def _strings(value: object) -> list[str]:
    """Every string (keys included) inside a JSON-like value, except user IDs (D49), AIDs
    (`HexText`) and reader names from PC/SC (`DeviceName`)."""
    if isinstance(value, UserIdText | HexText | DeviceName):
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        out: list[str] = []
        for k, v in value.items():
            out += _strings(k) + _strings(v)
        return out
    if isinstance(value, list | tuple):
        return [s for item in value for s in _strings(item)]
    return []


def canonical_json(value: object) -> str:
    """Deterministic JSON: sorted keys, no spaces, ASCII only, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What the caller logs; validated on construction (raises `StoreError`)."""

    operation: str
    result: str
    actor: str = "system"
    card_id: str | None = None
    reader: str | None = None
    reason: str | None = None
    request_id: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    detail_json: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("operation", "result", "actor"):
            if not getattr(self, name):
                raise StoreError(f"audit entry: {name} must not be empty")
        for name in ("operation", "result", "actor", "card_id", "reader", "reason",
                     "request_id"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str)
                                      or len(value) > MAX_FIELD_CHARS):
                raise StoreError(f"audit entry: {name} must be a string of at most "
                                 f"{MAX_FIELD_CHARS} characters")
        try:
            detail_json = canonical_json(dict(self.detail))
        except (TypeError, ValueError) as exc:
            raise StoreError(f"audit entry: detail is not JSON: {exc}") from exc
        if len(detail_json) > MAX_DETAIL_BYTES:
            raise StoreError(f"audit entry: detail is {len(detail_json)} bytes, "
                             f"at most {MAX_DETAIL_BYTES}")
        texts = [s for s in (self.operation, self.result, self.actor, self.card_id,
                             self.reader, self.reason, self.request_id)
                 if s and not isinstance(s, DeviceName)]
        # One pass over everything, separated so digits of two fields never join.
        if looks_like_my_number("\n".join(texts + _strings(self.detail))):
            raise StoreError("audit entry: refusing to log what looks like a My Number",
                             reason="AUDIT_MY_NUMBER_REFUSED")
        object.__setattr__(self, "detail_json", detail_json)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One stored row of the log, exactly as hashed."""

    seq: int
    ts_us: int
    actor: str
    operation: str
    card_id: str | None
    reader: str | None
    result: str
    reason: str | None
    request_id: str | None
    detail_json: str
    prev_hash: bytes
    hash: bytes

    COLUMNS = ("seq, ts_us, actor, operation, card_id, reader, result, reason, "
               "request_id, detail, prev_hash, hash")

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> AuditRecord:
        """Build from a `SELECT {COLUMNS}` row."""
        return cls(*row)

    @property
    def ts(self) -> datetime:
        """The commit time (UTC)."""
        return datetime.fromtimestamp(self.ts_us / 1_000_000, UTC)

    @property
    def detail(self) -> dict[str, Any]:
        """The detail, parsed."""
        parsed: dict[str, Any] = json.loads(self.detail_json)
        return parsed

    def expected_hash(self, prev_hash: bytes | None = None, seq: int | None = None) -> bytes:
        """The chain hash of this row's content (optionally at another position)."""
        return chain_hash(self.prev_hash if prev_hash is None else prev_hash,
                          self.seq if seq is None else seq, self.ts_us, self.actor,
                          self.operation, self.card_id, self.reader, self.result,
                          self.reason, self.request_id, self.detail_json)

    def as_dict(self) -> dict[str, Any]:
        """The row as JSON-ready values (hashes in hex, detail parsed, ts in ISO 8601)."""
        return {"seq": self.seq, "ts": self.ts.isoformat(), "ts_us": self.ts_us,
                "actor": self.actor, "operation": self.operation, "card_id": self.card_id,
                "reader": self.reader, "result": self.result, "reason": self.reason,
                "request_id": self.request_id, "detail": self.detail,
                "prev_hash": self.prev_hash.hex(), "hash": self.hash.hex()}


def chain_hash(prev_hash: bytes, seq: int, ts_us: int, actor: str, operation: str,
               card_id: str | None, reader: str | None, result: str, reason: str | None,
               request_id: str | None, detail_json: str) -> bytes:
    """sha256(prev_hash || canonical JSON of the row's fields, seq and ts included)."""
    body = canonical_json({
        "seq": seq, "ts_us": ts_us, "actor": actor, "operation": operation,
        "card_id": card_id, "reader": reader, "result": result, "reason": reason,
        "request_id": request_id, "detail": detail_json,
    })
    return hashlib.sha256(prev_hash + body.encode("ascii")).digest()


@dataclass(frozen=True, slots=True)
class OpenSegment:
    """The rows after the last sealed segment."""

    segment: int
    first_seq: int
    first_ts_us: int
    prev_hash: bytes
    rows: int


@dataclass(frozen=True, slots=True)
class Segment:
    """One sealed segment (a row of `audit_segments`)."""

    segment: int
    first_seq: int
    last_seq: int
    prev_hash: bytes
    last_hash: bytes
    first_ts_us: int
    last_ts_us: int
    rows: int
    sealed_us: int
    verified_us: int | None = None
    export_file: str | None = None
    export_sha256: str | None = None
    exported_us: int | None = None
    drop_started_us: int | None = None
    dropped_us: int | None = None

    COLUMNS = ("segment, first_seq, last_seq, prev_hash, last_hash, first_ts_us, last_ts_us, "
               "rows, sealed_us, verified_us, export_file, export_sha256, exported_us, "
               "drop_started_us, dropped_us")

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Segment:
        """Build from a `SELECT {COLUMNS}` row."""
        return cls(row[0], row[1], row[2], bytes(row[3]), bytes(row[4]), *row[5:])

    @property
    def dropped(self) -> bool:
        """Whether its rows were deleted (the record stays as a tombstone)."""
        return self.dropped_us is not None

    @property
    def droppable(self) -> bool:
        """Verified and exported: the guard trigger lets its rows go."""
        return self.verified_us is not None and self.exported_us is not None

    @property
    def dropping(self) -> bool:
        """Its drop began (its first rows may be gone) and has not finished."""
        return self.drop_started_us is not None and self.dropped_us is None


# --- the log ---------------------------------------------------------------------------

_INSERT = ("INSERT INTO audit (seq, ts_us, actor, operation, card_id, reader, result, "
           "reason, request_id, detail, prev_hash, hash) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


class AuditLog:
    """The synchronous log: one connection, one thread (see `AsyncAuditLog` for asyncio)."""

    def __init__(self, path: Path, *, head_path: Path | None = None,
                 clock: Callable[[], int] = now_us) -> None:
        self.path = Path(path)
        self.head_path = head_path or head_path_for(self.path)
        self._clock = clock
        self._db = open_database(self.path, AUDIT_SCHEMA)
        self._conn = self._db.conn
        self._head_writer = HeadWriter(self.head_path)
        self._head: tuple[int, bytes] = (0, GENESIS_HASH)
        self._tail_cache: tuple[int, bytes, int] | None = None
        self._durable: AuditRecord | None = None
        self.reset: AuditRecord | None = None
        """The anchor reset row written at this open, if the head disagreed."""
        self._dirty = False
        try:
            self._reconcile_head()
        except BaseException:
            self.close()
            raise

    @property
    def last_seq(self) -> int:
        """The seq of the newest committed row (0 when empty)."""
        return self._head[0]

    @property
    def durable_head(self) -> AuditRecord | None:
        """The newest row committed to survive a power loss in this process (None before
        the first such commit): what a checkpoint may name."""
        return self._durable

    def _tail(self) -> tuple[int, bytes, int]:
        """The newest row's (seq, hash, ts_us); with every row dropped, the last sealed
        segment's; (0, genesis, 0) for a new log."""
        row = self._conn.execute(
            "SELECT seq, hash, ts_us FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None:
            row = self._conn.execute(
                "SELECT last_seq, last_hash, last_ts_us FROM audit_segments "
                "ORDER BY last_seq DESC LIMIT 1").fetchone()
        return (0, GENESIS_HASH, 0) if row is None else (row[0], row[1], row[2])

    def _hash_at(self, seq: int) -> bytes | None:
        """The chain hash of row `seq`, from the row or a dropped segment's tombstone."""
        row = self._conn.execute("SELECT hash FROM audit WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            row = self._conn.execute("SELECT last_hash FROM audit_segments WHERE last_seq = ?",
                                     (seq,)).fetchone()
        return None if row is None else bytes(row[0])

    def _reconcile_head(self) -> None:
        """Re-anchor the head file at open; record any disagreement in the chain itself
        (an anchor reset: a verification failure until an administrator acknowledges it)."""
        seq, digest, _ = self._tail()
        self._head = (seq, digest)
        kind = problem = None
        try:
            head = read_head(self.head_path)
        except (ValueError, OSError) as exc:
            head, kind, problem = None, "head_corrupt", f"head file unreadable: {exc}"
        if head is None and problem is None and seq > 0:
            kind, problem = "head_missing", "head file missing"
        elif head is not None and head[0] > seq:
            kind = "emptied" if seq == 0 else "truncated"
            problem = (f"the database ends at seq {seq}, the head anchor says {head[0]}: "
                       + ("every row is gone" if seq == 0 else
                          f"{head[0] - seq} row(s) cut off the end"))
        elif head is not None and head[0] > 0 and self._hash_at(head[0]) != head[1]:
            kind = "rewritten"
            problem = (f"row {head[0]} does not match the head anchor: the database holds "
                       "another chain (rewritten or replaced)")
        if problem is not None:
            log.error("audit log %s: %s; recording an anchor reset (a verification failure "
                      "until an administrator acknowledges it: cardapctl audit acknowledge)",
                      self.path, problem)
            detail = {"kind": kind, "problem": problem, "db_seq": seq,
                      "head_seq": None if head is None else head[0],
                      "head_hash": None if head is None else grouped_hex(head[1])}
            self.reset = self.append(AuditEntry(
                ANCHOR_RESET_OPERATION, "failed", actor="system",
                reason="AUDIT_ANCHOR_MISMATCH", detail=detail), Durability.POWER)
        elif head is None or head[0] < seq:
            self.write_head()

    def append(self, entry: AuditEntry,
               durability: Durability = Durability.POWER) -> AuditRecord:
        """Commit one entry, anchor the head; raises `StoreError` on any failure."""
        (record,) = self.append_batch([(entry, durability)])
        self.write_head()
        return record

    def append_batch(self, items: Sequence[tuple[AuditEntry, Durability]]
                     ) -> list[AuditRecord]:
        """Commit entries in one transaction at the strongest durability asked for.

        Does not write the head file: call `write_head` after it returns, before
        telling anyone (the head may lag the database, never lead it).
        """
        if not items:
            return []
        durability = (Durability.POWER if any(d is Durability.POWER for _, d in items)
                      else Durability.PROCESS)
        entries = [entry for entry, _ in items]
        return self._commit(durability, lambda conn: self._insert(conn, entries),
                            single=len(entries) == 1)

    def _commit(self, durability: Durability,
                work: Callable[[sqlite3.Connection], list[AuditRecord]], *,
                single: bool = False) -> list[AuditRecord]:
        """Run `work` in one transaction (one autocommit statement when `single`) and
        commit it at `durability`; the new rows become the tail (and the durable head)."""
        conn = self._conn
        try:
            self._db.set_durability(durability)
            if not single:
                conn.execute("BEGIN IMMEDIATE")
            try:
                records = work(conn)
                if not single:
                    conn.execute("COMMIT")
            except BaseException:
                self._tail_cache = None
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"audit log {self.path}: append failed: {exc}") from exc
        if records:
            self._head = (records[-1].seq, records[-1].hash)
            self._tail_cache = (records[-1].seq, records[-1].hash, records[-1].ts_us)
            if durability is Durability.POWER:
                self._durable = records[-1]
            self._dirty = True
        return records

    def _insert(self, conn: sqlite3.Connection, entries: Sequence[AuditEntry]
                ) -> list[AuditRecord]:
        """Chain and insert `entries` after the tail (inside the caller's transaction)."""
        # The tail is cached: we are the only writer. Should another process append
        # anyway, our next seq collides with its row (primary key), the commit fails and
        # the cache is re-read: no fork of the chain.
        seq, prev, last_ts = self._tail_cache or self._tail()
        ts_us = max(self._clock(), last_ts)
        records: list[AuditRecord] = []
        for entry in entries:
            seq += 1
            fields = (entry.actor, entry.operation, entry.card_id, entry.reader,
                      entry.result, entry.reason, entry.request_id, entry.detail_json)
            digest = chain_hash(prev, seq, ts_us, *fields)
            records.append(AuditRecord(seq, ts_us, *fields, prev, digest))
            prev = digest
        rows = [(r.seq, r.ts_us, r.actor, r.operation, r.card_id, r.reader, r.result,
                 r.reason, r.request_id, r.detail_json, r.prev_hash, r.hash)
                for r in records]
        if len(rows) == 1:
            conn.execute(_INSERT, rows[0])
        else:
            conn.executemany(_INSERT, rows)
        return records

    # --- segments --------------------------------------------------------------------

    def open_segment(self) -> OpenSegment | None:
        """The rows not sealed yet (None when there are none)."""
        conn = self._conn
        last = conn.execute("SELECT segment, last_seq, last_hash FROM audit_segments "
                            "ORDER BY segment DESC LIMIT 1").fetchone()
        number, after, prev = (1, 0, GENESIS_HASH) if last is None else (
            last[0] + 1, last[1], bytes(last[2]))
        first = conn.execute("SELECT seq, ts_us, prev_hash FROM audit WHERE seq > ? "
                             "ORDER BY seq LIMIT 1", (after,)).fetchone()
        if first is None:
            return None
        tail = self._tail()
        if last is None:
            prev = bytes(first[2])  # the log's first row (a log from before segments)
        return OpenSegment(number, first[0], first[1], prev, tail[0] - first[0] + 1)

    def seal(self, sealed_us: int | None = None) -> Segment | None:
        """Close the open segment with a durable `audit_segment_sealed` row and record it;
        None when there is nothing to seal."""
        opened = self.open_segment()
        if opened is None:
            return None
        when = self._clock() if sealed_us is None else sealed_us
        entry = AuditEntry(SEGMENT_SEALED, "ok", actor="system", detail={
            "segment": opened.segment, "first_seq": opened.first_seq,
            "rows": opened.rows + 1})

        def work(conn: sqlite3.Connection) -> list[AuditRecord]:
            records = self._insert(conn, [entry])
            seal = records[0]
            conn.execute(
                "INSERT INTO audit_segments (segment, first_seq, last_seq, prev_hash, "
                "last_hash, first_ts_us, last_ts_us, rows, sealed_us) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (opened.segment, opened.first_seq, seal.seq, opened.prev_hash, seal.hash,
                 opened.first_ts_us, seal.ts_us, seal.seq - opened.first_seq + 1, when))
            return records

        (seal,) = self._commit(Durability.POWER, work)
        self.write_head()
        return Segment(opened.segment, opened.first_seq, seal.seq, opened.prev_hash,
                       seal.hash, opened.first_ts_us, seal.ts_us,
                       seal.seq - opened.first_seq + 1, when)

    @property
    def connection(self) -> sqlite3.Connection:
        """The writer's connection (for reads on the writer thread only)."""
        return self._conn

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of one query on the writer's connection (StoreError on failure)."""
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"audit log {self.path}: {exc}") from exc

    def segments(self) -> list[Segment]:
        """Every sealed segment, oldest first (dropped ones included)."""
        rows = self._conn.execute(f"SELECT {Segment.COLUMNS} FROM audit_segments "  # noqa: S608
                                  "ORDER BY segment").fetchall()
        return [Segment.from_row(r) for r in rows]

    def mark_verified(self, segments: Sequence[int], at_us: int) -> None:
        """Record that these segments were walked and found sound at `at_us`."""
        if segments:
            with self._db.write(Durability.PROCESS) as conn:
                conn.executemany("UPDATE audit_segments SET verified_us = ? WHERE segment = ?",
                                 [(at_us, n) for n in segments])

    def mark_exported(self, segment: int, export_file: str, sha256: str, at_us: int) -> None:
        """Record that a segment's rows are in `export_file` (fsynced), with its SHA-256."""
        with self._db.write(Durability.POWER) as conn:
            conn.execute("UPDATE audit_segments SET export_file = ?, export_sha256 = ?, "
                         "exported_us = ? WHERE segment = ?",
                         (export_file, sha256, at_us, segment))

    def drop_rows(self, segment: int, at_us: int, chunk: int = DROP_CHUNK) -> int:
        """Delete up to `chunk` of the oldest rows of a verified, exported segment (the
        guard trigger refuses any other row); when none is left, mark it dropped. Returns
        the rows deleted (0: the segment is dropped)."""
        seg = self._conn.execute("SELECT first_seq, last_seq FROM audit_segments "
                                 "WHERE segment = ? AND verified_us IS NOT NULL AND "
                                 "exported_us IS NOT NULL", (segment,)).fetchone()
        if seg is None:
            raise StoreError(f"audit segment {segment} is not verified and exported: "
                             "not dropped")
        with self._db.write(Durability.POWER) as conn:
            conn.execute("UPDATE audit_segments SET drop_started_us = ? WHERE segment = ? "
                         "AND drop_started_us IS NULL", (at_us, segment))
            cur = conn.execute(
                "DELETE FROM audit WHERE seq IN (SELECT seq FROM audit WHERE seq BETWEEN ? "
                "AND ? ORDER BY seq LIMIT ?)", (seg[0], seg[1], chunk))
            deleted = cur.rowcount
            if deleted == 0:
                conn.execute("UPDATE audit_segments SET dropped_us = ? WHERE segment = ? "
                             "AND dropped_us IS NULL", (at_us, segment))
        if deleted:
            self._dirty = True
        return deleted

    def write_head(self) -> None:
        """Anchor the newest committed (seq, hash) in the head file; logs on failure."""
        try:
            self._head_writer.write(*self._head)
        except OSError as exc:
            log.error("audit log %s: cannot write head file %s: %s",
                      self.path, self.head_path, exc)

    def checkpoint(self) -> None:
        """Copy the WAL into the database when nobody reads (cheap when idle)."""
        if not self._dirty:
            return
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._dirty = False
        except sqlite3.Error as exc:
            log.warning("audit log %s: checkpoint failed: %s", self.path, exc)

    def close(self) -> None:
        """Close the connection (the WAL stays valid; nothing is lost)."""
        self._head_writer.close()
        self._db.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
