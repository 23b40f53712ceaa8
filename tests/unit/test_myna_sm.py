"""Secure messaging and mutual authentication, cross-checked against the card's side."""

from __future__ import annotations

import secrets

import pytest
from test_myna_type_helpers import PIN, connect, make_ap, make_card

from cardap_sim.vcard import apdu as sim_apdu
from cardap_sim.vcard.sm import SmSession
from cardapd.errors import IntegrityError, InvalidArgument
from cardapd.myna.mutual_auth import ApAuthFailed, SessionKeys, mutual_authenticate
from cardapd.myna.pin_guard import PinGuard
from cardapd.myna.secure_messaging import SecureMessaging
from cardapd.myna.typea import TypeASession
from cardlib.apdu import CommandApdu, ResponseApdu
from cardlib.errors import CardProtocolError, StatusWordError
from cardlib.gp.primitives import aes_cmac, pad80
from cardlib.tlv import encode_tlv

KEYS = SessionKeys(enc=bytes(range(16)), mac=bytes(range(16, 32)), ssc=2**64 - 3)


def pair() -> tuple[SecureMessaging, SmSession]:
    """Our terminal session and the card's, in step."""
    return SecureMessaging(KEYS), SmSession(KEYS.enc, KEYS.mac, KEYS.ssc)


@pytest.mark.parametrize("cmd", [
    CommandApdu(0x00, 0x20, 0x00, 0x81),
    CommandApdu(0x00, 0x20, 0x00, 0x81, b"1234"),
    CommandApdu(0x00, 0xB0, 0x00, 0x00, le=255),
    CommandApdu(0x00, 0xB0, 0x00, 0x02, le=256),
    CommandApdu(0x00, 0xB0, 0x01, 0x02, bytes(100), le=16),
])
def test_commands_are_accepted_by_the_card(cmd: CommandApdu) -> None:
    ours, card = pair()
    for _ in range(3):
        wrapped = ours.wrap(cmd)
        assert (wrapped.cla, wrapped.le) == (0x0C, 256)
        inner = card.unwrap(sim_apdu.parse(wrapped.encode()))
        assert (inner.cla, inner.ins, inner.p1, inner.p2) == (0x00, cmd.ins, cmd.p1, cmd.p2)
        assert inner.data == cmd.data
        assert inner.le == cmd.le
        if cmd.data:
            assert cmd.data not in wrapped.data
        ok = ResponseApdu(b"", 0x9000)
        assert ours.unwrap(ResponseApdu(card.wrap(b"", 0x9000), 0x9000)) == ok


@pytest.mark.parametrize(("data", "sw"), [
    (b"", 0x63C2), (b"x", 0x9000), (bytes(range(255)), 0x6282), (bytes(16), 0x9000)])
def test_responses_are_checked_and_decrypted(data: bytes, sw: int) -> None:
    ours, card = pair()
    card.unwrap(sim_apdu.parse(ours.wrap(CommandApdu(0x00, 0xB0, 0, 0, le=255)).encode()))
    assert ours.unwrap(ResponseApdu(card.wrap(data, sw), sw)) == ResponseApdu(data, sw)


def _response(sw: int = 0x9000, data: bytes = b"secret user data") -> tuple[SecureMessaging,
                                                                           bytes]:
    """Our session waiting for a response, and the card's genuine answer."""
    ours, card = pair()
    card.unwrap(sim_apdu.parse(ours.wrap(CommandApdu(0x00, 0xB0, 0, 0, le=255)).encode()))
    return ours, card.wrap(data, sw)


def _remac(body: bytes) -> bytes:
    """Re-MAC `body` (DOs without 8E) with the right key and SSC: checks past the MAC."""
    ssc = (KEYS.ssc + 2).to_bytes(16, "big")
    return body + encode_tlv(0x8E, aes_cmac(KEYS.mac, ssc + pad80(body))[:8])


