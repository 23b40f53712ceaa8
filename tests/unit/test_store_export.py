"""Reading the audit log back: query filters, JSONL and CSV exports."""

from __future__ import annotations

import csv
import io
import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cardapd.audit import AuditEntry, AuditFilter, AuditLog, export_csv, export_jsonl, query


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        for i in range(12):
            log.append(AuditEntry(["load", "delete", "read_user_id"][i % 3],
                                  "ok" if i % 4 else "failed", actor="op1",
                                  reader="=HYPERLINK(\"x\")" if i == 0 else "R0",
                                  detail={"i": i}))
    return path


def test_query_filters_by_operation_and_result(db: Path) -> None:
    loads = list(query(db, AuditFilter(operations=frozenset({"load"}))))
    assert [r.seq for r in loads] == [1, 4, 7, 10]
    failed = list(query(db, AuditFilter(results=frozenset({"failed"}))))
    assert [r.seq for r in failed] == [1, 5, 9]
    both = list(query(db, AuditFilter(operations=frozenset({"load", "delete"}),
                                      results=frozenset({"ok"}))))
    assert [r.seq for r in both] == [2, 4, 7, 8, 10, 11]


def test_query_pages_by_seq(db: Path) -> None:
    page1 = list(query(db, AuditFilter(limit=5)))
    page2 = list(query(db, AuditFilter(after_seq=page1[-1].seq, limit=5)))
    assert [r.seq for r in page1 + page2] == list(range(1, 11))


def test_query_by_time_range(db: Path) -> None:
    records = list(query(db))
    middle = records[5].ts
    assert all(r.ts >= middle for r in query(db, AuditFilter(since=middle)))
    assert all(r.ts < middle for r in query(db, AuditFilter(until=middle)))
    future = datetime.now(UTC) + timedelta(days=1)
    assert list(query(db, AuditFilter(since=future))) == []
    with pytest.raises(ValueError, match="timezone"):
        list(query(db, AuditFilter(since=datetime(2020, 1, 1))))


def test_export_jsonl_carries_the_chain(db: Path) -> None:
    out = io.StringIO()
    assert export_jsonl(db, out) == 12
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["seq"] == 1
    assert lines[0]["prev_hash"] == "00" * 32
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(lines))
    assert lines[3]["detail"] == {"i": 3}
    datetime.fromisoformat(lines[0]["ts"])


def test_export_jsonl_time_window(db: Path) -> None:
    records = list(query(db))
    out = io.StringIO()
    count = export_jsonl(db, out, since=records[0].ts, until=records[0].ts)
    assert count == 0
    assert out.getvalue() == ""


def test_export_csv(db: Path) -> None:
    out = io.StringIO()
    assert export_csv(db, out) == 12
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(rows) == 12
    assert rows[1]["operation"] == "delete"
    assert rows[0]["reader"].startswith("'=")  # no formula runs in a spreadsheet
    assert json.loads(rows[2]["detail"]) == {"i": 2}
    assert rows[2]["reason"] == ""
