"""The revocation store: each organisation's pulled feed and the local suspensions, in SQLite.

Status of a user ID = the feed's entry for (organisation, AID, user ID), "in operation" when
the pulled feed has none (a feed lists status changes), "unknown" before the first pull; a
local suspension shows as SUSPENDED at once unless the feed already says ABOLISHED.
Writes are synchronous=FULL: a suspension survives a power loss once acknowledged.
"""

from __future__ import annotations

import enum
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cardapd.errors import StoreError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feeds (
  organisation TEXT PRIMARY KEY, version INTEGER NOT NULL, pulled_at REAL NOT NULL,
  generated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
  organisation TEXT NOT NULL, aid TEXT NOT NULL, user_id TEXT NOT NULL, status TEXT NOT NULL,
  version INTEGER NOT NULL, changed_at TEXT NOT NULL,
  PRIMARY KEY (organisation, aid, user_id));
CREATE TABLE IF NOT EXISTS local (
  organisation TEXT NOT NULL, aid TEXT NOT NULL, user_id TEXT NOT NULL,
  reason TEXT NOT NULL, actor TEXT NOT NULL, set_at REAL NOT NULL,
  PRIMARY KEY (organisation, aid, user_id));
"""


class IdStatus(enum.Enum):
    """A user ID's status (mirrors cards.proto UserIDStatus)."""

    UNKNOWN = "unknown"
    IN_OPERATION = "in_operation"
    SUSPENDED = "suspended"
    ABOLISHED = "abolished"


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
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the revocation store {path}: {exc}") from exc

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def feed(self, organisation: str) -> FeedState | None:
        """The stored state of `organisation`'s feed (None: never pulled)."""
        with self._lock:
            row = self._db.execute("SELECT version, pulled_at, generated_at FROM feeds "
                                   "WHERE organisation = ?", (organisation,)).fetchone()
        return None if row is None else FeedState(organisation, int(row[0]), float(row[1]),
                                                  str(row[2]))

    def apply(self, organisation: str, version: int, entries: Iterable[FeedEntry], *,
              generated_at: str, replace: bool) -> int:
        """Store a pulled feed (all of it when `replace`); returns the entries written."""
        count = 0
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                if replace:
                    self._db.execute("DELETE FROM entries WHERE organisation = ?",
                                     (organisation,))
                for e in entries:
                    self._db.execute(
                        "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?)",
                        (organisation, e.aid.upper(), e.user_id, e.status.value, e.version,
                         e.changed_at))
                    count += 1
                self._db.execute("INSERT OR REPLACE INTO feeds VALUES (?, ?, ?, ?)",
                                 (organisation, version, self._clock(), generated_at))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                raise StoreError(f"cannot store the revocation feed: {exc}") from exc
        return count

    def set_local(self, organisation: str, aid: str, user_id: str, *, suspended: bool,
                  reason: str, actor: str) -> bool:
        """Suspend (or resume) locally; returns whether anything changed. Durable on return."""
        key = (organisation, aid.upper(), user_id)
        with self._lock:
            try:
                if suspended:
                    cur = self._db.execute(
                        "INSERT OR IGNORE INTO local VALUES (?, ?, ?, ?, ?, ?)",
                        (*key, reason, actor, self._clock()))
                else:
                    cur = self._db.execute("DELETE FROM local WHERE organisation = ? AND "
                                           "aid = ? AND user_id = ?", key)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot store the local status: {exc}") from exc
        return cur.rowcount > 0

    def lookup(self, organisation: str, aid: str, user_id: str) -> Lookup:
        """The user ID's status (see the module docstring) and the feed's age."""
        key = (organisation, aid.upper(), user_id)
        with self._lock:
            feed = self._db.execute("SELECT pulled_at FROM feeds WHERE organisation = ?",
                                    (organisation,)).fetchone()
            entry = self._db.execute("SELECT status FROM entries WHERE organisation = ? AND "
                                     "aid = ? AND user_id = ?", key).fetchone()
            local = self._db.execute("SELECT 1 FROM local WHERE organisation = ? AND aid = ? "
                                     "AND user_id = ?", key).fetchone() is not None
        age = None if feed is None else max(0.0, self._clock() - float(feed[0]))
        if entry is not None:
            status = IdStatus(entry[0])
        else:
            status = IdStatus.UNKNOWN if feed is None else IdStatus.IN_OPERATION
        if local and status is not IdStatus.ABOLISHED:
            status = IdStatus.SUSPENDED
        return Lookup(status, age, local)
