"""AIDs and select_aid: denied APs are refused before any byte reaches the card."""

from __future__ import annotations

import pytest
from test_iso7816_scripted import scripted

from cardapd.errors import InvalidArgument, NotAuthorized
from cardapd.myna.aids import (
    CARD_FACE_AID,
    DENY_LIST,
    DENY_MY_NUMBER_AP,
    ISD_AID,
    JPKI_AID,
    JUKI_AID,
    aid_problem,
    check_aid,
    is_denied,
    select_aid,
)
from cardlib.errors import StatusWordError

# The public AID of the text input assist AP, written here only to pin the deny constant.
PUBLIC_DENIED = "D3 92 10 00 31 00 01 01 04 08"  # deny: never selected, holds the My Number


def test_deny_constant_is_the_text_input_assist_ap() -> None:
    assert bytes.fromhex(PUBLIC_DENIED) == DENY_MY_NUMBER_AP
    assert DENY_MY_NUMBER_AP in DENY_LIST


@pytest.mark.parametrize("aid", [
    DENY_MY_NUMBER_AP,
    DENY_MY_NUMBER_AP[:5],  # partial-AID selection could reach it
    DENY_MY_NUMBER_AP[:9],
    DENY_MY_NUMBER_AP + b"\x01",
])
def test_denied_aids_never_sent(aid: bytes) -> None:
    proto, conn = scripted([])
    with pytest.raises(NotAuthorized) as info:
        select_aid(proto, aid, "test")
    assert info.value.reason == "AID_FORBIDDEN"
    assert conn.sent == []


@pytest.mark.parametrize("aid", [JPKI_AID, CARD_FACE_AID, JUKI_AID])
def test_built_in_aps_are_not_denied(aid: bytes) -> None:
    assert not is_denied(aid)


def test_select_found_and_not_found() -> None:
    proto, conn = scripted([
        ("00A4040C0A" + JPKI_AID.hex(), "9000"),
        ("00A4040C0A" + CARD_FACE_AID.hex(), "6A82"),
    ])
    assert select_aid(proto, JPKI_AID) is True
    assert select_aid(proto, CARD_FACE_AID) is False
    conn.assert_done()


def test_select_other_sw_raises() -> None:
    proto, _ = scripted([("00A4040C0A" + JPKI_AID.hex(), "6A86")])
    with pytest.raises(StatusWordError) as info:
        select_aid(proto, JPKI_AID, "SELECT JPKI")
    assert info.value.sw == 0x6A86


@pytest.mark.parametrize("aid", [b"", b"\xa0\x00\x00\x01", bytes(17)])
def test_aid_length_checked(aid: bytes) -> None:
    proto, conn = scripted([])
    with pytest.raises(InvalidArgument):
        select_aid(proto, aid)
    assert conn.sent == []


@pytest.mark.parametrize("aid", [
    "D3921000310001010408", "d3921000310001010408", "D392100031", "d392100031000101",
    "D392100031000101040801",
])
def test_one_check_refuses_the_input_assist_ap_in_every_form(aid: str) -> None:
    raw = bytes.fromhex(aid)
    for card_ap in (True, False):
        with pytest.raises(NotAuthorized) as info:
            check_aid(raw, "tap.type_c_aids[0]", card_ap=card_ap)
        assert info.value.reason == "AID_FORBIDDEN"
        assert info.value.metadata == {"field": "tap.type_c_aids[0]"}
        assert info.value.message.startswith("tap.type_c_aids[0]: ")


@pytest.mark.parametrize(("aid", "name"), [
    (JPKI_AID, "JPKI"), (JPKI_AID[:5], "JPKI"), (CARD_FACE_AID, "card face"),
    (JUKI_AID, "住基"), (ISD_AID, "ISD"), (ISD_AID[:5], "ISD"),
])
def test_built_in_aps_refused_where_a_card_ap_is_expected(aid: bytes, name: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_aid(aid, "aid")
    assert info.value.reason == "AID_BUILT_IN"
    assert name in info.value.message
    assert check_aid(aid, "the service's SELECT", card_ap=False) == aid


@pytest.mark.parametrize("aid", ["D392F00043010001", "D392F000430A0001", "A000000003"])
def test_card_ap_aids_pass(aid: str) -> None:
    assert check_aid(bytes.fromhex(aid), "aid") == bytes.fromhex(aid)
    assert aid_problem(bytes.fromhex(aid)) is None
