"""One owner per reader: every card operation on a reader runs on that reader's thread,
inside a PC/SC transaction, under a deadline.

PC/SC calls block, so each reader gets its own thread and its own PC/SC context:
operations on one reader are serialised (a card is a single-threaded device), operations
on different readers run in parallel, and the event loop never blocks. The owner keeps
one connection open for the whole insertion, so a read costs its APDUs and nothing else.

Deadlines (docs/decisions.md D28): every PC/SC call the thread makes is timed on a
`CallClock`; the event loop waits for a job at most until the operation's deadline and
at most `apdu_s` for any one call. pcsc-lite cannot interrupt a blocked `SCardTransmit`,
so a call past its deadline is abandoned: the operation ends with CARD_UNRESPONSIVE at
once, the reader is *wedged* (new operations fail fast instead of queueing behind the
hung call), and when the call finally returns (the card answered, or the reader gave up)
the card is reset and the readers are told it answers again. The thread is a daemon
thread: a call that never returns cannot hold the process at exit.

Transactions (D29): each operation holds the reader (an asyncio lock: one operation of
this daemon at a time) and the card (`SCardBeginTransaction`: no other program's command
lands between ours) from its first command to its last; a load keeps one transaction
across all its batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from cardapd.errors import (
    Busy,
    CardapError,
    CardRemoved,
    CardReset,
    CardUnresponsive,
    PcscUnavailable,
    ReaderRemoved,
    from_card,
)
from cardapd.telemetry import logcontext
from cardapd.telemetry.metrics import Metrics
from cardapd.transport.pcsc import PcscConnection, PcscContext
from cardlib.connection import CardConnection
from cardlib.errors import CardLibError
from cardlib.protocol import ApduProtocol

T = TypeVar("T")
log = logging.getLogger(__name__)
traffic_log = logging.getLogger("cardapd.traffic")

# The calls after which a card that did not answer is reset once it does.
CARD_CALLS = frozenset({"transmit", "connect", "disconnect", "end_transaction"})


@dataclass(frozen=True)
class CardLimits:
    """The card deadlines ([card] in the configuration), in seconds."""

    apdu_s: float = 30.0
    read_s: float = 5.0
    write_s: float = 300.0


class _Job:
    """One call on the reader's thread; `abandoned` once its caller stopped waiting."""

    __slots__ = ("abandoned", "fn", "future", "loop")

    def __init__(self, fn: Callable[[], Any], loop: asyncio.AbstractEventLoop | None) -> None:
        self.fn = fn
        self.loop = loop
        self.future: asyncio.Future[Any] | None = loop.create_future() if loop else None
        self.abandoned = False


class _Worker:
    """The reader's thread: jobs run one after the other, in order of submission."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.current: _Job | None = None
        self._thread = threading.Thread(target=self._loop, name=f"reader:{name}", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any]) -> _Job:
        """Queue `fn`; its job's future is settled on the running loop."""
        job = _Job(fn, asyncio.get_running_loop())
        self._jobs.put(job)
        return job

    def post(self, fn: Callable[[], Any]) -> None:
        """Queue `fn` without waiting for it (cleanup after the current job)."""
        self._jobs.put(_Job(fn, None))

    def stop(self) -> None:
        """End the thread after the queued jobs (a hung call is left to the process exit)."""
        self._jobs.put(None)

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            self.current = job
            try:
                ok, value = True, job.fn()
            except BaseException as exc:  # handed to the waiting coroutine
                ok, value = False, exc
            finally:
                self.current = None
            if job.future is not None and job.loop is not None:
                _deliver(job.loop, job.future, ok, value)
            elif not ok:
                log.debug("reader cleanup failed: %s", value)


def _deliver(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], ok: bool,
             value: Any) -> None:
    def settle() -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
    with contextlib.suppress(RuntimeError):  # the loop is closed: the process is stopping
        loop.call_soon_threadsafe(settle)


