"""The engine: readers, card events, identification, tap-to-ID and user ID reads.

It turns monitor events (from the PC/SC thread) into the reader table and the card event
stream, identifies each inserted card on its reader's thread, and serves reads. Every
operation is audited before its result is returned. It knows no gRPC: the API layer calls
it with an `OpContext` and turns its `CardapError`s into status codes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from cardapd import __version__, logcontext
from cardapd.engine.audit import AuditSink, finish_operation
from cardapd.engine.diagnose import Diagnosis, diagnose_reader, no_reader_diagnosis
from cardapd.engine.hub import EventHub, Subscription, now
from cardapd.engine.identify import identify_card
from cardapd.engine.model import (
    CardEvent,
    CardKind,
    CardView,
    DaemonStatus,
    EventKind,
    OpContext,
    ReaderState,
    ReaderView,
    TapResult,
    UserIdRead,
)
from cardapd.engine.owner import ReaderOwner
from cardapd.engine.settings import EngineSettings
from cardapd.errors import (
    Busy,
    CardapError,
    CardRemoved,
    CardUnresponsive,
    InvalidArgument,
    NoCard,
    NoReader,
    NotMyNumberCard,
    PcscUnavailable,
    ReaderRemoved,
)
from cardapd.metrics import Metrics
from cardapd.myna.typec import TypeCSession
from cardapd.transport.monitor import MonitorEvent, MonitorEventKind, ReaderMonitor, ReaderStatus
from cardapd.transport.pcsc import PcscContext
from cardapd.transport.udev import UdevReaderWatch, UsbReader

if TYPE_CHECKING:
    from pathlib import Path

    from cardapd.engine.loading import Loader
    from cardapd.engine.operators import OperatorService
    from cardapd.engine.revocation import Revocation
    from cardapd.engine.secure_read import SecureReads

log = logging.getLogger(__name__)

LOADING_CAPABILITIES = ["load_ap", "delete_ap", "list_card_aps", "reconcile"]
CAPABILITIES = ["events", "read_user_id.type_c", "tap_to_id", "diagnose.v1", "metrics",
                "audit.append"]


class Engine:
    """Owns the readers and serves the card operations."""

    def __init__(self, settings: EngineSettings, audit: AuditSink, metrics: Metrics) -> None:
        self.settings = settings
        self.audit = audit
        self.metrics = metrics
        self.started_at = now()
        self.context = PcscContext()
        self.hub = EventHub(settings.event_queue_size, on_publish=self._count_event)
        self.pcsc_available = False
        self._owners: dict[str, ReaderOwner] = {}
        self._published_card: dict[str, bool] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._identifying: dict[str, asyncio.Task[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._monitor: ReaderMonitor | None = None
        self._udev: UdevReaderWatch | None = None
        self.hotplug_source = "pnp"  # "udev" once the udev watch runs
        self._first_snapshot = asyncio.Event()
        self._live = False  # start() returned: reader changes are published from now on
        self.loading: Loader | None = None  # set by the daemon when loading is wired
        self.secure: SecureReads | None = None  # Type A/D/custom reads ([[read.aps]])
        self.revocation: Revocation | None = None  # the revocation feeds and suspensions
        self.operators: OperatorService | None = None  # roster, logins, sessions (issue 5)
        self.audit_path: Path | None = None  # the audit database, for export and verify

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
        self.hotplug_source = "udev"

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
        if self.loading is not None:
            await self.loading.close()
        if self.revocation is not None:
            await self.revocation.stop()
        self.hub.close_all()
        for owner in self._owners.values():
            owner.shutdown()
        self._owners.clear()

    def healthy(self) -> bool:
        """For the watchdog: the monitor thread is alive (PC/SC itself may be degraded)."""
        return self._monitor is not None and self._monitor.alive

    def apply_settings(self, settings: EngineSettings) -> None:
        """A reloaded configuration (D19): tap and diagnose settings apply from the next
        insertion or call; changed reader filters make the monitor relist at once."""
        old, self.settings = self.settings, settings
        filters = (settings.readers_include, settings.readers_exclude)
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
        self.context.invalidate()
        for name, owner in self._owners.items():
            owner.generation += 1
            self._spawn(owner.card_gone())
            self.hub.set_reader(ReaderView(name, ReaderState.UNAVAILABLE))
            self._published_card[name] = False
        self.hub.publish(EventKind.DEGRADED, detail=detail)

    def _add_reader(self, name: str, *, publish: bool) -> ReaderOwner:
        owner = self._owners.get(name)
        if owner is None:
            owner = ReaderOwner(name, self.context, self.metrics)
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
            self._spawn(self._audit_quiet(None, "card_removed", reader=name))
        else:
            self.hub.set_reader(view)

    async def _identify(self, owner: ReaderOwner, generation: int, status: ReaderStatus) -> None:
        logcontext.set_fields(operation="identify", reader=owner.name)  # this task only
        # Let the streams write CARD_DETECTED before the reader thread starts competing
        # for the GIL: the first event of an insertion must not wait for identification.
        for _ in range(3):
            await asyncio.sleep(0)
        taps = self.settings.type_c_aids if self.settings.read_on_insert else ()
        inserted_at = now()
        kind = EventKind.CARD_INSERTED
        if status.mute:
            card: CardView | None = None
            kind = EventKind.CARD_MUTE
            detail = "the card does not answer to reset (mute)"
        else:
            try:
                card = await owner.run(lambda p: identify_card(p, status.atr, taps, inserted_at))
                detail = card.detail
            except (CardRemoved, ReaderRemoved):
                return  # the removal event follows; nothing to publish
            except (CardUnresponsive, PcscUnavailable) as exc:
                card, kind, detail = None, EventKind.CARD_MUTE, exc.message
            except CardapError as exc:
                card, kind, detail = None, EventKind.CARD_MUTE, exc.message
        if owner.generation != generation or self._owners.get(owner.name) is not owner:
            return  # removed (or replaced) while we were identifying
        if card is None:
            view = ReaderView(owner.name, ReaderState.CARD_MUTE,
                              CardView(card_id="", atr=status.atr, kind=CardKind.UNKNOWN,
                                       profile="unknown", inserted_at=inserted_at,
                                       detail=detail))
        else:
            view = ReaderView(owner.name, ReaderState.CARD_PRESENT, card)
        self._published_card[owner.name] = True
        if (self.loading is not None and view.card is not None
                and view.card.kind is CardKind.MY_NUMBER_CARD):
            from cardapd.engine.reconcile import start_reconcile
            start_reconcile(self.loading, view, generation)  # runs after the event
        self.hub.publish(kind, view, detail=detail)
        self._update_gauges()
        await self._audit_quiet(None, "card_inserted", reader=owner.name,
                                card_id=view.card.card_id if view.card else "",
                                detail={"kind": view.card.kind.value if view.card else "unknown",
                                        "profile": view.card.profile if view.card else ""})

    # ------------------------------------------------------------------ queries

    def readers(self) -> list[ReaderView]:
        """The reader table."""
        return self.hub.readers

    def subscribe(self, readers: list[str]) -> Subscription:
        """A card event subscription primed with the snapshot."""
        sub = self.hub.subscribe(readers)
        self.metrics.event_subscribers.set(self.hub.subscribers)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """End a card event subscription."""
        self.hub.unsubscribe(sub)
        self.metrics.event_subscribers.set(self.hub.subscribers)

    def status(self) -> DaemonStatus:
        """Daemon health for GetStatus."""
        views = self.hub.readers
        return DaemonStatus(
            version=__version__, started_at=self.started_at,
            pcsc_available=self.pcsc_available, readers=len(views),
            cards=sum(1 for v in views if v.state is ReaderState.CARD_PRESENT),
            audit_head_seq=self.audit.head(),
            capabilities=CAPABILITIES + (LOADING_CAPABILITIES if self.loading is not None
                                         and self.loading.client.cfg.configured else [])
            + self._read_capabilities())

    def _read_capabilities(self) -> list[str]:
        """Secure-read and revocation capabilities of this configuration."""
        caps: list[str] = []
        if self.secure is not None:
            kinds = {ap.type for ap in self.secure.aps.values()}
            caps += [f"read_user_id.{n}" for k, n in (("A", "type_a"), ("D", "type_d"),
                                                      ("custom", "custom")) if k in kinds]
        if self.revocation is not None:
            caps += ["revocation", "user_id_status.local"]
        return caps

    # ------------------------------------------------------------------ operations

    async def read_user_id(self, ctx: OpContext, *, reader: str, aid: bytes | None,
                           fresh: bool, cancel: threading.Event | None = None) -> UserIdRead:
        """Read a Type C user ID: from the insertion's tap read unless `fresh`."""
        start = time.perf_counter()
        card_id = ""
        reader_name = reader
        try:
            target = aid or self._default_type_c()
            ap = self.secure.config_for(target) if self.secure is not None else None
            if ap is not None and self.revocation is not None:
                await self.revocation.precheck(ap.organisation)
            await self._settle(reader)
            owner, view = self._reader_with_card(reader)
            reader_name = owner.name
            assert view.card is not None
            card = view.card
            card_id = card.card_id
            if card.kind is not CardKind.MY_NUMBER_CARD:
                raise NotMyNumberCard(f"the card in {owner.name!r} is not a My Number Card")
            cached = None if fresh else card.tap_for(target)
            if cached is not None and cached.user_id:
                result = UserIdRead(cached.user_id, cached.info, card_id, owner.name, target,
                                    cached=True)
            else:
                generation = owner.generation
                record = await owner.run(lambda p: TypeCSession(p).read(target, cancel=cancel))
                if owner.generation != generation:
                    raise CardRemoved(f"the card left {owner.name!r} during the read")
                tap = TapResult(target, record.user_id, tuple(record.info))
                self._remember_tap(owner.name, generation, tap)
                result = UserIdRead(record.user_id, tuple(record.info), card_id, owner.name,
                                    target, cached=False)
            if self.secure is not None:
                st = await self.secure.status(target, result.user_id)
                result = dataclasses.replace(result, status=st.status, feed_age_s=st.feed_age_s,
                                             feed_stale=st.stale, warning=st.warning)
        except CardapError as exc:
            await self._finish(ctx, "read_user_id", start, exc, reader=reader_name,
                               card_id=card_id, detail={"aid": (aid or b"").hex().upper()})
            raise
        await self._finish(ctx, "read_user_id", start, None, reader=reader_name,
                           card_id=card_id,
                           detail={"aid": result.aid.hex().upper(), "cached": result.cached,
                                   "status": result.status.value,
                                   "feed_age_s": result.feed_age_s, "stale": result.feed_stale})
        return result

    async def diagnose(self, ctx: OpContext, *, reader: str,
                       cancel: threading.Event | None = None) -> list[Diagnosis]:
        """Card fault isolation for one reader, or every reader when `reader` is empty."""
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
                    owner = self._owners[name]
                    view = self.hub.reader(name) or ReaderView(name, ReaderState.UNAVAILABLE)
                    results.append(await diagnose_reader(
                        owner, view, pcsc_available=self.pcsc_available,
                        type_c_aids=self.settings.type_c_aids if self.settings.probe_type_c
                        else (), cancel=cancel))
        except CardapError as exc:
            await self._finish(ctx, "diagnose", start, exc, reader=reader)
            raise
        for result in results:
            await self._finish(ctx, "diagnose", start, None, reader=result.reader.name,
                               card_id=result.card_id,
                               detail={"verdict": result.verdict.value,
                                       "failed": [c.name for c in result.checks if not c.ok]})
        return results

    # ------------------------------------------------------------------ for the loader

    async def finish(self, ctx: OpContext | None, operation: str, start: float,
                     exc: CardapError | None, *, reader: str = "", card_id: str = "",
                     detail: Mapping[str, object] | None = None,
                     durable: bool = False) -> None:
        """Audit, then count, one operation (for the loader and the secure reads)."""
        await finish_operation(self.audit, self.metrics, ctx, operation, start, exc,
                               reader=reader, card_id=card_id, detail=detail,
                               durable=durable)

    async def settle(self, reader: str) -> None:
        """Wait (bounded) for identifications in progress."""
        await self._settle(reader)

    def reader_with_card(self, reader: str) -> tuple[ReaderOwner, ReaderView]:
        """The owner and view of the reader holding a card (errors as for reads)."""
        return self._reader_with_card(reader)

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

    def tell(self, reader: str, generation: int, kind: EventKind, detail: str) -> None:
        """Publish an event about the card still in `reader` (e.g. a reconciliation)."""
        owner = self._owners.get(reader)
        view = self.hub.reader(reader)
        if owner is None or owner.generation != generation or view is None:
            return
        self.hub.publish(kind, view, detail=detail)

    # ------------------------------------------------------------------ helpers

    async def _settle(self, reader: str, timeout_s: float = 5.0) -> None:
        """Wait (bounded) for identifications in progress on `reader` (or on any reader)."""
        tasks = [t for n, t in self._identifying.items() if not reader or n == reader]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

    def _default_type_c(self) -> bytes:
        if not self.settings.type_c_aids:
            raise InvalidArgument("no AID given and no Type C AP configured ([tap] type_c_aids)",
                                  reason="AID_REQUIRED")
        return self.settings.type_c_aids[0]

    def _reader_with_card(self, reader: str) -> tuple[ReaderOwner, ReaderView]:
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
            with_card = [v for v in self.hub.readers if v.state in
                         (ReaderState.CARD_PRESENT, ReaderState.CARD_MUTE)]
            if not with_card:
                raise NoCard("no card in any reader")
            if len(with_card) > 1:
                raise InvalidArgument("several readers hold a card: name the reader",
                                      reason="READER_AMBIGUOUS")
            view = with_card[0]
            owner = self._owners[view.name]
        if view.state is ReaderState.CARD_MUTE:
            raise CardUnresponsive(f"the card in {view.name!r} does not answer",
                                   metadata={"reader": view.name})
        if view.state is not ReaderState.CARD_PRESENT or view.card is None:
            if view.name in self._identifying:
                raise Busy(f"the card in {view.name!r} is still being identified",
                           reason="CARD_IDENTIFYING")
            raise NoCard(f"no card in {view.name!r}", metadata={"reader": view.name})
        return owner, view

    def _remember_tap(self, reader: str, generation: int, tap: TapResult) -> None:
        owner = self._owners.get(reader)
        view = self.hub.reader(reader)
        if owner is None or owner.generation != generation or view is None or view.card is None:
            return
        taps = (*(t for t in view.card.tap if t.aid != tap.aid), tap)
        card = CardView(view.card.card_id, view.card.atr, view.card.kind, view.card.profile,
                        view.card.inserted_at, taps, view.card.detail)
        self.hub.set_reader(ReaderView(reader, view.state, card))

    async def _finish(self, ctx: OpContext | None, operation: str, start: float,
                      exc: CardapError | None, *, reader: str = "", card_id: str = "",
                      detail: Mapping[str, object] | None = None) -> None:
        """Audit, then count, one operation; an audit failure fails the operation."""
        await finish_operation(self.audit, self.metrics, ctx, operation, start, exc,
                               reader=reader, card_id=card_id, detail=detail)

    async def _audit_quiet(self, ctx: OpContext | None, operation: str, *, reader: str = "",
                           card_id: str = "", detail: Mapping[str, object] | None = None) -> None:
        """Audit an event nobody waits for; a failure is logged, not raised."""
        try:
            await self.audit.record(ctx, operation, result="ok", reader=reader,
                                    card_id=card_id, detail=detail)
        except CardapError:
            log.exception("could not audit %s", operation)

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

