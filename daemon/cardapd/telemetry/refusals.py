"""Refused calls, every one accounted for, at a bounded number of audit rows.

A call refused before it did anything — on the wrong socket, without an operator session,
with a request that does not parse or a field out of range — used to cost one audit row
each: one gate client looping on LoadAP wrote 1,293 rows a second. The daemon cannot tell
clients apart on a Unix socket (D18), so the count is kept per socket role, method and
reason over a window (`[audit] refused_window_s`):

* the first refusal of a key in a window is written at once (count 1, its request id),
  so a single refusal is in the log when the client hears of it;
* the others are counted and written as one `rpc_refused` row per key when the window
  closes (count n, the first and last request ids, the window's length);
* at most `MAX_KEYS` keys are tracked per window; refusals beyond them are counted under
  the role's overflow key (method and reason `*`), written as one row at the window's end.

So a window holds at most `MAX_KEYS` immediate rows plus `MAX_KEYS` + 3 summary rows
(`max_rows_per_window`), whatever the clients do, and the counts add up exactly to the
calls refused. A `kill -9` loses the counts of the open window (the calls were refused:
nothing else was lost). See docs/decisions.md D33.

Which calls: every call that ends in an error without having written an audit row of
its own. A call learns that through `CallMark`, a context variable set when the call is
admitted and marked by the audit sink whenever it appends a row for it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from cardapd.domain import OpContext
from cardapd.errors import CardapError

log = logging.getLogger(__name__)

OPERATION = "rpc_refused"
MAX_KEYS = 32
OVERFLOW = "*"
ROLES = 3


class CallMark:
    """Whether the current call wrote an audit row of its own."""

    __slots__ = ("audited",)

    def __init__(self) -> None:
        self.audited = False


_CALL: contextvars.ContextVar[CallMark | None] = contextvars.ContextVar("cardapd_call",
                                                                        default=None)


def begin_call() -> CallMark:
    """Start tracking the current call (each gRPC call runs in its own task, so a set
    here is the call's; tasks it starts copy the context and share the mark)."""
    mark = CallMark()
    _CALL.set(mark)
    return mark


def mark_audited() -> None:
    """The current call (if any) has an audit row of its own."""
    mark = _CALL.get()
    if mark is not None:
        mark.audited = True


def max_rows_per_window(max_keys: int = MAX_KEYS) -> int:
    """The most rows one window can write (see the module docstring)."""
    return max_keys + max_keys + ROLES


@dataclass
class _Tally:
    pending: int
    first_request_id: str
    last_request_id: str


class RefusalSink(Protocol):
    """Where refusals go: an audit sink that also logs the row's line with the human
    message (`cardapd.telemetry.oplog.OperationLog`)."""

    async def record(self, ctx: OpContext | None, operation: str, *, result: str,
                     reason: str = "", reader: str = "", card_id: str = "",
                     detail: Mapping[str, object] | None = None, durable: bool = False,
                     started: float | None = None, message: str = "",
                     quiet: bool = False) -> int:
        """Append one row and log its line."""
        ...


class RefusalLedger:
    """Counts refused calls per (role, method, reason) and audits them at a bounded rate."""

    def __init__(self, sink: RefusalSink, window_s: float, *, max_keys: int = MAX_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._sink = sink
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._window: dict[tuple[str, str, str], _Tally] = {}
        self._opened = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        self._closed = False
        self.refused_total = 0
        """Refusals seen (for tests and the benchmark)."""

    async def refused(self, role: str, method: str, reason: str, request_id: str,
                      message: str = "") -> None:
        """Account for one refused call (never raises: a refusal is answered anyway); the
        first of a window is logged with `message`, what the client was told."""
        self.refused_total += 1
        if not self._window:
            self._open_window()
        key = (role, method, reason)
        tally = self._window.get(key)
        if tally is not None:
            tally.pending += 1
            tally.last_request_id = request_id
            return
        if len(self._window) >= self.max_keys:
            key = (role, OVERFLOW, OVERFLOW)
            tally = self._window.setdefault(key, _Tally(0, request_id, request_id))
            tally.pending += 1
            tally.last_request_id = request_id
            return
        tally = self._window[key] = _Tally(0, request_id, request_id)
        try:
            await self._sink.record(OpContext(role=role, request_id=request_id), OPERATION,
                                    result="error", reason=reason, message=message,
                                    detail={"method": method, "count": 1, "summary": False})
        except CardapError:
            log.exception("could not audit a refused %s call; it is counted in the window",
                          method)
            tally.pending += 1

    def _open_window(self) -> None:
        self._opened = self._clock()
        if self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(self.window_s, self._close_window)

    def _close_window(self) -> None:
        self._timer = None
        task = asyncio.ensure_future(self.flush())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def flush(self) -> None:
        """Write the counts of the open window (one row per key with refusals pending)."""
        window, self._window = self._window, {}
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        length = round(self._clock() - self._opened, 3)
        for (role, method, reason), tally in window.items():
            if tally.pending == 0:
                continue
            try:
                await self._sink.record(
                    OpContext(role=role, request_id=tally.last_request_id), OPERATION,
                    result="error", reason=reason if reason != OVERFLOW else "REFUSED",
                    detail={"method": method, "count": tally.pending, "summary": True,
                            "window_s": length,
                            "first_request_id": tally.first_request_id})
            except CardapError:
                log.exception("could not audit %d refused %s call(s) on the %s socket",
                              tally.pending, method, role)

    async def close(self) -> None:
        """At stop: write the open window's counts, start no new window."""
        self._closed = True
        for task in list(self._flushing):
            await task
        await self.flush()
