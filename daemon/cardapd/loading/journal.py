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
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cardapd.myna.cardid import UNCONFIRMED, CardIdKey
from cardapd.storage import Durability, Migration, Schema, open_database

_LEGACY_CPLC_ID = re.compile(r"([0-9A-F]{4})-([0-9A-F]{8})")

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

    def unfinished(self, card_ids: str | Sequence[str]) -> list[JournalRow]:
        """Rows of the card (any of its ids) that still need a reconciliation, oldest first."""
        rows = self._db.read("SELECT * FROM operations WHERE card_id IN (SELECT value FROM "
                             "json_each(?)) AND needs_reconcile = 1 ORDER BY started_at",
                             (_ids(card_ids),))
        return [_row(r) for r in rows]

    def awaiting_confirmation(self) -> list[JournalRow]:
        """Unfinished rows of cards that could not be identified (`unconfirmed-…` ids):
        only an operator who confirms the card may have them reconciled (D50)."""
        rows = self._db.read("SELECT * FROM operations WHERE card_id LIKE ? AND "
                             "needs_reconcile = 1 ORDER BY started_at", (UNCONFIRMED + "-%",))
        return [_row(r) for r in rows]

    def adopt_legacy_ids(self, key: CardIdKey) -> int:
        """Rename the unfinished rows of ids written before D50: `<fab>-<serial>` (from the
        CPLC) becomes the card's keyed `cplc-…` id, an `atr-…` id (which named every card
        of a kind) becomes `unconfirmed-atr-…`, so that only a confirmed card reconciles it.
        Returns the rows renamed."""
        renamed = 0
        pending = self._db.read("SELECT id, card_id FROM operations WHERE needs_reconcile = 1 "
                                "AND (card_id LIKE 'atr-%' OR card_id GLOB ?)",
                                ("[0-9A-F][0-9A-F][0-9A-F][0-9A-F]-*",))
        if not pending:
            return 0  # no write (and no fsync) at the start of a clean journal
        with self._db.write(Durability.POWER) as conn:
            for jid, card_id in pending:
                legacy = _LEGACY_CPLC_ID.fullmatch(str(card_id))
                if legacy is not None:
                    new = key.cplc_id(bytes.fromhex(legacy.group(1)),
                                      bytes.fromhex(legacy.group(2)))
                elif str(card_id).startswith("atr-"):
                    new = f"{UNCONFIRMED}-{card_id}"
                else:
                    continue
                conn.execute("UPDATE operations SET card_id = ? WHERE id = ?", (new, jid))
                renamed += 1
        return renamed

    def get(self, jid: str) -> JournalRow | None:
        """One row by id."""
        r = self._db.read_one("SELECT * FROM operations WHERE id = ?", (jid,))
        return None if r is None else _row(r)

    def for_card(self, card_ids: str | Sequence[str]) -> list[JournalRow]:
        """Every row of a card (any of its ids), oldest first."""
        rows = self._db.read("SELECT * FROM operations WHERE card_id IN (SELECT value FROM "
                             "json_each(?)) ORDER BY started_at", (_ids(card_ids),))
        return [_row(r) for r in rows]


def _ids(card_ids: str | Sequence[str]) -> str:
    """The ids of one card as a JSON array (bound to one parameter, read with json_each)."""
    return json.dumps([card_ids] if isinstance(card_ids, str) else list(card_ids))


def _row(r: tuple[object, ...]) -> JournalRow:
    (jid, card_id, action, ap_id, aid, org, operator, state, needs, started, finished,
     outcome) = r
    return JournalRow(str(jid), str(card_id), str(action), str(ap_id), str(aid), str(org),
                      str(operator), str(state), bool(needs), str(started),
                      None if finished is None else str(finished), str(outcome))
