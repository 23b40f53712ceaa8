"""The two-method connection interface every upper layer talks through.

Modelled on yubikit's `SmartCardConnection`: `transmit` sends one command APDU and
returns the raw response (data followed by SW1 SW2); `close` releases the card. The
pyscard adapter (`transport.pcsc`) and the in-process virtual card adapter
(`transport.sim`) implement it, so `iso7816`, `myna` and the engine never see PC/SC.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class CardConnection(Protocol):
    """An open exclusive connection to one card."""

    @property
    def atr(self) -> bytes:
        """The card's answer-to-reset, as the reader reported it."""
        ...

    def transmit(self, apdu: bytes) -> bytes:
        """Send one command APDU; return response data + SW1 SW2.

        Raises `CardRemoved`, `CardUnresponsive` or `ReaderError` (never a PC/SC
        return code); a response shorter than 2 bytes raises `CardProtocolError`.
        """
        ...

    def close(self) -> None:
        """Release the card (leave it powered; pcscd decides when to power it off)."""
        ...
