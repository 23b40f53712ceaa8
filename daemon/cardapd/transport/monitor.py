"""The reader monitor: one thread blocking in `SCardGetStatusChange`.

It watches every reader plus the `\\\\?PnP?\\Notification` pseudo-reader, so readers
coming and going wake it as well as cards. `stop()` wakes it with `SCardCancel`. When
pcscd goes away it reports `DEGRADED`, retries on its own context, and on success reports
`RECOVERED` followed by a full `SNAPSHOT`. (pyscard's `CardMonitor` polls, never calls
`SCardCancel` and dies when pcscd restarts; this replaces it.)
"""

from __future__ import annotations

import enum
import fnmatch
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from smartcard import scard

from cardapd.telemetry import logcontext
from cardapd.transport.pcsc import SERVICE_GONE, rc

log = logging.getLogger(__name__)

PNP_READER = "\\\\?PnP?\\Notification"
INFINITE = 0xFFFFFFFF


class MonitorEventKind(enum.Enum):
    """What the monitor saw."""

    SNAPSHOT = "snapshot"          # the full reader list (first, and after RECOVERED)
    READER_ADDED = "reader_added"
    READER_REMOVED = "reader_removed"
    CARD_INSERTED = "card_inserted"
    CARD_REMOVED = "card_removed"
    CARD_MUTE = "card_mute"
    DEGRADED = "degraded"
    RECOVERED = "recovered"


@dataclass(frozen=True)
class ReaderStatus:
    """One reader's PC/SC state as last seen."""

    name: str
    present: bool
    mute: bool
    unavailable: bool
    atr: bytes
    event_count: int


@dataclass(frozen=True)
class MonitorEvent:
    """An event from the monitor thread; `readers` is set on SNAPSHOT only."""

    kind: MonitorEventKind
    reader: ReaderStatus | None = None
    readers: tuple[ReaderStatus, ...] = ()
    detail: str = ""


def _status(name: str, event_state: int, atr: Sequence[int]) -> ReaderStatus:
    return ReaderStatus(
        name=name,
        present=bool(event_state & scard.SCARD_STATE_PRESENT),
        mute=bool(event_state & scard.SCARD_STATE_MUTE),
        unavailable=bool(event_state & (scard.SCARD_STATE_UNAVAILABLE | scard.SCARD_STATE_IGNORE)),
        atr=bytes(atr or b""),
        event_count=(event_state >> 16) & 0xFFFF,
    )


