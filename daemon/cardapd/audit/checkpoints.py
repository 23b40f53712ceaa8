"""Checkpoints: the chain head leaves the terminal, and the chain is compared with them.

Threat model (docs/decisions.md D32): whoever holds the service user's or root's rights
can rewrite the audit database and its head anchor while the daemon is stopped, and a
consistent chain cannot be told from the true one on the terminal alone. So the head —
terminal id, seq and hash of the newest row committed to survive a power loss — leaves
the terminal at start, daily, at stop, with each card session and with each
acknowledgement of an anchor reset: as a native journal entry (MESSAGE_ID
`CHECKPOINT_MESSAGE_ID`, fields `CARDAPD_AUDIT_*`) that operations forward off the box
with systemd-journal-upload, and to the loading service where it keeps them
(RecordAuditCheckpoint, and inside each SessionOpen).

`compare` holds the chain kept on the terminal against checkpoints collected elsewhere
and names what happened:

* `truncated` — rows a checkpoint saw are gone from the end (an anchor reset at or
  before them shows the chain was cut there and continued);
* `emptied` — every row was gone (the reset says the database was empty);
* `rewritten` — earlier checkpoints agree, a later one does not: the history was
  recomputed from some row on;
* `replaced` — no checkpoint agrees: the database is not the one they were taken from.

A checkpoint of a chain given up by an *acknowledged* reset (taken before it, at or past
its seq) is `superseded`, not a failure; it stays counted in the result.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cardapd.audit.log import AuditRecord, Segment
from cardapd.audit.schema import AUDIT_SCHEMA
from cardapd.audit.verify import Problem, Reset, load_segments
from cardapd.errors import CardapError, StoreError
from cardapd.storage import open_database
from cardapd.telemetry.journald import IDENTIFIER, SOCKET_ENV, JournalSender, encode
from cardapd.telemetry.logsetup import under_journal
from cardapd.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

CHECKPOINT_MESSAGE_ID = "a3375ed245a243c481b2d69094f8bbb8"
"""The journal MESSAGE_ID of every checkpoint entry (`journalctl MESSAGE_ID=…`)."""
KINDS = ("start", "daily", "session", "stop", "acknowledge")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One checkpoint (cardap.v1.AuditCheckpoint)."""

    terminal_id: str
    seq: int
    hash: str
    row_ts_us: int = 0
    kind: str = ""
    segment: int = 0
    unacknowledged_resets: int = 0

    @classmethod
    def of(cls, terminal_id: str, row: AuditRecord, kind: str, segment: int = 0,
           unacknowledged: int = 0) -> Checkpoint:
        """The checkpoint naming `row`."""
        return cls(terminal_id, row.seq, row.hash.hex(), row.ts_us, kind, segment,
                   unacknowledged)


def journal_fields(cp: Checkpoint) -> dict[str, str]:
    """The native journal entry of a checkpoint (sent as is: hex hashes are not scrubbed)."""
    return {
        "MESSAGE": (f"audit checkpoint ({cp.kind}): terminal {cp.terminal_id} seq {cp.seq} "
                    f"sha256 {cp.hash}"),
        "MESSAGE_ID": CHECKPOINT_MESSAGE_ID,
        "PRIORITY": "5" if cp.unacknowledged_resets else "6",
        "SYSLOG_IDENTIFIER": IDENTIFIER,
        "CARDAPD_AUDIT_TERMINAL": cp.terminal_id,
        "CARDAPD_AUDIT_SEQ": str(cp.seq),
        "CARDAPD_AUDIT_HASH": cp.hash,
        "CARDAPD_AUDIT_ROW_TIME_US": str(cp.row_ts_us),
        "CARDAPD_AUDIT_CHECKPOINT": cp.kind,
        "CARDAPD_AUDIT_SEGMENT": str(cp.segment),
        "CARDAPD_AUDIT_UNACKNOWLEDGED_RESETS": str(cp.unacknowledged_resets),
    }


class JournalOut:
    """Writes checkpoint entries to journald when the daemon runs under systemd (or a
    journal socket is named in CARDAPD_JOURNAL_SOCKET); elsewhere as an info log line."""

    def __init__(self, sender: JournalSender | None = None) -> None:
        if sender is None and (os.environ.get(SOCKET_ENV) or under_journal()):
            sender = JournalSender()
        self._sender = sender

    @property
    def native(self) -> bool:
        """Whether entries go to journald natively."""
        return self._sender is not None

    def write(self, cp: Checkpoint) -> bool:
        """Send one checkpoint; False when journald could not be reached (logged)."""
        if self._sender is None:
            log.info("audit checkpoint (%s): terminal %s seq %d sha256 %s", cp.kind,
                     cp.terminal_id, cp.seq, cp.hash)
            return False
        try:
            self._sender.send(encode(journal_fields(cp)))
        except OSError as exc:
            log.warning("audit checkpoint seq %d could not be sent to journald: %s", cp.seq,
                        exc)
            return False
        return True

    def close(self) -> None:
        """Close the journal socket."""
        if self._sender is not None:
            self._sender.close()


