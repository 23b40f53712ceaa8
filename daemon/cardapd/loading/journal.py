"""The operations journal: one SQLite row per load/delete, written before the first APDU.

A row is `started` before anything reaches the card and becomes `done`/`failed` after the
last answer; a row still `started` when the daemon starts again was interrupted (killed
mid-load) and is marked `interrupted`. Unfinished rows (`started`/`interrupted`, or
`failed` with the card pulled) are reconciled the next time their card is seen.
Every write is `Durability.POWER`: a row that said "started" survives a power loss.
Retention (`prune`, `[retention] journal_days`) drops only finished rows with nothing
left to reconcile; an index of version 2 finds them.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cardapd.storage import Durability, Migration, Schema, open_database

STATES = ("started", "done", "failed", "interrupted", "reconciled")
ACTIONS = ("load", "delete")
JOURNAL_SCHEMA = Schema("operations journal", (
    # IF NOT EXISTS: the journal had no version before; version 1 adopts such a file.
    Migration(1, "operations journal: one row per load or delete", (
        """CREATE TABLE IF NOT EXISTS operations (
            id TEXT PRIMARY KEY,
            card_id TEXT NOT NULL,
            action TEXT NOT NULL,
            ap_id TEXT NOT NULL,
            aid TEXT NOT NULL,
            organisation TEXT NOT NULL,
            operator TEXT NOT NULL,
            state TEXT NOT NULL,
            needs_reconcile INTEGER NOT NULL DEFAULT 0,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            outcome TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX IF NOT EXISTS operations_card ON operations (card_id, needs_reconcile)",
    )),
    Migration(2, "operations journal: index of finished rows, for retention", (
        "CREATE INDEX operations_finished ON operations (needs_reconcile, finished_at)",
    )),
))


@dataclass(frozen=True)
class JournalRow:
    """One journal row."""

    id: str
    card_id: str
    action: str
    ap_id: str
    aid: str
    organisation: str
    operator: str
    state: str
    needs_reconcile: bool
    started_at: str
    finished_at: str | None
    outcome: str


def new_id() -> str:
    """A fresh journal id: `j-` + two 8-hex-digit groups (never 12 digits in a row)."""
    raw = os.urandom(8).hex()
    return f"j-{raw[:8]}-{raw[8:]}"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class Journal:
    """The journal database (blocking calls; the loader runs them in a thread)."""

    def __init__(self, path: Path) -> None:
        self._db = open_database(path, JOURNAL_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def start(self, *, card_id: str, action: str, ap_id: str, aid: str, organisation: str,
              operator: str, journal_id: str | None = None) -> str:
        """Write a `started` row (committed with fsync) and return its id."""
        if action not in ACTIONS:
            raise ValueError(f"unknown journal action {action!r}")
        jid = journal_id or new_id()
        with self._db.write(Durability.POWER) as conn:
            conn.execute(
                "INSERT INTO operations (id, card_id, action, ap_id, aid, organisation, "
                "operator, state, needs_reconcile, started_at) VALUES (?,?,?,?,?,?,?,?,1,?)",
                (jid, card_id, action, ap_id, aid, organisation, operator, "started", _now()))
        return jid

    def finish(self, jid: str, state: str, outcome: str, *, reconcile: bool = False,
               aid: str | None = None) -> None:
        """Record the end of an operation; `reconcile` keeps it on the card's to-do list."""
        if state not in STATES:
            raise ValueError(f"unknown journal state {state!r}")
        with self._db.write(Durability.POWER) as conn:
            conn.execute(
                "UPDATE operations SET state = ?, outcome = ?, finished_at = ?, "
                "needs_reconcile = ?, aid = COALESCE(?, aid) WHERE id = ?",
                (state, outcome, _now(), int(reconcile), aid, jid))

    def mark_interrupted(self) -> int:
        """At start: every row still `started` was cut short; returns how many."""
        with self._db.write(Durability.POWER) as conn:
            cur = conn.execute(
                "UPDATE operations SET state = 'interrupted', needs_reconcile = 1, "
                "outcome = 'daemon stopped during the operation' WHERE state = 'started'")
            return cur.rowcount

    def prune(self, older_than: dt.datetime) -> int:
        """Drop finished rows (done, failed or reconciled, nothing left to reconcile)
        finished before `older_than`; returns how many."""
        cutoff = older_than.astimezone(dt.UTC).isoformat(timespec="milliseconds")
        with self._db.write(Durability.POWER) as conn:
            cur = conn.execute(
                "DELETE FROM operations WHERE needs_reconcile = 0 AND finished_at IS NOT NULL "
                "AND finished_at < ? AND state IN ('done', 'failed', 'reconciled')", (cutoff,))
            return cur.rowcount

    def unfinished(self, card_id: str) -> list[JournalRow]:
        """Rows of `card_id` that still need a reconciliation, oldest first."""
        rows = self._db.read("SELECT * FROM operations WHERE card_id = ? AND "
                             "needs_reconcile = 1 ORDER BY started_at", (card_id,))
        return [_row(r) for r in rows]

    def get(self, jid: str) -> JournalRow | None:
        """One row by id."""
        r = self._db.read_one("SELECT * FROM operations WHERE id = ?", (jid,))
        return None if r is None else _row(r)

    def for_card(self, card_id: str) -> list[JournalRow]:
        """Every row of a card, oldest first."""
        rows = self._db.read("SELECT * FROM operations WHERE card_id = ? "
                             "ORDER BY started_at", (card_id,))
        return [_row(r) for r in rows]


def _row(r: tuple[object, ...]) -> JournalRow:
    (jid, card_id, action, ap_id, aid, org, operator, state, needs, started, finished,
     outcome) = r
    return JournalRow(str(jid), str(card_id), str(action), str(ap_id), str(aid), str(org),
                      str(operator), str(state), bool(needs), str(started),
                      None if finished is None else str(finished), str(outcome))
