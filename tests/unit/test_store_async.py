"""AsyncAuditLog: one writer thread, group commit, failures as StoreError."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from cardapd.audit import AsyncAuditLog, AuditEntry, AuditLog, AuditRecord, Durability, verify
from cardapd.errors import StoreError


def entry(i: int) -> AuditEntry:
    return AuditEntry("read_user_id", "ok", actor="gate", request_id=f"r{i}", detail={"i": i})


async def test_concurrent_appends_are_group_committed(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    async with AsyncAuditLog(path) as log:
        records = await asyncio.gather(*(
            log.append(entry(i), Durability.POWER if i % 50 == 0 else Durability.PROCESS)
            for i in range(1000)))
        batches = log.batches
        assert log.last_seq() == 1000
    assert sorted(r.seq for r in records) == list(range(1, 1001))
    assert {r.request_id for r in records} == {f"r{i}" for i in range(1000)}
    assert batches < 200, f"{batches} transactions for 1000 concurrent appends"
    result = verify(path)
    assert result.ok
    assert result.rows_checked == 1000
    assert result.head_seq == 1000


async def test_a_batch_is_committed_at_its_strongest_durability(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gate, entered = threading.Event(), threading.Event()
    seen: list[tuple[int, int]] = []  # (batch size, PRAGMA synchronous after the commit)
    original = AuditLog.append_batch

    def spy(self: AuditLog, items: Sequence[tuple[AuditEntry, Durability]]
            ) -> list[AuditRecord]:
        entered.set()
        gate.wait(5)
        records = original(self, items)
        seen.append((len(items), self._conn.execute("PRAGMA synchronous").fetchone()[0]))
        return records

    monkeypatch.setattr(AuditLog, "append_batch", spy)
    async with AsyncAuditLog(tmp_path / "audit.db") as log:
        first = asyncio.ensure_future(log.append(entry(0), Durability.POWER))
        assert await asyncio.to_thread(entered.wait, 5)  # the writer holds batch 1 at the gate
        # the writer is busy: PROCESS appends queue behind it instead of going inline
        rest = [asyncio.ensure_future(log.append(entry(i), d)) for i, d in
                ((1, Durability.PROCESS), (2, Durability.POWER), (3, Durability.PROCESS))]
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(first, *rest)
        assert log.inline == 0
        # an idle writer: a PROCESS append commits inline, with NORMAL synchronous
        record = await log.append(entry(4), Durability.PROCESS)
        assert (record.seq, log.inline) == (5, 1)
    assert seen == [(1, 2), (3, 2), (1, 1)]  # FULL alone; FULL for the mixed three; NORMAL


async def test_sequential_appends_each_return_their_own_record(tmp_path: Path) -> None:
    async with AsyncAuditLog(tmp_path / "audit.db") as log:
        for i in range(1, 30):
            record = await log.append(entry(i), Durability.PROCESS)
            assert record.seq == i
            assert record.request_id == f"r{i}"


async def test_failure_reaches_every_caller_as_store_error(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    async with AsyncAuditLog(path) as log:
        await log.append(entry(0))
        other = sqlite3.connect(path)
        other.execute("CREATE TRIGGER full BEFORE INSERT ON audit "
                      "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
        other.commit()
        results = await asyncio.gather(*(log.append(entry(i)) for i in range(20)),
                                       return_exceptions=True)
        assert all(isinstance(r, StoreError) and "disk is full" in str(r) for r in results)
        other.execute("DROP TRIGGER full")
        other.commit()
        other.close()
        assert (await log.append(entry(99))).seq == 2
    assert verify(path).ok


async def test_close_commits_what_is_queued_then_refuses(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    log = AsyncAuditLog(path)
    await log.open()
    pending = [asyncio.ensure_future(log.append(entry(i))) for i in range(50)]
    await asyncio.sleep(0)  # let them enqueue
    await log.aclose()
    assert sorted(p.result().seq for p in pending) == list(range(1, 51))
    with pytest.raises(StoreError, match="not open"):
        await log.append(entry(51))
    assert verify(path).rows_checked == 50


async def test_open_failure_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "audit.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError):
        await AsyncAuditLog(tmp_path / "audit.db").open()


async def test_a_cancelled_caller_does_not_break_the_writer(tmp_path: Path) -> None:
    async with AsyncAuditLog(tmp_path / "audit.db") as log:
        task = asyncio.ensure_future(log.append(entry(0)))
        await asyncio.sleep(0)
        task.cancel()
        assert (await log.append(entry(1))).seq in (1, 2)
    assert verify(tmp_path / "audit.db").ok
