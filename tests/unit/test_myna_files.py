"""select_ef and read_binary: both end-of-file styles (6282, 6Cxx) in one path, chunking."""

from __future__ import annotations

import pytest
from test_iso7816_scripted import scripted

from cardapd.myna.files import read_binary, select_ef
from cardlib.errors import StatusWordError


def test_select_ef() -> None:
    proto, conn = scripted([("00A4020C020006", "9000"), ("00A4020C02000A", "6A82")])
    assert select_ef(proto, 0x0006)
    assert not select_ef(proto, 0x000A)
    conn.assert_done()


def test_select_ef_other_sw() -> None:
    proto, _ = scripted([("00A4020C020006", "6986")])
    with pytest.raises(StatusWordError):
        select_ef(proto, 6)


def test_full_read() -> None:
    proto, _ = scripted([("00B0000020", "41" * 32 + "9000")])
    assert read_binary(proto, 32) == b"A" * 32


def test_eof_6282_style() -> None:
    proto, conn = scripted([("00B0000021", "41" * 20 + "6282")])
    assert read_binary(proto, 33) == b"A" * 20
    conn.assert_done()


def test_eof_6c_style() -> None:
    proto, conn = scripted([("00B0000021", "6C14"), ("00B0000014", "41" * 20 + "9000")])
    assert read_binary(proto, 33) == b"A" * 20
    conn.assert_done()


def test_chunked_read_with_offsets() -> None:
    proto, conn = scripted([
        ("00B0000000", "01" * 256 + "9000"),
        ("00B0010000", "02" * 256 + "9000"),
        ("00B002002C", "03" * 44 + "9000"),
    ])
    assert read_binary(proto, 556) == b"\x01" * 256 + b"\x02" * 256 + b"\x03" * 44
    conn.assert_done()


@pytest.mark.parametrize("eof", [
    [("00B0010000", "02" * 10 + "6282")],
    [("00B0010000", "6C0A"), ("00B001000A", "02" * 10 + "9000")],
    [("00B0010000", "02" * 10 + "9000")],
])
def test_chunked_read_stops_at_eof(eof: list[tuple[str, str]]) -> None:
    proto, conn = scripted([("00B0000000", "01" * 256 + "9000"), *eof])
    assert read_binary(proto, 1000) == b"\x01" * 256 + b"\x02" * 10
    conn.assert_done()


def test_offset_at_end_is_eof() -> None:
    proto, conn = scripted([("00B0000000", "01" * 256 + "9000"), ("00B0010000", "6B00")])
    assert read_binary(proto, 600) == b"\x01" * 256
    conn.assert_done()


def test_read_error_sw() -> None:
    proto, _ = scripted([("00B0000004", "6986")])
    with pytest.raises(StatusWordError):
        read_binary(proto, 4)


@pytest.mark.parametrize(("length", "offset"), [(-1, 0), (1, -1), (2, 0x7FFF), (1, 0x8000)])
def test_read_bounds(length: int, offset: int) -> None:
    proto, _ = scripted([])
    with pytest.raises(ValueError, match="cannot read"):
        read_binary(proto, length, offset)


def test_zero_length_sends_nothing() -> None:
    proto, conn = scripted([])
    assert read_binary(proto, 0) == b""
    assert conn.sent == []
