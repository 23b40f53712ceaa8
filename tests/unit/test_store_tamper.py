# ruff: noqa: S608
"""Tampering with the audit database directly (sqlite3) is detected and classified.

The tampering SQL is built by hand (S608 off): the column list is a constant.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from cardapd.audit import AuditEntry, AuditLog, Durability, Problem, verify
from cardapd.audit.head import HeadWriter, head_path_for
from cardapd.audit.log import AuditRecord, chain_hash

ROWS = 10
COLS = "ts_us, actor, operation, card_id, reader, result, reason, request_id, detail"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        for i in range(ROWS):
            log.append(AuditEntry("load" if i % 2 else "read_user_id", "ok", actor=f"op{i}",
                                  card_id=f"{i:032x}", detail={"i": i}),
                       Durability.PROCESS)
    assert verify(path).ok
    return path


@pytest.fixture
def raw(db: Path) -> Iterator[sqlite3.Connection]:
    """A shell on the file, as an attacker has it: triggers dropped first."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("DROP TRIGGER audit_no_delete")
    yield conn
    conn.close()


def rows(conn: sqlite3.Connection) -> list[AuditRecord]:
    return [AuditRecord.from_row(r) for r in
            conn.execute(f"SELECT {AuditRecord.COLUMNS} FROM audit ORDER BY seq")]


def rehash(conn: sqlite3.Connection, seq: int, prev: bytes) -> bytes:
    """Recompute one row's hash from `prev`, as a careful attacker would."""
    r = next(x for x in rows(conn) if x.seq == seq)
    digest = chain_hash(prev, seq, r.ts_us, r.actor, r.operation, r.card_id, r.reader,
                        r.result, r.reason, r.request_id, r.detail_json)
    conn.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, seq))
    return digest


def test_changed_field(db: Path, raw: sqlite3.Connection) -> None:
    raw.execute("UPDATE audit SET result = 'failed' WHERE seq = 5")
    result = verify(db)
    assert (result.ok, result.first_bad_seq, result.problem) == (False, 5, Problem.CHANGED)
    assert result.rows_checked == 4


def test_changed_detail(db: Path, raw: sqlite3.Connection) -> None:
    raw.execute("""UPDATE audit SET detail = '{"i":99}' WHERE seq = 7""")
    assert (verify(db).first_bad_seq, verify(db).problem) == (7, Problem.CHANGED)


def test_changed_row_with_its_own_hash_recomputed(db: Path, raw: sqlite3.Connection) -> None:
    raw.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 5")
    rehash(raw, 5, rows(raw)[3].hash)
    result = verify(db)
    assert (result.first_bad_seq, result.problem) == (5, Problem.CHANGED)


def test_deleted_middle_row(db: Path, raw: sqlite3.Connection) -> None:
    raw.execute("DELETE FROM audit WHERE seq = 5")
    result = verify(db)
    assert (result.ok, result.first_bad_seq, result.problem) == (False, 5, Problem.DELETED)


def test_deleted_middle_row_with_the_rest_renumbered(db: Path, raw: sqlite3.Connection) -> None:
    raw.execute("DELETE FROM audit WHERE seq = 5")
    for seq in range(6, ROWS + 1):
        raw.execute("UPDATE audit SET seq = seq - 1 WHERE seq = ?", (seq,))
    result = verify(db)
    assert (result.first_bad_seq, result.problem) == (5, Problem.DELETED)


def test_swapped_rows(db: Path, raw: sqlite3.Connection) -> None:
    a, b = rows(raw)[2], rows(raw)[3]  # seq 3 and 4
    for target, src in ((a.seq, b), (b.seq, a)):
        raw.execute(f"UPDATE audit SET ({COLS}, prev_hash, hash) = "
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) WHERE seq = ?",
                    (src.ts_us, src.actor, src.operation, src.card_id, src.reader, src.result,
                     src.reason, src.request_id, src.detail_json, src.prev_hash, src.hash,
                     target))
    result = verify(db)
    assert (result.ok, result.first_bad_seq, result.problem) == (False, 3, Problem.REORDERED)


def test_swapped_content_keeping_the_hash_columns(db: Path, raw: sqlite3.Connection) -> None:
    a, b = rows(raw)[2], rows(raw)[3]
    for target, src in ((a.seq, b), (b.seq, a)):
        raw.execute(f"UPDATE audit SET ({COLS}) = (?, ?, ?, ?, ?, ?, ?, ?, ?) WHERE seq = ?",
                    (src.ts_us, src.actor, src.operation, src.card_id, src.reader, src.result,
                     src.reason, src.request_id, src.detail_json, target))
    result = verify(db)
    assert not result.ok
    assert result.first_bad_seq == 3


def test_deleted_tail(db: Path, raw: sqlite3.Connection) -> None:
    raw.execute("DELETE FROM audit WHERE seq >= 8")
    result = verify(db)
    assert (result.ok, result.first_bad_seq, result.problem) == (False, 8, Problem.DELETED)
    assert result.rows_checked == 7
    assert result.head_seq == ROWS


def test_inserted_row_with_a_consistent_chain(db: Path, raw: sqlite3.Connection) -> None:
    """A forged row slipped in at 5, later rows shifted up: found at the forged row."""
    for seq in range(ROWS, 4, -1):
        raw.execute("UPDATE audit SET seq = seq + 1 WHERE seq = ?", (seq,))
    prev = rows(raw)[3].hash
    raw.execute(f"INSERT INTO audit (seq, {COLS}, prev_hash, hash) "
                "VALUES (5, 0, 'mallory', 'load', NULL, NULL, 'ok', NULL, NULL, '{}', ?, ?)",
                (prev, bytes(32)))
    rehash(raw, 5, prev)
    result = verify(db)
    assert (result.ok, result.first_bad_seq, result.problem) == (False, 5, Problem.INSERTED)


def test_row_appended_after_the_head_with_a_fake_link(db: Path, raw: sqlite3.Connection) -> None:
    raw.execute(f"INSERT INTO audit (seq, {COLS}, prev_hash, hash) "
                "VALUES (11, 0, 'mallory', 'load', NULL, NULL, 'ok', NULL, NULL, '{}', ?, ?)",
                (b"\x07" * 32, bytes(32)))
    rehash(raw, 11, b"\x07" * 32)
    result = verify(db)
    assert (result.first_bad_seq, result.problem) == (11, Problem.INSERTED)


def test_rows_after_a_lagging_head_are_accepted_as_unanchored(db: Path) -> None:
    seventh = rows(sqlite3.connect(db))[6]
    writer = HeadWriter(head_path_for(db))
    for _ in range(2):  # both slots: a head left behind by a crash after commit
        writer.write(7, seventh.hash)
    writer.close()
    result = verify(db)
    assert result.ok
    assert result.unanchored == 3
    assert result.head_seq == 7


def test_head_that_does_not_match_the_row(db: Path) -> None:
    writer = HeadWriter(head_path_for(db))
    for _ in range(2):
        writer.write(7, b"\x01" * 32)
    writer.close()
    result = verify(db)
    assert (result.ok, result.first_bad_seq, result.problem) == (False, 7, Problem.CHANGED)


def test_garbage_head_file(db: Path) -> None:
    head_path_for(db).write_bytes(b"not a head\n")
    assert verify(db).problem is Problem.HEAD_CORRUPT


def test_whole_table_emptied(db: Path, raw: sqlite3.Connection) -> None:
    raw.execute("DELETE FROM audit")
    result = verify(db)
    assert (result.first_bad_seq, result.problem) == (1, Problem.DELETED)
