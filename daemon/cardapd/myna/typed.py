"""Type D (binary) instances: Type A's authentication, then every command under secure messaging."""

from __future__ import annotations

import threading

from cardapd.myna.channel import WrappedTransport
from cardapd.myna.pin_guard import PinGuard, no_pin_select
from cardapd.myna.records import AP_DATA_LEN, TypeARecord, check_ap_pin, parse_user_data
from cardapd.myna.secure_messaging import SecureMessaging
from cardapd.myna.typea import AP_PIN_P2, open_authenticated
from cardapd.myna.userid import DEFAULT_RULE, UserIdRule
from cardlib.apdu import SW_EOF_BEFORE_LE, SW_OK, CommandApdu
from cardlib.errors import StatusWordError
from cardlib.protocol import ApduProtocol

TypeDRecord = TypeARecord
TYPE_D_TAGS = (0xD1, 0xD2, 0xD3)
INS_READ_BINARY = 0xB0


class TypeDSession:
    """Reads Type D instances: authenticate, then SM VERIFY (guarded) and SM READ BINARY."""

    def __init__(self, proto: ApduProtocol) -> None:
        self.proto = proto

    def read(self, aid: bytes, access_key: bytes, pin: bytes, guard: PinGuard,
             cancel: threading.Event | None = None,
             rule: UserIdRule = DEFAULT_RULE) -> TypeDRecord:
        """The user ID and info fields; a response failing the SM check raises IntegrityError."""
        check_ap_pin(pin)
        keys = open_authenticated(self.proto, aid, access_key, "Type D AP", cancel=cancel)
        sm = SecureMessaging(keys)
        channel = WrappedTransport(self.proto, sm)
        try:
            guard.verify(channel, no_pin_select, pin, p2=AP_PIN_P2, name="AP PIN",
                         cancel=cancel)
            # Le FF exactly: 00 (256) would pass the 255-byte file's end (62 82 / 6C FF).
            resp = channel.send(CommandApdu(0x00, INS_READ_BINARY, 0x00, 0x00, le=AP_DATA_LEN),
                                cancel=cancel)
        finally:
            sm.close()
        if resp.sw not in (SW_OK, SW_EOF_BEFORE_LE):
            raise StatusWordError(resp.sw, "READ BINARY (SM)")
        return parse_user_data(resp.data, TYPE_D_TAGS, "Type D AP", rule)
