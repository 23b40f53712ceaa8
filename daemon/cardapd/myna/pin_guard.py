"""The PIN guard: every PIN path reads the counter first and never spends a citizen's last try."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from cardapd.errors import (
    Cancelled,
    InvalidPinError,
    PinBlocked,
    PinGuardRefused,
    tries_left,
)
from cardapd.myna.channel import ApduTransport
from cardlib.apdu import SW_AUTH_METHOD_BLOCKED, SW_REF_DATA_NOT_USABLE, CommandApdu
from cardlib.errors import StatusWordError
from cardlib.protocol import ApduProtocol

PinSelector = Callable[[ApduProtocol], None]
"""Makes the PIN reference current (e.g. SELECT EF 0018); raises if it cannot."""

T = TypeVar("T", bound=ApduTransport)
"""The transport the guard talks through: the plain protocol or an SM channel (Type D)."""

VERIFY_P2_SPECIFIC = 0x80  # P2 80: the PIN of the currently selected EF / AP


def _tries_from_sw(sw: int) -> int | None:
    """`63 Cx` → x; blocked (`69 83`, `69 84`) → 0; anything else None."""
    if sw >> 8 == 0x63 and sw & 0xF0 == 0xC0:
        return sw & 0x0F
    if sw in (SW_AUTH_METHOD_BLOCKED, SW_REF_DATA_NOT_USABLE):
        return 0
    return None


def read_retry_counter(proto: ApduTransport, *, p2: int = VERIFY_P2_SPECIFIC,
                       context: str = "VERIFY (retry counter)",
                       cancel: threading.Event | None = None) -> int:
    """VERIFY with no data: tries left without spending one; other SWs → StatusWordError."""
    resp = proto.send(CommandApdu(0x00, 0x20, 0x00, p2), cancel=cancel)
    tries = _tries_from_sw(resp.sw)
    if tries is None:
        raise StatusWordError(resp.sw, context)
    return tries


class PinGuard:
    """Refuses a VERIFY that could block the PIN; sends at most one VERIFY per call, no retry."""

    def __init__(self, floor: int = 1) -> None:
        if floor < 1:
            raise ValueError("the PIN guard floor is at least 1: the last try is never spent")
        self.floor = floor

    def tries_left(self, proto: T, select_pin: Callable[[T], None], *,
                   p2: int = VERIFY_P2_SPECIFIC,
                   cancel: threading.Event | None = None) -> int:
        """Select the PIN reference and read its counter without spending a try."""
        select_pin(proto)
        return read_retry_counter(proto, p2=p2, cancel=cancel)

    def verify(self, proto: T, select_pin: Callable[[T], None], pin: bytes, *,
               p2: int = VERIFY_P2_SPECIFIC, name: str = "PIN",
               cancel: threading.Event | None = None) -> None:
        """Check the counter, refuse at or below the floor, else VERIFY once.

        `proto` may be any ApduTransport (an SM channel wraps both the counter read and the
        VERIFY); `select_pin` receives that same transport.

        Raises PinBlocked (0 tries), PinGuardRefused (tries ≤ floor, nothing sent),
        InvalidPinError(tries_left) for a wrong PIN, StatusWordError otherwise.
        """
        if not 1 <= len(pin) <= 255:
            raise ValueError(f"{name}: a PIN is 1-255 bytes")
        tries = self.tries_left(proto, select_pin, p2=p2, cancel=cancel)
        if tries == 0:
            raise PinBlocked(f"{name} is blocked", 0)
        if tries <= self.floor:
            raise PinGuardRefused(f"{name}: only {tries_left(tries)}, not risking one", tries)
        if cancel is not None and cancel.is_set():
            raise Cancelled("operation cancelled before VERIFY")
        with proto.sensitive():
            resp = proto.send(CommandApdu(0x00, 0x20, 0x00, p2, pin))
        if resp.ok:
            return
        left = _tries_from_sw(resp.sw)
        if left == 0:
            raise PinBlocked(f"{name} is blocked", 0)
        if left is not None:
            raise InvalidPinError(f"wrong {name}, {tries_left(left)}", left)
        raise StatusWordError(resp.sw, f"VERIFY {name}")


def no_pin_select(_: object) -> None:
    """A PinSelector for PINs that need no selection (the AP PIN, P2 81, of the selected AP)."""
