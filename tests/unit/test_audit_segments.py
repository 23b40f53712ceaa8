"""Sealed segments: sealing, incremental and full verification, the kept chain's start after
a drop, the drop guard, exports and their offline verification (the client library's own
code, held to the daemon's hash)."""

from __future__ import annotations

import gzip
import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardap.auditfiles import chain_hash as offline_hash
from cardap.auditfiles import compare_offline, verify_segments
from cardapd.audit import AuditEntry, AuditLog, Durability, Problem, verify
from cardapd.audit.archive import export_segment
from cardapd.audit.log import GENESIS_HASH, chain_hash
from cardapd.audit.verify import Mode
from cardapd.errors import StoreError


class Clock:
    def __init__(self) -> None:
        self.now = 1_798_000_000_000_000

    def __call__(self) -> int:
        self.now += 1000
        return self.now


def fill(log: AuditLog, rows: int, tag: str = "r") -> None:
    for i in range(rows):
        log.append(AuditEntry("read_user_id", "ok", actor="gate", detail={tag: i}),
                   Durability.PROCESS)


@pytest.fixture
def sealed(tmp_path: Path) -> Path:
    """Three sealed segments of 20 rows + seal each, then 5 open rows."""
    path = tmp_path / "audit.db"
    with AuditLog(path, clock=Clock()) as log:
        for _ in range(3):
            fill(log, 20)
            log.seal()
        fill(log, 5)
    return path


def test_seal_closes_a_segment_with_a_durable_seal_row(sealed: Path) -> None:
    with AuditLog(sealed) as log:
        segs = log.segments()
        assert [(s.segment, s.first_seq, s.last_seq, s.rows) for s in segs] == [
            (1, 1, 21, 21), (2, 22, 42, 21), (3, 43, 63, 21)]
        assert segs[0].prev_hash == GENESIS_HASH
        assert segs[1].prev_hash == segs[0].last_hash  # the last hash carried into the next
        assert log.durable_head is None  # this open wrote nothing durable yet
        seal = log.seal()
        assert seal is not None
        assert log.durable_head is not None
        assert log.durable_head.seq == seal.last_seq
        assert log.seal() is None  # nothing open
    row = sqlite3.connect(sealed).execute(
        "SELECT operation, detail FROM audit WHERE seq = 21").fetchone()
    assert row[0] == "audit_segment_sealed"
    assert json.loads(row[1]) == {"segment": 1, "first_seq": 1, "rows": 21}


def test_incremental_walks_what_is_new_and_one_segment_in_rotation(sealed: Path) -> None:
    full = verify(sealed, mode=Mode.FULL)
    assert (full.ok, full.rows_checked, full.walked_segments) == (True, 68, (1, 2, 3))
    with AuditLog(sealed) as log:
        log.mark_verified([1, 2, 3], 100)
        log.mark_verified([2], 50)  # segment 2 was walked longest ago
    inc = verify(sealed, mode=Mode.INCREMENTAL)
    assert (inc.ok, inc.rows_checked, inc.walked_segments) == (True, 5 + 21, (2,))
    conn = sqlite3.connect(sealed)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("UPDATE audit SET actor = 'kiosk' WHERE seq = 5")  # in verified segment 1
    conn.commit()
    conn.close()
    assert verify(sealed, mode=Mode.INCREMENTAL).ok  # not walked today...
    with AuditLog(sealed) as log:
        log.mark_verified([2, 3], 200)  # ...its turn comes
    found = verify(sealed, mode=Mode.INCREMENTAL)
    assert (found.ok, found.first_bad_seq, found.problem) == (False, 5, Problem.CHANGED)
    assert verify(sealed).first_bad_seq == 5  # and a full check finds it at once


def test_a_seal_row_or_the_segment_list_tampered_with_is_found(sealed: Path) -> None:
    conn = sqlite3.connect(sealed)
    conn.execute("UPDATE audit_segments SET last_hash = ? WHERE segment = 2", (b"\x01" * 32,))
    conn.commit()
    result = verify(sealed, mode=Mode.INCREMENTAL)
    assert (result.ok, result.problem) == (False, Problem.SEGMENT_MISMATCH)
    conn.execute("DELETE FROM audit_segments WHERE segment = 2")
    conn.commit()
    conn.close()
    assert verify(sealed).problem is Problem.SEGMENT_MISMATCH


def export_all(path: Path, out: Path) -> None:
    with AuditLog(path) as log:
        segs = log.segments()
        log.mark_verified([s.segment for s in segs], 1)
        for s in log.segments():
            file, digest = export_segment(path, s, out, "gate-7")
            log.mark_exported(s.segment, str(file), digest, 2)


