"""Log context: fields set by the gRPC layer reach records there and on the reader thread."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cardapd.api.roles import Role
from cardapd.api.rpc import unary
from cardapd.domain import OpContext
from cardapd.readers.owner import ReaderOwner
from cardapd.telemetry import logcontext
from cardapd.telemetry.logsetup import JsonFormatter
from cardapd.telemetry.metrics import Metrics
from cardapd.transport.pcsc import PcscContext
from cardlib.protocol import ApduProtocol

LOGGER = "cardapd.tests.logcontext"


class Records(logging.Handler):
    """Collects records after the context filter ran, as the daemon's handlers do."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(logcontext.ContextFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)  # `handle` holds the handler's lock

    def by_message(self, message: str) -> logging.LogRecord:
        found = [r for r in self.records if r.getMessage() == message]
        assert len(found) == 1, [r.getMessage() for r in self.records]
        return found[0]


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    log = logging.getLogger(LOGGER)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        log.removeHandler(handler)


def fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: getattr(record, k, None) for k in ("operation", "request_id", "reader", "role")}


def test_operation_names() -> None:
    assert logcontext.operation_name("ReadUserID") == "read_user_id"
    assert logcontext.operation_name("LoadAP") == "load_ap"
    assert logcontext.operation_name("ListCardAPs") == "list_card_aps"
    assert logcontext.operation_name("SetUserIDStatus") == "set_user_id_status"
    assert logcontext.operation_name("Diagnose") == "diagnose"


def test_bind_sets_and_restores(records: Records) -> None:
    log = logging.getLogger(LOGGER)
    with logcontext.bind(operation="diagnose", request_id="r-1"):
        with logcontext.bind(reader="Reader 0"):
            log.info("inner")
            assert logcontext.current() == {"operation": "diagnose", "request_id": "r-1",
                                            "reader": "Reader 0"}
        log.info("outer")
    log.info("after")
    assert fields(records.by_message("inner")) == {
        "operation": "diagnose", "request_id": "r-1", "reader": "Reader 0", "role": None}
    assert fields(records.by_message("outer"))["reader"] is None
    assert fields(records.by_message("after")) == dict.fromkeys(
        ("operation", "request_id", "reader", "role"))
    with pytest.raises(TypeError):
        logcontext.set_fields(nonsense="x")


def test_explicit_extra_wins(records: Records) -> None:
    with logcontext.bind(reader="from-context"):
        logging.getLogger(LOGGER).info("explicit", extra={"reader": "from-extra"})
    assert fields(records.by_message("explicit"))["reader"] == "from-extra"


