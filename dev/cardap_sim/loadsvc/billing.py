"""Per-organisation load counts (each successful load = one 10-yen charge), kept in SQLite."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from cardap_sim.loadsvc.hours import JST

YEN_PER_LOAD = 10

_SCHEMA = """
CREATE TABLE IF NOT EXISTS loads (
    journal_id TEXT NOT NULL,
    organisation TEXT NOT NULL,
    ap_id TEXT NOT NULL,
    card_id TEXT NOT NULL,
    operator_id TEXT NOT NULL,
    year INTEGER NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (organisation, journal_id)
);
CREATE INDEX IF NOT EXISTS loads_year ON loads (organisation, year);
"""


@dataclass(frozen=True)
class YearReport:
    """The yearly report of one organisation: loads and what they cost."""

    organisation: str
    year: int
    loads: int
    per_ap: dict[str, int]

    @property
    def yen(self) -> int:
        """Charge for the year (10 yen per load)."""
        return self.loads * YEN_PER_LOAD


class Billing:
    """Counts loads; `record` is idempotent per (organisation, journal id)."""

    def __init__(self, path: Path | str = ":memory:") -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)

    def record(self, *, organisation: str, journal_id: str, ap_id: str, card_id: str,
               operator_id: str, at: dt.datetime) -> bool:
        """Count one load; False when this journal id was already counted (a retry)."""
        local = at.astimezone(JST)
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO loads VALUES (?, ?, ?, ?, ?, ?, ?)",
                (journal_id, organisation, ap_id, card_id, operator_id, local.year,
                 local.isoformat()))
            return cur.rowcount == 1

    def is_billed(self, organisation: str, journal_id: str) -> bool:
        """Whether this journal id was counted already."""
        with self._lock:
            row = self._db.execute("SELECT 1 FROM loads WHERE organisation=? AND journal_id=?",
                                   (organisation, journal_id)).fetchone()
        return row is not None

    def count(self, organisation: str, year: int) -> int:
        """Loads of `organisation` in calendar year `year` (JST)."""
        return self.report(organisation, year).loads

    def report(self, organisation: str, year: int) -> YearReport:
        """The yearly report (loads per AP) for the Minister."""
        with self._lock:
            rows = self._db.execute(
                "SELECT ap_id, COUNT(*) FROM loads WHERE organisation=? AND year=? "
                "GROUP BY ap_id ORDER BY ap_id", (organisation, year)).fetchall()
        per_ap = {str(ap): int(n) for ap, n in rows}
        return YearReport(organisation, year, sum(per_ap.values()), per_ap)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
