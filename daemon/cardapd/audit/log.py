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
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cardapd.audit.head import HeadWriter, head_path_for, read_head
from cardapd.audit.schema import AUDIT_SCHEMA
from cardapd.errors import StoreError
from cardapd.mynumber import UserIdText, looks_like_my_number
from cardapd.storage import Durability, open_database

log = logging.getLogger(__name__)

GENESIS_HASH = bytes(32)
"""The `prev_hash` of the first row."""

MAX_FIELD_CHARS = 256
MAX_DETAIL_BYTES = 4096
ANCHOR_RESET_OPERATION = "audit_anchor_reset"
"""Operation of the row the log writes itself when `audit.head` disagrees with the DB."""

def _strings(value: object) -> list[str]:
    """Every string (keys included) inside a JSON-like value, except user IDs (D28)."""
    if isinstance(value, UserIdText):
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
                             self.reader, self.reason, self.request_id) if s]
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


# --- the log ---------------------------------------------------------------------------

_INSERT = ("INSERT INTO audit (seq, ts_us, actor, operation, card_id, reader, result, "
           "reason, request_id, detail, prev_hash, hash) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


class AuditLog:
    """The synchronous log: one connection, one thread (see `AsyncAuditLog` for asyncio)."""

    def __init__(self, path: Path, *, head_path: Path | None = None) -> None:
        self.path = Path(path)
        self.head_path = head_path or head_path_for(self.path)
        self._db = open_database(self.path, AUDIT_SCHEMA)
        self._conn = self._db.conn
        self._head_writer = HeadWriter(self.head_path)
        self._head: tuple[int, bytes] = (0, GENESIS_HASH)
        self._tail_cache: tuple[int, bytes, int] | None = None
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

    def _tail(self) -> tuple[int, bytes, int]:
        row = self._conn.execute(
            "SELECT seq, hash, ts_us FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        return (0, GENESIS_HASH, 0) if row is None else (row[0], row[1], row[2])

    def _reconcile_head(self) -> None:
        """Re-anchor the head file at open; record any disagreement in the chain itself."""
        seq, digest, _ = self._tail()
        self._head = (seq, digest)
        try:
            head = read_head(self.head_path)
            problem = None
        except (ValueError, OSError) as exc:
            head, problem = None, f"head file unreadable: {exc}"
        if head is None and problem is None and seq > 0:
            problem = "head file missing"
        elif head is not None and head[0] > seq:
            problem = f"database ends at seq {seq}, head file says {head[0]}"
        elif head is not None and head[0] > 0:
            row = self._conn.execute("SELECT hash FROM audit WHERE seq = ?",
                                     (head[0],)).fetchone()
            if row is None or row[0] != head[1]:
                problem = f"row {head[0]} does not match the head file"
        if problem is not None:
            log.error("audit log %s: %s; recording an anchor reset", self.path, problem)
            detail = {"problem": problem, "db_seq": seq,
                      "head_seq": None if head is None else head[0],
                      "head_hash": None if head is None else head[1].hex()}
            self.append(AuditEntry(ANCHOR_RESET_OPERATION, "failed", actor="system",
                                   reason="AUDIT_ANCHOR_MISMATCH", detail=detail),
                        Durability.POWER)
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
        conn = self._conn
        try:
            self._db.set_durability(durability)
            single = len(items) == 1
            if not single:  # one row is one autocommit INSERT: the same atomic commit
                conn.execute("BEGIN IMMEDIATE")
            try:
                # The tail is cached: we are the only writer. Should another process
                # append anyway, our next seq collides with its row (primary key), the
                # commit fails and the cache is re-read: no fork of the chain.
                seq, prev, last_ts = self._tail_cache or self._tail()
                ts_us = max(time.time_ns() // 1000, last_ts)
                records: list[AuditRecord] = []
                for entry, _ in items:
                    seq += 1
                    fields = (entry.actor, entry.operation, entry.card_id, entry.reader,
                              entry.result, entry.reason, entry.request_id,
                              entry.detail_json)
                    digest = chain_hash(prev, seq, ts_us, *fields)
                    records.append(AuditRecord(seq, ts_us, *fields, prev, digest))
                    prev = digest
                rows = [(r.seq, r.ts_us, r.actor, r.operation, r.card_id, r.reader, r.result,
                         r.reason, r.request_id, r.detail_json, r.prev_hash, r.hash)
                        for r in records]
                if single:
                    conn.execute(_INSERT, rows[0])
                else:
                    conn.executemany(_INSERT, rows)
                    conn.execute("COMMIT")
            except BaseException:
                self._tail_cache = None
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"audit log {self.path}: append failed: {exc}") from exc
        self._head = (records[-1].seq, records[-1].hash)
        self._tail_cache = (records[-1].seq, records[-1].hash, ts_us)
        self._dirty = True
        return records

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
