"""One owner per reader: every card operation on a reader runs on that reader's thread.

PC/SC calls block, so each reader gets a single-thread executor: operations on one reader
are serialised (a card is a single-threaded device), operations on different readers run
in parallel, and the event loop never blocks. The owner keeps one connection open for
the whole insertion, so a read costs its APDUs and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from cardapd.errors import CardRemoved, PcscUnavailable, ReaderRemoved, from_card
from cardapd.telemetry import logcontext
from cardapd.telemetry.metrics import Metrics
from cardapd.transport.pcsc import PcscContext
from cardlib.connection import CardConnection
from cardlib.errors import CardLibError
from cardlib.protocol import ApduProtocol

T = TypeVar("T")
log = logging.getLogger(__name__)
traffic_log = logging.getLogger("cardapd.traffic")


class TimedConnection:
    """Wraps a connection to observe every APDU's round trip in a histogram."""

    def __init__(self, inner: CardConnection, metrics: Metrics) -> None:
        self._inner = inner
        self._observe = metrics.apdu_seconds.observe

    @property
    def atr(self) -> bytes:
        """The inner connection's ATR."""
        return self._inner.atr

    def transmit(self, apdu: bytes) -> bytes:
        """Transmit and time it."""
        start = time.perf_counter()
        try:
            return self._inner.transmit(apdu)
        finally:
            self._observe(time.perf_counter() - start)

    def close(self) -> None:
        """Close the inner connection."""
        self._inner.close()


class ReaderOwner:
    """Owns one reader: its thread, its open card connection and the insertion counter."""

    def __init__(self, name: str, context: PcscContext, metrics: Metrics,
                 connect: Callable[[str], CardConnection] | None = None) -> None:
        self.name = name
        self.generation = 0  # bumped at each insertion and removal
        self._context = context
        self._metrics = metrics
        self._connect = connect or (lambda reader: context.connect(reader))
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"reader:{name}")
        self._conn: CardConnection | None = None
        self._proto: ApduProtocol | None = None
        self._shut = False  # the reader went away: its thread takes no more work

    async def run(self, fn: Callable[[ApduProtocol], T]) -> T:
        """Run `fn` with an APDU protocol on this reader's card, on the reader's thread."""
        loop = asyncio.get_running_loop()
        self._check_open()
        # The caller's log context (operation, request id) goes along; reader is ours.
        return await loop.run_in_executor(
            self._executor, logcontext.carry(self._call, reader=self.name), fn)

    async def run_plain(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the reader's thread without opening the card."""
        loop = asyncio.get_running_loop()
        self._check_open()
        return await loop.run_in_executor(self._executor, logcontext.carry(fn, reader=self.name))

    def _call(self, fn: Callable[[ApduProtocol], T]) -> T:
        proto = self._open()
        try:
            return fn(proto)
        except CardLibError as exc:  # the card library's errors stop here
            raise from_card(exc) from exc
        except (CardRemoved, ReaderRemoved):
            self._drop()
            raise
        except PcscUnavailable:
            self._drop()
            self._context.invalidate()
            raise

    def _open(self) -> ApduProtocol:
        if self._proto is None:
            conn = self._connect(self.name)
            self._conn = conn
            self._proto = ApduProtocol(TimedConnection(conn, self._metrics), logger=traffic_log)
        return self._proto

    def atr(self) -> bytes:
        """ATR of the open connection (empty if none); call on the reader thread."""
        return self._conn.atr if self._conn is not None else b""

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # the card or pcscd may already be gone
                log.debug("closing the connection to %s failed", self.name, exc_info=True)
        self._conn = None
        self._proto = None

    def _check_open(self) -> None:
        """READER_REMOVED once the reader went away (its thread is stopped)."""
        if self._shut:
            raise ReaderRemoved(f"the reader {self.name!r} was removed",
                                metadata={"reader": self.name})

    async def card_gone(self) -> None:
        """Close the connection after the card left (runs after queued operations); a
        reader already gone closed it when its thread stopped."""
        if not self._shut:
            await self.run_plain(self._drop)

    def shutdown(self) -> None:
        """Close the connection and stop the thread (pending work is abandoned)."""
        self._shut = True
        self._executor.submit(self._drop)
        self._executor.shutdown(wait=False, cancel_futures=True)