@pytest.mark.parametrize("mangle", [
    lambda r: r[:5] + bytes((r[5] ^ 0x80,)) + r[6:],  # ciphertext
    lambda r: r[:-1] + bytes((r[-1] ^ 1,)),  # the MAC
    lambda r: r[:-10],  # no MAC
    lambda r: r[:-3],  # truncated MAC
    lambda r: r + b"\x00",  # trailing byte
    lambda r: r[:-14] + encode_tlv(0x99, b"\x62\x82") + r[-10:],  # another SW inside
    lambda r: _remac(r[:-14]),  # no DO99, validly MACed
    lambda r: _remac(encode_tlv(0x99, b"\x90\x00") + r[:-14]),  # DOs out of order
    lambda r: _remac(encode_tlv(0x87, b"\x02" + bytes(16)) + encode_tlv(0x99, b"\x90\x00")),
    lambda r: _remac(encode_tlv(0x87, b"\x01" + bytes(15)) + encode_tlv(0x99, b"\x90\x00")),
    lambda r: _remac(encode_tlv(0x87, b"\x01" + bytes(16)) + encode_tlv(0x99, b"\x90\x00")),
    lambda r: _remac(encode_tlv(0x99, b"\x90\x00\x00")),
    lambda r: b"\x87\x05\x01",
], ids=lambda _: "")
def test_bad_responses_are_integrity_errors_and_close(mangle: object) -> None:
    ours, good = _response()
    bad = mangle(good)  # type: ignore[operator]
    with pytest.raises(IntegrityError) as info:
        ours.unwrap(ResponseApdu(bad, 0x9000))
    assert "secret" not in repr(info.value.args) + repr(info.value.metadata)
    assert ours.closed
    with pytest.raises(IntegrityError):
        ours.wrap(CommandApdu(0x00, 0xB0, 0, 0, le=1))


def test_sw_mismatch_and_plain_errors() -> None:
    ours, good = _response(0x9000)
    with pytest.raises(IntegrityError):
        ours.unwrap(ResponseApdu(good, 0x6282))
    ours, _ = _response()
    with pytest.raises(IntegrityError) as info:
        ours.unwrap(ResponseApdu(b"", 0x6988))
    assert info.value.metadata == {"sw": "6988"}


def test_out_of_step_use() -> None:
    ours, _ = pair()
    with pytest.raises(IntegrityError):
        ours.unwrap(ResponseApdu(b"", 0x9000))
    ours, _ = pair()
    ours.wrap(CommandApdu(0x00, 0xB0, 0, 0, le=1))
    with pytest.raises(IntegrityError):
        ours.wrap(CommandApdu(0x00, 0xB0, 0, 0, le=1))
    with pytest.raises(ValueError, match="CLA 00"):
        SecureMessaging(KEYS).wrap(CommandApdu(0x80, 0xCA, 0x9F, 0x7F))


def test_keys_are_not_printed() -> None:
    ours, _ = pair()
    for text in (repr(KEYS), str(KEYS), repr(ours)):
        assert KEYS.enc.hex() not in text
        assert KEYS.mac.hex() not in text
        assert str(KEYS.ssc) not in text


# --- mutual authentication ------------------------------------------------------------------

A = make_ap("A")


def test_card_cryptogram_mismatch_is_auth_failed() -> None:
    card = make_card("vendor-a", A)

    def tamper(cmd: bytes, resp: bytes) -> bytes:
        return bytes((resp[0] ^ 1,)) + resp[1:] if cmd[1] == 0x82 else resp
    proto, link = connect(card, tamper)
    with pytest.raises(ApAuthFailed) as info:
        TypeASession(proto).read(A.aid, A.access_key, PIN, PinGuard())
    assert info.value.reason == "AP_AUTH_FAILED"
    assert link.ins_sent(0x20) == 0


@pytest.mark.parametrize(("answer", "error"), [
    (b"\x01\x02\x03\x04\x05\x06\x07\x90\x00", CardProtocolError),
    (b"\x69\x85", StatusWordError),
])
def test_bad_challenge(answer: bytes, error: type[Exception]) -> None:
    card = make_card("vendor-b", A)
    proto, _ = connect(card, lambda cmd, resp: answer if cmd[1] == 0x84 else resp)
    assert proto.send(CommandApdu(0x00, 0xA4, 0x04, 0x0C, A.aid)).ok
    with pytest.raises(error):
        mutual_authenticate(proto, A.access_key)


@pytest.mark.parametrize("answer", [b"\x90\x00", secrets.token_bytes(31) + b"\x90\x00"])
def test_short_card_cryptogram(answer: bytes) -> None:
    card = make_card("vendor-a", A)
    proto, _ = connect(card, lambda cmd, resp: answer if cmd[1] == 0x82 else resp)
    assert proto.send(CommandApdu(0x00, 0xA4, 0x04, 0x0C, A.aid)).ok
    with pytest.raises(ApAuthFailed):
        mutual_authenticate(proto, A.access_key)


def test_access_key_size() -> None:
    card = make_card("vendor-a")
    proto, link = connect(card)
    for key in (b"", bytes(15), bytes(24), bytes(33)):
        with pytest.raises(InvalidArgument):
            mutual_authenticate(proto, key)
    assert link.answered == []
