"""Fan-out of card events to stream subscribers, with the reader table for snapshots.

Runs on the event loop only. A subscriber first receives one SNAPSHOT event per reader and
a SNAPSHOT_END, then live events. Each subscriber has a bounded queue: one that falls
behind by more than `queue_size` events is dropped with `overflowed` set, so one slow
client can never make the daemon hold unbounded memory or slow the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime

from cardapd.readers.model import CardEvent, EventKind, ReaderView

log = logging.getLogger(__name__)


def now() -> datetime:
    """The daemon's clock for events (UTC)."""
    return datetime.now(UTC)


class Subscription:
    """One client's view of the event stream."""

    def __init__(self, readers: frozenset[str], queue_size: int) -> None:
        self.readers = readers
        self.limit = queue_size
        # One place more than the limit, kept for the end marker: a dropped client gets the
        # events queued before it fell behind without a gap, then the end.
        self.queue: asyncio.Queue[CardEvent | None] = asyncio.Queue(queue_size + 1)
        self.overflowed = False

    def wants_reader(self, name: str) -> bool:
        """Whether this subscriber's reader filter admits reader `name`."""
        return not self.readers or name in self.readers

    def wants(self, event: CardEvent) -> bool:
        """Whether this subscriber's reader filter admits the event."""
        if not self.readers or event.reader is None:
            return True
        return event.reader.name in self.readers

    async def events(self) -> AsyncIterator[CardEvent]:
        """Events until the hub closes the subscription."""
        while True:
            event = await self.queue.get()
            if event is None:
                return
            yield event


class EventHub:
    """Holds the current reader table and publishes changes to subscribers."""

    def __init__(self, queue_size: int = 256,
                 on_publish: Callable[[CardEvent], None] | None = None) -> None:
        self._subs: set[Subscription] = set()
        self._readers: dict[str, ReaderView] = {}
        self._seq = 0
        self._queue_size = queue_size
        self._on_publish = on_publish

    @property
    def readers(self) -> list[ReaderView]:
        """The reader table, sorted by name."""
        return [self._readers[n] for n in sorted(self._readers)]

    def reader(self, name: str) -> ReaderView | None:
        """One reader's current view."""
        return self._readers.get(name)

    def set_reader(self, view: ReaderView) -> None:
        """Update the table without publishing."""
        self._readers[view.name] = view

    def clear(self) -> None:
        """Forget every reader (PC/SC went away)."""
        self._readers.clear()

    def _next(self, kind: EventKind, reader: ReaderView | None, detail: str,
              data: tuple[tuple[str, str], ...] = ()) -> CardEvent:
        self._seq += 1
        return CardEvent(seq=self._seq, kind=kind, time=now(), reader=reader, detail=detail,
                         data=data)

    def publish(self, kind: EventKind, reader: ReaderView | None = None,
                detail: str = "", data: tuple[tuple[str, str], ...] = ()) -> CardEvent:
        """Record the reader's new view (if any) and send the event to every subscriber."""
        if reader is not None:
            if kind is EventKind.READER_REMOVED:
                self._readers.pop(reader.name, None)
            else:
                self._readers[reader.name] = reader
        event = self._next(kind, reader, detail, data)
        self._deliver(event, self._subs)
        if self._on_publish is not None:
            self._on_publish(event)
        return event

    def publish_snapshot(self, detail: str = "") -> None:
        """Send every subscriber a fresh SNAPSHOT (after RECOVERED)."""
        for sub in list(self._subs):
            self._send_snapshot(sub, detail)

    def subscribe(self, readers: Iterable[str] = ()) -> Subscription:
        """A new subscription, primed with the snapshot."""
        sub = Subscription(frozenset(readers), self._queue_size)
        self._subs.add(sub)
        self._send_snapshot(sub, "")
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop delivering to `sub`."""
        self._subs.discard(sub)

    def close_all(self) -> None:
        """End every subscription (daemon stopping)."""
        for sub in list(self._subs):
            self._close(sub)

    @property
    def subscribers(self) -> int:
        """Number of live subscriptions."""
        return len(self._subs)

    def _send_snapshot(self, sub: Subscription, detail: str) -> None:
        events = [self._next(EventKind.SNAPSHOT, view, detail)
                  for view in self.readers if sub.wants_reader(view.name)]
        events.append(self._next(EventKind.SNAPSHOT_END, None, detail))
        self._deliver_all(sub, events)

    def _deliver(self, event: CardEvent, subs: Iterable[Subscription]) -> None:
        for sub in list(subs):
            if sub.wants(event):
                self._deliver_all(sub, [event])

    def _deliver_all(self, sub: Subscription, events: list[CardEvent]) -> None:
        for event in events:
            if sub.queue.qsize() < sub.limit:
                sub.queue.put_nowait(event)
            else:
                sub.overflowed = True
                self._close(sub)
                log.warning("a card event client fell more than %d events behind and is "
                            "dropped: its stream ends with EVENT_QUEUE_OVERFLOW when it "
                            "reads again (a client that keeps doing this is stuck or does "
                            "not read its stream)", self._queue_size)
                return

    def _close(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        while True:  # the end marker has its place (make room should it not)
            try:
                sub.queue.put_nowait(None)
                return
            except asyncio.QueueFull:
                sub.queue.get_nowait()
