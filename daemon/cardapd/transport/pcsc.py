"""pyscard adapter: a `CardConnection` over one PC/SC card handle.

PC/SC return codes never leave this module: they become the typed errors of
`cardapd.errors`, so the layers above reason about cards, not about pcscd.

Every PC/SC call that can block on the card or the reader (connect, transmit,
transaction, reconnect, disconnect) is bracketed on a `CallClock`, so that the reader's
owner, on another thread, can see what its thread is waiting for and since when (the
card deadlines, docs/decisions.md D28). pcsc-lite offers no way to interrupt a blocked
`SCardTransmit`: `SCardCancel` only ends `SCardGetStatusChange`, and every other call on
the same context waits for the context's lock, so the clock is how a hang is seen.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from smartcard import scard

from cardapd.errors import (
    Busy,
    CardapError,
    CardProtocolError,
    CardRemoved,
    CardReset,
    CardUnresponsive,
    NoCard,
    NoReader,
    PcscUnavailable,
    ReaderError,
    ReaderRemoved,
)

T = TypeVar("T")

PROTOCOLS = scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1
# How long a failed exchange waits for pcscd to notice a removal (it polls every 400 ms).
REMOVAL_SETTLE_MS = 900

# Return codes that mean "pcscd itself is gone": the context must be re-established.
SERVICE_GONE = frozenset(
    code & 0xFFFFFFFF
    for code in (
        scard.SCARD_E_NO_SERVICE,
        scard.SCARD_E_SERVICE_STOPPED,
        scard.SCARD_E_INVALID_HANDLE,
        scard.SCARD_F_COMM_ERROR,
    )
)


def rc(hresult: int) -> int:
    """Normalise a pyscard return code to an unsigned 32-bit value."""
    return hresult & 0xFFFFFFFF


def error_for(hresult: int, context: str) -> CardapError:
    """Map a PC/SC return code to the daemon's error for it."""
    code = rc(hresult)
    text = f"{context}: {scard.SCardGetErrorMessage(hresult)} (0x{code:08X})"
    if code in SERVICE_GONE:
        return PcscUnavailable(text)
    if code == rc(scard.SCARD_W_REMOVED_CARD):
        return CardRemoved(text)
    if code == rc(scard.SCARD_W_RESET_CARD):
        return CardReset(f"{text}: another program reset the card")
    if code == rc(scard.SCARD_E_SHARING_VIOLATION):
        return Busy(f"{text}: another program holds the card", reason="CARD_IN_USE")
    if code == rc(scard.SCARD_E_NO_SMARTCARD):
        return NoCard(text)
    if code == rc(scard.SCARD_E_UNKNOWN_READER):
        return NoReader(text)
    if code == rc(scard.SCARD_E_READER_UNAVAILABLE):
        return ReaderRemoved(f"{text}: the reader was unplugged or its driver lost it")
    if code in (rc(scard.SCARD_W_UNRESPONSIVE_CARD), rc(scard.SCARD_W_UNPOWERED_CARD),
                rc(scard.SCARD_E_PROTO_MISMATCH), rc(scard.SCARD_E_NOT_TRANSACTED),
                rc(scard.SCARD_W_UNSUPPORTED_CARD)):
        return CardUnresponsive(text)
    return ReaderError(text)