def test_carry_takes_the_context_into_a_thread(records: Records) -> None:
    log = logging.getLogger(LOGGER)

    def work(n: int) -> int:
        log.info("in thread %d", n)
        logcontext.set_fields(operation="changed-inside")  # must not leak back
        return n * 2

    with logcontext.bind(operation="load_ap", request_id="r-2"):
        carried = logcontext.carry(work, reader="Reader 1")
    out: list[int] = []
    threads = [threading.Thread(target=lambda n=n: out.append(carried(n))) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(out) == [2, 4]
    for n in (1, 2):
        assert fields(records.by_message(f"in thread {n}")) == {
            "operation": "load_ap", "request_id": "r-2", "reader": "Reader 1", "role": None}
    assert logcontext.current() == {}
    # a plain thread sees nothing
    plain = threading.Thread(target=lambda: log.info("plain thread"))
    with logcontext.bind(operation="x"):
        plain.start()
        plain.join()
    assert fields(records.by_message("plain thread"))["operation"] is None


class FakeConnection:
    atr = b"\x3b\x00"

    def transmit(self, apdu: bytes) -> bytes:
        return b"\x90\x00"

    def close(self) -> None:
        pass


class FakeServicer:
    """What `unary` needs of a TerminalServicer."""

    def __init__(self, owner: ReaderOwner) -> None:
        self.role = Role.KIOSK
        self.connection = "socket:kiosk"
        self.audit = None  # never reached: the role table admits Diagnose on kiosk
        self.owner = owner
        self.counted: list[tuple[str, str]] = []

    def count(self, method: str, code: str) -> None:
        self.counted.append((method, code))


async def Diagnose(self: FakeServicer, request: bytes, context: Any, ctx: OpContext) -> bytes:
    log = logging.getLogger(LOGGER)
    log.info("handler %s", ctx.request_id)

    def on_reader(proto: ApduProtocol) -> bytes:
        log.info("reader thread %s", ctx.request_id)
        return proto.atr

    atr = await self.owner.run(on_reader)
    await self.owner.run_plain(lambda: log.info("plain %s", ctx.request_id))
    await asyncio.to_thread(log.info, "to_thread %s", ctx.request_id)
    return atr


async def test_grpc_call_fields_reach_records_in_the_owner_thread(
        tmp_path: Path, records: Records) -> None:
    owner = ReaderOwner("Virtual Reader 0", PcscContext(), Metrics(),
                        connect=lambda name: FakeConnection())
    servicer = FakeServicer(owner)
    wrapped = unary(Diagnose)  # type: ignore[arg-type]

    async def handle(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        return await wrapped(servicer, request, context)  # type: ignore[arg-type]

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "cardap.v1.Terminal", {"Diagnose": grpc.unary_unary_rpc_method_handler(handle)}),))
    server.add_insecure_port(f"unix:{tmp_path / 's'}")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"unix:{tmp_path / 's'}") as channel:
            call = channel.unary_unary("/cardap.v1.Terminal/Diagnose", None, None)
            answers = await asyncio.gather(*(
                call(b"", metadata=(("x-request-id", f"req-{n}"),)) for n in range(3)))
            await call(b"")  # no x-request-id: one is made
    finally:
        await server.stop(0)
        owner.shutdown()
    assert answers == [FakeConnection.atr] * 3
    assert servicer.counted == [("Diagnose", "OK")] * 4
    for n in range(3):
        rid = f"req-{n}"
        expect = {"operation": "diagnose", "request_id": rid, "role": "kiosk"}
        assert fields(records.by_message(f"handler {rid}")) == {**expect, "reader": None}
        on_reader = records.by_message(f"reader thread {rid}")
        assert fields(on_reader) == {**expect, "reader": "Virtual Reader 0"}
        assert str(on_reader.threadName).startswith("reader:")
        assert fields(records.by_message(f"plain {rid}")) == {
            **expect, "reader": "Virtual Reader 0"}
        assert fields(records.by_message(f"to_thread {rid}")) == {**expect, "reader": None}
    made = [r for r in records.records if r.getMessage().startswith("handler ")
            and not r.getMessage().startswith("handler req-")]
    assert len(made) == 1
    assert fields(made[0])["request_id"] == made[0].getMessage().split()[1]
    # and the JSON formatter shows them
    line = json.loads(JsonFormatter().format(records.by_message("reader thread req-0")))
    assert line["operation"] == "diagnose"
    assert line["reader"] == "Virtual Reader 0"
    assert line["request_id"] == "req-0"
    assert line["role"] == "kiosk"


def test_monitor_consumer_logs_carry_the_reader(records: Records) -> None:
    from cardapd.transport.monitor import (
        MonitorEvent,
        MonitorEventKind,
        ReaderMonitor,
        ReaderStatus,
    )

    def consumer(event: MonitorEvent) -> None:
        logging.getLogger(LOGGER).info("consumer %s", event.kind.value)
        raise RuntimeError("broken consumer")

    monitor = ReaderMonitor(consumer)
    status = ReaderStatus("Reader 7", present=True, mute=False, unavailable=False,
                          atr=b"", event_count=1)
    failed = logging.getLogger("cardapd.transport.monitor")
    failed.addHandler(records)
    try:
        monitor._emit(MonitorEvent(MonitorEventKind.CARD_INSERTED, reader=status))
        monitor._emit(MonitorEvent(MonitorEventKind.DEGRADED, detail="gone"))
    finally:
        failed.removeHandler(records)
    assert fields(records.by_message("consumer card_inserted"))["reader"] == "Reader 7"
    assert getattr(records.by_message("consumer degraded"), "reader", None) is None
    broken = [r for r in records.records if r.getMessage() == "card event consumer failed"]
    assert [getattr(r, "reader", "") for r in broken] == ["Reader 7", ""]
