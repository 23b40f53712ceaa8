"""The JPKI AP: token, PIN retry counters (read without spending a try), auth certificate."""

from __future__ import annotations

import threading
from typing import Literal

from cardapd.errors import (
    CardDataInvalid,
    InvalidArgument,
    NotMyNumberCard,
)
from cardapd.myna.aids import JPKI_AID, select_aid
from cardapd.myna.files import MAX_OFFSET, read_binary, select_ef
from cardapd.myna.pin_guard import PinGuard, PinSelector, read_retry_counter
from cardlib.apdu import SW_FILE_NOT_FOUND
from cardlib.errors import CardProtocolError, StatusWordError
from cardlib.protocol import ApduProtocol
from cardlib.tlv import read_header

PinKind = Literal["auth", "sign"]

EF_TOKEN = 0x0006
EF_AUTH_CERT = 0x000A
PIN_EFS: dict[PinKind, int] = {"auth": 0x0018, "sign": 0x001B}
TOKEN_LEN = 32
MY_NUMBER_CARD_TOKEN = "JPKIAPICCTOKEN2"  # noqa: S105 - a token name, not a secret
_SIGN_PIN_CHARS = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def decode_token(raw: bytes) -> str:
    """The token as text without its space/NUL padding; non-printable ASCII is a protocol error."""
    text = raw.rstrip(b" \x00")
    if any(not 0x20 <= b < 0x7F for b in text):
        raise CardProtocolError("JPKI token is not printable ASCII")
    return text.decode("ascii")


def check_pin_format(which: PinKind, pin: bytes) -> None:
    """Reject a PIN the card would certainly refuse, before a try is spent on it."""
    if which == "auth":
        ok = len(pin) == 4 and pin.isdigit()
    else:
        ok = 6 <= len(pin) <= 16 and all(b in _SIGN_PIN_CHARS for b in pin)
    if not ok:
        rule = "4 digits" if which == "auth" else "6-16 characters A-Z 0-9"
        raise InvalidArgument(f"the JPKI {which} PIN is {rule}")


class JpkiSession:
    """The JPKI AP on one card; call `select()` first (and again after selecting another AP)."""

    def __init__(self, proto: ApduProtocol) -> None:
        self.proto = proto

    def select(self, *, cancel: threading.Event | None = None) -> None:
        """SELECT the JPKI AP; NotMyNumberCard when the card has none."""
        if not select_aid(self.proto, JPKI_AID, "SELECT JPKI AP", cancel=cancel):
            raise NotMyNumberCard("the card has no JPKI AP")

    def read_token(self, *, cancel: threading.Event | None = None) -> str:
        """The token of EF 0006 (`JPKIAPICCTOKEN2` on a My Number Card)."""
        if not select_ef(self.proto, EF_TOKEN, cancel=cancel):
            raise NotMyNumberCard("the JPKI AP has no token EF")
        return decode_token(read_binary(self.proto, TOKEN_LEN, cancel=cancel))

    def pin_selector(self, which: PinKind) -> PinSelector:
        """A PinSelector making the `which` PIN EF current, for PinGuard."""
        fid = PIN_EFS[which]

        def select_pin(proto: ApduProtocol) -> None:
            if not select_ef(proto, fid):
                raise StatusWordError(SW_FILE_NOT_FOUND, f"SELECT JPKI {which} PIN EF")

        return select_pin

    def pin_tries(self, which: PinKind, *, cancel: threading.Event | None = None) -> int:
        """Tries left on the `which` PIN, read without spending one (0 when blocked)."""
        self.pin_selector(which)(self.proto)
        return read_retry_counter(self.proto, context=f"VERIFY JPKI {which} (retry counter)",
                                  cancel=cancel)

    def verify_pin(self, which: PinKind, pin: bytes, guard: PinGuard, *,
                   cancel: threading.Event | None = None) -> None:
        """Verify the `which` PIN through the guard, after a format check that costs no try."""
        check_pin_format(which, pin)
        guard.verify(self.proto, self.pin_selector(which), pin, name=f"JPKI {which} PIN",
                     cancel=cancel)

    def read_auth_certificate(self, *, cancel: threading.Event | None = None) -> bytes:
        """The DER authentication certificate of EF 000A, sized from its outer SEQUENCE."""
        if not select_ef(self.proto, EF_AUTH_CERT, cancel=cancel):
            raise CardDataInvalid("the JPKI AP has no authentication certificate EF")
        head = read_binary(self.proto, 8, cancel=cancel)
        try:
            tag, length, value_at = read_header(head)
        except CardProtocolError:
            raise CardDataInvalid("authentication certificate is not DER") from None
        total = value_at + length
        if tag != 0x30 or total > MAX_OFFSET + 1:
            raise CardDataInvalid("authentication certificate is not a DER SEQUENCE that fits")
        if total <= len(head):
            return head[:total]
        cert = head + read_binary(self.proto, total - len(head), len(head), cancel=cancel)
        if len(cert) != total:
            raise CardDataInvalid(f"authentication certificate truncated: {len(cert)} of {total}")
        return cert
