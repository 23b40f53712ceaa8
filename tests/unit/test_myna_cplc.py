"""CPLC parsing and the card id built from it."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_iso7816_scripted import scripted

from cardapd.myna.cplc import parse_cplc, read_cplc
from cardlib.errors import CardProtocolError

RAW = bytes.fromhex(
    "4790" "5032" "4791" "4123" "0102" "4200" "1A2B3C4D" "0001" "1111" "2222"
    "3333" "4444" "5555" "6666" "77777777" "8888" "4210" "99999999")


def test_layout() -> None:
    assert len(RAW) == 42
    c = parse_cplc(RAW)
    assert c.ic_fabricator == bytes.fromhex("4790")
    assert c.ic_type == bytes.fromhex("5032")
    assert c.ic_serial_number == bytes.fromhex("1A2B3C4D")
    assert c.ic_batch_identifier == bytes.fromhex("0001")
    assert c.ic_pre_personalization_equipment == bytes.fromhex("77777777")
    assert c.ic_personalization_date == bytes.fromhex("4210")
    assert c.ic_personalization_equipment == bytes.fromhex("99999999")
    assert c.card_id == "4790-1A2B3C4D"
    assert c.fabricator_hex == "4790"


def test_tagged_form() -> None:
    assert parse_cplc(bytes.fromhex("9F7F2A") + RAW) == parse_cplc(RAW)


@pytest.mark.parametrize("raw", [
    RAW[:41], RAW + b"\x00", bytes.fromhex("9F7F29") + RAW[:41],
    bytes.fromhex("9F7E2A") + RAW, bytes.fromhex("9F7F2A") + RAW + b"\x00", b"",
])
def test_malformed(raw: bytes) -> None:
    with pytest.raises(CardProtocolError):
        parse_cplc(raw)


@given(st.binary(max_size=60))
def test_fuzz(raw: bytes) -> None:
    with contextlib.suppress(CardProtocolError):
        parse_cplc(raw)


def test_read_cplc() -> None:
    proto, _ = scripted([("80CA9F7F00", "9F7F2A" + RAW.hex() + "9000")])
    cplc = read_cplc(proto)
    assert cplc is not None
    assert cplc.card_id == "4790-1A2B3C4D"


@pytest.mark.parametrize("sw", ["6A88", "6D00", "6E00", "6A82"])
def test_no_cplc(sw: str) -> None:
    proto, _ = scripted([("80CA9F7F00", sw)])
    assert read_cplc(proto) is None
