"""Type A (record) instances: mutual authentication, the AP PIN through the guard, READ RECORD."""

from __future__ import annotations

import threading

from cardapd.errors import ApNotFound
from cardapd.myna.aids import select_aid
from cardapd.myna.mutual_auth import SessionKeys, mutual_authenticate
from cardapd.myna.pin_guard import PinGuard, no_pin_select
from cardapd.myna.records import (
    INFO_LEN,
    TypeARecord,
    check_ap_pin,
    split_fields,
)
from cardapd.myna.userid import DEFAULT_RULE, USER_ID_LEN, UserIdRule
from cardlib.apdu import CommandApdu
from cardlib.errors import StatusWordError
from cardlib.protocol import ApduProtocol

AP_PIN_P2 = 0x81
INS_READ_RECORD = 0xB2
RECORDS = ((1, 0xC1, USER_ID_LEN), (2, 0xC2, INFO_LEN), (3, 0xC3, INFO_LEN))

__all__ = ["AP_PIN_P2", "TypeARecord", "TypeASession", "open_authenticated"]


def open_authenticated(proto: ApduProtocol, aid: bytes, access_key: bytes, what: str, *,
                       cancel: threading.Event | None) -> SessionKeys:
    """SELECT the instance (ApNotFound on 6A82) and mutually authenticate with its key."""
    if not select_aid(proto, aid, f"SELECT {what}", cancel=cancel):
        raise ApNotFound(f"the {what} is not on this card", metadata={"aid": aid.hex().upper()})
    return mutual_authenticate(proto, access_key, cancel=cancel)


class TypeASession:
    """Reads Type A instances on one card: authenticate, guarded VERIFY, three records."""

    def __init__(self, proto: ApduProtocol) -> None:
        self.proto = proto

    def read(self, aid: bytes, access_key: bytes, pin: bytes, guard: PinGuard,
             cancel: threading.Event | None = None,
             rule: UserIdRule = DEFAULT_RULE) -> TypeARecord:
        """The instance's user ID and info fields; one VERIFY at most, never a retry."""
        check_ap_pin(pin)
        open_authenticated(self.proto, aid, access_key, "Type A AP", cancel=cancel)
        guard.verify(self.proto, no_pin_select, pin, p2=AP_PIN_P2, name="AP PIN", cancel=cancel)
        values = [self._record(n, tag, size, cancel) for n, tag, size in RECORDS]
        return TypeARecord(rule.decode(values[0], "Type A AP"), values[1], values[2])

    def _record(self, n: int, tag: int, size: int, cancel: threading.Event | None) -> bytes:
        """READ RECORD n (`00 B2 0n 04 00`), checked as exactly `tag size value`."""
        resp = self.proto.send(CommandApdu(0x00, INS_READ_RECORD, n, 0x04, le=256),
                               cancel=cancel)
        if not resp.ok:
            raise StatusWordError(resp.sw, f"READ RECORD {n}")
        return split_fields(resp.data, ((tag, size),), f"Type A record {n}")[0]
