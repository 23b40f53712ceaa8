"""Command/response APDU codecs and status word descriptions."""

from __future__ import annotations

import pytest

from cardlib.apdu import (
    SW_FILE_NOT_FOUND,
    SW_OK,
    CommandApdu,
    describe_sw,
    parse_response,
)
from cardlib.errors import CardProtocolError


@pytest.mark.parametrize(("cmd", "hexstr"), [
    (CommandApdu(0x00, 0x20, 0x00, 0x80), "00200080"),
    (CommandApdu(0x00, 0xB0, 0x00, 0x00, le=0x21), "00B0000021"),
    (CommandApdu(0x00, 0xB0, 0x00, 0x00, le=256), "00B0000000"),
    (CommandApdu(0x00, 0xA4, 0x02, 0x0C, b"\x00\x06"), "00A4020C020006"),
    (CommandApdu(0x80, 0xCA, 0x9F, 0x7F, b"\x01", le=1), "80CA9F7F010101"),
    (CommandApdu(0x00, 0xD6, 0x00, 0x00, bytes(255)), "00D60000FF" + "00" * 255),
])
def test_encode(cmd: CommandApdu, hexstr: str) -> None:
    assert cmd.encode() == bytes.fromhex(hexstr)


@pytest.mark.parametrize("cmd", [
    CommandApdu(0, 0xD6, 0, 0, bytes(256)),
    CommandApdu(0, 0xB0, 0, 0, le=0),
    CommandApdu(0, 0xB0, 0, 0, le=257),
    CommandApdu(0, 0xB0, 0, 0, le=-1),
])
def test_encode_rejects_non_short(cmd: CommandApdu) -> None:
    with pytest.raises(ValueError, match="short APDU"):
        cmd.encode()


def test_header_bytes_validated() -> None:
    with pytest.raises(ValueError, match="p1"):
        CommandApdu(0, 0xA4, 0x100, 0)


def test_with_le() -> None:
    assert CommandApdu(0, 0xB0, 0, 0, le=5).with_le(3).encode() == bytes.fromhex("00B0000003")


def test_parse_response() -> None:
    resp = parse_response(bytes.fromhex("01026A82"))
    assert resp.data == b"\x01\x02"
    assert resp.sw == SW_FILE_NOT_FOUND
    assert (resp.sw1, resp.sw2, resp.ok) == (0x6A, 0x82, False)
    assert parse_response(b"\x90\x00").ok
    assert parse_response(b"\x90\x00").sw == SW_OK


@pytest.mark.parametrize("raw", [b"", b"\x90"])
def test_parse_response_too_short(raw: bytes) -> None:
    with pytest.raises(CardProtocolError):
        parse_response(raw)


@pytest.mark.parametrize(("sw", "text"), [
    (0x9000, "9000 success"),
    (0x6A82, "6A82 file or application not found"),
    (0x6110, "6110 16 more bytes"),
    (0x6C00, "6C00 wrong Le, exact length is 256"),
    (0x63C2, "63C2 verification failed, 2 tries left"),
    (0x6984, "6984 reference data not usable"),
    (0x1234, "1234 unknown status word"),
])
def test_describe_sw(sw: int, text: str) -> None:
    assert describe_sw(sw).startswith(text)
