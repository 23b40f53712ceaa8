"""ApduProtocol: 61xx and 6Cxx chaining, bounds against misbehaving cards, cancellation."""

from __future__ import annotations

import threading

import pytest
from test_iso7816_scripted import ScriptedConnection, scripted

from cardlib.apdu import CommandApdu
from cardlib.errors import Cancelled, CardProtocolError, StatusWordError
from cardlib.protocol import ApduProtocol

READ = CommandApdu(0x00, 0xB0, 0x00, 0x00, le=256)


def test_plain_exchange_returns_non_9000_without_raising() -> None:
    proto, conn = scripted([("00B0000000", "6A82")])
    assert proto.send(READ).sw == 0x6A82
    conn.assert_done()


def test_get_response_chaining_concatenates() -> None:
    proto, conn = scripted([
        ("00B0000000", "AA" * 256 + "6110"),
        ("00C0000010", "BB" * 16 + "6105"),
        ("00C0000005", "CC" * 5 + "9000"),
    ])
    resp = proto.send(READ)
    assert resp.data == b"\xaa" * 256 + b"\xbb" * 16 + b"\xcc" * 5
    assert resp.ok
    conn.assert_done()


def test_get_response_61_00_means_256() -> None:
    proto, conn = scripted([("00A4040C02AABB", "6100"), ("00C0000000", "11" * 256 + "9000")])
    resp = proto.send(CommandApdu(0, 0xA4, 4, 0x0C, b"\xaa\xbb"))
    assert len(resp.data) == 256
    conn.assert_done()


def test_6c_resends_once_with_exact_le() -> None:
    proto, conn = scripted([("00B0000021", "6C10"), ("00B0000010", "01" * 16 + "9000")])
    resp = proto.send(CommandApdu(0, 0xB0, 0, 0, le=0x21))
    assert (resp.data, resp.sw) == (b"\x01" * 16, 0x9000)
    conn.assert_done()


def test_6c_twice_is_a_protocol_error() -> None:
    proto, _ = scripted([("00B0000021", "6C10"), ("00B0000010", "6C08")])
    with pytest.raises(CardProtocolError, match="twice"):
        proto.send(CommandApdu(0, 0xB0, 0, 0, le=0x21))


def test_6c_with_the_same_le_is_a_protocol_error() -> None:
    proto, conn = scripted([("00B0000021", "6C21")])
    with pytest.raises(CardProtocolError):
        proto.send(CommandApdu(0, 0xB0, 0, 0, le=0x21))
    conn.assert_done()


def test_endless_61_is_bounded() -> None:
    script = [("00B0000000", "6101")] + [("00C0000001", "00" + "6101")] * 64
    proto, conn = scripted(script)
    with pytest.raises(CardProtocolError, match="61xx"):
        proto.send(READ)
    conn.assert_done()


def test_more_data_than_le_is_a_protocol_error() -> None:
    proto, _ = scripted([("00B0000004", "0102030405" + "9000")])
    with pytest.raises(CardProtocolError, match="5 bytes for Le=4"):
        proto.send(CommandApdu(0, 0xB0, 0, 0, le=4))


def test_more_data_than_get_response_asked() -> None:
    proto, _ = scripted([("00B0000000", "6102"), ("00C0000002", "010203" + "9000")])
    with pytest.raises(CardProtocolError):
        proto.send(READ)


def test_truncated_response_is_a_protocol_error() -> None:
    proto, _ = scripted([("00B0000000", "90")])
    with pytest.raises(CardProtocolError):
        proto.send(READ)


def test_chained_response_total_is_bounded() -> None:
    script = [("00B0000000", "6100")] + [("00C0000000", "00" * 256 + "6100")] * 129
    conn = ScriptedConnection(script)
    proto = ApduProtocol(conn, max_get_response=1000)
    with pytest.raises(CardProtocolError, match="exceeds"):
        proto.send(READ)
    conn.assert_done()


def test_send_ok_raises_status_word_error() -> None:
    proto, _ = scripted([("00B0000000", "6986")])
    with pytest.raises(StatusWordError) as info:
        proto.send_ok(READ, "READ BINARY")
    assert info.value.sw == 0x6986
    assert "READ BINARY" in info.value.message


def test_send_ok_returns_data() -> None:
    proto, _ = scripted([("00B0000000", "0102" + "9000")])
    assert proto.send_ok(READ, "READ BINARY") == b"\x01\x02"


def test_cancel_before_first_apdu() -> None:
    proto, conn = scripted([("00B0000000", "9000")])
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        proto.send(READ, cancel=cancel)
    assert conn.sent == []


def test_cancel_between_chained_apdus() -> None:
    cancel = threading.Event()
    proto, conn = scripted([("00B0000000", "6110")])
    real = conn.transmit

    def transmit_then_cancel(apdu: bytes) -> bytes:
        resp = real(apdu)
        cancel.set()
        return resp

    conn.transmit = transmit_then_cancel  # type: ignore[method-assign]
    with pytest.raises(Cancelled):
        proto.send(READ, cancel=cancel)
    assert len(conn.sent) == 1


@pytest.mark.parametrize("sw", ["0000", "6000", "5F00", "A000", "FFFF", "7000"])
def test_impossible_sw1_is_a_protocol_error(sw: str) -> None:
    proto, _ = scripted([("00B0000000", "0102" + sw)])
    with pytest.raises(CardProtocolError, match="impossible"):
        proto.send(READ)
