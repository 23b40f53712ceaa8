"""The operation log on the real audit store: one line per audited operation with its
fields, none for steps, failures at warning with their reason; and the writer thread
counting what it had to drop."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from cardapd.audit import AsyncAuditLog
from cardapd.audit.sink import StoreAuditSink
from cardapd.domain import OpContext
from cardapd.errors import NoCard
from cardapd.telemetry import logsetup, oplog
from cardapd.telemetry.metrics import Metrics
from cardapd.telemetry.recorder import Recorder
from cardapd.telemetry.refusals import RefusalLedger


async def test_one_line_per_operation(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cardapd.operations")
    ctx = OpContext(role="kiosk", request_id="rq-1", operator="org-a/op-1")
    async with AsyncAuditLog(tmp_path / "audit.db") as log:
        recorder = Recorder(StoreAuditSink(log, Metrics()), Metrics())
        oplog.begin_call()
        start = time.perf_counter()
        await recorder.record(ctx, "load_started", reader="R 0", card_id="C-1",
                              detail={"ap_id": "org-a-staff-c"})
        await recorder.finish(ctx, "load", start, None, reader="R 0", card_id="C-1",
                              detail={"ap_id": "org-a-staff-c", "user_id": "SECRETUSERID1"})
        await recorder.finish(ctx, "read_user_id", start, NoCard("the reader is empty"),
                              reader="R 1")
    lines = [r for r in caplog.records if r.name == "cardapd.operations"]
    assert len(lines) == 2, [r.getMessage() for r in lines]  # no line for the step
    ok, failed = lines
    assert ok.levelno == logging.INFO
    assert ok.getMessage().startswith("load org-a-staff-c: ok in ")
    assert "SECRETUSERID1" not in ok.getMessage()  # only identifiers are shown
    fields = {k: getattr(ok, k) for k in ("audit_operation", "result", "reader", "card_id",
                                          "operator", "request_id", "audit_seq")}
    assert fields == {"audit_operation": "load", "result": "ok", "reader": "R 0",
                      "card_id": "C-1", "operator": "org-a/op-1", "request_id": "rq-1",
                      "audit_seq": "2"}
    assert int(ok.duration_ms) >= 0
    assert failed.levelno == logging.WARNING
    assert (failed.result, failed.reason) == ("error", "NO_CARD")
    assert "(the reader is empty)" in failed.getMessage()


async def test_refused_calls_are_logged_at_the_ledgers_bounded_rate(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The refusal ledger writes through the operation log: a flood of refused calls is
    one line when it starts and one line with its count when the window closes."""
    caplog.set_level(logging.INFO, logger="cardapd.operations")
    async with AsyncAuditLog(tmp_path / "audit.db") as log:
        ledger = RefusalLedger(oplog.OperationLog(StoreAuditSink(log, Metrics())), 3600)
        for n in range(50):
            await ledger.refused("gate", "LoadAP", "WRONG_SOCKET", f"rq-{n}")
        await ledger.flush()
    lines = [r for r in caplog.records if r.name == "cardapd.operations"]
    assert [(r.reason, r.request_id) for r in lines] == [
        ("WRONG_SOCKET", "rq-0"), ("WRONG_SOCKET", "rq-49")]
    assert all(r.levelno == logging.WARNING for r in lines)


class Blocked(logging.Handler):
    """A handler whose output is stuck until released (a pipe nobody reads)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.gate.wait(10)
        self.lines.append(record.getMessage())


def test_the_writer_drops_and_counts_when_it_falls_behind() -> None:
    front = logsetup.OffThreadHandler(size=5)
    out = Blocked()
    writer = logsetup.Writer(front, out)
    writer.start()
    log = logging.getLogger("cardapd.tests.offthread")
    log.propagate = False
    log.addHandler(front)
    try:
        started = time.perf_counter()
        for i in range(50):
            log.warning("line %d", i)
        assert time.perf_counter() - started < 1.0  # never waited for the output
        assert front.dropped > 0
        out.gate.set()
        front.records.join()
        log.warning("after")
        front.records.join()
    finally:
        log.removeHandler(front)
        writer.stop()
    assert "line 0" in out.lines
    assert len(out.lines) < 50  # some were dropped, not queued without bound
    note = next(x for x in out.lines if "dropped" in x)
    assert note.startswith(f"{front.dropped} log record(s) dropped")
    assert out.lines[-1] == "after"
