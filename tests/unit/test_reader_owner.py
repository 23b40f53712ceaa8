"""The reader owner's deadlines with a connection whose transmit can hang (no pcscd): the
operation ends CARD_UNRESPONSIVE at the command deadline, the reader fails fast while the
call hangs, nothing more of the abandoned job is sent, and when the call returns the card
is dropped with a reset and the readers are told it answers again."""

from __future__ import annotations

import asyncio
import threading

import pytest

from cardapd.errors import CardUnresponsive
from cardapd.readers.owner import CardLimits, ReaderOwner
from cardapd.telemetry.metrics import Metrics
from cardapd.transport.pcsc import CallClock, PcscContext
from cardlib.apdu import CommandApdu
from cardlib.protocol import ApduProtocol


class HangingConnection:
    """Answers 90 00, or blocks in transmit (timed on the clock) while `hang` is set."""

    atr = b"\x3b\x00"

    def __init__(self, clock: CallClock) -> None:
        self.clock = clock
        self.hang = threading.Event()
        self.release = threading.Event()
        self.sent = 0
        self.closed = 0

    def transmit(self, apdu: bytes) -> bytes:
        def call() -> bytes:
            if self.hang.is_set():
                self.release.wait(30)
            self.sent += 1
            return b"\x90\x00"
        return self.clock.call("transmit", call)

    def close(self) -> None:
        self.closed += 1


def two_commands(proto: ApduProtocol) -> int:
    for _ in range(2):
        proto.send(CommandApdu(0x00, 0xA4, 0x04, 0x00, b"\xa0\x00\x00\x00\x01"))
    return 2


async def test_a_hung_command_ends_the_operation_and_wedges_until_it_returns() -> None:
    context = PcscContext()
    conn = HangingConnection(context.clock)
    told: list[tuple[str, str]] = []
    owner = ReaderOwner("R", context, Metrics(), connect=lambda _n: conn,
                        limits=CardLimits(apdu_s=0.3, read_s=5.0, write_s=10.0),
                        on_unresponsive=lambda n, d: told.append(("mute", d)),
                        on_answering=lambda n, d: told.append(("answers", d)))
    try:
        assert await owner.run(two_commands) == 2
        conn.hang.set()
        with pytest.raises(CardUnresponsive) as info:
            await owner.run(two_commands)
        assert info.value.metadata["deadline"] == "apdu"
        assert owner.wedged
        assert told
        assert told[0][0] == "mute"
        with pytest.raises(CardUnresponsive) as fast:  # no queueing behind the hung call
            await owner.run(two_commands)
        assert fast.value.metadata.get("wedged") == "true"
        sent = conn.sent
        conn.hang.clear()
        conn.release.set()
        kinds = [kind for kind, _detail in told]
        for _ in range(200):
            kinds = [kind for kind, _detail in told]
            if "answers" in kinds:
                break
            await asyncio.sleep(0.01)
        last = kinds[-1]
        assert last == "answers"
        assert conn.sent == sent + 1, "the abandoned job sent nothing after the hung command"
        assert conn.closed >= 1, "the card was dropped (with a reset) once it answered"
        assert not getattr(owner, "wedged")  # noqa: B009 - mypy keeps the narrowing above
        assert await owner.run(two_commands) == 2
    finally:
        owner.shutdown()


async def test_the_operation_deadline_bounds_a_slow_but_answering_card() -> None:
    context = PcscContext()
    conn = HangingConnection(context.clock)
    owner = ReaderOwner("R", context, Metrics(), connect=lambda _n: conn,
                        limits=CardLimits(apdu_s=5.0, read_s=0.2, write_s=10.0))

    def forever(proto: ApduProtocol) -> None:
        while True:
            proto.send(CommandApdu(0x00, 0xB0, 0x00, 0x00, le=256))

    try:
        with pytest.raises(CardUnresponsive) as info:
            await owner.run(forever)
        assert info.value.metadata["deadline"] == "operation"
        assert not owner.wedged
        assert await owner.run(two_commands) == 2
    finally:
        owner.shutdown()
