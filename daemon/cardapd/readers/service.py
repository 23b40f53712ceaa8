"""The readers: one owner per reader, the reader table and the card event stream,
identification and tap-to-ID at insertion, and card fault isolation.

Monitor events (from the PC/SC thread) become the reader table and the events; each
inserted card is identified on its reader's thread. Other capabilities reach a card only
through the `CardAccess` methods here (`reader_with_card`, `settle`, `owner`, …) and hear
of identified cards through `on_identified`, registered at their construction. Every
operation is audited before its result is returned. It knows no gRPC.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from cardap.i18n import N_
from cardapd.domain import OpContext
from cardapd.errors import (
    Busy,
    CardapError,
    CardRemoved,
    CardUnresponsive,
    FailedPrecondition,
    InvalidArgument,
    NoCard,
    NoReader,
    PcscUnavailable,
    ReaderRemoved,
)
from cardapd.myna.cardid import CardIdKey
from cardapd.mynumber import DeviceName
from cardapd.readers.diagnose import (
    ActionCode,
    Check,
    CheckCode,
    Diagnosis,
    DiagnosisStep,
    Term,
    Verdict,
    diagnose_reader,
    no_reader_diagnosis,
)
from cardapd.readers.hub import EventHub, Subscription, now
from cardapd.readers.identify import identify_card
from cardapd.readers.model import (
    CardEvent,
    CardKind,
    CardView,
    EventKind,
    ReaderState,
    ReaderView,
    TapResult,
)
from cardapd.readers.owner import ReaderOwner
from cardapd.readers.settings import ReaderSettings
from cardapd.telemetry import logcontext
from cardapd.telemetry.recorder import Recorder
from cardapd.transport.monitor import MonitorEvent, MonitorEventKind, ReaderMonitor, ReaderStatus
from cardapd.transport.pcsc import PcscContext
from cardapd.transport.udev import UdevReaderWatch, UsbReader

log = logging.getLogger(__name__)

IdentifiedListener = Callable[[ReaderView, int], None]
"""Called on the event loop with a reader's view and generation when a My Number Card
was identified, before its CARD_INSERTED event goes out."""


class Readers:
    """Owns the readers: their table, their events, the cards in them."""

    def __init__(self, settings: ReaderSettings, recorder: Recorder, card_id_key: CardIdKey
                 ) -> None:
        self.settings = settings
        self.card_id_key = card_id_key  # restart-only: card ids must not change under a run
        self.recorder = recorder
        self.metrics = recorder.metrics
        self.started_at = now()
        self.hub = EventHub(settings.event_queue_size, on_publish=self._count_event)
        # read at each scrape: a client the hub drops is gone at once, not when it next reads
        self.metrics.event_subscribers.set_function(lambda: self.hub.subscribers)
        self.pcsc_available = False
        self._owners: dict[str, ReaderOwner] = {}
        self._published_card: dict[str, bool] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._identifying: dict[str, asyncio.Task[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._monitor: ReaderMonitor | None = None
        self._udev: UdevReaderWatch | None = None
        self._first_snapshot = asyncio.Event()
        self._live = False  # start() returned: reader changes are published from now on
        self._identified: list[IdentifiedListener] = []
        self._diagnosis_steps: list[DiagnosisStep] = []

    # ------------------------------------------------------------------ lifecycle

    async def start(self, wait_snapshot_s: float = 3.0) -> None:
        """Start watching readers; wait (bounded) for the first snapshot."""
        self._loop = asyncio.get_running_loop()
        self._monitor = ReaderMonitor(
            self._from_monitor_thread, include=self.settings.readers_include,
            exclude=self.settings.readers_exclude,
            retry_interval_s=self.settings.reconnect_interval_s)
        self._monitor.start()
        if self.settings.hotplug == "udev":
            await self._start_udev()
        try:
            await asyncio.wait_for(self._first_snapshot.wait(), wait_snapshot_s)
        except TimeoutError:
            log.warning("no PC/SC snapshot yet; starting degraded")
        self._live = True

    async def _start_udev(self) -> None:
        """Follow USB readers through udev; without libudev, PnP alone is used."""
        watch = UdevReaderWatch(self._from_udev_thread)
        try:
            await asyncio.to_thread(watch.start)
        except Exception as exc:  # no libudev, no netlink: PC/SC PnP still works
            log.warning("reader hotplug through udev unavailable (%s); using PC/SC PnP "
                        "notifications only", exc)
            return
        self._udev = watch

    def _from_udev_thread(self, action: str, reader: UsbReader) -> None:
        if self._monitor is not None:
            self._monitor.rescan()  # relist now rather than at pcscd's own pace
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_usb, action, reader)

    def _on_usb(self, action: str, reader: UsbReader) -> None:
        verb = "plugged in" if action == "add" else "unplugged"
        log.info("USB smart-card reader %s: %s", verb, reader.describe(),
                 extra={"reader": reader.model or reader.sys_path})

    def usb_readers(self) -> list[UsbReader] | None:
        """CCID readers udev sees (None when udev is not watched)."""
        return self._udev.present() if self._udev is not None else None

    async def stop(self) -> None:
        """Stop the monitor, end every stream and release the readers."""
        if self._udev is not None:
            await asyncio.to_thread(self._udev.stop)
        if self._monitor is not None:
            await asyncio.to_thread(self._monitor.stop)
        for task in list(self._tasks):
            task.cancel()
        self.hub.close_all()
        for owner in self._owners.values():
            owner.shutdown()
        self._owners.clear()

    def healthy(self) -> bool:
        """For the watchdog: the monitor thread is alive (PC/SC itself may be degraded)."""
        return self._monitor is not None and self._monitor.alive

    def apply_settings(self, settings: ReaderSettings) -> None:
        """A reloaded configuration (D19): tap and diagnose settings apply from the next
        insertion or call; changed reader filters make the monitor relist at once."""
        old, self.settings = self.settings, settings
        filters = (settings.readers_include, settings.readers_exclude)
        if settings.limits != old.limits:
            for owner in self._owners.values():
                owner.limits = settings.limits  # from the next operation on
        if self._monitor is not None and filters != (old.readers_include,
                                                      old.readers_exclude):
            self._monitor.set_filters(*filters)

    # ------------------------------------------------------------------ monitor events

    def _from_monitor_thread(self, event: MonitorEvent) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._on_monitor, event)

    def _on_monitor(self, event: MonitorEvent) -> None:
        kind = event.kind
        if kind is MonitorEventKind.SNAPSHOT:
            self._on_snapshot(event.readers)
        elif kind is MonitorEventKind.DEGRADED:
            self._on_degraded(event.detail)
        elif kind is MonitorEventKind.RECOVERED:
            self.pcsc_available = True
            self.metrics.pcsc_up.set(1)
            self.hub.publish(EventKind.RECOVERED, detail=event.detail)
        elif event.reader is not None:
            status = event.reader
            if kind is MonitorEventKind.READER_ADDED:
                self._add_reader(status.name, publish=True)
            elif kind is MonitorEventKind.READER_REMOVED:
                self._remove_reader(status.name, event.detail)
            elif kind in (MonitorEventKind.CARD_INSERTED, MonitorEventKind.CARD_MUTE):
                self._card_arrived(status)
            elif kind is MonitorEventKind.CARD_REMOVED:
                self._card_left(status.name)
        self._update_gauges()

    def _on_snapshot(self, readers: tuple[ReaderStatus, ...]) -> None:
        recovering = self._first_snapshot.is_set()
        self.pcsc_available = True
        self.metrics.pcsc_up.set(1)
        names = {r.name for r in readers}
        for gone in [n for n in self._owners if n not in names]:
            self._remove_reader(gone)
        for status in readers:
            self._add_reader(status.name, publish=self._live and not recovering)
            self.hub.set_reader(ReaderView(status.name, ReaderState.EMPTY))
            self._published_card[status.name] = False
        if recovering:
            self.hub.publish_snapshot(detail="PC/SC recovered")
        for status in readers:
            if status.present:
                self._card_arrived(status)
        self._first_snapshot.set()

    def _on_degraded(self, detail: str) -> None:
        self.pcsc_available = False
        self.metrics.pcsc_up.set(0)
        for name, owner in self._owners.items():
            owner.generation += 1
            owner.pcsc_lost()
            self.hub.set_reader(ReaderView(name, ReaderState.UNAVAILABLE))
            self._published_card[name] = False
        self.hub.publish(EventKind.DEGRADED, detail=detail)

    def _add_reader(self, name: str, *, publish: bool) -> ReaderOwner:
        owner = self._owners.get(name)
        if owner is None:
            name = DeviceName(name)  # from PC/SC: its audit rows are not free text (D59)
            # One PC/SC context per reader: pcsc-lite serialises the calls of a context,
            # so a card that hangs in one reader must not hold a context the others use.
            owner = ReaderOwner(name, PcscContext(), self.metrics,
                                limits=self.settings.limits,
                                on_unresponsive=self._card_unresponsive,
                                on_answering=self._card_answering)
            self._owners[name] = owner
            self._published_card[name] = False
            view = ReaderView(name, ReaderState.EMPTY)
            if publish:
                self.hub.publish(EventKind.READER_ADDED, view)
            else:
                self.hub.set_reader(view)
        return owner

    def _remove_reader(self, name: str, detail: str = "") -> None:
        owner = self._owners.pop(name, None)
        if owner is not None:
            owner.generation += 1
            owner.shutdown()
        if self._published_card.pop(name, False):
            self.hub.publish(EventKind.CARD_REMOVED, ReaderView(name, ReaderState.EMPTY))
        self.hub.publish(EventKind.READER_REMOVED, ReaderView(name, ReaderState.UNAVAILABLE),
                         detail=detail)

    def _card_arrived(self, status: ReaderStatus) -> None:
        owner = self._add_reader(status.name, publish=True)
        owner.generation += 1
        if not status.mute:
            detected = CardView(card_id="", atr=status.atr, kind=CardKind.UNKNOWN,
                                profile="", inserted_at=now())
            self._published_card[status.name] = True
            self.hub.publish(EventKind.CARD_DETECTED,
                             ReaderView(status.name, ReaderState.CARD_IDENTIFYING, detected))
        task = asyncio.ensure_future(self._identify(owner, owner.generation, status))
        self._tasks.add(task)
        self._identifying[status.name] = task

        def done(t: asyncio.Task[None], name: str = status.name) -> None:
            self._tasks.discard(t)
            if self._identifying.get(name) is t:
                del self._identifying[name]

        task.add_done_callback(done)

    def _card_left(self, name: str) -> None:
        owner = self._owners.get(name)
        if owner is None:
            return
        owner.generation += 1
        self._spawn(owner.card_gone())
        view = ReaderView(name, ReaderState.EMPTY)
        if self._published_card.get(name):
            self._published_card[name] = False
            self.hub.publish(EventKind.CARD_REMOVED, view)
            self._spawn(self.recorder.quietly(None, "card_removed", reader=owner.name))
        else:
            self.hub.set_reader(view)

    def _card_unresponsive(self, name: str, detail: str) -> None:
        """The card in `name` stopped answering (a deadline passed or the reader gave up):
        CARD_MUTE, keeping the card's identity; operations fail fast while it hangs."""
        view = self.hub.reader(name)
        if view is None or view.state is not ReaderState.CARD_PRESENT or view.card is None:
            return
        card = dataclasses.replace(view.card, detail=detail)
        self.hub.publish(EventKind.CARD_MUTE, ReaderView(name, ReaderState.CARD_MUTE, card),
                         detail=detail)
        self._update_gauges()

    def _card_answering(self, name: str, detail: str) -> None:
        """The card in `name` answers again (it was reset): identify it anew, which also
        lets a write cut short be reconciled without the card being reinserted."""
        owner = self._owners.get(name)
        view = self.hub.reader(name)
        if owner is None or view is None or view.state is not ReaderState.CARD_MUTE \
                or view.card is None or name in self._identifying:
            return
        status = ReaderStatus(name, present=True, mute=False, unavailable=False,
                              atr=view.card.atr, event_count=0)
        task = asyncio.ensure_future(self._identify(owner, owner.generation, status,
                                                    note=detail))
        self._tasks.add(task)
        self._identifying[name] = task

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if self._identifying.get(name) is t:
                del self._identifying[name]

        task.add_done_callback(done)

    async def _identify(self, owner: ReaderOwner, generation: int, status: ReaderStatus,
                        note: str = "") -> None:
        logcontext.set_fields(operation="identify", reader=owner.name)  # this task only
        # Let the streams write CARD_DETECTED before the reader thread starts competing
        # for the GIL: the first event of an insertion must not wait for identification.
        for _ in range(3):
            await asyncio.sleep(0)
        settings = self.settings
        taps = settings.type_c_aids if settings.read_on_insert else ()
        inserted_at = now()
        kind = EventKind.CARD_INSERTED
        if status.mute:
            card: CardView | None = None
            kind = EventKind.CARD_MUTE
            detail = "the card does not answer to reset (mute)"
        else:
            try:
                card = await owner.run(lambda p: identify_card(
                    p, status.atr, taps, inserted_at, self.card_id_key, settings.rule))
                detail = f"{note}; {card.detail}" if note and card.detail else \
                    (note or card.detail)
            except (CardRemoved, ReaderRemoved):
                return  # the removal event follows; nothing to publish
            except (CardUnresponsive, PcscUnavailable) as exc:
                card, kind, detail = None, EventKind.CARD_MUTE, exc.message
            except CardapError as exc:
                card, kind, detail = None, EventKind.CARD_MUTE, exc.message
        if owner.generation != generation or self._owners.get(owner.name) is not owner:
            return  # removed (or replaced) while we were identifying
        if card is None and note:
            return  # still not answering: the reader keeps its CARD_MUTE view of the card
        if card is None:
            view = ReaderView(owner.name, ReaderState.CARD_MUTE,
                              CardView(card_id="", atr=status.atr, kind=CardKind.UNKNOWN,
                                       profile="unknown", inserted_at=inserted_at,
                                       detail=detail))
        else:
            view = ReaderView(owner.name, ReaderState.CARD_PRESENT, card)
        self._published_card[owner.name] = True
        if view.card is not None and view.card.kind is CardKind.MY_NUMBER_CARD:
            for listener in self._identified:  # e.g. reconciliation: before the event
                listener(view, generation)
        self.hub.publish(kind, view, detail=detail)
        self._update_gauges()
        await self.recorder.quietly(
            None, "card_inserted", reader=owner.name,
            card_id=view.card.card_id if view.card else "",
            detail={"kind": view.card.kind.value if view.card else "unknown",
                    "profile": view.card.profile if view.card else "",
                    "id_source": view.card.id_source if view.card else ""})

    # ------------------------------------------------------------------ queries

    def readers(self) -> list[ReaderView]:
        """The reader table."""
        return self.hub.readers

    def counts(self) -> tuple[int, int]:
        """(readers, readers holding an identified card)."""
        views = self.hub.readers
        return len(views), sum(1 for v in views if v.state is ReaderState.CARD_PRESENT)

    def subscribe(self, readers: list[str]) -> Subscription:
        """A card event subscription primed with the snapshot."""
        return self.hub.subscribe(readers)

    def unsubscribe(self, sub: Subscription) -> None:
        """End a card event subscription."""
        self.hub.unsubscribe(sub)

    # ------------------------------------------------------------------ operations

    async def diagnose(self, ctx: OpContext, *, reader: str,
                       organisation: str = "") -> list[Diagnosis]:
        """Card fault isolation for one reader, or every reader when `reader` is empty, with
        each card's story from the registered steps (`organisation`: the operator's)."""
        start = time.perf_counter()
        try:
            if reader and reader not in self._owners:
                raise NoReader(f"no reader named {reader!r}")
            names = [reader] if reader else sorted(self._owners)
            if not names:
                results = [no_reader_diagnosis(self.pcsc_available, self.usb_readers())]
            else:
                results = []
                for name in names:
                    results.append(await self._diagnose_one(ctx, name, organisation))
        except CardapError as exc:
            await self.recorder.finish(ctx, "diagnose", start, exc,
                                       reader=self.device_name(reader))
            raise
        for result in results:
            await self.recorder.finish(
                ctx, "diagnose", start, None, reader=self.device_name(result.reader.name),
                card_id=result.card_id,
                detail={"verdict": result.verdict.value,
                        "failed": [c.name for c in result.checks if not c.ok],
                        "operations": len(result.operations)})
        return results

    async def _diagnose_one(self, ctx: OpContext, name: str, organisation: str) -> Diagnosis:
        """One reader: the reader and card checks, then the card's story."""
        owner = self._owners[name]
        view = self.hub.reader(name) or ReaderView(name, ReaderState.UNAVAILABLE)
        busy = next((b for b in (step.busy(name) for step in self._diagnosis_steps) if b), "")
        if busy and view.card is not None:
            diag = Diagnosis(view, card_id=view.card.card_id)
            diag.checks.append(Check(CheckCode.CARD_BUSY, False,
                                     N_("{what} is running on this card; the card was not "
                                        "probed"), "CARD_BUSY", values={"what": Term(busy)}))
            diag.conclude(Verdict.WARNING, ActionCode.WAIT_FOR_OPERATION)
            return diag
        diag = await diagnose_reader(
            owner, view, pcsc_available=self.pcsc_available,
            type_c_aids=self.settings.type_c_aids if self.settings.probe_type_c else (),
            key=self.card_id_key, cancel=ctx.cancel, rule=self.settings.rule)
        if view.card is not None and view.card.kind is CardKind.MY_NUMBER_CARD \
                and diag.verdict in (Verdict.OK, Verdict.WARNING):  # the card answered
            for step in self._diagnosis_steps:
                await step.story(ctx, owner, view, diag, organisation)
        return diag

    def add_diagnosis_step(self, step: DiagnosisStep) -> None:
        """Register a capability's part of the diagnosis (at the caller's construction)."""
        self._diagnosis_steps.append(step)

    # ------------------------------------------------------------------ card access

    def on_identified(self, listener: IdentifiedListener) -> None:
        """Register a listener for identified My Number Cards (at the caller's construction)."""
        self._identified.append(listener)

    @property
    def tap_aids(self) -> tuple[bytes, ...]:
        """The Type C AIDs read at insertion ([tap] type_c_aids)."""
        return self.settings.type_c_aids

    def default_type_c(self) -> bytes:
        """The first configured Type C AID (InvalidArgument AID_REQUIRED without one)."""
        if not self.settings.type_c_aids:
            raise InvalidArgument("no AID given and no Type C AP configured ([tap] "
                                  "type_c_aids)", reason="AID_REQUIRED")
        return self.settings.type_c_aids[0]

    def owner(self, name: str) -> ReaderOwner | None:
        """The owner of reader `name`."""
        return self._owners.get(name)

    def forget_tap(self, reader: str, generation: int, aid: bytes) -> None:
        """Drop the cached tap read of `aid` (the AP was deleted)."""
        owner = self._owners.get(reader)
        view = self.hub.reader(reader)
        if owner is None or owner.generation != generation or view is None or view.card is None:
            return
        card = dataclasses.replace(view.card, tap=tuple(t for t in view.card.tap
                                                        if t.aid != aid))
        self.hub.set_reader(ReaderView(reader, view.state, card))

    def tell(self, reader: str, generation: int, kind: EventKind, detail: str,
             data: tuple[tuple[str, str], ...] = ()) -> None:
        """Publish an event about the card still in `reader` (e.g. a reconciliation)."""
        owner = self._owners.get(reader)
        view = self.hub.reader(reader)
        if owner is None or owner.generation != generation or view is None:
            return
        self.hub.publish(kind, view, detail=detail, data=data)

    # ------------------------------------------------------------------ helpers

    async def settle(self, reader: str, timeout_s: float = 5.0) -> None:
        """Wait (bounded) for identifications in progress on `reader` (or on any reader)."""
        tasks = [t for n, t in self._identifying.items() if not reader or n == reader]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

    def device_name(self, reader: str) -> str:
        """`reader` as PC/SC named it (`DeviceName`) when it is a connected reader; else as
        given (a name a client typed, checked like any text)."""
        owner = self._owners.get(reader)
        return reader if owner is None else owner.name

    def reader_with_card(self, reader: str) -> tuple[ReaderOwner, ReaderView]:
        """The owner and view of the reader holding a card (NoReader, NoCard, CardUnresponsive,
        Busy CARD_IDENTIFYING while it is identified, named or the only card there is,
        FAILED_PRECONDITION READER_AMBIGUOUS naming them when `reader` is empty and several
        hold one: the same request is right with one card)."""
        if not self.pcsc_available:
            raise PcscUnavailable("PC/SC (pcscd) is not available; the daemon is reconnecting")
        if reader:
            owner = self._owners.get(reader)
            if owner is None:
                raise NoReader(f"no reader named {reader!r}", metadata={"reader": reader})
            view = self.hub.reader(reader) or ReaderView(reader, ReaderState.UNAVAILABLE)
        else:
            if not self._owners:
                raise NoReader("no card reader is connected")
            views = self.hub.readers
            # a card there but not yet known is not "insert one": it goes on to the
            # CARD_IDENTIFYING answer below (by the table's state: the identify task
            # outlives a removal until its next command fails)
            with_card = [v for v in views if v.state in
                         (ReaderState.CARD_PRESENT, ReaderState.CARD_MUTE)] or [
                v for v in views if v.state is ReaderState.CARD_IDENTIFYING][:1]
            if not with_card:
                raise NoCard("no card in any reader")
            if len(with_card) > 1:
                names = ", ".join(v.name for v in with_card)
                raise FailedPrecondition(f"several readers hold a card ({names}): name the "
                                         "reader", reason="READER_AMBIGUOUS",
                                         metadata={"readers": names})
            view = with_card[0]
            owner = self._owners[view.name]
        if view.state is ReaderState.CARD_MUTE and (
                view.card is None or not view.card.card_id or owner.wedged):
            raise CardUnresponsive(f"the card in {view.name!r} does not answer",
                                   metadata={"reader": view.name})
        if view.state is ReaderState.CARD_MUTE:
            return owner, view  # stopped answering mid-insertion: trying is how we learn
        if view.state is not ReaderState.CARD_PRESENT or view.card is None:
            if view.state is ReaderState.CARD_IDENTIFYING:
                raise Busy(f"the card in {view.name!r} is still being identified",
                           reason="CARD_IDENTIFYING")
            raise NoCard(f"no card in {view.name!r}", metadata={"reader": view.name})
        return owner, view

    def remember_tap(self, reader: str, generation: int, tap: TapResult) -> None:
        """Cache a fresh Type C read of the card still in `reader` (tap cache)."""
        owner = self._owners.get(reader)
        view = self.hub.reader(reader)
        if owner is None or owner.generation != generation or view is None or view.card is None:
            return
        taps = (*(t for t in view.card.tap if t.aid != tap.aid), tap)
        card = dataclasses.replace(view.card, tap=taps)
        self.hub.set_reader(ReaderView(reader, view.state, card))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _count_event(self, event: CardEvent) -> None:
        self.metrics.card_events.labels(event.kind.value).inc()

    def _update_gauges(self) -> None:
        views = self.hub.readers
        self.metrics.readers.set(len(views))
        self.metrics.cards.set(sum(1 for v in views if v.state is ReaderState.CARD_PRESENT))