def test_drop_keeps_a_chain_that_verifies_from_the_tombstone(sealed: Path,
                                                             tmp_path: Path) -> None:
    with AuditLog(sealed) as log, pytest.raises(StoreError, match="not verified and exported"):
        log.drop_rows(1, 3)
    conn = sqlite3.connect(sealed)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit WHERE seq = 1")  # the guard: not exported yet
    conn.close()
    export_all(sealed, tmp_path / "export")
    with AuditLog(sealed) as log:
        assert log.drop_rows(1, 3, chunk=7) == 7  # a drop cut short after one chunk...
        mid = verify(sealed)
        assert (mid.ok, mid.first_seq) == (True, 8)  # ...still verifies (the export holds 1-7)
        while log.drop_rows(1, 3, chunk=7):
            pass
        while log.drop_rows(2, 4):
            pass
        assert [s.dropped for s in log.segments()] == [True, True, False]
        fill(log, 2)
    result = verify(sealed)
    assert (result.ok, result.first_seq, result.segments_dropped) == (True, 43, 2)
    with AuditLog(sealed) as log:  # no anchor reset: the tombstones carry the chain
        assert log.reset is None
    conn = sqlite3.connect(sealed)
    conn.execute("DROP TRIGGER audit_no_delete")
    conn.execute("DELETE FROM audit WHERE seq = 43")  # a kept segment's first row
    conn.commit()
    conn.close()
    bad = verify(sealed)
    assert (bad.ok, bad.first_bad_seq, bad.problem) == (False, 43, Problem.DELETED)


def test_an_emptied_log_after_drops_continues_its_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path, clock=Clock()) as log:
        fill(log, 3)
        log.seal()
    export_all(path, tmp_path / "export")
    with AuditLog(path) as log:
        while log.drop_rows(1, 5):
            pass
    with AuditLog(path) as log:  # every row dropped: the next seq follows the tombstone
        assert (log.reset, log.last_seq) == (None, 4)
        fill(log, 1)
    result = verify(path)
    assert (result.ok, result.first_seq, result.last_seq) == (True, 5, 5)


def test_exports_verify_offline_and_name_what_is_wrong(sealed: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    export_all(sealed, out)
    report = verify_segments(out, wanted=[10, 30])
    assert (report.ok, report.files, report.rows, report.segments) == (True, 3, 63, [1, 2, 3])
    assert (report.terminal_id, report.first_seq, report.last_seq) == ("gate-7", 1, 63)
    conn = sqlite3.connect(sealed)
    hashes = dict(conn.execute("SELECT seq, hash FROM audit WHERE seq IN (10, 30)").fetchall())
    conn.close()
    good = [{"terminal_id": "gate-7", "seq": 10, "hash": hashes[10].hex(), "kind": ""},
            {"terminal_id": "gate-7", "seq": 30, "hash": hashes[30].hex(), "kind": ""}]
    assert compare_offline(report, good) == ([], 2, 0)
    bad = [good[0], {**good[1], "hash": "ab" * 32}]
    problems, agree, _ = compare_offline(report, bad)
    assert agree == 1
    assert problems[0].startswith("rewritten: row 30")

    # a row changed inside an export
    second = out / "audit-segment-00000002.jsonl.gz"
    lines = gzip.decompress(second.read_bytes()).decode().splitlines()
    row = json.loads(lines[3])
    row["actor"] = "kiosk"
    lines[3] = json.dumps(row)
    second.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    report = verify_segments(out)
    assert not report.ok
    assert any("row 24 was changed" in p for p in report.problems), report.problems
    # a segment file missing
    second.unlink()
    report = verify_segments(out)
    assert any("segment(s) 2 missing" in p for p in report.problems), report.problems


texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)),
                max_size=30)


@settings(max_examples=200, deadline=None)
@given(seq=st.integers(1, 2**40), ts=st.integers(0, 2**53), actor=texts, op=texts,
       card=st.none() | texts, reader=st.none() | texts, reason=st.none() | texts,
       rid=st.none() | texts, detail=st.dictionaries(texts, st.integers() | texts |
                                                     st.booleans(), max_size=4),
       prev=st.binary(min_size=32, max_size=32))
def test_the_offline_verifier_hashes_exactly_as_the_daemon(
        seq: int, ts: int, actor: str, op: str, card: str | None, reader: str | None,
        reason: str | None, rid: str | None, detail: dict[str, object], prev: bytes) -> None:
    detail_json = json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    daemon = chain_hash(prev, seq, ts, actor, op, card, reader, "ok", reason, rid, detail_json)
    row = {"seq": seq, "ts_us": ts, "actor": actor, "operation": op, "card_id": card,
           "reader": reader, "result": "ok", "reason": reason, "request_id": rid,
           "detail_json": detail_json}
    assert offline_hash(prev.hex(), row) == daemon.hex()
