"""The daily maintenance decides what retention may drop: only sealed, verified, exported
segments whose export is intact, old enough, of years a final yearly report covers, and
only after a verification that passed."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

from cardapd.audit import AsyncAuditLog, AuditEntry, Durability
from cardapd.audit.checkpoints import CheckpointSender, JournalOut
from cardapd.audit.head import head_path_for
from cardapd.audit.maintenance import AuditMaintenance, Retention
from cardapd.audit.report import JST
from cardapd.telemetry.metrics import Metrics

DAY_US = 86_400_000_000


class Clock:
    def __init__(self, when: datetime) -> None:
        self.now = int(when.timestamp() * 1_000_000)

    def __call__(self) -> int:
        self.now += 1
        return self.now


async def setup(tmp_path: Path) -> tuple[AsyncAuditLog, AuditMaintenance, Clock, Metrics]:
    clock = Clock(datetime(2026, 12, 30, 12, 0, tzinfo=JST))
    log = AsyncAuditLog(tmp_path / "audit.db", clock=clock)
    await log.open()
    m = Metrics()
    sender = CheckpointSender("gate-1", log.durable_head, JournalOut(), m)
    maint = AuditMaintenance(log, Retention("gate-1", tmp_path / "export", audit_days=1),
                             sender, m, clock=clock)
    return log, maint, clock, m


async def rows(log: AsyncAuditLog, n: int, operation: str = "read_user_id",
               detail: dict[str, object] | None = None) -> None:
    for _ in range(n):
        await log.append(AuditEntry(operation, "ok", actor="gate", detail=detail or {}),
                         Durability.PROCESS)


async def test_retention_waits_for_the_final_report_and_an_intact_export(
        tmp_path: Path) -> None:
    log, maint, clock, m = await setup(tmp_path)
    try:
        await rows(log, 30)
        clock.now += 2 * DAY_US
        out = await maint.run("daily")
        assert out.sealed is not None
        assert out.exported == [1]
        assert out.dropped == []
        assert out.result is not None
        assert out.result.ok
        clock.now += 5 * DAY_US  # old enough now; no report of 2026 yet
        out = await maint.run("daily")
        assert (out.dropped, out.held_by_report) == ([], 2026)
        await rows(log, 1, "yearly_report", {"year": 2026, "audit_ok": True})  # made in 2027
        segments = await log.call(lambda a: a.segments())
        export = Path(segments[0].export_file or "")
        original = await asyncio.to_thread(export.read_bytes)
        # the export no longer what was recorded
        await asyncio.to_thread(export.write_bytes, original + b"x")
        out = await maint.run("daily")
        assert out.dropped == []
        await asyncio.to_thread(export.write_bytes, original)
        out = await maint.run("daily")
        assert out.dropped == [1]
        assert m.registry.get_sample_value("cardapd_audit_segments", {"state": "dropped"}) == 1
    finally:
        await log.aclose()


async def test_nothing_is_dropped_while_a_reset_is_unacknowledged(tmp_path: Path) -> None:
    log, maint, clock, _ = await setup(tmp_path)
    await rows(log, 10)
    await rows(log, 1, "yearly_report", {"year": 2026, "audit_ok": True})
    await log.aclose()
    await asyncio.to_thread(head_path_for(tmp_path / "audit.db").unlink)  # an anchor reset
    log, maint, clock, m = await setup(tmp_path)
    try:
        assert log.reset is not None
        clock.now += 800 * DAY_US
        out = await maint.run("daily")
        assert out.result is not None
        assert not out.result.ok
        assert out.exported
        assert out.dropped == []
        assert m.registry.get_sample_value("cardapd_audit_anchor_resets_unacknowledged") == 1
    finally:
        await log.aclose()


async def test_an_export_that_fails_leaves_the_verification_standing(tmp_path: Path) -> None:
    log, maint, clock, m = await setup(tmp_path)
    try:
        await rows(log, 5)
        await asyncio.to_thread((tmp_path / "export").write_text, "a file, not a directory")
        clock.now += 2 * DAY_US
        out = await maint.run("daily")
        assert out.sealed is not None
        assert out.result is not None
        assert out.result.ok
        assert out.exported == []
        assert m.registry.get_sample_value("cardapd_audit_chain_verified") == 1
        segments = await log.call(lambda a: a.segments())
        assert segments[0].verified_us is not None
        assert segments[0].exported_us is None
    finally:
        await log.aclose()