class CheckpointUplink(Protocol):
    """The loading service as a keeper of checkpoints (the `servicelink` adapter)."""

    @property
    def configured(self) -> bool:
        """Whether a loading service is configured at all."""
        ...

    async def record_checkpoint(self, checkpoint: Checkpoint) -> bool:
        """Hand one checkpoint over; False when the service does not keep checkpoints.
        Raises CardapError when it cannot be reached."""
        ...

    async def list_checkpoints(self) -> list[Checkpoint]:
        """The checkpoints the service kept for this terminal (CardapError if it cannot
        be reached or keeps none)."""
        ...


SERVICE_TIMEOUT_S = 10.0


class CheckpointSender:
    """Makes checkpoints of the durable head and sends them to the journal and, where it
    keeps them, the loading service. The link is replaced on a reload (`reconfigure`)."""

    def __init__(self, terminal_id: str, head: Callable[[], AuditRecord | None],
                 journal: JournalOut, metrics: Metrics | None = None,
                 uplink: CheckpointUplink | None = None) -> None:
        self.terminal_id = terminal_id
        self._head = head
        self.journal = journal
        self.metrics = metrics
        self.uplink = uplink
        self.segment = 0
        """The newest sealed segment (kept current by the maintenance)."""
        self.unacknowledged = 0
        """Anchor resets not acknowledged at the last verification."""
        self._service_keeps = True  # until it answers UNIMPLEMENTED

    def reconfigure(self, uplink: CheckpointUplink | None) -> None:
        """A reloaded loading-service link (D19)."""
        self.uplink = uplink
        self._service_keeps = True

    def current(self, kind: str) -> Checkpoint | None:
        """A checkpoint of the durable head (None before the first durable row)."""
        row = self._head()
        if row is None:
            return None
        return Checkpoint.of(self.terminal_id, row, kind, self.segment, self.unacknowledged)

    def to_journal(self, cp: Checkpoint) -> None:
        """One checkpoint as a native journal entry."""
        if self.journal.write(cp) and self.metrics is not None:
            self.metrics.audit_checkpoint_at.labels("journal").set(time.time())

    def for_session(self) -> Checkpoint | None:
        """The checkpoint that travels with a card session (also written to the journal)."""
        cp = self.current("session")
        if cp is not None:
            self.to_journal(cp)
        return cp

    def session_delivered(self) -> None:
        """The service answered a session that carried a checkpoint."""
        if self.metrics is not None and self.uplink is not None and self.uplink.configured:
            self.metrics.audit_checkpoint_at.labels("service").set(time.time())

    async def emit(self, kind: str, *, service: bool = True) -> Checkpoint | None:
        """Send a checkpoint of the durable head to the journal and (unless `service` is
        False) the loading service; failures are logged, never raised."""
        cp = self.current(kind)
        if cp is None:
            return None
        self.to_journal(cp)
        uplink = self.uplink
        if service and uplink is not None and uplink.configured and self._service_keeps:
            try:
                kept = await asyncio.wait_for(uplink.record_checkpoint(cp), SERVICE_TIMEOUT_S)
            except (CardapError, TimeoutError) as exc:
                message = exc.message if isinstance(exc, CardapError) else "timed out"
                log.warning("audit checkpoint seq %d not handed to the loading service: %s "
                            "(the journal has it)", cp.seq, message)
            else:
                if not kept:
                    self._service_keeps = False
                    log.info("the loading service keeps no audit checkpoints; they go to "
                             "the journal only")
                elif self.metrics is not None:
                    self.metrics.audit_checkpoint_at.labels("service").set(time.time())
        return cp


# --------------------------------------------------------------------------- comparison

@dataclass(frozen=True, slots=True)
class Finding:
    """One checkpoint the chain disagrees with."""

    problem: Problem
    seq: int
    checkpoint_hash: str
    chain_hash: str
    source: str
    message: str