class CallClock:
    """What a reader's thread is blocked in right now, and since when (read from other
    threads: two plain attributes, written by the one thread that makes the calls)."""

    def __init__(self) -> None:
        self.what: str | None = None
        self.since = 0.0

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one blocking PC/SC call, visible as `what` while it runs."""
        self.since = time.monotonic()
        self.what = what
        try:
            return fn()
        finally:
            self.what = None

    def busy_for(self, now: float) -> tuple[str, float] | None:
        """(call, seconds) of the call in progress, or None."""
        what = self.what
        return None if what is None else (what, now - self.since)


class PcscContext:
    """An SCard context: one per reader owner (pcsc-lite serialises every call on a
    context, so a shared one would let one hung card stop every reader);
    re-established after pcscd restarts."""

    def __init__(self, clock: CallClock | None = None) -> None:
        self._lock = threading.Lock()
        self._handle: int | None = None
        self.clock = clock or CallClock()

    def get(self) -> int:
        """The live context handle, establishing one if needed."""
        with self._lock:
            if self._handle is None:
                hresult, handle = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
                if hresult != scard.SCARD_S_SUCCESS:
                    raise error_for(hresult, "establishing the PC/SC context")
                self._handle = handle
            return self._handle

    def invalidate(self) -> None:
        """Forget the context (pcscd went away); the next `get` makes a new one."""
        with self._lock:
            if self._handle is not None:
                scard.SCardReleaseContext(self._handle)
                self._handle = None

    def connect(self, reader: str, exclusive: bool = False) -> PcscConnection:
        """Open a connection to the card in `reader`."""
        ctx = self.get()
        share = scard.SCARD_SHARE_EXCLUSIVE if exclusive else scard.SCARD_SHARE_SHARED
        hresult, card, protocol = self.clock.call(
            "connect", lambda: scard.SCardConnect(ctx, reader, share, PROTOCOLS))
        if hresult != scard.SCARD_S_SUCCESS:
            err = error_for(hresult, f"connecting to the card in {reader!r}")
            if isinstance(err, PcscUnavailable):
                self.invalidate()
            raise err
        atr = b""
        hresult, _name, _state, _proto, atr_list = scard.SCardStatus(card)
        if hresult == scard.SCARD_S_SUCCESS:
            atr = bytes(atr_list)
        return PcscConnection(reader, card, protocol, atr, ctx, self.clock)


class PcscConnection:
    """One open PC/SC card handle (implements `CardConnection`), with PC/SC transactions
    (`SCardBeginTransaction`: no other program's command reaches the card until
    `end_transaction`) and a card reset."""

    def __init__(self, reader: str, card: int, protocol: int, atr: bytes,
                 context: int | None = None, clock: CallClock | None = None) -> None:
        self.reader = reader
        self._context = context
        self._card: int | None = card
        self._protocol = protocol
        self._atr = atr
        self._clock = clock or CallClock()
        self.in_transaction = False

    @property
    def atr(self) -> bytes:
        """The ATR read when the connection was opened."""
        return self._atr

    def transmit(self, apdu: bytes) -> bytes:
        """Send one APDU; PC/SC errors become typed card/reader errors."""
        if self._card is None:
            raise CardRemoved(f"connection to {self.reader!r} is closed")
        card, protocol, command = self._card, self._protocol, list(apdu)
        hresult, response = self._clock.call(
            "transmit", lambda: scard.SCardTransmit(card, protocol, command))
        if hresult != scard.SCARD_S_SUCCESS:
            err = error_for(hresult, f"transmitting to the card in {self.reader!r}")
            if isinstance(err, CardUnresponsive) and self._card_left():
                raise CardRemoved(f"the card was removed from {self.reader!r} during an "
                                  "exchange") from None
            raise err
        if len(response) < 2:
            # A link that dropped mid-exchange can look like an empty answer: tell a pulled
            # card from a card that answers garbage.
            if self._card_left():
                raise CardRemoved(f"the card was removed from {self.reader!r} during an "
                                  "exchange")
            raise CardProtocolError(f"card in {self.reader!r} answered {len(response)} bytes")
        return bytes(response)

    def _card_left(self, wait_ms: int = REMOVAL_SETTLE_MS) -> bool:
        """After a failed exchange: did the card leave? (pcscd notices within its poll.)"""
        if self._context is None:
            return False
        state = scard.SCARD_STATE_PRESENT
        hresult, states = scard.SCardGetStatusChange(self._context, wait_ms,
                                                     [(self.reader, state)])
        if hresult != scard.SCARD_S_SUCCESS or not states:
            return False
        return not states[0][1] & scard.SCARD_STATE_PRESENT

    def begin_transaction(self) -> None:
        """Hold the card for this handle: other programs' commands wait until the end."""
        card = self._require()
        hresult = self._clock.call("begin_transaction", lambda: scard.SCardBeginTransaction(card))
        if hresult != scard.SCARD_S_SUCCESS:
            raise error_for(hresult, f"starting a PC/SC transaction on {self.reader!r}")
        self.in_transaction = True

    def end_transaction(self, reset: bool = False) -> None:
        """Let other programs reach the card again (and reset it first when `reset`)."""
        if self._card is None or not self.in_transaction:
            return
        card = self._card
        disposition = scard.SCARD_RESET_CARD if reset else scard.SCARD_LEAVE_CARD
        self.in_transaction = False
        hresult = self._clock.call("end_transaction",
                                   lambda: scard.SCardEndTransaction(card, disposition))
        if hresult != scard.SCARD_S_SUCCESS:
            raise error_for(hresult, f"ending the PC/SC transaction on {self.reader!r}")

    def _require(self) -> int:
        if self._card is None:
            raise CardRemoved(f"connection to {self.reader!r} is closed")
        return self._card

    def close(self, reset: bool = False) -> None:
        """Release the handle, leaving the card powered (or resetting it when `reset`:
        after a card stopped answering, so that no half-done state survives)."""
        if self._card is not None:
            card, self._card = self._card, None
            self.in_transaction = False
            disposition = scard.SCARD_RESET_CARD if reset else scard.SCARD_LEAVE_CARD
            self._clock.call("disconnect", lambda: scard.SCardDisconnect(card, disposition))
