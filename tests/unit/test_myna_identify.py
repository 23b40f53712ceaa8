"""identify(): CPLC first, then the JPKI AP, its token and its certificate's head (D50)."""

from __future__ import annotations

import hashlib
import hmac
import re
import threading

import pytest
from test_iso7816_scripted import scripted
from test_myna_cplc import RAW as CPLC_RAW
from test_myna_vcard import PROFILES, assert_deny_list_untouched, vcard

from cardap_sim.vcard.card import CONTACTLESS_ATR, VirtualCard
from cardap_sim.vcard.connection import InProcessConnection
from cardapd.myna.aids import JPKI_AID
from cardapd.myna.cardid import CardIdKey, is_unconfirmed, issuer_and_serial, unconfirmed_id
from cardapd.myna.identify import CardKind
from cardapd.myna.identify import identify as identify_with_key
from cardlib.errors import Cancelled, CardProtocolError
from cardlib.protocol import ApduProtocol

KEY = CardIdKey(bytes(range(32)))


def identify(proto: ApduProtocol, atr: bytes,
             cancel: threading.Event | None = None):  # type: ignore[no-untyped-def]
    return identify_with_key(proto, atr, KEY, cancel)


def cert_id(card: VirtualCard) -> str:
    assert card.state.auth_cert is not None
    datum = issuer_and_serial(card.state.auth_cert[:256])
    assert datum is not None
    return KEY.cert_id(datum)

ATR_A = bytes.fromhex("3BC5FF8131FB458073C6010000")
GET_CPLC = "80CA9F7F00"
SELECT_JPKI = "00A4040C0A" + JPKI_AID.hex()
SELECT_TOKEN = "00A4020C020006"
READ_TOKEN = "00B0000020"


@pytest.mark.parametrize("profile", PROFILES)
def test_my_number_card_on_both_profiles(profile: str) -> None:
    card, proto, conn = vcard(profile)
    ident = identify(proto, card.atr)
    assert ident.kind is CardKind.MY_NUMBER_CARD
    assert ident.is_my_number_card
    assert (ident.card_id, ident.id_source) == (cert_id(card), "cert")
    cplc = card.state.cplc
    assert ident.aliases == (KEY.cplc_id(bytes.fromhex(cplc["ic_fabricator"]),
                                         bytes.fromhex(cplc["ic_serial"])),)
    assert card.card_id not in (ident.card_id, *ident.aliases)  # never the serial in clear
    assert ident.profile == profile
    assert ident.token == "JPKIAPICCTOKEN2"
    assert ident.cplc is not None
    assert ident.cplc.ic_serial_number == card.ic_serial.to_bytes(4, "big")
    assert conn.sent[0][:4] == bytes.fromhex("80CA9F7F")  # CPLC first, while the ISD is selected
    assert card.selects == [JPKI_AID]
    assert_deny_list_untouched(card, conn)


def test_identify_again_after_power_cycle() -> None:
    card, proto, _ = vcard()
    first = identify(proto, card.atr)
    card.power_off()
    card.power_on()
    assert identify(proto, card.atr) == first


def _token(text: str) -> str:
    return text.encode().ljust(32, b" ").hex() + "9000"


def test_no_cplc_no_certificate_is_unconfirmed_never_the_atr() -> None:
    proto, conn = scripted([(GET_CPLC, "6A88"), (SELECT_JPKI, "9000"), (SELECT_TOKEN, "9000"),
                            (READ_TOKEN, _token("JPKIAPICCTOKEN2")),
                            ("00A4020C02000A", "6A82")])
    ident = identify(proto, ATR_A)
    assert ident.kind is CardKind.MY_NUMBER_CARD
    assert is_unconfirmed(ident.card_id)
    assert ident.id_source == "unconfirmed"
    assert ident.profile == "vendor-a"  # the ATR is still evidence for the vendor profile
    assert ident.cplc is None
    conn.assert_done()
    proto, _ = scripted([(GET_CPLC, "6A88"), (SELECT_JPKI, "9000"), (SELECT_TOKEN, "9000"),
                         (READ_TOKEN, _token("JPKIAPICCTOKEN2")), ("00A4020C02000A", "6A82")])
    assert identify(proto, ATR_A).card_id != ident.card_id  # one insertion only


@pytest.mark.parametrize("answer", ["6B00", "9000", "3003020101" + "9000", "6982"])
def test_empty_or_unreadable_certificate_is_no_datum(answer: str) -> None:
    proto, _ = scripted([(GET_CPLC, "6A88"), (SELECT_JPKI, "9000"), (SELECT_TOKEN, "9000"),
                         (READ_TOKEN, _token("JPKIAPICCTOKEN2")), ("00A4020C02000A", "9000"),
                         ("00B0000000", answer)])
    assert identify(proto, ATR_A).id_source == "unconfirmed"


@pytest.mark.parametrize("profile", PROFILES)
def test_contactless_gives_the_same_id_as_contact(profile: str) -> None:
    card = VirtualCard.create(profile=profile)
    contact = identify(ApduProtocol(InProcessConnection(card)), card.atr)
    card.present(contactless=True)
    conn = InProcessConnection(card)
    wireless = identify(ApduProtocol(conn), CONTACTLESS_ATR)
    assert wireless.card_id == contact.card_id
    assert (wireless.cplc, wireless.aliases, wireless.profile) == (None, (), "unknown")
    other = VirtualCard.create(profile=profile)
    other.present(contactless=True)
    assert identify(ApduProtocol(InProcessConnection(other)), CONTACTLESS_ATR).card_id \
        != wireless.card_id, "one synthesised ATR, two cards, two ids"


