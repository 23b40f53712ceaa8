"""The revocation store: each organisation's pulled feed and the local suspensions, in SQLite.

Status of a user ID = the feed's entry for (organisation, AID, user ID), "in operation" when
the pulled feed has none (a feed lists status changes), "unknown" before the first pull; a
local suspension shows as SUSPENDED at once unless the feed already says ABOLISHED.
A local suspension (administration, audited) is written to survive a power loss once
acknowledged (`Durability.POWER`); a pulled feed only to survive the daemon's death
(`Durability.PROCESS`): a feed lost with the power is pulled again, and its age tells.
Retention (`prune`, `[retention] revocation_days`) drops pulled entries that say "in
operation" — what no entry says too — changed long ago; suspended and abolished entries
and local suspensions stay. An index of version 2 finds them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cardapd.domain import IdStatus
from cardapd.storage import Durability, Migration, Schema, open_database

REVOCATION_SCHEMA = Schema("revocation store", (
    # IF NOT EXISTS: the store had no version before; version 1 adopts such a file.
    Migration(1, "revocation: pulled feeds, their entries, local suspensions", (
        """CREATE TABLE IF NOT EXISTS feeds (
          organisation TEXT PRIMARY KEY, version INTEGER NOT NULL, pulled_at REAL NOT NULL,
          generated_at TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS entries (
          organisation TEXT NOT NULL, aid TEXT NOT NULL, user_id TEXT NOT NULL,
          status TEXT NOT NULL, version INTEGER NOT NULL, changed_at TEXT NOT NULL,
          PRIMARY KEY (organisation, aid, user_id))""",
        """CREATE TABLE IF NOT EXISTS local (
          organisation TEXT NOT NULL, aid TEXT NOT NULL, user_id TEXT NOT NULL,
          reason TEXT NOT NULL, actor TEXT NOT NULL, set_at REAL NOT NULL,
          PRIMARY KEY (organisation, aid, user_id))""",
    )),
    Migration(2, "revocation: index of entries by status, for retention", (
        "CREATE INDEX entries_status ON entries (status, changed_at)",
    )),
))


@dataclass(frozen=True)
class FeedEntry:
    """One entry of a pulled feed."""

    aid: str
    user_id: str
    status: IdStatus
    version: int
    changed_at: str = ""


@dataclass(frozen=True)
class FeedState:
    """What is stored of one organisation's feed."""

    organisation: str
    version: int
    pulled_at: float
    generated_at: str


@dataclass(frozen=True)
class Lookup:
    """A user ID's status and the age of the feed it comes from (None: never pulled)."""

    status: IdStatus
    feed_age_s: float | None
    locally_suspended: bool = False


class RevocationStore:
    """Feeds and local suspensions in one SQLite file; thread-safe, each call one transaction."""

    def __init__(self, path: Path, clock: Callable[[], float] | None = None) -> None:
        self.path = path
        self._clock = clock or time.time
        self._db = open_database(path, REVOCATION_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def feed(self, organisation: str) -> FeedState | None:
        """The stored state of `organisation`'s feed (None: never pulled)."""
        row = self._db.read_one("SELECT version, pulled_at, generated_at FROM feeds "
                                "WHERE organisation = ?", (organisation,))
        return None if row is None else FeedState(organisation, int(row[0]), float(row[1]),
                                                  str(row[2]))

    def apply(self, organisation: str, version: int, entries: Iterable[FeedEntry], *,
              generated_at: str, replace: bool) -> int:
        """Store a pulled feed (all of it when `replace`); returns the entries written."""
        count = 0
        with self._db.write(Durability.PROCESS) as conn:
            if replace:
                conn.execute("DELETE FROM entries WHERE organisation = ?", (organisation,))
            for e in entries:
                conn.execute("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?)",
                             (organisation, e.aid.upper(), e.user_id, e.status.value,
                              e.version, e.changed_at))
                count += 1
            conn.execute("INSERT OR REPLACE INTO feeds VALUES (?, ?, ?, ?)",
                         (organisation, version, self._clock(), generated_at))
        return count

    def set_local(self, organisation: str, aid: str, user_id: str, *, suspended: bool,
                  reason: str, actor: str) -> bool:
        """Suspend (or resume) locally; returns whether anything changed. Durable on return."""
        key = (organisation, aid.upper(), user_id)
        with self._db.write(Durability.POWER) as conn:
            if suspended:
                cur = conn.execute("INSERT OR IGNORE INTO local VALUES (?, ?, ?, ?, ?, ?)",
                                   (*key, reason, actor, self._clock()))
            else:
                cur = conn.execute("DELETE FROM local WHERE organisation = ? AND aid = ? AND "
                                   "user_id = ?", key)
            return cur.rowcount > 0

    def prune(self, older_than: datetime) -> int:
        """Drop pulled entries that say "in operation" (an absent entry says the same)
        and changed before `older_than` (entries without a readable time stay); returns
        how many."""
        rows = self._db.read("SELECT organisation, aid, user_id, changed_at FROM entries "
                             "WHERE status = ?", (IdStatus.IN_OPERATION.value,))
        old = []
        for organisation, aid, user_id, changed_at in rows:
            try:
                when = datetime.fromisoformat(str(changed_at))
            except ValueError:
                continue
            if when.tzinfo is not None and when < older_than:
                old.append((organisation, aid, user_id))
        if not old:
            return 0
        with self._db.write(Durability.PROCESS) as conn:
            conn.executemany("DELETE FROM entries WHERE organisation = ? AND aid = ? AND "
                             "user_id = ? AND status = ?",
                             [(*k, IdStatus.IN_OPERATION.value) for k in old])
        return len(old)

    def lookup(self, organisation: str, aid: str, user_id: str) -> Lookup:
        """The user ID's status (see the module docstring) and the feed's age."""
        key = (organisation, aid.upper(), user_id)
        with self._db.lock:  # one snapshot for the three reads
            feed = self._db.read_one("SELECT pulled_at FROM feeds WHERE organisation = ?",
                                     (organisation,))
            entry = self._db.read_one("SELECT status FROM entries WHERE organisation = ? AND "
                                      "aid = ? AND user_id = ?", key)
            local = self._db.read_one("SELECT 1 FROM local WHERE organisation = ? AND aid = ? "
                                      "AND user_id = ?", key) is not None
        age = None if feed is None else max(0.0, self._clock() - float(feed[0]))
        if entry is not None:
            status = IdStatus(entry[0])
        else:
            status = IdStatus.UNKNOWN if feed is None else IdStatus.IN_OPERATION
        if local and status is not IdStatus.ABOLISHED:
            status = IdStatus.SUSPENDED
        return Lookup(status, age, local)
