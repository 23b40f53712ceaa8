"""The audit log: appending, the chain definition, schema versions, validation, the head."""

from __future__ import annotations

import hashlib
import itertools
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from cardapd.audit import AuditEntry, AuditLog, Durability, Problem, head_path_for, verify
from cardapd.audit.head import SLOT, HeadWriter, read_head
from cardapd.audit.log import ANCHOR_RESET_OPERATION, looks_like_my_number
from cardapd.audit.schema import AUDIT_SCHEMA, RESET_ACKNOWLEDGED
from cardapd.errors import StoreError
from cardapd.mynumber import DeviceName, aid_text


def entry(i: int = 0, **kw: Any) -> AuditEntry:
    """A plausible gate read."""
    fields: dict[str, object] = {"operation": "read_user_id", "result": "ok", "actor": "gate",
                                 "card_id": f"4790{i:012x}", "reader": "ACS ACR1252 0",
                                 "request_id": f"req-{i}", "detail": {"ap": "C", "i": i}}
    fields.update(kw)
    return AuditEntry(**fields)  # type: ignore[arg-type]


def test_append_returns_seq_and_hash_and_verifies(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.db") as log:
        records = [log.append(entry(i), Durability.POWER if i % 3 == 0 else Durability.PROCESS)
                   for i in range(20)]
    assert [r.seq for r in records] == list(range(1, 21))
    assert records[0].prev_hash == bytes(32)
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))
    result = verify(tmp_path / "audit.db")
    assert result.ok
    assert result.rows_checked == 20
    assert result.head_seq == 20
    assert result.head_hash == records[-1].hash.hex()
    assert result.unanchored == 0