def test_keys_make_different_ids() -> None:
    card, proto, _ = vcard()
    other = identify_with_key(proto, card.atr, CardIdKey(b"\x01" * 32))
    assert other.card_id != identify(proto, card.atr).card_id


def test_no_jpki_is_other_card() -> None:
    proto, conn = scripted([(GET_CPLC, "9F7F2A" + CPLC_RAW.hex() + "9000"),
                            (SELECT_JPKI, "6A82")])
    ident = identify(proto, b"\x3b\x00")
    assert ident.kind is CardKind.OTHER_CARD
    assert ident.card_id == KEY.cplc_id(bytes.fromhex("4790"), bytes.fromhex("1A2B3C4D"))
    assert ident.profile == "vendor-a"
    assert ident.token is None
    conn.assert_done()


def test_no_token_ef_is_other_card() -> None:
    proto, _ = scripted([(GET_CPLC, "6D00"), (SELECT_JPKI, "9000"), (SELECT_TOKEN, "6A82")])
    ident = identify(proto, b"\x3b\x00")
    assert (ident.kind, ident.token, ident.profile) == (CardKind.OTHER_CARD, None, "unknown")


def test_other_token_is_other_card() -> None:
    proto, _ = scripted([(GET_CPLC, "6A88"), (SELECT_JPKI, "9000"), (SELECT_TOKEN, "9000"),
                         (READ_TOKEN, _token("JPKIAPICCTOKEN"))])
    ident = identify(proto, b"\x3b\x00")
    assert ident.kind is CardKind.OTHER_CARD
    assert ident.token == "JPKIAPICCTOKEN"


def test_non_ascii_token_is_a_protocol_error() -> None:
    proto, _ = scripted([(GET_CPLC, "6A88"), (SELECT_JPKI, "9000"), (SELECT_TOKEN, "9000"),
                         (READ_TOKEN, "FF" * 32 + "9000")])
    with pytest.raises(CardProtocolError):
        identify(proto, b"\x3b\x00")


@pytest.mark.parametrize("fault", [{"garbage": 1}, {"truncate": 1}, {"garbage": -1}])
def test_garbage_propagates_protocol_error(fault: dict[str, int]) -> None:
    card, proto, conn = vcard()
    card.faults.update(**fault)
    with pytest.raises(CardProtocolError):
        identify(proto, card.atr)
    assert_deny_list_untouched(card, conn)


def test_garbage_cplc_is_a_protocol_error() -> None:
    proto, _ = scripted([(GET_CPLC, "9F7F05" + "0102030405" + "9000")])
    with pytest.raises(CardProtocolError):
        identify(proto, b"\x3b\x00")


def test_cancel() -> None:
    card, proto, conn = vcard()
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        identify(proto, card.atr, cancel)
    assert conn.sent == []


def _cert(issuer_ou: str) -> bytes:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, issuer_ou)])
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(0x0123456789ABCDEF)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))


@pytest.mark.parametrize("ou", ["short", "x" * 300, "y" * 60])
def test_issuer_and_serial_read_exactly_even_past_the_first_256_bytes(ou: str) -> None:
    from cryptography import x509

    from cardapd.myna.cardid import read_auth_cert_identity
    der = _cert(ou)
    card = VirtualCard.create()
    card.state.auth_cert = der
    card = VirtualCard(card.state, None)  # rebuild the JPKI AP with this certificate
    proto = ApduProtocol(InProcessConnection(card))
    identify(proto, card.atr)  # leaves the JPKI AP selected, as identification does
    card.clear_apdus()
    from cardapd.myna.aids import select_aid
    assert select_aid(proto, JPKI_AID, "SELECT JPKI")
    got = read_auth_cert_identity(proto)
    cert = x509.load_der_x509_certificate(der)
    serial = cert.serial_number.to_bytes(8, "big")
    assert got == b"\x02\x08" + serial + cert.issuer.public_bytes()
    reads = [h for h in card.apdus if h[1] == 0xB0]
    assert len(reads) == (2 if len(ou) > 200 else 1)  # one READ BINARY unless the issuer is long



TWELVE = re.compile(r"\d{12}")


def test_card_ids_never_hold_twelve_digits() -> None:
    """One id in about seventy of 20 contiguous hex digits held 12 digits in a row; where
    they passed the My Number check the audit log refused every row naming the card (D9,
    D59). Two groups of 10 cannot."""
    for n in range(20_000):
        datum = n.to_bytes(4, "big")
        for card_id in (KEY.cert_id(datum), KEY.cplc_id(datum[:2], datum[2:])):
            assert re.fullmatch(r"(cert|cplc)-[0-9A-F]{10}-[0-9A-F]{10}", card_id), card_id
            assert not TWELVE.search(card_id), card_id
    # the 20 hex digits are the HMAC's first 20, as D50 says
    mac = hmac.new(KEY.value, b"cardapd card id v1\x00cert\x00" + b"datum",
                   hashlib.sha256).hexdigest().upper()
    assert KEY.cert_id(b"datum") == f"cert-{mac[:10]}-{mac[10:20]}"


def test_unconfirmed_ids_never_hold_twelve_digits() -> None:
    for _ in range(20_000):
        card_id = unconfirmed_id()
        assert is_unconfirmed(card_id)
        assert re.fullmatch(r"unconfirmed-[0-9A-F]{8}-[0-9A-F]{8}", card_id), card_id
