"""Helpers to drive the myna layer against the in-process VirtualCard, and cross-cutting checks."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable

import pytest

from cardap_sim.vcard.card import TypeCSpec, VirtualCard
from cardap_sim.vcard.connection import InProcessConnection
from cardap_sim.vcard.identity import generate_user_id
from cardapd.myna.aids import DENY_MY_NUMBER_AP, is_denied
from cardapd.myna.cardid import CardIdKey
from cardapd.myna.identify import identify
from cardapd.myna.jpki import JpkiSession
from cardapd.myna.pin_guard import PinGuard
from cardapd.myna.typec import TypeCSession
from cardlib.protocol import ApduProtocol
from cardlib.traffic import TRAFFIC

TYPE_C_AID = bytes.fromhex("D392F00043010001")
PROFILES = ("vendor-a", "vendor-b")


class RecordingConnection(InProcessConnection):
    """InProcessConnection that remembers every command and response."""

    def __init__(self, card: VirtualCard) -> None:
        super().__init__(card)
        self.sent: list[bytes] = []
        self.received: list[bytes] = []

    def transmit(self, apdu: bytes) -> bytes:
        self.sent.append(bytes(apdu))
        resp = super().transmit(apdu)
        self.received.append(resp)
        return resp

    def verifies_with_data(self) -> list[bytes]:
        """VERIFY commands that carried a PIN (i.e. could spend a try)."""
        return [a for a in self.sent if len(a) > 4 and a[1] == 0x20]


def vcard(profile: str = "vendor-a", type_c: Iterable[TypeCSpec] = (), seed: int = 7
          ) -> tuple[VirtualCard, ApduProtocol, RecordingConnection]:
    """A powered virtual card, an ApduProtocol over it, and the recording connection."""
    card = VirtualCard.create(profile=profile, type_c=list(type_c), serial=0x1A2B3C4D + seed)
    card.power_on()
    conn = RecordingConnection(card)
    return card, ApduProtocol(conn, logger=logging.getLogger("test.myna.traffic")), conn


def type_c_spec(seed: int = 1, aid: bytes = TYPE_C_AID) -> TypeCSpec:
    """A Type C instance with a valid user ID."""
    return TypeCSpec(aid=aid, user_id=generate_user_id(random.Random(seed)),
                     info=(b"\x01\x02\x03\x04", b"ABCD", b"\x00\x00\x00\x09"))


def assert_deny_list_untouched(card: VirtualCard, conn: RecordingConnection) -> None:
    """The text input assist AP was never selected and the fake My Number never crossed."""
    assert all(not is_denied(aid) for aid in card.selects)
    assert DENY_MY_NUMBER_AP not in card.selects
    my_number = card.fake_my_number.encode()
    assert all(my_number not in r for r in conn.received)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_myna_operation_keeps_away_from_the_my_number(
        profile: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(TRAFFIC)
    card, proto, conn = vcard(profile, [type_c_spec()])
    ident = identify(proto, card.atr, CardIdKey(bytes(32)))
    assert_deny_list_untouched(card, conn)
    TypeCSession(proto).read(TYPE_C_AID)
    assert_deny_list_untouched(card, conn)
    jpki = JpkiSession(proto)
    jpki.select()
    jpki.read_token()
    jpki.pin_tries("auth")
    jpki.pin_tries("sign")
    jpki.read_auth_certificate()
    jpki.verify_pin("auth", b"1234", PinGuard())
    assert_deny_list_untouched(card, conn)
    text = "\n".join(caplog.messages)
    assert card.fake_my_number not in text
    assert card.fake_my_number.encode().hex().upper() not in text
    assert "31323334" not in text  # the PIN, in hex
    assert ident.card_id.startswith("cert-")
