"""JPKI AP: token, retry counters read without spending a try, the auth certificate."""

from __future__ import annotations

import pytest
from cryptography import x509
from test_iso7816_scripted import scripted
from test_myna_vcard import PROFILES, assert_deny_list_untouched, vcard

from cardapd.errors import CardDataInvalid, InvalidArgument, NotMyNumberCard
from cardapd.myna.jpki import JpkiSession, check_pin_format
from cardapd.myna.pin_guard import PinGuard
from cardlib.errors import StatusWordError

SELECT_CERT = "00A4020C02000A"


@pytest.mark.parametrize("profile", PROFILES)
def test_token_and_certificate(profile: str) -> None:
    card, proto, conn = vcard(profile)
    jpki = JpkiSession(proto)
    jpki.select()
    assert jpki.read_token() == "JPKIAPICCTOKEN2"
    cert = jpki.read_auth_certificate()
    assert cert == card.state.auth_cert
    assert len(cert) > 256  # exercised the chunked read
    x509.load_der_x509_certificate(cert)
    assert_deny_list_untouched(card, conn)


@pytest.mark.parametrize("profile", PROFILES)
def test_pin_tries_spend_nothing(profile: str) -> None:
    card, proto, conn = vcard(profile)
    jpki = JpkiSession(proto)
    jpki.select()
    for _ in range(3):
        assert jpki.pin_tries("auth") == 3
        assert jpki.pin_tries("sign") == 5
    assert card.state.auth_pin.tries == 3
    assert card.state.sign_pin.tries == 5
    assert conn.verifies_with_data() == []
    assert bytes.fromhex("00200080") in conn.sent


@pytest.mark.parametrize("which", ["auth", "sign"])
def test_pin_tries_blocked(which: str) -> None:
    card, proto, _ = vcard()
    card.block_pin(which)  # type: ignore[arg-type]
    jpki = JpkiSession(proto)
    jpki.select()
    assert jpki.pin_tries(which) == 0  # type: ignore[arg-type]


@pytest.mark.parametrize(("sw", "tries"), [("63C2", 2), ("63C0", 0), ("6984", 0), ("6983", 0)])
def test_pin_tries_status_words(sw: str, tries: int) -> None:
    proto, _ = scripted([("00A4020C020018", "9000"), ("00200080", sw)])
    assert JpkiSession(proto).pin_tries("auth") == tries


@pytest.mark.parametrize("sw", ["9000", "6986", "6A86", "6300"])
def test_pin_tries_unexpected(sw: str) -> None:
    proto, _ = scripted([("00A4020C02001B", "9000"), ("00200080", sw)])
    with pytest.raises(StatusWordError):
        JpkiSession(proto).pin_tries("sign")


def test_pin_ef_missing() -> None:
    proto, conn = scripted([("00A4020C020018", "6A82")])
    with pytest.raises(StatusWordError):
        JpkiSession(proto).pin_tries("auth")
    conn.assert_done()


def test_select_without_jpki() -> None:
    proto, _ = scripted([("00A4040C0AD392F000260100000001", "6A82")])
    with pytest.raises(NotMyNumberCard):
        JpkiSession(proto).select()


def test_token_ef_missing() -> None:
    proto, _ = scripted([("00A4020C020006", "6A82")])
    with pytest.raises(NotMyNumberCard):
        JpkiSession(proto).read_token()


@pytest.mark.parametrize("script", [
    [(SELECT_CERT, "6A82")],
    [(SELECT_CERT, "9000"), ("00B0000008", "3103010203" + "6282")],  # not a SEQUENCE
    [(SELECT_CERT, "9000"), ("00B0000008", "3084000000000000" + "9000")],  # bad length form
    [(SELECT_CERT, "9000"), ("00B0000008", "30" + "6282")],  # too short for a header
    [(SELECT_CERT, "9000"), ("00B0000008", "3082FFFF00000000" + "9000")],  # beyond the EF
    [(SELECT_CERT, "9000"), ("00B0000008", "3082010000000000" + "9000"),
     ("00B00008FC", "00" * 20 + "6282")],  # truncated
])
def test_certificate_invalid(script: list[tuple[str, str]]) -> None:
    proto, conn = scripted(script)
    with pytest.raises(CardDataInvalid):
        JpkiSession(proto).read_auth_certificate()
    conn.assert_done()


def test_small_certificate_in_first_read() -> None:
    proto, _ = scripted([(SELECT_CERT, "9000"), ("00B0000008", "3003020101" + "6282")])
    assert JpkiSession(proto).read_auth_certificate() == bytes.fromhex("3003020101")


@pytest.mark.parametrize(("which", "pin"), [
    ("auth", b"123"), ("auth", b"12345"), ("auth", b"12a4"), ("auth", b""),
    ("sign", b"ABC12"), ("sign", b"A" * 17), ("sign", b"abc123"), ("sign", b"ABC 123"),
])
def test_pin_format_rejected_before_sending(which: str, pin: bytes) -> None:
    proto, conn = scripted([])
    with pytest.raises(InvalidArgument):
        JpkiSession(proto).verify_pin(which, pin, PinGuard())  # type: ignore[arg-type]
    assert conn.sent == []


def test_pin_format_accepted() -> None:
    check_pin_format("auth", b"0000")
    check_pin_format("sign", b"ABC123")
    check_pin_format("sign", b"A1" * 8)