def _consume(future: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned job's outcome (asyncio would log it as never retrieved)."""
    if not future.cancelled():
        future.exception()


class GuardedConnection:
    """The owner's connection wrapper: times every APDU (histogram) and refuses to send
    anything for a job its caller abandoned (past its deadline)."""

    def __init__(self, inner: CardConnection, owner: ReaderOwner) -> None:
        self._inner = inner
        self._owner = owner
        self._observe = owner.metrics.apdu_seconds.observe

    @property
    def atr(self) -> bytes:
        """The inner connection's ATR."""
        return self._inner.atr

    def transmit(self, apdu: bytes) -> bytes:
        """Transmit and time it; an abandoned job sends nothing more."""
        job = self._owner.worker.current
        if job is not None and job.abandoned:
            raise CardUnresponsive(f"the operation on {self._owner.name!r} passed its "
                                   "deadline; nothing more is sent to the card")
        start = time.perf_counter()
        try:
            return self._inner.transmit(apdu)
        finally:
            self._observe(time.perf_counter() - start)

    def close(self) -> None:
        """Close the inner connection."""
        self._inner.close()


Listener = Callable[[str, str], None]
"""Called on the event loop with the reader's name and a detail."""


class Transaction:
    """An operation's hold on the reader and the card: jobs run on the card in order,
    on one connection (one lost is never silently replaced within the operation)."""

    def __init__(self, owner: ReaderOwner, deadline: float) -> None:
        self.owner = owner
        self.deadline = deadline
        self.conn: CardConnection | None = None
        self.lost: CardapError | None = None
        self.reset_at_end = False  # the card may be left half-way: reset it at the end

    async def run(self, fn: Callable[[ApduProtocol], T]) -> T:
        """Run `fn` on the card within this transaction and the operation's deadline."""
        owner = self.owner
        call = logcontext.carry(owner._call, reader=owner.name)
        job = owner.worker.submit(lambda: call(self, fn))
        result: T = await owner._wait(job, self.deadline)
        return result


class ReaderOwner:
    """Owns one reader: its thread, its PC/SC context, its open card connection, the
    insertion counter and the card deadlines."""

    def __init__(self, name: str, context: PcscContext, metrics: Metrics,
                 connect: Callable[[str], CardConnection] | None = None, *,
                 limits: CardLimits | None = None, on_unresponsive: Listener | None = None,
                 on_answering: Listener | None = None) -> None:
        self.name = name
        self.generation = 0  # bumped at each insertion and removal
        self.metrics = metrics
        self.limits = limits or CardLimits()
        self._context = context
        self.clock = context.clock
        self._connect = connect or (lambda reader: context.connect(reader))
        self.worker = _Worker(name)
        self._lock = asyncio.Lock()
        self._conn: CardConnection | None = None
        self._proto: ApduProtocol | None = None
        self._stuck: _Job | None = None  # a call past its deadline, still running
        self._stuck_call = ""
        self._stuck_since = 0.0
        self._unresponsive = False  # the card stopped answering; cleared by an answer
        self._on_unresponsive = on_unresponsive
        self._on_answering = on_answering
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ operations

    async def run(self, fn: Callable[[ApduProtocol], T], *, deadline: float | None = None,
                  write: bool = False) -> T:
        """Run `fn` with an APDU protocol on this reader's card, on the reader's thread,
        in one PC/SC transaction, before `deadline` (loop time; default: now + the read or
        write limit)."""
        async with self.transaction(deadline=deadline, write=write) as tx:
            return await tx.run(fn)

    @contextlib.asynccontextmanager
    async def transaction(self, *, deadline: float | None = None,
                          write: bool = False) -> AsyncIterator[Transaction]:
        """Hold the reader and the card (PC/SC transaction) for one operation."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        if deadline is None:
            deadline = loop.time() + (self.limits.write_s if write else self.limits.read_s)
        self._refuse_if_wedged()
        try:
            await asyncio.wait_for(self._lock.acquire(), max(deadline - loop.time(), 0))
        except TimeoutError:
            raise Busy(f"the card in {self.name!r} is in use by another operation "
                       "(it did not become free before this one's deadline)",
                       metadata={"reader": self.name}) from None
        tx = Transaction(self, deadline)
        try:
            yield tx
        finally:
            if tx.conn is not None and tx.conn is self._conn:
                reset = tx.reset_at_end
                self.worker.post(lambda: self._end_transaction(reset))
            self._lock.release()

    async def run_plain(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the reader's thread without opening the card."""
        job = self.worker.submit(logcontext.carry(fn, reader=self.name))
        result: T = await self._wait(job, asyncio.get_running_loop().time() + self.limits.read_s)
        return result

    @property
    def wedged(self) -> bool:
        """A call of this reader's thread passed its deadline and has not returned."""
        return self._stuck is not None

    @property
    def unresponsive(self) -> bool:
        """The card stopped answering and has not answered since."""
        return self._unresponsive or self._stuck is not None

    def atr(self) -> bytes:
        """ATR of the open connection (empty if none); call on the reader thread."""
        return self._conn.atr if self._conn is not None else b""

    # ------------------------------------------------------------------ the reader thread

    def _call(self, tx: Transaction, fn: Callable[[ApduProtocol], T]) -> T:
        """On the reader's thread: the transaction's connection (opened and held at its
        first job), then `fn`; card library errors become the daemon's."""
        if tx.lost is not None:
            raise tx.lost
        try:
            proto = self._open()
            conn = self._conn
            if tx.conn is None:
                proto, conn = self._begin(proto)
                tx.conn = conn
            elif tx.conn is not conn:
                raise CardRemoved(f"the connection to the card in {self.name!r} was lost "
                                  "during the operation")
            result = fn(proto)
        except CardLibError as exc:  # the card library's errors stop here
            raise from_card(exc) from exc
        except (CardRemoved, ReaderRemoved, CardReset) as exc:
            tx.lost = exc
            self._drop()
            raise
        except PcscUnavailable as exc:
            tx.lost = exc
            self._drop()
            self._context.invalidate()
            raise
        except CardUnresponsive as exc:
            job = self.worker.current
            if job is None or not job.abandoned:  # the reader gave up on the card
                tx.lost = exc
                self._drop(reset=True)
                self._notify(self._on_unresponsive, exc.message, unresponsive=True)
            raise
        if self._unresponsive:
            self._notify(self._on_answering, "the card answers again", unresponsive=False)
        return result

    def _begin(self, proto: ApduProtocol) -> tuple[ApduProtocol, CardConnection | None]:
        """Start the operation's PC/SC transaction; a card another program reset since
        our last operation is reconnected first (nothing of this operation was sent)."""
        conn = self._conn
        if not isinstance(conn, PcscConnection) or conn.in_transaction:
            return proto, conn
        try:
            conn.begin_transaction()
        except CardReset:
            self._drop()
            proto = self._open()
            conn = self._conn
            if isinstance(conn, PcscConnection):
                conn.begin_transaction()
        return proto, conn

    def _open(self) -> ApduProtocol:
        if self._proto is None:
            conn = self._connect(self.name)
            self._conn = conn
            self._proto = ApduProtocol(GuardedConnection(conn, self), logger=traffic_log)
        return self._proto

    def _end_transaction(self, reset: bool = False) -> None:
        """End the transaction; `reset`: and reset the card (by disconnecting with
        SCARD_RESET_CARD: pcscd marks a card reset at the end of a transaction as reset for
        the resetting handle too, so the next operation opens a fresh one)."""
        conn = self._conn
        if isinstance(conn, PcscConnection):
            try:
                conn.end_transaction()
            except CardapError as exc:
                log.debug("ending the transaction on %s: %s", self.name, exc.message)
                self._drop()
                return
        if reset:
            self._drop(reset=True)

    def _drop(self, reset: bool = False) -> None:
        conn, self._conn, self._proto = self._conn, None, None
        if conn is not None:
            try:
                if reset and isinstance(conn, PcscConnection):
                    conn.close(reset=True)
                else:
                    conn.close()
            except Exception:  # the card or pcscd may already be gone
                log.debug("closing the connection to %s failed", self.name, exc_info=True)

    def _notify(self, listener: Listener | None, detail: str, *, unresponsive: bool) -> None:
        """From the reader's thread: record the card's state and tell the readers."""
        self._unresponsive = unresponsive
        loop = self._loop
        if listener is None or loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: stopping
            loop.call_soon_threadsafe(listener, self.name, detail)

    # ------------------------------------------------------------------ deadlines

    async def _wait(self, job: _Job, deadline: float) -> Any:
        """The job's result, waiting at most until `deadline` and at most `apdu_s` for
        any one PC/SC call of the reader's thread."""
        assert job.future is not None
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            busy = self.clock.busy_for(time.monotonic())
            left = min(deadline - now, self.limits.apdu_s - (busy[1] if busy else 0.0))
            if left <= 0:
                self._expire(job, busy, deadline <= now)
            done, _ = await asyncio.wait((job.future,), timeout=left)
            if done:
                return job.future.result()

    def _expire(self, job: _Job, busy: tuple[str, float] | None, operation: bool) -> None:
        """Give up on `job`: it sends nothing more; a call past `apdu_s` wedges the reader."""
        job.abandoned = True
        assert job.future is not None
        job.future.add_done_callback(_consume)  # its late outcome is nobody's error
        meta = {"reader": self.name}
        if busy is not None and busy[1] >= self.limits.apdu_s:
            call = busy[0]
            self._wedge(job, call)
            if call == "begin_transaction":
                raise Busy(f"another program has held the card in {self.name!r} for "
                           f"{busy[1]:.0f} s (PC/SC transaction); try again once it is free",
                           reason="CARD_IN_USE", metadata=meta)
            raise CardUnresponsive(
                f"the card in {self.name!r} did not answer within {self.limits.apdu_s:g} s "
                f"({call}); it is reset as soon as it answers",
                metadata={**meta, "deadline": "apdu", "timeout_s": f"{self.limits.apdu_s:g}"})
        limit = "operation" if operation else "apdu"
        raise CardUnresponsive(
            f"the card in {self.name!r} did not finish the operation before its deadline; "
            "nothing more is sent to it", metadata={**meta, "deadline": limit})

    def _wedge(self, job: _Job, call: str) -> None:
        """A call hangs: fail new operations fast until it returns, then recover."""
        if self._stuck is not None:
            return
        self._stuck, self._stuck_call = job, call
        self._stuck_since = time.monotonic() - self.limits.apdu_s
        self._unresponsive = call != "begin_transaction"
        if self._unresponsive and self._on_unresponsive is not None:
            self._on_unresponsive(self.name, f"the card has not answered for "
                                             f"{self.limits.apdu_s:g} s ({call})")
        assert job.future is not None
        job.future.add_done_callback(lambda _f: self._spawn(self._recover(call)))
        log.warning("the card in %s has not answered for %g s (%s); new operations fail "
                    "until it answers", self.name, self.limits.apdu_s, call,
                    extra={"reader": self.name})

    def _refuse_if_wedged(self) -> None:
        if self._stuck is None:
            return
        waited = time.monotonic() - self._stuck_since
        if self._stuck_call == "begin_transaction":
            raise Busy(f"another program has held the card in {self.name!r} for "
                       f"{waited:.0f} s (PC/SC transaction)", reason="CARD_IN_USE",
                       metadata={"reader": self.name})
        raise CardUnresponsive(f"the card in {self.name!r} has not answered for {waited:.0f} "
                               "s; it is reset and used again as soon as it answers",
                               metadata={"reader": self.name, "wedged": "true"})

    async def _recover(self, call: str) -> None:
        """The hung call returned: reset the card (after a card call), then tell the
        readers that the card answers again (they identify it anew)."""
        waited = time.monotonic() - self._stuck_since
        stuck, self._stuck = self._stuck, None
        answered = bool(stuck and stuck.future and not stuck.future.cancelled()
                        and stuck.future.exception() is None)
        if call not in CARD_CALLS:
            return
        job = self.worker.submit(lambda: self._drop(reset=True))
        try:
            await self._wait(job, asyncio.get_running_loop().time() + self.limits.apdu_s)
        except CardapError as exc:
            log.warning("resetting the card in %s failed: %s", self.name, exc.message)
            return
        log.info("the card in %s %s after %.1f s; it was reset", self.name,
                 "answered" if answered else "gave a reader error", waited,
                 extra={"reader": self.name})
        self._unresponsive = False
        if self._on_answering is not None:
            self._on_answering(self.name, f"the card answers again after {waited:.0f} s "
                                          "without an answer (it was reset)")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ lifecycle

    async def card_gone(self) -> None:
        """Close the connection after the card left (after the queued operations)."""
        self.worker.post(self._drop)

    def pcsc_lost(self) -> None:
        """pcscd went away: drop the connection and the context (after queued jobs)."""
        def drop_all() -> None:
            self._drop()
            self._context.invalidate()
        self.worker.post(drop_all)

    def shutdown(self) -> None:
        """Close the connection and stop the thread (a hung call is not waited for)."""
        self.worker.post(self._drop)
        self.worker.stop()
        for task in list(self._tasks):
            task.cancel()
