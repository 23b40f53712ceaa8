"""`AsyncAuditLog`: the audit log for asyncio, one writer thread with group commit.

SQLite calls block (an fsync for POWER), so they never run on the event loop. One
dedicated thread owns the connection: concurrent `await append(...)` calls enqueue
their entry; the thread takes *everything* queued, commits it in one transaction at
the strongest durability asked for in the batch, anchors the head file (one pwrite,
so every row a caller was told about is anchored) and then resolves every future.
Under load, many appends share one fsync. When the writer is idle, a PROCESS-durability
append (the gate's reads) commits inline on the caller's thread under the same lock: no
thread hand-off and no loop wake-up, which on a busy 2-core machine is most of the cost.
The commit is a WAL write without fsync (tens of microseconds), so the event loop is
never held for long; a POWER append always goes through the writer thread, and so does
every other write (`call`: sealing, verification marks, dropping a segment's rows).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cardapd.audit.log import AuditEntry, AuditLog, AuditRecord, now_us
from cardapd.errors import StoreError
from cardapd.storage import Durability

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Request:
    entry: AuditEntry
    durability: Durability
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[AuditRecord]


@dataclass(slots=True)
class _Call:
    fn: Callable[[AuditLog], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


_STOP = object()
_Outcome = AuditRecord | BaseException
T = TypeVar("T")


def _deliver(results: list[tuple[asyncio.Future[Any], Any]]) -> None:
    """Resolve futures on their own loop (callers that gave up are skipped)."""
    for future, outcome in results:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


class AsyncAuditLog:
    """Async front of `AuditLog`; `await open()` before use, `await aclose()` after."""

    def __init__(self, path: Path, *, head_path: Path | None = None,
                 max_batch: int = 1024, idle_checkpoint_s: float = 2.0,
                 clock: Callable[[], int] = now_us) -> None:
        self.path = Path(path)
        self._head_path = head_path
        self._clock = clock
        self._max_batch = max_batch
        self._idle = idle_checkpoint_s
        self._queue: queue.SimpleQueue[_Request | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped = concurrent.futures.Future[None]()
        self._closing = False
        self._last_seq = 0
        self._durable: AuditRecord | None = None
        self.reset: AuditRecord | None = None
        """The anchor reset row written at open, if the head anchor disagreed."""
        self._audit: AuditLog | None = None
        self._lock = threading.Lock()  # one thread in the database at a time
        self.inline = 0
        """Appends committed on the caller's thread (the uncontended fast path)."""
        self.batches = 0
        """Transactions committed so far (group commit makes this < appends)."""

    async def open(self) -> None:
        """Start the writer thread and open (and migrate) the database there."""
        if self._thread is not None:
            raise StoreError("audit log already open")
        opened = concurrent.futures.Future[None]()
        self._thread = threading.Thread(target=self._run, args=(opened,),
                                        name="audit-writer", daemon=True)
        self._thread.start()
        await asyncio.wrap_future(opened)

    def last_seq(self) -> int:
        """The seq of the newest committed row (0 when empty or not open)."""
        return self._last_seq

    def durable_head(self) -> AuditRecord | None:
        """The newest row committed to survive a power loss (None before the first)."""
        return self._durable

    async def call(self, fn: Callable[[AuditLog], T]) -> T:
        """Run `fn(log)` on the writer thread, in turn with the appends; raises what it
        raises (an SQLite fault as `StoreError`)."""
        if self._thread is None or self._closing or not self._thread.is_alive():
            raise StoreError(f"audit log {self.path} is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Call(fn, loop, future))
        return await future

    async def append(self, entry: AuditEntry,
                     durability: Durability = Durability.POWER) -> AuditRecord:
        """Log one entry; returns once committed at `durability`; raises `StoreError`."""
        if self._thread is None or self._closing or not self._thread.is_alive():
            raise StoreError(f"audit log {self.path} is not open")
        audit = self._audit
        if (durability is Durability.PROCESS and audit is not None and self._queue.empty()
                and self._lock.acquire(blocking=False)):
            try:
                return self._append_inline(audit, entry)
            finally:
                self._lock.release()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AuditRecord] = loop.create_future()
        self._queue.put(_Request(entry, durability, loop, future))
        return await future

    def _append_inline(self, audit: AuditLog, entry: AuditEntry) -> AuditRecord:
        """Commit one PROCESS entry on this thread (caller holds the lock)."""
        try:
            (record,) = audit.append_batch([(entry, Durability.PROCESS)])
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"audit log {self.path}: {exc}") from exc
        self._last_seq = audit.last_seq
        audit.write_head()
        self.inline += 1
        return record

    async def aclose(self) -> None:
        """Commit what is queued, stop the thread and close the database."""
        if self._thread is None or self._closing:
            return
        self._closing = True
        self._queue.put(_STOP)
        await asyncio.wrap_future(self._stopped)

    async def __aenter__(self) -> AsyncAuditLog:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- the writer thread ---------------------------------------------------------

    def _run(self, opened: concurrent.futures.Future[None]) -> None:
        try:
            audit = AuditLog(self.path, head_path=self._head_path, clock=self._clock)
        except BaseException as exc:
            opened.set_exception(exc if isinstance(exc, StoreError)
                                 else StoreError(f"cannot open audit log: {exc}"))
            self._stopped.set_result(None)
            return
        self._last_seq = audit.last_seq
        self._durable = audit.durable_head
        self.reset = audit.reset
        self._audit = audit
        opened.set_result(None)
        try:
            self._loop(audit)
        finally:
            with self._lock:
                self._audit = None
                audit.close()
            self._stopped.set_result(None)

    def _loop(self, audit: AuditLog) -> None:
        stop = False
        while not stop:
            try:
                first = self._queue.get(timeout=self._idle)
            except queue.Empty:
                with self._lock:
                    audit.checkpoint()
                continue
            batch: list[_Request] = []
            item: object = first
            while True:
                if item is _STOP:
                    stop = True
                elif isinstance(item, _Request):
                    batch.append(item)
                elif isinstance(item, _Call):  # in order: commit what queued before it
                    if batch:
                        self._commit(audit, batch)
                        batch = []
                    self._run_call(audit, item)
                if stop or len(batch) >= self._max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._commit(audit, batch)
        self._fail_pending()

    def _run_call(self, audit: AuditLog, call: _Call) -> None:
        outcome: Any
        try:
            with self._lock:
                try:
                    outcome = call.fn(audit)
                finally:
                    self._last_seq = audit.last_seq
                    self._durable = audit.durable_head
        except StoreError as exc:
            outcome = exc
        except sqlite3.Error as exc:
            outcome = StoreError(f"audit log {self.path}: {exc}")
        except Exception as exc:  # a bug in the call: its caller hears of it
            outcome = exc
        with contextlib.suppress(RuntimeError):
            call.loop.call_soon_threadsafe(_deliver, [(call.future, outcome)])

    def _commit(self, audit: AuditLog, batch: list[_Request]) -> None:
        outcomes: list[_Outcome]
        try:
            with self._lock:
                outcomes = list(audit.append_batch([(r.entry, r.durability) for r in batch]))
                self.batches += 1
                self._last_seq = audit.last_seq
                self._durable = audit.durable_head
                audit.write_head()
        except StoreError as exc:
            outcomes = [StoreError(exc.message, reason=exc.reason) for _ in batch]
        except Exception as exc:
            log.exception("audit writer: unexpected failure")
            outcomes = [StoreError(f"audit log {self.path}: {exc}") for _ in batch]
        by_loop: dict[asyncio.AbstractEventLoop,
                      list[tuple[asyncio.Future[AuditRecord], _Outcome]]] = defaultdict(list)
        for request, outcome in zip(batch, outcomes, strict=True):
            by_loop[request.loop].append((request.future, outcome))
        for loop, results in by_loop.items():
            with contextlib.suppress(RuntimeError):  # caller's loop closed: nobody to tell
                loop.call_soon_threadsafe(_deliver, results)

    def _fail_pending(self) -> None:
        """After stop: refuse whatever raced in behind the stop marker."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Request | _Call):
                error: _Outcome = StoreError(f"audit log {self.path} is closed")
                with contextlib.suppress(RuntimeError):
                    item.loop.call_soon_threadsafe(_deliver, [(item.future, error)])
