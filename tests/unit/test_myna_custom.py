"""Custom APs: the user ID found by a configured offset or tag, validated strictly."""

from __future__ import annotations

import pytest
from test_myna_type_helpers import PROFILES, Ap, connect, load, make_ap, make_card

from cardap_sim.vcard.card import VirtualCard
from cardapd.errors import ApNotFound, CardDataInvalid
from cardapd.myna.custom import (
    CustomApSession,
    CustomRecord,
    OffsetLocator,
    TagLocator,
    parse_locator,
)
from cardlib.errors import StatusWordError
from cardlib.tlv import encode_tlv

X = make_ap("custom")  # 00 FF | 5F20 03 "ORG" | C1 0D uid | 20 zero bytes
UID_AT = 10


@pytest.fixture(params=PROFILES)
def card(request: pytest.FixtureRequest) -> VirtualCard:
    return make_card(str(request.param), X)


def read(card: VirtualCard, locator: object, ap: Ap = X) -> CustomRecord:
    proto, _ = connect(card)
    return CustomApSession(proto).read(ap.aid, locator)  # type: ignore[arg-type]


@pytest.mark.parametrize("locator", [
    OffsetLocator(UID_AT), TagLocator(0xC1), TagLocator(0xC1, search_length=UID_AT + 13),
    TagLocator(0xC1, offset=8), parse_locator({"offset": UID_AT, "length": 13}),
    parse_locator({"tag": "C1"}), parse_locator({"tag": 0xC1, "search_length": 4096}),
])
def test_read(card: VirtualCard, locator: object) -> None:
    assert read(card, locator) == CustomRecord(X.user_id)


@pytest.mark.parametrize("locator", [
    OffsetLocator(UID_AT + 1),  # misaligned: not a valid user ID
    OffsetLocator(30),  # the file ends first
    OffsetLocator(1000),  # past the end
    TagLocator(0x5F20),  # a TLV, but not a user ID
    TagLocator(0xC2),  # absent
    TagLocator(0xC1, search_length=UID_AT + 12),  # the TLV is cut by the region
    TagLocator(0xC1, offset=9),  # starts inside a TLV: garbage
])
def test_bad_locations_are_card_data_invalid(card: VirtualCard, locator: object) -> None:
    with pytest.raises(CardDataInvalid):
        read(card, locator)


def test_uid_taken_as_the_card_holds_it() -> None:
    # No invented check character (D49): the organisation's own 13 bytes are read back.
    odd = X.user_id[:-1] + ("0" if X.user_id[-1] != "0" else "1")
    ap = make_ap("custom", 2)
    ap = Ap("custom", ap.aid, odd, content=encode_tlv(0xC1, odd.encode()))
    card = make_card("vendor-b", ap)
    assert read(card, TagLocator(0xC1), ap).user_id == odd
    assert read(card, OffsetLocator(2), ap).user_id == odd


def test_missing_and_unpersonalised_instances(card: VirtualCard) -> None:
    with pytest.raises(ApNotFound):
        read(card, OffsetLocator(0), make_ap("custom", 9))
    load(card, make_ap("custom", 3))  # loaded and personalised: works
    card.power_on()
    third = make_ap("custom", 3)
    assert read(card, TagLocator(0xC1), third).user_id == third.user_id
    with pytest.raises(StatusWordError):
        read(card, OffsetLocator(0), Ap("custom", bytes.fromhex("A000000151000000"), ""))


@pytest.mark.parametrize("spec", [
    {}, {"offset": 1, "length": 12}, {"offset": -1}, {"offset": "2"}, {"offset": True},
    {"tag": "00"}, {"tag": "ZZ"}, {"tag": "C1", "length": 13}, {"offset": 0, "tag_x": 1},
    {"tag": "C1", "search_length": 0}, {"offset": 0x7FFF},
])
def test_bad_locator_configuration(spec: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"locator|user ID|offset|tag|search"):
        parse_locator(spec)
