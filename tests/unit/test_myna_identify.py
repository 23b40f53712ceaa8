"""identify(): CPLC first, then the JPKI AP and its token, per docs/card-model.md."""

from __future__ import annotations

import hashlib
import threading

import pytest
from test_iso7816_scripted import scripted
from test_myna_cplc import RAW as CPLC_RAW
from test_myna_vcard import PROFILES, assert_deny_list_untouched, vcard

from cardapd.myna.aids import JPKI_AID
from cardapd.myna.identify import CardKind, atr_card_id, identify
from cardlib.errors import Cancelled, CardProtocolError

ATR_A = bytes.fromhex("3BC5FF8131FB458073C6010000")
GET_CPLC = "80CA9F7F00"
SELECT_JPKI = "00A4040C0A" + JPKI_AID.hex()
SELECT_TOKEN = "00A4020C020006"
READ_TOKEN = "00B0000020"


@pytest.mark.parametrize("profile", PROFILES)
def test_my_number_card_on_both_profiles(profile: str) -> None:
    card, proto, conn = vcard(profile)
    ident = identify(proto, card.atr)
    assert ident.kind is CardKind.MY_NUMBER_CARD
    assert ident.is_my_number_card
    assert ident.card_id == card.card_id
    assert ident.profile == profile
    assert ident.token == "JPKIAPICCTOKEN2"
    assert ident.cplc is not None
    assert ident.cplc.ic_serial_number == card.ic_serial.to_bytes(4, "big")
    assert conn.sent[0][:4] == bytes.fromhex("80CA9F7F")  # CPLC first, while the ISD is selected
    assert card.selects == [JPKI_AID]
    assert_deny_list_untouched(card, conn)


def test_identify_again_after_power_cycle() -> None:
    card, proto, _ = vcard()
    first = identify(proto, card.atr)
    card.power_off()
    card.power_on()
    assert identify(proto, card.atr) == first


def _token(text: str) -> str:
    return text.encode().ljust(32, b" ").hex() + "9000"


def test_no_cplc_uses_atr_id_and_atr_profile() -> None:
    proto, conn = scripted([(GET_CPLC, "6A88"), (SELECT_JPKI, "9000"), (SELECT_TOKEN, "9000"),
                            (READ_TOKEN, _token("JPKIAPICCTOKEN2"))])
    ident = identify(proto, ATR_A)
    assert ident.kind is CardKind.MY_NUMBER_CARD
    assert ident.card_id == "atr-" + hashlib.sha256(ATR_A).digest()[:8].hex().upper()
    assert ident.card_id == atr_card_id(ATR_A)
    assert ident.profile == "vendor-a"
    assert ident.cplc is None
    conn.assert_done()


def test_no_jpki_is_other_card() -> None:
    proto, conn = scripted([(GET_CPLC, "9F7F2A" + CPLC_RAW.hex() + "9000"),
                            (SELECT_JPKI, "6A82")])
    ident = identify(proto, b"\x3b\x00")
    assert ident.kind is CardKind.OTHER_CARD
    assert ident.card_id == "4790-1A2B3C4D"
    assert ident.profile == "vendor-a"
    assert ident.token is None
    conn.assert_done()


def test_no_token_ef_is_other_card() -> None:
    proto, _ = scripted([(GET_CPLC, "6D00"), (SELECT_JPKI, "9000"), (SELECT_TOKEN, "6A82")])
    ident = identify(proto, b"\x3b\x00")
    assert (ident.kind, ident.token, ident.profile) == (CardKind.OTHER_CARD, None, "unknown")


def test_other_token_is_other_card() -> None:
    proto, _ = scripted([(GET_CPLC, "6A88"), (SELECT_JPKI, "9000"), (SELECT_TOKEN, "9000"),
                         (READ_TOKEN, _token("JPKIAPICCTOKEN"))])
    ident = identify(proto, b"\x3b\x00")
    assert ident.kind is CardKind.OTHER_CARD
    assert ident.token == "JPKIAPICCTOKEN"


def test_non_ascii_token_is_a_protocol_error() -> None:
    proto, _ = scripted([(GET_CPLC, "6A88"), (SELECT_JPKI, "9000"), (SELECT_TOKEN, "9000"),
                         (READ_TOKEN, "FF" * 32 + "9000")])
    with pytest.raises(CardProtocolError):
        identify(proto, b"\x3b\x00")


@pytest.mark.parametrize("fault", [{"garbage": 1}, {"truncate": 1}, {"garbage": -1}])
def test_garbage_propagates_protocol_error(fault: dict[str, int]) -> None:
    card, proto, conn = vcard()
    card.faults.update(**fault)
    with pytest.raises(CardProtocolError):
        identify(proto, card.atr)
    assert_deny_list_untouched(card, conn)


def test_garbage_cplc_is_a_protocol_error() -> None:
    proto, _ = scripted([(GET_CPLC, "9F7F05" + "0102030405" + "9000")])
    with pytest.raises(CardProtocolError):
        identify(proto, b"\x3b\x00")


def test_cancel() -> None:
    card, proto, conn = vcard()
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        identify(proto, card.atr, cancel)
    assert conn.sent == []
