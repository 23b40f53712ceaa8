"""Reading the audit log back: filtered queries (the API's export stream), JSONL and CSV.

Reads use their own read-only connection, so they run beside the writer thread
(WAL readers never block the writer). `query` streams rows in seq order; the API pages
through a large export with `after_seq` + `limit` (keyset paging, stable while rows
are appended) and runs each page with `asyncio.to_thread`. Every exported row carries
`prev_hash` and `hash`, so an export can be re-verified away from the terminal.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from cardapd.audit.log import AuditRecord
from cardapd.audit.schema import AUDIT_SCHEMA
from cardapd.errors import StoreError
from cardapd.storage import open_database

CSV_FIELDS = ("seq", "ts", "actor", "operation", "card_id", "reader", "result", "reason",
              "request_id", "detail", "prev_hash", "hash")


def _cell(value: object) -> str:
    """A CSV cell; text a spreadsheet would run as a formula gets a leading quote."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _to_us(value: datetime) -> int:
    """Microseconds since the epoch; naive datetimes are refused (ambiguous zone)."""
    if value.tzinfo is None:
        raise ValueError("audit time filters need a timezone-aware datetime")
    return int(value.timestamp() * 1_000_000)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which rows: time range [since, until), operations, results, seq > after_seq."""

    since: datetime | None = None
    until: datetime | None = None
    operations: frozenset[str] | None = None
    results: frozenset[str] | None = None
    after_seq: int = 0
    limit: int | None = None

    def sql(self) -> tuple[str, list[Any]]:
        """The WHERE/LIMIT clause and its parameters."""
        where: list[str] = ["seq > ?"]
        params: list[Any] = [self.after_seq]
        if self.since is not None:
            where.append("ts_us >= ?")
            params.append(_to_us(self.since))
        if self.until is not None:
            where.append("ts_us < ?")
            params.append(_to_us(self.until))
        for column, values in (("operation", self.operations), ("result", self.results)):
            if values is not None:
                where.append(f"{column} IN ({','.join('?' * len(values))})")
                params.extend(sorted(values))
        clause = " WHERE " + " AND ".join(where) + " ORDER BY seq"
        if self.limit is not None:
            clause += " LIMIT ?"
            params.append(self.limit)
        return clause, params


def query(path: Path, flt: AuditFilter | None = None) -> Iterator[AuditRecord]:
    """Stream the matching rows in seq order (a generator; close it to stop early)."""
    clause, params = (flt or AuditFilter()).sql()
    conn = open_database(Path(path), AUDIT_SCHEMA, readonly=True).conn
    try:
        conn.execute("BEGIN")  # one snapshot, even while the daemon appends
        cursor = conn.execute(f"SELECT {AuditRecord.COLUMNS} FROM audit{clause}",  # noqa: S608
                              params)  # clause: fixed SQL with ? placeholders only
        while rows := cursor.fetchmany(500):
            for row in rows:
                yield AuditRecord.from_row(row)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read audit log {path}: {exc}") from exc
    finally:
        conn.close()


def export_jsonl(path: Path, out: TextIO, since: datetime | None = None,
                 until: datetime | None = None) -> int:
    """Write the rows in [since, until) as JSON lines to `out`; returns the count."""
    count = 0
    for record in query(path, AuditFilter(since=since, until=until)):
        out.write(json.dumps(record.as_dict(), sort_keys=True, ensure_ascii=False) + "\n")
        count += 1
    return count


def export_csv(path: Path, out: TextIO, since: datetime | None = None,
               until: datetime | None = None) -> int:
    """Write the rows in [since, until) as CSV (for humans; JSONL is for re-verifying)."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    count = 0
    for record in query(path, AuditFilter(since=since, until=until)):
        row = record.as_dict()
        row["detail"] = record.detail_json
        writer.writerow([_cell(row[name]) for name in CSV_FIELDS])
        count += 1
    return count
