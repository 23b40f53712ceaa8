"""The card event hub's bound per client: a client that falls behind is dropped with the
events queued before it fell behind, in order and without a gap, then the end; the others
get everything."""

from __future__ import annotations

import asyncio
import logging

import pytest

from cardapd.readers.hub import EventHub
from cardapd.readers.model import CardEvent, EventKind, ReaderState, ReaderView


def test_a_client_past_its_queue_is_dropped_after_the_events_it_holds(
        caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> None:
        hub = EventHub(queue_size=8)
        hub.set_reader(ReaderView("R0", ReaderState.EMPTY))
        slow, fast = hub.subscribe(), hub.subscribe()
        fast_seen: list[CardEvent] = await drain_some(fast.queue, 2)  # snapshot + end
        for n in range(20):
            hub.publish(EventKind.CARD_REMOVED, ReaderView("R0", ReaderState.EMPTY),
                        detail=str(n))
            fast_seen += await drain_some(fast.queue, 1)
        assert slow.overflowed
        assert not fast.overflowed
        assert hub.subscribers == 1
        got = [e async for e in slow.events()]  # ends: the end marker follows
        assert len(got) == 8, "all of the queue, then the end"
        assert [e.seq for e in got] == sorted({e.seq for e in got})
        assert [e.kind for e in got[:2]] == [EventKind.SNAPSHOT, EventKind.SNAPSHOT_END]
        assert [e.detail for e in got[2:]] == [str(n) for n in range(6)]
        assert [e.detail for e in fast_seen[2:]] == [str(n) for n in range(20)]

    with caplog.at_level(logging.WARNING, logger="cardapd.readers.hub"):
        asyncio.run(run())
    assert [r.getMessage() for r in caplog.records] == [
        "a card event client fell more than 8 events behind and is dropped: its stream ends "
        "with EVENT_QUEUE_OVERFLOW when it reads again (a client that keeps doing this is "
        "stuck or does not read its stream)"]


async def drain_some(events: asyncio.Queue[CardEvent | None], n: int) -> list[CardEvent]:
    out = []
    for _ in range(n):
        event = events.get_nowait()
        assert event is not None
        out.append(event)
    return out