def test_hash_is_sha256_of_prev_hash_and_canonical_json(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.db") as log:
        first = log.append(entry(1, reason=None))
    body = {"seq": 1, "ts_us": first.ts_us, "actor": "gate", "operation": "read_user_id",
            "card_id": first.card_id, "reader": "ACS ACR1252 0", "result": "ok",
            "reason": None, "request_id": "req-1", "detail": '{"ap":"C","i":1}'}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert first.hash == hashlib.sha256(bytes(32) + canonical.encode()).digest()
    assert first.detail == {"ap": "C", "i": 1}


def test_reopen_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        log.append(entry(1))
    with AuditLog(path) as log:
        assert log.last_seq == 1
        assert log.append(entry(2)).seq == 2
    assert verify(path).ok


def test_timestamps_never_go_backwards(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.db") as log:
        records = [log.append(entry(i), Durability.PROCESS) for i in range(50)]
    assert all(a.ts_us <= b.ts_us for a, b in itertools.pairwise(records))


def test_schema_is_versioned_and_newer_databases_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    AuditLog(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == AUDIT_SCHEMA.latest
    latest = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    assert latest == AUDIT_SCHEMA.latest
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute(f"PRAGMA user_version = {AUDIT_SCHEMA.latest + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="written by a newer cardapd"):
        AuditLog(path)


@pytest.mark.parametrize("bad", [
    {"operation": ""},
    {"result": ""},
    {"actor": "x" * 300},
    {"detail": {"blob": object()}},
    {"detail": {"f": float("nan")}},
    {"detail": {"big": "x" * 5000}},
])
def test_invalid_entries_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(StoreError):
        entry(**bad)


def _my_number(first11: str) -> str:
    """A syntactically valid My Number (check digit computed), for the guard test only."""
    digits = [int(c) for c in reversed(first11)]
    total = sum(p * (n + 1 if n <= 6 else n - 5) for n, p in enumerate(digits, start=1))
    rest = total % 11
    return first11 + str(0 if rest <= 1 else 11 - rest)


def test_a_my_number_is_never_logged() -> None:
    number = _my_number("12345678901")
    assert looks_like_my_number(number)
    assert not looks_like_my_number(number[:-1] + str((int(number[-1]) + 1) % 10))
    assert not looks_like_my_number("1234567890123")  # 13 digits: not a My Number
    for where in ({"card_id": number}, {"detail": {"note": f"user {number}"}},
                  {"detail": {number: 1}}, {"reason": number}):
        with pytest.raises(StoreError) as info:
            entry(**where)
        assert info.value.reason == "AUDIT_MY_NUMBER_REFUSED"
        assert number not in str(info.value)



def test_an_aid_is_bytes_not_a_my_number() -> None:
    """A Japanese AID starts D392 and may go on in digits: marked by `aid_text` (an AID the
    terminal knows), it is logged even where its hex holds 12 digits that pass the check;
    the same text anywhere else is refused, and text that is not hex of whole bytes is
    never exempt."""
    number = _my_number("39210003100")
    aid = bytes.fromhex("D" + number + "A")
    assert looks_like_my_number(aid.hex().upper())
    row = entry(detail={"aid": aid_text(aid), "aps": [aid_text(aid)]})
    assert aid.hex().upper() in row.detail_json
    assert aid_text(aid.hex().upper()) == aid_text(aid.hex()) == aid.hex().upper()
    assert json.loads(entry(detail={"aid": aid_text(aid.hex())}).detail_json) == {
        "aid": aid.hex().upper()}  # a lower-case AID is logged upper-case
    for refused in ({"detail": {"aid": aid.hex().upper()}},
                    {"detail": {"aid": aid_text(f"D{number}")}},  # odd length: not bytes
                    {"detail": {"aid": aid_text(f"G{number}A")}},  # not hex
                    {"detail": {"note": aid_text(aid) + " " + number}}):
        with pytest.raises(StoreError) as info:
            entry(**refused)
        assert info.value.reason == "AUDIT_MY_NUMBER_REFUSED"


def test_a_reader_name_from_pcsc_is_not_free_text() -> None:
    """PC/SC names a reader by its driver and often its USB serial: a serial of 12 digits
    that pass the My Number check must not refuse every card in that reader. The reader
    service marks the names PC/SC gives (`DeviceName`); a name a client typed is checked."""
    name = f"ACME Reader ({_my_number('20190411307')}) 00 00"
    row = entry(reader=DeviceName(name), detail={"readers": [DeviceName(name)]})
    assert row.reader == name
    for refused in ({"reader": name}, {"detail": {"readers": [name]}}):
        with pytest.raises(StoreError) as info:
            entry(**refused)
        assert info.value.reason == "AUDIT_MY_NUMBER_REFUSED"

def test_append_failure_raises_store_error_and_leaves_chain_intact(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        log.append(entry(1))
        other = sqlite3.connect(path)
        other.execute("CREATE TRIGGER no_insert BEFORE INSERT ON audit "
                      "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
        other.commit()
        with pytest.raises(StoreError, match="disk on fire"):
            log.append(entry(2))
        other.execute("DROP TRIGGER no_insert")
        other.commit()
        other.close()
        assert log.append(entry(3)).seq == 2
    assert verify(path).ok


def test_a_locked_database_raises_store_error(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        blocker = sqlite3.connect(path, isolation_level=None, timeout=0)
        blocker.execute("BEGIN IMMEDIATE")
        log._conn.execute("PRAGMA busy_timeout = 50")
        with pytest.raises(StoreError, match="locked"):
            log.append(entry(1))
        blocker.execute("ROLLBACK")
        blocker.close()
        assert log.append(entry(2)).seq == 1


def test_the_log_rejects_updates_and_deletes_from_a_shell(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        log.append(entry(1))
    conn = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit SET result = 'failed'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit")
    conn.close()


def test_head_file_survives_a_torn_slot(tmp_path: Path) -> None:
    head = tmp_path / "audit.head"
    writer = HeadWriter(head)
    writer.write(1, b"\x01" * 32)
    writer.write(2, b"\x02" * 32)
    writer.write(3, b"\x03" * 32)  # slot 0 again
    assert read_head(head) == (3, b"\x03" * 32)
    data = bytearray(head.read_bytes())
    data[30:40] = b"##########"  # tear the newest slot
    head.write_bytes(bytes(data))
    assert read_head(head) == (2, b"\x02" * 32)
    writer.close()
    writer = HeadWriter(head)  # reopening overwrites the older slot, not the newest
    writer.write(4, b"\x04" * 32)
    writer.close()
    assert read_head(head) == (4, b"\x04" * 32)
    assert len(head.read_bytes()) == 2 * SLOT


def test_a_missing_head_is_reported_then_recorded_in_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        for i in range(3):
            log.append(entry(i))
    head_path_for(path).unlink()
    result = verify(path)
    assert not result.ok
    assert result.problem is Problem.HEAD_MISSING
    with AuditLog(path) as log:  # the daemon restarts: it records what it found
        assert log.last_seq == 4
    result = verify(path)  # ...and the reset is a failure until someone acknowledges it
    assert (result.ok, result.problem, result.first_bad_seq) == (False, Problem.ANCHOR_RESET,
                                                                 4)
    assert result.anchor_resets == (4,)
    (reset,) = result.resets
    assert (reset.kind, reset.acknowledged) == ("head_missing", False)
    conn = sqlite3.connect(path)
    operation, detail = conn.execute("SELECT operation, detail FROM audit WHERE seq = 4").fetchone()
    conn.close()
    assert operation == ANCHOR_RESET_OPERATION
    assert json.loads(detail)["problem"] == "head file missing"
    with AuditLog(path) as log:
        log.append(AuditEntry(RESET_ACKNOWLEDGED, "ok", actor="ops:org-a/admin-1", detail={
            "reset_seq": 4, "reason": "head lost with the old disk",
            "administrator": "org-a/admin-1"}))
    result = verify(path)
    assert result.ok
    (reset,) = result.resets
    assert (reset.acknowledged, reset.acknowledged_seq, reset.acknowledged_by, reset.reason) == (
        True, 5, "org-a/admin-1", "head lost with the old disk")


def test_an_empty_log_verifies(tmp_path: Path) -> None:
    AuditLog(tmp_path / "audit.db").close()
    result = verify(tmp_path / "audit.db")
    assert result.ok
    assert result.rows_checked == 0
