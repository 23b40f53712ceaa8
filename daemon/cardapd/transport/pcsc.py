"""pyscard adapter: a `CardConnection` over one PC/SC card handle.

PC/SC return codes never leave this module: they become the typed errors of
`cardapd.errors`, so the layers above reason about cards, not about pcscd.
"""

from __future__ import annotations

import threading

from smartcard import scard

from cardapd.errors import (
    CardapError,
    CardProtocolError,
    CardRemoved,
    CardUnresponsive,
    NoCard,
    NoReader,
    PcscUnavailable,
    ReaderError,
    ReaderRemoved,
)

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
    if code in (rc(scard.SCARD_W_REMOVED_CARD), rc(scard.SCARD_W_RESET_CARD)):
        return CardRemoved(text)
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


class PcscContext:
    """An SCard context shared by the reader owners; re-established after pcscd restarts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handle: int | None = None

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
        hresult, card, protocol = scard.SCardConnect(ctx, reader, share, PROTOCOLS)
        if hresult != scard.SCARD_S_SUCCESS:
            err = error_for(hresult, f"connecting to the card in {reader!r}")
            if isinstance(err, PcscUnavailable):
                self.invalidate()
            raise err
        atr = b""
        hresult, _name, _state, _proto, atr_list = scard.SCardStatus(card)
        if hresult == scard.SCARD_S_SUCCESS:
            atr = bytes(atr_list)
        return PcscConnection(reader, card, protocol, atr, ctx)


class PcscConnection:
    """One open PC/SC card handle (implements `CardConnection`)."""

    def __init__(self, reader: str, card: int, protocol: int, atr: bytes,
                 context: int | None = None) -> None:
        self.reader = reader
        self._context = context
        self._card: int | None = card
        self._protocol = protocol
        self._atr = atr

    @property
    def atr(self) -> bytes:
        """The ATR read when the connection was opened."""
        return self._atr

    def transmit(self, apdu: bytes) -> bytes:
        """Send one APDU; PC/SC errors become typed card/reader errors."""
        if self._card is None:
            raise CardRemoved(f"connection to {self.reader!r} is closed")
        hresult, response = scard.SCardTransmit(self._card, self._protocol, list(apdu))
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

    def close(self) -> None:
        """Release the handle, leaving the card powered."""
        if self._card is not None:
            scard.SCardDisconnect(self._card, scard.SCARD_LEAVE_CARD)
            self._card = None
