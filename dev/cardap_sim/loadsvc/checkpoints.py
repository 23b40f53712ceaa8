"""Audit checkpoints the reference service keeps for each terminal, in SQLite.

A terminal hands over its audit chain head (seq, hash) daily, at start and with every card
session (docs/decisions.md D32). The service keeps every one under the terminal id of the
caller's certificate, hands them back (ListAuditCheckpoints, `cardap-loadsvc checkpoints`),
and flags a checkpoint that contradicts one kept before — the same seq with another hash,
or a seq below the newest whose hash was never seen there — the moment it arrives: a
chain rewritten on the terminal is seen off the terminal.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger("cardap_sim.loadsvc.checkpoints")
PAGE = 5000  # checkpoints per ListAuditCheckpoints answer (well under 4 MiB)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    id INTEGER PRIMARY KEY,
    terminal_id TEXT NOT NULL,
    claimed_terminal TEXT NOT NULL,
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    row_time_us INTEGER NOT NULL,
    kind TEXT NOT NULL,
    segment INTEGER NOT NULL,
    unacknowledged_resets INTEGER NOT NULL,
    received_us INTEGER NOT NULL,
    diverged INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS checkpoints_terminal ON checkpoints (terminal_id, seq);
"""


@dataclass(frozen=True)
class Kept:
    """One kept checkpoint."""

    terminal_id: str
    seq: int
    hash: str
    row_time_us: int
    kind: str
    segment: int
    unacknowledged_resets: int
    received_us: int
    diverged: bool

    def as_json(self) -> str:
        """One line of `cardap-loadsvc checkpoints` (what `cardapctl audit verify
        --checkpoints FILE` reads)."""
        return json.dumps(asdict(self), sort_keys=True)


class CheckpointStore:
    """Checkpoints per terminal; thread-safe."""

    def __init__(self, path: Path | str = ":memory:") -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)

    def record(self, terminal_id: str, claimed: str, seq: int, digest: str, row_time_us: int,
               kind: str, segment: int, unacknowledged: int) -> tuple[int, bool]:
        """Keep one checkpoint; (checkpoints kept for the terminal, whether it diverges)."""
        digest = digest.lower()
        with self._lock:
            same = self._db.execute("SELECT DISTINCT hash FROM checkpoints WHERE terminal_id = ? "
                                    "AND seq = ?", (terminal_id, seq)).fetchall()
            newest = self._db.execute("SELECT max(seq) FROM checkpoints WHERE terminal_id = ?",
                                      (terminal_id,)).fetchone()[0]
            diverged = bool(same and any(h != digest for (h,) in same)) or bool(
                not same and newest is not None and seq < newest)
            self._db.execute(
                "INSERT INTO checkpoints (terminal_id, claimed_terminal, seq, hash, row_time_us, "
                "kind, segment, unacknowledged_resets, received_us, diverged) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (terminal_id, claimed, seq, digest, row_time_us, kind, segment, unacknowledged,
                 time.time_ns() // 1000, int(diverged)))
            kept = self._db.execute("SELECT count(*) FROM checkpoints WHERE terminal_id = ?",
                                    (terminal_id,)).fetchone()[0]
        if diverged:
            log.warning("terminal %s: audit checkpoint seq %d (%s) contradicts the checkpoints "
                        "kept before: its chain was rewritten or cut", terminal_id, seq, kind)
        if unacknowledged:
            log.warning("terminal %s reports %d unacknowledged audit anchor reset(s)",
                        terminal_id, unacknowledged)
        return int(kept), diverged

    def for_terminal(self, terminal_id: str, after_seq: int = 0) -> list[Kept]:
        """The terminal's checkpoints of rows after `after_seq`, in the order received."""
        out: list[Kept] = []
        cursor = 0
        while True:
            page, cursor = self.page(terminal_id, after_seq, cursor, PAGE)
            out += page
            if not cursor:
                return out

    def page(self, terminal_id: str, after_seq: int, cursor: int, limit: int
             ) -> tuple[list[Kept], int]:
        """One page in the order received, after `cursor`; (page, next cursor or 0)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, terminal_id, seq, hash, row_time_us, kind, segment, "
                "unacknowledged_resets, received_us, diverged FROM checkpoints "
                "WHERE terminal_id = ? AND seq > ? AND id > ? ORDER BY id LIMIT ?",
                (terminal_id, after_seq, cursor, limit + 1)).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        page = [Kept(r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], bool(r[9])) for r in rows]
        return page, (int(rows[-1][0]) if more else 0)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