@dataclass(frozen=True, slots=True)
class Comparison:
    """What the comparison found, and how the checkpoints were counted."""

    findings: tuple[Finding, ...] = ()
    matched: int = 0
    other_terminal: int = 0
    before_kept: int = 0
    superseded: int = 0

    @property
    def problem(self) -> Problem | None:
        """The name of what happened (None: every checkpoint agrees)."""
        return self.findings[0].problem if self.findings else None

    @property
    def first_bad_seq(self) -> int:
        """The lowest seq a checkpoint disagrees at (0: none)."""
        return min((f.seq for f in self.findings), default=0)


@dataclass(frozen=True, slots=True)
class ChainView:
    """What `compare` needs of the chain: its extent, hashes by seq and its resets."""

    first_seq: int
    last_seq: int
    hash_at: Callable[[int], bytes | None]
    tombstones: dict[int, bytes] = field(default_factory=dict)
    resets: Sequence[Reset] = ()


def chain_view(path: Path, resets: Sequence[Reset]) -> tuple[ChainView, sqlite3.Connection]:
    """A read-only view of the chain kept in the database at `path` (close the
    connection when done)."""
    try:
        conn = open_database(Path(path), AUDIT_SCHEMA, readonly=True).conn
    except StoreError:
        raise
    conn.execute("BEGIN")
    ends = conn.execute("SELECT min(seq), max(seq) FROM audit").fetchone()
    segments: list[Segment] = load_segments(conn)
    tombstones = {s.last_seq: s.last_hash for s in segments}
    first = int(ends[0]) if ends[0] is not None else 0
    last = int(ends[1]) if ends[1] is not None else (segments[-1].last_seq if segments
                                                      else 0)
    if first == 0 and segments:
        first = segments[-1].last_seq + 1

    def hash_at(seq: int) -> bytes | None:
        row = conn.execute("SELECT hash FROM audit WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else bytes(row[0])

    return ChainView(first, last, hash_at, tombstones, tuple(resets)), conn


def compare(view: ChainView, checkpoints: Iterable[tuple[Checkpoint, str]],
            terminal_id: str) -> Comparison:
    """Hold the chain against (checkpoint, source) pairs (see the module docstring)."""
    matched = other = before = superseded = 0
    bad: list[tuple[Checkpoint, str, bytes | None]] = []  # (checkpoint, source, found)
    agreeing: list[int] = []
    for cp, source in checkpoints:
        if cp.terminal_id != terminal_id:
            other += 1
            continue
        if cp.seq > view.last_seq:
            found = None
        elif cp.seq < view.first_seq:
            if cp.seq not in view.tombstones:
                before += 1
                continue
            found = view.tombstones[cp.seq]
        else:
            found = view.hash_at(cp.seq)
        if found is not None and found.hex() == cp.hash.lower():
            matched += 1
            agreeing.append(cp.seq)
            continue
        if any(r.acknowledged and r.seq <= cp.seq and r.ts_us >= cp.row_ts_us
               for r in view.resets):
            superseded += 1
            continue
        bad.append((cp, source, found))
    if not bad:
        return Comparison((), matched, other, before, superseded)
    lowest = min(cp.seq for cp, _, _ in bad)
    problem = _name(view, bad, agreeing, lowest)
    findings = []
    for cp, source, found in sorted(bad, key=lambda b: b[0].seq):
        which = f"{cp.kind or 'checkpoint'}, from {source}"
        if found is None:
            text = (f"checkpoint of row {cp.seq} ({which}) lies past the end of the chain "
                    f"(row {view.last_seq})")
        else:
            text = f"row {cp.seq} has hash {found.hex()}, the checkpoint ({which}) says {cp.hash}"
        findings.append(Finding(problem, cp.seq, cp.hash, "" if found is None else found.hex(),
                                source, text))
    return Comparison(tuple(findings), matched, other, before, superseded)


def _name(view: ChainView, bad: Sequence[tuple[Checkpoint, str, bytes | None]],
          agreeing: Sequence[int], lowest: int) -> Problem:
    """What happened, from the disagreeing checkpoints (see the module docstring)."""
    for reset in view.resets:
        # A reset at or below a disagreeing checkpoint, written after that row: the chain
        # the checkpoint saw was cut there and the daemon went on from the cut.
        if any(reset.seq <= cp.seq and reset.ts_us >= cp.row_ts_us for cp, _, _ in bad):
            return Problem.EMPTIED if reset.kind == "emptied" else Problem.TRUNCATED
    if all(found is None for _, _, found in bad):
        return Problem.EMPTIED if view.last_seq == 0 else Problem.TRUNCATED
    if not [seq for seq in agreeing if seq < lowest]:
        return Problem.REPLACED
    return Problem.REWRITTEN
