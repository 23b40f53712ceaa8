"""The yearly report: loads per organisation from the audit log, and the verification result."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cardapd.audit import AuditEntry, AuditLog
from cardapd.audit.report import (
    JST,
    OrganisationLoads,
    build_report,
    check_document,
    organisation_of,
    period,
)
from cardapd.errors import InvalidArgument

YEAR = datetime.now(JST).year


def load(org: str, op: str, n: int, *, result: str = "ok", **detail: object) -> AuditEntry:
    return AuditEntry("load", result, actor=f"kiosk:{org}/{op}", card_id=f"{n:032x}",
                      detail={"ap_id": "staff-id", "journal_id": f"j{org}{n}", **detail})


@pytest.fixture
def audit(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        for n in range(7):
            log.append(load("city", "op1", n, billed=True))
        for n in range(3):
            log.append(load("bank", "teller", n))  # no billed field: counted
        log.append(load("bank", "teller", 2, billed=True))  # same journal id: once
        log.append(load("bank", "teller", 9, billed=False))  # a retry the service matched
        log.append(load("city", "op1", 50, result="error"))
        log.append(AuditEntry("load_started", "ok", actor="kiosk:city/op1"))
        log.append(AuditEntry("delete", "ok", actor="kiosk:city/op1"))
        log.append(AuditEntry("read_user_id", "ok", actor="gate"))
        log.append(AuditEntry("reconcile", "ok", actor="system:city/op1",
                              detail={"action": "load", "journal_id": "jx"}))
    return path


def test_counts_and_charges(audit: Path) -> None:
    report = build_report(audit, YEAR, terminal="kiosk-01")
    assert report.organisations == (OrganisationLoads("bank", 3, 30, 0),
                                     OrganisationLoads("city", 7, 70, 1))
    assert report.total_loads == 10
    assert report.total_charge_yen == 100
    assert report.audit.ok
    assert report.audit.rows_checked == 17
    assert report.audit.first_bad_seq == 0
    assert report.audit.problem == ""
    doc = report.document
    assert f"card AP loads {YEAR}" in doc
    assert "OK: the chain verifies" in doc
    assert "rows checked:  17" in doc
    assert "kiosk-01" in doc
    assert report.generated_at.isoformat() in doc
    assert check_document(doc)
    assert not check_document(doc.replace("70", "60"))
    data = json.loads(report.json_document)
    assert data["report"]["total"] == {"loads": 10, "charge_yen": 100}
    assert data["report"]["audit"]["ok"] is True
    assert len(data["sha256"]) == 64


def test_other_year_is_empty(audit: Path) -> None:
    report = build_report(audit, YEAR - 1)
    assert report.organisations == ()
    assert "(no loads in this period)" in report.document
    assert report.audit.ok  # the whole chain is always verified


def test_tampered_log_is_reported(audit: Path) -> None:
    conn = sqlite3.connect(audit, isolation_level=None)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("UPDATE audit SET actor = 'kiosk:bank/teller' WHERE seq = 1")
    conn.close()
    report = build_report(audit, YEAR)
    assert not report.audit.ok
    assert report.audit.first_bad_seq == 1
    assert report.audit.problem == "changed"
    assert "FAILED: changed at row 1" in report.document
    assert "WARNING" in report.document
    assert json.loads(report.json_document)["report"]["audit"]["ok"] is False


def test_period_is_japan_time() -> None:
    start, end = period(2026)
    assert start.isoformat() == "2026-01-01T00:00:00+09:00"
    assert end.isoformat() == "2027-01-01T00:00:00+09:00"
    with pytest.raises(InvalidArgument):
        period(1)


@pytest.mark.parametrize(("actor", "org"), [
    ("kiosk:city/op1", "city"), ("system:bank/x", "bank"), ("kiosk", "(unknown)"),
    ("gate", "(unknown)"), ("kiosk:/op", "(unknown)"), ("kiosk:city", "(unknown)"),
])
def test_organisation_of(actor: str, org: str) -> None:
    assert organisation_of(actor) == org


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.booleans()), max_size=30))
def test_counts_match_a_model(rows: list[tuple[str, bool]]) -> None:
    from cardapd.audit.log import AuditRecord
    from cardapd.audit.report import count_loads

    records = [AuditRecord(i + 1, 0, f"kiosk:{org}/op", "load", None, None,
                           "ok" if ok else "error", None, None,
                           json.dumps({"journal_id": f"j{i}"}), b"", b"")
               for i, (org, ok) in enumerate(rows)]
    expected = {org: sum(1 for o, ok in rows if o == org and ok) for org, _ in rows}
    got = {o.organisation: o.loads for o in count_loads(records)}
    assert got == {k: v for k, v in expected.items() if v}
    assert all(o.charge_yen == 10 * o.loads for o in count_loads(records))


def test_the_document_in_japanese_with_the_same_figures(audit: Path) -> None:
    english = build_report(audit, YEAR, terminal="kiosk-01")
    japanese = build_report(audit, YEAR, terminal="kiosk-01", lang="ja")
    doc = japanese.document
    assert japanese.language == "ja"
    assert f"cardapd 年次報告 — {YEAR}年のカードAP搭載" in doc
    assert "合格: 記録の連鎖は正しく検証されました" in doc
    assert "kiosk-01" in doc
    assert "合計" in doc
    assert "verifies" not in doc
    assert check_document(doc)  # the SHA-256 line is found in every language
    assert not check_document(doc.replace("70", "60"))
    # The JSON document is codes and figures: the same in every language but its time.
    assert json.loads(japanese.json_document)["report"]["total"] == json.loads(
        english.json_document)["report"]["total"]