class ReaderMonitor:
    """Watches readers and cards on its own PC/SC context, in its own thread."""

    def __init__(self, on_event: Callable[[MonitorEvent], None], *,
                 include: Sequence[str] = (), exclude: Sequence[str] = (),
                 retry_interval_s: float = 1.0) -> None:
        self._on_event = on_event
        self._include = tuple(include)
        self._exclude = tuple(exclude)
        self._retry = retry_interval_s
        self._stop = threading.Event()
        self._ctx_lock = threading.Lock()
        self._ctx: int | None = None
        self._thread = threading.Thread(target=self._run, name="pcsc-monitor", daemon=True)
        self._readers: dict[str, ReaderStatus] = {}
        self._pnp_supported = True
        self._rescan = threading.Event()
        self._refilter = threading.Event()  # set_filters: relist with the new patterns

    def start(self) -> None:
        """Start the monitor thread."""
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether the monitor thread is running (for the watchdog)."""
        return self._thread.is_alive()

    def rescan(self) -> None:
        """Relist the readers now (udev saw a reader come or go); wakes the thread."""
        self._rescan.set()
        with self._ctx_lock:
            if self._ctx is not None:
                scard.SCardCancel(self._ctx)

    def stop(self, timeout: float = 5.0) -> None:
        """Wake the thread with SCardCancel and wait for it to end."""
        self._stop.set()
        with self._ctx_lock:
            if self._ctx is not None:
                scard.SCardCancel(self._ctx)
        self._thread.join(timeout)

    def set_filters(self, include: Sequence[str], exclude: Sequence[str]) -> None:
        """New reader patterns (a configuration reload): the thread relists at once, so
        readers now excluded are REMOVED and readers now included are ADDED."""
        self._include, self._exclude = tuple(include), tuple(exclude)
        self._refilter.set()
        with self._ctx_lock:
            if self._ctx is not None:
                scard.SCardCancel(self._ctx)

    # ------------------------------------------------------------------ internals

    def _wanted(self, name: str) -> bool:
        if self._include and not any(fnmatch.fnmatchcase(name, p) for p in self._include):
            return False
        return not any(fnmatch.fnmatchcase(name, p) for p in self._exclude)

    def _emit(self, event: MonitorEvent) -> None:
        reader = event.reader.name if event.reader is not None else ""
        # The consumer's logs (and the loop callback it schedules) carry the reader.
        with logcontext.bind(reader=reader):
            try:
                self._on_event(event)
            except Exception:  # a broken consumer must not kill the monitor
                log.exception("card event consumer failed", extra={"reader": reader})

    def _run(self) -> None:
        degraded = False
        first = True
        while not self._stop.is_set():
            try:
                ctx = self._establish()
            except _ServiceGone as gone:
                if not degraded:
                    degraded = True
                    self._readers.clear()
                    self._emit(MonitorEvent(MonitorEventKind.DEGRADED, detail=str(gone)))
                self._stop.wait(self._retry)
                continue
            if degraded:
                degraded = False
                self._emit(MonitorEvent(MonitorEventKind.RECOVERED, detail="PC/SC is back"))
            try:
                self._watch(ctx, snapshot=True)
            except _ServiceGone as gone:
                degraded = True
                self._readers.clear()
                self._emit(MonitorEvent(MonitorEventKind.DEGRADED, detail=str(gone)))
            finally:
                self._release()
            if first:
                first = False
        log.debug("monitor stopped")

    def _establish(self) -> int:
        hresult, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        if hresult != scard.SCARD_S_SUCCESS:
            raise _ServiceGone(f"PC/SC unavailable: {scard.SCardGetErrorMessage(hresult)}")
        with self._ctx_lock:
            self._ctx = int(ctx)
        if self._stop.is_set():  # stop() raced with establishing: honour it
            scard.SCardCancel(ctx)
        return int(ctx)

    def _release(self) -> None:
        with self._ctx_lock:
            if self._ctx is not None:
                scard.SCardReleaseContext(self._ctx)
                self._ctx = None

    def _list(self, ctx: int) -> list[str]:
        hresult, names = scard.SCardListReaders(ctx, [])
        code = rc(hresult)
        if code in SERVICE_GONE:
            raise _ServiceGone("PC/SC went away while listing readers")
        if code == rc(scard.SCARD_E_NO_READERS_AVAILABLE):
            return []
        if hresult != scard.SCARD_S_SUCCESS:
            raise _ServiceGone(f"listing readers failed: {scard.SCardGetErrorMessage(hresult)}")
        return [n for n in names if self._wanted(n)]

    def _watch(self, ctx: int, *, snapshot: bool) -> None:
        names = self._list(ctx)
        # First pass with timeout 0 learns every reader's current state.
        states: list[tuple[str, int]] = [(n, scard.SCARD_STATE_UNAWARE) for n in names]
        new = (self._status_change(ctx, states, 0) or []) if states else []
        self._readers = {n: _status(n, s, atr) for n, s, atr in new}
        if snapshot:
            # An unavailable reader (its device is gone, pcscd has not dropped it yet) is
            # not offered to clients; it is still watched, so its return is an ADDED event.
            usable = tuple(r for r in self._readers.values() if not r.unavailable)
            self._emit(MonitorEvent(MonitorEventKind.SNAPSHOT, readers=usable))
        current = {n: s & ~scard.SCARD_STATE_CHANGED for n, s, _ in new}
        pnp_state = len(names) << 16
        while not self._stop.is_set():
            if self._refilter.is_set():
                self._refilter.clear()
                current = self._relist(ctx, current)
            req = [(n, current[n]) for n in current]
            if self._pnp_supported:
                req.append((PNP_READER, pnp_state))
            result = self._status_change(ctx, req, INFINITE if self._pnp_supported else 1000)
            if result is None:  # cancelled (stop or rescan) or timed out
                if self._rescan.is_set() and not self._stop.is_set():
                    self._rescan.clear()
                    current = self._relist(ctx, current)
                elif not self._pnp_supported:
                    current = self._relist(ctx, current)
                continue
            relist = False
            for name, event_state, atr in result:
                if name == PNP_READER:
                    if event_state & scard.SCARD_STATE_CHANGED:
                        relist = True
                    pnp_state = event_state & ~scard.SCARD_STATE_CHANGED
                    continue
                if not event_state & scard.SCARD_STATE_CHANGED:
                    continue
                current[name] = event_state & ~scard.SCARD_STATE_CHANGED
                if event_state & (scard.SCARD_STATE_UNKNOWN | scard.SCARD_STATE_IGNORE):
                    relist = True
                    continue
                self._card_change(_status(name, event_state, atr))
            if relist or not self._pnp_supported:
                current = self._relist(ctx, current)

    def _status_change(self, ctx: int, states: list[tuple[str, int]],
                       timeout: int) -> list[tuple[str, int, list[int]]] | None:
        hresult, new = scard.SCardGetStatusChange(ctx, timeout, states)
        code = rc(hresult)
        if code == scard.SCARD_S_SUCCESS:
            return list(new)
        if code in (rc(scard.SCARD_E_CANCELLED), rc(scard.SCARD_E_TIMEOUT)):
            return None
        if code in SERVICE_GONE:
            raise _ServiceGone("pcscd stopped answering")
        if code == rc(scard.SCARD_E_UNKNOWN_READER):
            # A reader vanished between listing and waiting: relist on the next pass.
            if any(n == PNP_READER for n, _ in states) and len(states) == 1:
                self._pnp_supported = False
            return [(n, scard.SCARD_STATE_CHANGED | scard.SCARD_STATE_UNKNOWN, [])
                    for n, _ in states if n != PNP_READER]
        raise _ServiceGone(f"SCardGetStatusChange failed: {scard.SCardGetErrorMessage(hresult)}")

    def _relist(self, ctx: int, current: dict[str, int]) -> dict[str, int]:
        names = self._list(ctx)
        for gone in [n for n in self._readers if n not in names]:
            status = self._readers.pop(gone)
            current.pop(gone, None)
            if status.unavailable:
                continue  # already reported gone when it became unavailable
            if status.present:
                self._emit(MonitorEvent(MonitorEventKind.CARD_REMOVED, reader=status))
            self._emit(MonitorEvent(MonitorEventKind.READER_REMOVED, reader=status,
                                    detail="the reader was removed"))
        added = [n for n in names if n not in self._readers]
        if added:
            new = self._status_change(ctx, [(n, scard.SCARD_STATE_UNAWARE) for n in added], 0)
            for name, event_state, atr in new or []:
                status = _status(name, event_state, atr)
                self._readers[name] = status
                current[name] = event_state & ~scard.SCARD_STATE_CHANGED
                if status.unavailable:
                    continue  # listed but not usable: reported when it becomes usable
                self._emit(MonitorEvent(MonitorEventKind.READER_ADDED, reader=status))
                if status.present:
                    self._emit(MonitorEvent(
                        MonitorEventKind.CARD_MUTE if status.mute
                        else MonitorEventKind.CARD_INSERTED, reader=status))
        return current

    def _card_change(self, now: ReaderStatus) -> None:
        before = self._readers.get(now.name)
        self._readers[now.name] = now
        if now.unavailable:
            # The driver lost the device (a USB reader pulled out answers "no such device"
            # until pcscd's hotplug drops it): for clients the reader is gone.
            if before is None or not before.unavailable:
                if before is not None and before.present:
                    self._emit(MonitorEvent(MonitorEventKind.CARD_REMOVED, reader=now))
                self._emit(MonitorEvent(MonitorEventKind.READER_REMOVED, reader=now,
                                        detail="the reader stopped answering (unplugged?)"))
            return
        if before is not None and before.unavailable:
            self._emit(MonitorEvent(MonitorEventKind.READER_ADDED, reader=now,
                                    detail="the reader is back"))
            before = None  # whatever is in it now is a new insertion
        was = before is not None and before.present
        swapped = was and before is not None and now.present and (
            now.event_count != before.event_count and now.atr != b"" and
            (now.atr != before.atr or now.event_count > before.event_count + 1))
        if was and (not now.present or swapped):
            self._emit(MonitorEvent(MonitorEventKind.CARD_REMOVED, reader=now))
        if now.present and (not was or swapped or (before is not None and before.mute != now.mute)):
            kind = MonitorEventKind.CARD_MUTE if now.mute else MonitorEventKind.CARD_INSERTED
            self._emit(MonitorEvent(kind, reader=now))


class _ServiceGone(Exception):
    """pcscd is not reachable; the run loop retries."""
