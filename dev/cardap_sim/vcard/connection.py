"""In-process adapter: a cardlib `CardConnection` around a VirtualCard (no pcscd).

Lets unit tests and benchmarks drive cardlib, the daemon's `myna` sessions and the loading
service against the virtual card with the same error semantics as the daemon's PC/SC
adapter (the transport's own errors for a removed or mute card, cardlib's
CardProtocolError for an answer without a status word).
"""

from __future__ import annotations

from cardap_sim.vcard.card import VirtualCard
from cardap_sim.vcard.errors import CardMute, CardTorn
from cardapd.errors import CardRemoved, CardUnresponsive, ReaderError
from cardlib.errors import CardProtocolError


class InProcessConnection:
    """An open connection to a virtual card; powers it on if it is not powered yet."""

    def __init__(self, card: VirtualCard) -> None:
        self._card = card
        self._closed = False
        if not card.powered:
            card.power_on()

    @property
    def card(self) -> VirtualCard:
        """The virtual card behind this connection (for test assertions)."""
        return self._card

    @property
    def atr(self) -> bytes:
        """The card's ATR (the profile's contact ATR)."""
        return self._card.atr

    def transmit(self, apdu: bytes) -> bytes:
        """Send one APDU; card faults become the daemon's typed errors."""
        if self._closed:
            raise ReaderError("the connection is closed")
        try:
            response = self._card.transmit(bytes(apdu))
        except CardTorn as exc:
            raise CardRemoved("the card was removed during the operation") from exc
        except CardMute as exc:
            raise CardUnresponsive("the card does not answer") from exc
        if len(response) < 2:
            raise CardProtocolError(f"response of {len(response)} byte(s) has no status word")
        return response

    def close(self) -> None:
        """Release the card (it stays powered, as pcscd would leave it)."""
        self._closed = True
