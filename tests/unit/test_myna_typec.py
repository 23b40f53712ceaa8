"""Type C: tap and read, strict layout validation, never a guess."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_iso7816_scripted import scripted
from test_myna_vcard import (
    PROFILES,
    TYPE_C_AID,
    assert_deny_list_untouched,
    type_c_spec,
    vcard,
)

from cardap_sim.vcard.card import TypeCSpec
from cardapd.errors import ApNotFound, CardDataInvalid, NotAuthorized
from cardapd.myna.aids import DENY_MY_NUMBER_AP
from cardapd.myna.typec import TypeCSession, parse_type_c

UID = "123456789ABC4"
GOOD = (bytes.fromhex("C10D") + UID.encode() + bytes.fromhex("C20401020304")
        + bytes.fromhex("C30441424344") + bytes.fromhex("C40400000009"))


@pytest.mark.parametrize("profile", PROFILES)
def test_read_on_both_profiles(profile: str) -> None:
    spec = type_c_spec(seed=5)
    other = type_c_spec(seed=6, aid=bytes.fromhex("D392F0004301000201"))
    card, proto, conn = vcard(profile, [spec, other])
    session = TypeCSession(proto)
    rec = session.read(TYPE_C_AID)
    assert rec.user_id == spec.user_id
    assert rec.info == spec.info
    assert session.read(other.aid).user_id == other.user_id
    assert conn.sent[1] == bytes.fromhex("00B0000021")
    assert_deny_list_untouched(card, conn)


def test_missing_ap() -> None:
    card, proto, conn = vcard()
    with pytest.raises(ApNotFound) as info:
        TypeCSession(proto).read(TYPE_C_AID)
    assert info.value.metadata["aid"] == TYPE_C_AID.hex().upper()
    assert_deny_list_untouched(card, conn)


def test_user_id_taken_as_the_card_holds_it() -> None:
    # No invented check character: any 13 printable ASCII bytes are a user ID (D49).
    odd = TypeCSpec(aid=TYPE_C_AID, user_id="ZZZZ0000ZZZZ0", info=(b"\0" * 4,) * 3)
    _card, proto, _conn = vcard(type_c=[odd])
    assert TypeCSession(proto).read(TYPE_C_AID).user_id == "ZZZZ0000ZZZZ0"


def test_denied_aid_refused_before_sending() -> None:
    card, proto, conn = vcard()
    with pytest.raises(NotAuthorized):
        TypeCSession(proto).read(DENY_MY_NUMBER_AP)
    assert conn.sent == []
    assert_deny_list_untouched(card, conn)


def test_parse_good() -> None:
    rec = parse_type_c(GOOD)
    assert rec.user_id == UID
    assert rec.info == (b"\x01\x02\x03\x04", b"ABCD", b"\x00\x00\x00\x09")


@pytest.mark.parametrize(("pos", "value"), [
    (0, 0xC2), (1, 0x0C), (15, 0xC1), (16, 0x05), (21, 0xC4), (27, 0xC3), (28, 0x03),
    (2, 0x80), (5, 0x1F), (14, 0x7F),  # layout, and bytes that are not printable ASCII
])
def test_parse_rejects_mutations(pos: int, value: int) -> None:
    raw = bytearray(GOOD)
    raw[pos] = value
    with pytest.raises(CardDataInvalid):
        parse_type_c(bytes(raw))


@pytest.mark.parametrize("raw", [GOOD[:32], GOOD + b"\x00", b""])
def test_parse_rejects_lengths(raw: bytes) -> None:
    with pytest.raises(CardDataInvalid):
        parse_type_c(raw)


@pytest.mark.parametrize("eof", [
    [("00B0000021", GOOD[:20].hex() + "6282")],
    [("00B0000021", "6C14"), ("00B0000014", GOOD[:20].hex() + "9000")],
])
def test_short_file_is_invalid_not_guessed(eof: list[tuple[str, str]]) -> None:
    proto, _ = scripted([("00A4040C08" + TYPE_C_AID.hex(), "9000"), *eof])
    with pytest.raises(CardDataInvalid):
        TypeCSession(proto).read(TYPE_C_AID)


@given(st.binary(min_size=33, max_size=33))
def test_fuzz_only_card_data_invalid(raw: bytes) -> None:
    with contextlib.suppress(CardDataInvalid):
        parse_type_c(raw)
