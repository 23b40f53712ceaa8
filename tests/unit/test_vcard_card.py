"""The virtual card in-process: every command and status word of docs/card-model.md."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from cryptography import x509

from cardap_sim.vcard import apdu
from cardap_sim.vcard.card import TypeCSpec, VirtualCard
from cardap_sim.vcard.errors import CardFileError, CardNotPowered
from cardap_sim.vcard.identity import make_user_id, my_number_check_digit, user_id_check_char

JPKI = bytes.fromhex("D392F000260100000001")
ISD = bytes.fromhex("A000000151000000")
INPUT_ASSIST = bytes.fromhex("D3921000310001010408")
CARD_FACE = bytes.fromhex("D3921000310001010402")
JUKI = bytes.fromhex("D3921000310001010401")
TYPE_C = bytes.fromhex("D392F00043010001")
USER_ID = make_user_id("ABCDEFGH1234")
INFOS = (bytes.fromhex("01020304"), bytes.fromhex("A0B0C0D0"), bytes.fromhex("FFFFFFFF"))


def tx(card: VirtualCard, hex_apdu: str) -> str:
    """Send hex, get upper-case hex back."""
    return card.transmit(bytes.fromhex(hex_apdu.replace(" ", ""))).hex().upper()


def sel(aid: bytes) -> str:
    """SELECT by AID without FCI."""
    return f"00A4040C{len(aid):02X}{aid.hex()}"


@pytest.fixture(params=["vendor-a", "vendor-b"])
def card(request: pytest.FixtureRequest, tmp_path: Path) -> VirtualCard:
    c = VirtualCard.create(profile=request.param, path=tmp_path / "card.json",
                           serial=0x1A2B3C4D, type_c=[TypeCSpec(TYPE_C, USER_ID, INFOS)])
    c.power_on()
    return c


@pytest.fixture
def card_a(tmp_path: Path) -> VirtualCard:
    c = VirtualCard.create(profile="vendor-a", path=tmp_path / "a.json", serial=0x01020304)
    c.power_on()
    return c


@pytest.fixture
def card_b(tmp_path: Path) -> VirtualCard:
    c = VirtualCard.create(profile="vendor-b", path=tmp_path / "b.json")
    c.power_on()
    return c


# --- identity -------------------------------------------------------------------------

def test_atr_per_profile(card_a: VirtualCard, card_b: VirtualCard) -> None:
    assert card_a.power_on().hex().upper() == "3BC5FF8131FB458073C6010000"
    assert card_b.power_on().hex().upper() == "3BDA13FF8131FB468012392F31C173C601C03B"


def test_cplc_le_00_gives_the_data_and_too_large_le_gives_6c(card: VirtualCard) -> None:
    assert tx(card, "80CA9F7F50") == "6C2D"  # Le 0x50 > 45 bytes: told the exact length
    assert tx(card, "80CA9F7F00") == tx(card, "80CA9F7F2D")  # Le 00 = "up to 256"
    resp = bytes.fromhex(tx(card, "80CA9F7F2D"))
    assert resp[:3] == bytes.fromhex("9F7F2A")
    assert resp[-2:] == b"\x90\x00"
    cplc = resp[3:-2]
    assert len(cplc) == 42
    fabricator = {"vendor-a": "4790", "vendor-b": "4250"}[card.profile.name]
    assert cplc[0:2].hex().upper() == fabricator
    assert cplc[12:16].hex().upper() == "1A2B3C4D"
    assert card.card_id == f"{fabricator}-1A2B3C4D"


def test_random_serials_differ(tmp_path: Path) -> None:
    a = VirtualCard.create(path=None)
    b = VirtualCard.create(path=None)
    assert a.ic_serial != b.ic_serial


def test_max_command_data_9f65(card_a: VirtualCard, card_b: VirtualCard) -> None:
    assert tx(card_a, "80CA9F6504") == "9F6501EF9000"
    assert tx(card_b, "80CA9F6504") == "9F6501FF9000"
    assert tx(card_a, "80CA9F6500") == "9F6501EF9000"
    assert tx(card_a, "80CA9F6505") == "6C04"


def test_lc_above_9f65_is_6700(card_a: VirtualCard, card_b: VirtualCard) -> None:
    big = "80EE0000F0" + "00" * 0xF0
    assert tx(card_a, big) == "6700"
    assert tx(card_b, big) == "6D00"


def test_get_data_only_with_isd_selected(card: VirtualCard) -> None:
    assert tx(card, sel(JPKI)) == "9000"
    assert tx(card, "80CA9F7F2D") == "6A88"
    assert tx(card, sel(ISD)) == "9000"
    assert tx(card, "80CA9F7F2D").endswith("9000")
    assert tx(card, "80CA006600") == "6A88"


def test_identification_token(card: VirtualCard) -> None:
    assert tx(card, "80CA9F7F00").startswith("9F7F2A")
    assert tx(card, sel(JPKI)) == "9000"
    assert tx(card, "00A4020C020006") == "9000"
    resp = bytes.fromhex(tx(card, "00B0000020"))
    assert resp == b"JPKIAPICCTOKEN2".ljust(32, b" ") + b"\x90\x00"


def _read_cert(card: VirtualCard, fid: str) -> x509.Certificate:
    """SELECT EF `fid` of the selected AP and read its certificate as OpenSC does: the
    first 4 bytes give the length (`30 82 LL LL`), then READ BINARY up to it."""
    assert tx(card, "00A4020C02" + fid) == "9000"
    head = bytes.fromhex(tx(card, "00B0000004"))
    assert head[:2] == b"\x30\x82", "OpenSC's JPKI driver needs the 30 82 LL LL form"
    total = 4 + int.from_bytes(head[2:4], "big")
    der = b""
    while len(der) < total:
        n = min(256, total - len(der))
        resp = card.transmit(bytes([0, 0xB0, len(der) >> 8, len(der) & 0xFF, n & 0xFF]))
        assert resp[-2:] == b"\x90\x00"
        der += resp[:-2]
    assert tx(card, f"00B0{total:04X}01") == "6B00"
    return x509.load_der_x509_certificate(der)


def test_four_certificate_files_as_openscs_jpki_driver_reads_them(card: VirtualCard) -> None:
    assert tx(card, sel(JPKI)) == "9000"
    auth, auth_ca = _read_cert(card, "000A"), _read_cert(card, "000B")
    sign_ca = _read_cert(card, "0002")
    assert auth.issuer == auth_ca.subject
    assert auth_ca.issuer == auth_ca.subject
    assert sign_ca.issuer == sign_ca.subject != auth_ca.subject
    # the signature certificate is behind the signing password, like on a real card
    assert tx(card, "00A4020C020001") == "9000"
    assert tx(card, "00B0000004") == "6982"
    _select_pin(card, "001B")
    assert tx(card, "0020008006" + b"ABC123".hex()) == "9000"
    sign = _read_cert(card, "0001")
    assert sign.issuer == sign_ca.subject
    assert auth.serial_number != sign.serial_number


def test_certificates_unique_per_card_and_kept_in_the_card_file(tmp_path: Path) -> None:
    one = VirtualCard.create(path=tmp_path / "1.json")
    two = VirtualCard.create(path=tmp_path / "2.json")
    assert one.state.auth_cert != two.state.auth_cert
    assert one.state.auth_ca_cert == two.state.auth_ca_cert  # one CA, as J-LIS's
    again = VirtualCard.load(tmp_path / "1.json")
    assert again.state.certificates == one.state.certificates


def test_no_certificates_issued() -> None:
    card = VirtualCard.create(certificates=False)
    card.power_on()
    assert tx(card, sel(JPKI)) == "9000"
    assert tx(card, "00A4020C02000A") == "6A82"
    assert tx(card, "00A4020C020001") == "6A82"
    assert tx(card, "00A4020C02000B") == "9000"  # the CA certificates are still there


# --- SELECT ---------------------------------------------------------------------------

def test_select_builtins_and_unknown(card: VirtualCard) -> None:
    for aid in (ISD, JPKI, CARD_FACE, JUKI, INPUT_ASSIST, TYPE_C):
        assert tx(card, sel(aid)) == "9000"
    assert tx(card, sel(bytes.fromhex("D392F00043FFFF"))) == "6A82"
    assert card.selects == [ISD, JPKI, CARD_FACE, JUKI, INPUT_ASSIST, TYPE_C,
                            bytes.fromhex("D392F00043FFFF")]


def test_failed_selects_are_recorded_too(card: VirtualCard) -> None:
    assert tx(card, "00A40404" + f"{len(JPKI):02X}" + JPKI.hex()) == "6A86"
    assert tx(card, "01A4040C" + f"{len(INPUT_ASSIST):02X}" + INPUT_ASSIST.hex()) == "6881"
    assert card.selects == [JPKI, INPUT_ASSIST]
    assert card.apdu_count == 2


def test_select_keeps_previous_ap_when_not_found(card: VirtualCard) -> None:
    assert tx(card, sel(JPKI)) == "9000"
    assert tx(card, sel(b"\xd3\x92\x00\x00\x00")) == "6A82"
    assert tx(card, "00A4020C020006") == "9000"


def test_select_fci(card: VirtualCard) -> None:
    fci = "6F0A8408" + ISD.hex().upper()
    assert tx(card, "00A4040008" + ISD.hex() + "00") == fci + "9000"
    assert tx(card, "00A4040008" + ISD.hex() + "20") == "6C0C"
    assert tx(card, "00A4040008" + ISD.hex() + "0C") == fci + "9000"
    assert tx(card, "00A4040008" + ISD.hex()) == "610C"
    assert tx(card, "00C000000C") == fci + "9000"


def test_select_ef_rules(card: VirtualCard) -> None:
    assert tx(card, "00A4020C020006") == "6A82"  # ISD has no EFs
    assert tx(card, sel(JPKI)) == "9000"
    assert tx(card, "00A4020C020099") == "6A82"
    assert tx(card, "00A4020C03000600") == "6700"
    assert tx(card, "00A40200020006") == "6A86"
    assert tx(card, "00A4080C020006") == "6A86"
    assert tx(card, "00A4040C") == "6700"


# --- READ BINARY ----------------------------------------------------------------------

def test_read_binary_without_ef_is_6986(card: VirtualCard) -> None:
    assert tx(card, "00B0000001") == "6986"
    assert tx(card, sel(JPKI)) == "9000"
    assert tx(card, "00B0000001") == "6986"
    assert tx(card, sel(CARD_FACE)) == "9000"
    assert tx(card, "00B0000001") == "6986"


def test_read_binary_eof_vendor_a_6282(card_a: VirtualCard) -> None:
    tx(card_a, sel(JPKI))
    tx(card_a, "00A4020C020006")
    assert tx(card_a, "00B0001808") == "2020202020202020" + "9000"
    assert tx(card_a, "00B0001810") == "2020202020202020" + "6282"
    assert tx(card_a, "00B0000000") == (b"JPKIAPICCTOKEN2".ljust(32, b" ")).hex().upper() + "6282"
    assert tx(card_a, "00B0002001") == "6B00"


def test_read_binary_eof_vendor_b_6c(card_b: VirtualCard) -> None:
    tx(card_b, sel(JPKI))
    tx(card_b, "00A4020C020006")
    assert tx(card_b, "00B0001810") == "6C08"
    assert tx(card_b, "00B0001808") == "2020202020202020" + "9000"
    assert tx(card_b, "00B0000000") == "6C20"
    assert tx(card_b, "00B0002001") == "6B00"


def test_read_binary_malformed(card: VirtualCard) -> None:
    tx(card, sel(JPKI))
    tx(card, "00A4020C020006")
    assert tx(card, "00B0810001") == "6A86"
    assert tx(card, "00B00000") == "6700"
    assert tx(card, "00B0000001AA") == "6700"
    tx(card, "00A4020C020018")
    assert tx(card, "00B0000001") == "6981"


# --- Type C ---------------------------------------------------------------------------

def test_type_c_read(card: VirtualCard) -> None:
    assert tx(card, sel(TYPE_C)) == "9000"
    resp = bytes.fromhex(tx(card, "00B0000021"))
    assert resp[-2:] == b"\x90\x00"
    data = resp[:-2]
    assert len(data) == 33
    assert data[:2] == b"\xc1\x0d"
    assert data[2:15] == USER_ID.encode()
    assert data[15:21] == b"\xc2\x04" + INFOS[0]
    assert data[21:27] == b"\xc3\x04" + INFOS[1]
    assert data[27:33] == b"\xc4\x04" + INFOS[2]
    assert tx(card, "00A4020C020001") == "6A82"
    assert tx(card, "00B0001E03") == "FFFFFF9000"


def test_type_c_spec_validation() -> None:
    with pytest.raises(ValueError, match="AID"):
        TypeCSpec(b"\x01\x02", USER_ID)
    with pytest.raises(ValueError, match="13"):
        TypeCSpec(TYPE_C, "SHORT")
    with pytest.raises(ValueError, match="4-byte"):
        TypeCSpec(TYPE_C, USER_ID, (b"1", b"2", b"3"))
    with pytest.raises(ValueError, match="duplicate"):
        VirtualCard.create(type_c=[TypeCSpec(JPKI, USER_ID)])


def test_user_id_and_my_number_check_characters() -> None:
    assert my_number_check_digit("12345678901") == 8
    assert user_id_check_char("000000000000") == "0"
    assert user_id_check_char("100000000000") == "1"
    assert user_id_check_char("010000000000") == "2"
    assert len(make_user_id("ZZZZZZZZZZZZ")) == 13
    with pytest.raises(ValueError, match="12 symbols"):
        user_id_check_char("I00000000000")


# --- PINs -----------------------------------------------------------------------------

def _select_pin(card: VirtualCard, fid: str) -> None:
    assert tx(card, sel(JPKI)) == "9000"
    assert tx(card, f"00A4020C02{fid}") == "9000"


def test_pin_query_does_not_spend(card: VirtualCard) -> None:
    _select_pin(card, "0018")
    assert tx(card, "00200080") == "63C3"
    assert tx(card, "00200080") == "63C3"
    _select_pin(card, "001B")
    assert tx(card, "00200080") == "63C5"


def test_auth_pin_counts_down_and_blocks(card: VirtualCard) -> None:
    _select_pin(card, "0018")
    wrong = "002000800431313131"
    assert tx(card, wrong) == "63C2"
    assert tx(card, wrong) == "63C1"
    assert tx(card, wrong) == "63C0"
    assert tx(card, "00200080") == "6984"
    assert tx(card, wrong) == "6983"
    assert tx(card, "002000800431323334") == "6983"  # right PIN, still blocked


def test_right_pin_resets_counter(card: VirtualCard) -> None:
    _select_pin(card, "0018")
    assert tx(card, "002000800439393939") == "63C2"
    assert tx(card, "002000800431323334") == "9000"
    assert tx(card, "00200080") == "63C3"


def test_sign_password(card: VirtualCard) -> None:
    _select_pin(card, "001B")
    assert tx(card, "0020008006" + b"ABC124".hex()) == "63C4"
    assert tx(card, "0020008006" + b"ABC123".hex()) == "9000"
    assert tx(card, "00200080") == "63C5"


def test_verify_errors(card: VirtualCard) -> None:
    assert tx(card, "00200080") == "6986"  # ISD
    tx(card, sel(JPKI))
    assert tx(card, "00200080") == "6986"  # no EF
    tx(card, "00A4020C020006")
    assert tx(card, "00200080") == "6986"  # token is no PIN EF
    tx(card, "00A4020C020018")
    assert tx(card, "00200081") == "6A86"
    assert tx(card, "00200180") == "6A86"
    assert tx(card, "0020008000") == "6700"


def test_block_pin_persists(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    VirtualCard.create(path=path).block_pin("sign")
    card = VirtualCard.load(path)
    card.power_on()
    _select_pin(card, "001B")
    assert tx(card, "00200080") == "6984"
    _select_pin(card, "0018")
    assert tx(card, "00200080") == "63C3"
    with pytest.raises(ValueError, match="auth"):
        card.block_pin("other")  # type: ignore[arg-type]


# --- transport rules ------------------------------------------------------------------

@pytest.mark.parametrize(("cmd", "sw"), [
    ("01A4040C01AA", "6881"), ("03B0000001", "6881"), ("40B0000001", "6881"),
    ("20B0000001", "6E00"), ("FFB0000001", "6E00"), ("10B0000001", "6E00"),
    ("80B0000001", "6E00"),
    ("00B00000000001", "6700"), ("00A4040C000008A000000151000000", "6700"),
    ("00A4", "6700"), ("00A4040C05AABB", "6700"),
    ("00EE000000", "6D00"), ("80E6020000", "6982"),
])
def test_transport_status_words(card: VirtualCard, cmd: str, sw: str) -> None:
    assert tx(card, cmd) == sw


def test_le_smaller_than_data_chains_with_61(card: VirtualCard) -> None:
    first = bytes.fromhex(tx(card, "80CA9F7F10"))
    assert len(first) == 18
    assert first[-2:] == b"\x61\x1d"
    assert tx(card, "00C0000020") == "6C1D"  # pending data is kept
    rest = bytes.fromhex(tx(card, "00C000001D"))
    assert rest[-2:] == b"\x90\x00"
    full = bytes.fromhex(tx(card, "80CA9F7F2D"))
    assert first[:-2] + rest[:-2] == full[:-2]
    assert tx(card, "00C0000001") == "6985"


def test_get_response_rules(card: VirtualCard) -> None:
    assert tx(card, "00C0000010") == "6985"
    tx(card, "80CA9F7F10")
    assert tx(card, "00C0010010") == "6A86"
    assert tx(card, "00C00000") == "6700"
    assert tx(card, "80C0000010") == "6E00"
    tx(card, "80CA9F7F10")
    tx(card, sel(ISD))  # any other command drops pending data
    assert tx(card, "00C0000010") == "6985"


def test_deliver_over_256_bytes() -> None:
    data = bytes(range(256)) + bytes(44)
    resp, rest = apdu.deliver(data, 256)
    assert resp == bytes(range(256)) + b"\x61\x2c"
    assert rest == bytes(44)
    resp, rest = apdu.deliver(bytes(600), 256)
    assert resp[-2:] == b"\x61\x00"
    assert len(rest) == 344
    assert apdu.deliver(b"", None) == (b"\x90\x00", b"")
    assert apdu.deliver(b"ab", None) == (b"\x61\x02", b"ab")


def test_power_cycle_resets_selection_not_pins(card: VirtualCard) -> None:
    _select_pin(card, "0018")
    assert tx(card, "002000800439393939") == "63C2"
    card.power_off()
    with pytest.raises(CardNotPowered):
        card.transmit(bytes.fromhex("00B0000001"))
    card.power_on()
    assert card.selected_aid == ISD
    assert tx(card, "00A4020C020018") == "6A82"
    assert tx(card, "80CA9F7F2D").endswith("9000")
    _select_pin(card, "0018")
    assert tx(card, "00200080") == "63C2"
    card.reset()
    assert tx(card, "00200080") == "6986"


# --- persistence ----------------------------------------------------------------------

def test_persistence_across_load(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    card = VirtualCard.create(profile="vendor-b", path=path, serial=0xCAFEBABE,
                              type_c=[TypeCSpec(TYPE_C, USER_ID, INFOS)])
    card.power_on()
    _select_pin(card, "001B")
    assert tx(card, "00200080" + "03414243") == "63C4"
    cert_before = card.state.auth_cert
    again = VirtualCard.load(path)
    again.power_on()
    assert again.card_id == "4250-CAFEBABE"
    assert again.profile.name == "vendor-b"
    assert again.state.auth_cert == cert_before
    assert again.fake_my_number == card.fake_my_number
    assert again.selects == []
    assert again.apdu_count == 0
    _select_pin(again, "001B")
    assert tx(again, "00200080") == "63C4"
    assert tx(again, sel(TYPE_C)) == "9000"
    assert tx(again, "00B0000021").endswith("9000")
    doc = json.loads(path.read_text())
    assert doc["aps"] == [{"type": "C", "aid": "D392F00043010001", "user_id": USER_ID,
                           "info": [i.hex().upper() for i in INFOS]}]
    assert doc["areas"]["extended"]["capacity"] == 24576
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]  # no temp files left


def test_load_rejects_bad_files(tmp_path: Path) -> None:
    with pytest.raises(CardFileError):
        VirtualCard.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "cardap-vcard/1", "profile": "vendor-a"}')
    with pytest.raises(CardFileError):
        VirtualCard.load(bad)
    bad.write_text("[]")
    with pytest.raises(CardFileError):
        VirtualCard.load(bad)


def test_unknown_profile() -> None:
    with pytest.raises(ValueError, match="vendor-c"):
        VirtualCard.create(profile="vendor-c")


# --- the fake My Number ---------------------------------------------------------------

def test_input_assist_holds_valid_fake_number(card: VirtualCard,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="cardap_sim")
    assert tx(card, sel(INPUT_ASSIST)) == "9000"
    assert tx(card, "00A4020C020011") == "9000"
    assert tx(card, "002000800431323334") == "9000"
    assert tx(card, "00A4020C020001") == "9000"
    number = bytes.fromhex(tx(card, "00B000000C"))[:-2].decode()
    assert number == card.fake_my_number
    assert len(number) == 12
    assert number.isdigit()
    assert int(number[-1]) == my_number_check_digit(number[:11])
    _select_pin(card, "0018")
    tx(card, "002000800431323334")
    assert number not in caplog.text
    assert number.encode().hex().upper() not in caplog.text
    assert "31323334" not in caplog.text
    assert "redacted" in caplog.text
    assert number not in repr(card)
    assert number not in repr(card.state)


def test_input_assist_ap_asks_for_its_pin_before_read_binary(tmp_path: Path) -> None:
    card = VirtualCard.create(path=tmp_path / "c.json")
    card.power_on()
    assert tx(card, sel(INPUT_ASSIST)) == "9000"
    assert tx(card, "00A4020C020001") == "9000"
    assert tx(card, "00B000000C") == "6982"  # security status not satisfied
    assert tx(card, "00A4020C020011") == "9000"
    assert tx(card, "00200080") == "63C3"  # 3 tries, none spent
    assert tx(card, "002000800439393939") == "63C2"  # a wrong PIN spends one, persisted
    assert VirtualCard.load(tmp_path / "c.json").state.input_assist_pin.tries == 2
    assert tx(card, "00A4020C020001") == "9000"
    assert tx(card, "00B000000C") == "6982"
    assert tx(card, "00A4020C020011") == "9000"
    assert tx(card, "002000800431323334") == "9000"
    assert tx(card, "00A4020C020001") == "9000"
    assert tx(card, "00B000000C").endswith("9000")
    assert tx(card, sel(INPUT_ASSIST)) == "9000"  # a new selection forgets the VERIFY
    assert tx(card, "00A4020C020001") == "9000"
    assert tx(card, "00B000000C") == "6982"


def test_foreign_card_has_an_isd_but_no_my_number_card_aps() -> None:
    card = VirtualCard.create(profile="foreign", serial=0x0A0B0C0D)
    card.power_on()
    assert tx(card, "80CA9F7F00").startswith("9F7F2A4090")
    assert tx(card, sel(JPKI)) == "6A82"
    assert tx(card, "00A4040C0AD3921000310001010402") == "6A82"  # no card face AP either
