"""Strict BER-TLV: known encodings, malformed input, and hypothesis fuzzing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardlib.errors import CardProtocolError
from cardlib.tlv import (
    Tlv,
    encode_length,
    encode_tag,
    encode_tlv,
    find,
    parse_all,
    parse_one,
    parse_single,
    read_header,
    walk,
)


def test_cplc_style_two_byte_tag() -> None:
    tlv = parse_single(bytes.fromhex("9F7F03010203"), 0x9F7F)
    assert tlv == Tlv(0x9F7F, b"\x01\x02\x03")
    assert not tlv.constructed


@pytest.mark.parametrize(("length", "encoded"), [
    (0, "00"), (0x7F, "7F"), (0x80, "8180"), (0xFF, "81FF"),
    (0x100, "820100"), (0xFFFF, "82FFFF"), (0x10000, "83010000"),
])
def test_length_forms(length: int, encoded: str) -> None:
    assert encode_length(length) == bytes.fromhex(encoded)
    tag, got, at = read_header(bytes.fromhex("04" + encoded))
    assert (tag, got, at) == (0x04, length, 1 + len(encoded) // 2)


def test_non_minimal_length_is_accepted_ber() -> None:
    assert parse_single(bytes.fromhex("04810201 02")).value == b"\x01\x02"


def test_constructed_children_and_walk() -> None:
    fci = bytes.fromhex("6F0A8408A000000151000000")
    top = parse_single(fci)
    assert top.constructed
    assert top.children() == [Tlv(0x84, bytes.fromhex("A000000151000000"))]
    assert [(d, t.tag) for d, t in walk(fci)] == [(0, 0x6F), (1, 0x84)]
    assert find(top.children(), 0x84) is not None
    assert find(top.children(), 0x85) is None
    with pytest.raises(CardProtocolError):
        top.children()[0].children()


def test_three_byte_tag() -> None:
    raw = bytes.fromhex("5F810101AA")
    tlv, end = parse_one(raw)
    assert (tlv.tag, tlv.value, end) == (0x5F8101, b"\xaa", 5)
    assert encode_tlv(0x5F8101, b"\xaa") == raw


@pytest.mark.parametrize("raw", [
    "", "9F", "9F7F", "9F7F05", "0402AA", "048101", "0480", "0484000000", "04850000000000",
    "00", "FF00", "9F8001", "9F0101AA", "5F818181010100", "04820001",
])
def test_malformed(raw: str) -> None:
    with pytest.raises(CardProtocolError):
        parse_single(bytes.fromhex(raw))


def test_trailing_bytes_and_wrong_tag() -> None:
    with pytest.raises(CardProtocolError, match="after"):
        parse_single(bytes.fromhex("0401AA00"))
    with pytest.raises(CardProtocolError, match="expected tag"):
        parse_single(bytes.fromhex("0401AA"), 0x05)


def test_walk_depth_bounded() -> None:
    data = b""
    for _ in range(20):
        data = encode_tlv(0x30, data)
    with pytest.raises(CardProtocolError, match="deeper"):
        list(walk(data))


@pytest.mark.parametrize("tag", [0, 0x1F, 0x9F80, 0x9F01, 0x9F8181, 0x1000000, 0x7F0001])
def test_encode_tag_rejects_invalid(tag: int) -> None:
    with pytest.raises(ValueError, match="tag"):
        encode_tag(tag)


def test_encode_length_range() -> None:
    with pytest.raises(ValueError, match="length"):
        encode_length(0x1000000)


# Valid tags: 1-byte (not x1F form, not 00/FF), 2-byte (second 1F..7F), 3-byte.
_one = st.integers(0x01, 0xFE).filter(lambda b: b & 0x1F != 0x1F)
_two = st.builds(lambda c, s: (c << 8) | s, st.integers(0, 6).map(lambda x: (x << 5) | 0x1F),
                 st.integers(0x1F, 0x7F))
_three = st.builds(lambda c, s, t: (c << 16) | (s << 8) | t,
                   st.integers(0, 6).map(lambda x: (x << 5) | 0x1F),
                   st.integers(0x81, 0xFF), st.integers(0x00, 0x7F))
tags = st.one_of(_one, _two, _three)


@given(st.lists(st.tuples(tags, st.binary(max_size=300)), max_size=5))
def test_roundtrip(items: list[tuple[int, bytes]]) -> None:
    raw = b"".join(encode_tlv(t, v) for t, v in items)
    assert [(t.tag, t.value) for t in parse_all(raw)] == items


@settings(max_examples=2000)
@given(st.binary(max_size=64))
def test_fuzz_only_card_protocol_error(raw: bytes) -> None:
    try:
        list(walk(raw))
        for t in parse_all(raw):
            assert t.encode() is not None
    except CardProtocolError:
        pass
    with contextlib.suppress(CardProtocolError):
        parse_single(raw, 0x9F7F)
    with contextlib.suppress(CardProtocolError):
        read_header(raw)


@settings(max_examples=500)
@given(st.lists(st.tuples(tags, st.binary(max_size=40)), min_size=1, max_size=4),
       st.integers(0, 1000), st.binary(min_size=1, max_size=3))
def test_fuzz_mutated_valid_input(items: list[tuple[int, bytes]], where: int,
                                  junk: bytes) -> None:
    raw = bytearray(b"".join(encode_tlv(0x30 if i == 0 else t, v) for i, (t, v) in
                             enumerate(items)))
    pos = where % len(raw)
    raw[pos:pos + len(junk)] = junk
    with contextlib.suppress(CardProtocolError):
        list(walk(bytes(raw)))
