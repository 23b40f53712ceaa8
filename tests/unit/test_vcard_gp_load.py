"""Virtual card: full host-side loads of each AP type under SCP03 (cardlib.gp), both profiles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _typed_host import (
    ACCESS_KEY,
    ISD,
    MODULE,
    PIN,
    USER_ID,
    default_infos,
    load_ap,
    load_script,
    mutual_auth,
    open_scp,
    secure,
    send,
    sm_send,
    spec,
)

from cardap_sim.vcard.card import DEV_MASTER_KEYS, VirtualCard
from cardlib.apdu import CommandApdu
from cardlib.errors import CardAuthenticationError
from cardlib.gp.commands import (
    delete,
    get_data,
    install_for_install,
    install_for_load,
    install_parameters,
)
from cardlib.gp.keys import DiversifyingKeyStore, StaticKeys
from cardlib.gp.scp03 import Scp03Session

EXT_HEX = "A000000151455854"
EXT = bytes.fromhex(EXT_HEX)


@pytest.fixture(params=["vendor-a", "vendor-b"])
def card(request: pytest.FixtureRequest, tmp_path: Path) -> VirtualCard:
    c = VirtualCard.create(profile=request.param, path=tmp_path / "card.json", serial=0x1A2B3C4D)
    c.power_on()
    return c


def sel(card: VirtualCard, aid: bytes) -> int:
    return send(card, CommandApdu(0x00, 0xA4, 0x04, 0x0C, aid)).sw


def read_type(card: VirtualCard, kind: str, aid: bytes) -> bytes:
    """Read the user ID area of an instance the way a terminal does for its type."""
    assert sel(card, aid) == 0x9000
    if kind in ("C", "custom"):
        resp = send(card, CommandApdu(0x00, 0xB0, 0x00, 0x00, le=0x21 if kind == "C" else 15))
        assert resp.sw == 0x9000
        return resp.data
    _, keys = mutual_auth(card)
    assert keys is not None
    if kind == "A":
        assert send(card, CommandApdu(0x00, 0x20, 0x00, 0x81, PIN.encode())).sw == 0x9000
        resp = send(card, CommandApdu(0x00, 0xB2, 0x01, 0x04, le=256))
        assert resp.sw == 0x9000
        return resp.data
    assert sm_send(card, keys, 0x20, 0x00, 0x81, PIN.encode()).sw == 0x9000
    resp = sm_send(card, keys, 0xB0, 0x00, 0x00, le=255)
    assert resp.sw == 0x9000
    assert len(resp.data) == 255
    return resp.data


@pytest.mark.parametrize("kind", ["A", "C", "D", "custom"])
def test_full_load_then_read_user_id(card: VirtualCard, kind: str) -> None:
    ap = spec(kind)
    resps = load_ap(card, ap)
    assert all(r.sw == 0x9000 for r in resps), [hex(r.sw) for r in resps]
    data = read_type(card, kind, ap.aid)
    assert data[2:15] == USER_ID.encode()
    assert data[0] == {"A": 0xC1, "C": 0xC1, "D": 0xD1, "custom": 0xC1}[kind]
    if kind == "C":
        assert data[15:] == b"".join(bytes((0xC2 + n, 4)) + i
                                     for n, i in enumerate(default_infos("C")))
    # everything persists: reload the card file and read again
    again = VirtualCard.load(card.path)  # type: ignore[arg-type]
    again.power_on()
    assert read_type(again, kind, ap.aid)[2:15] == USER_ID.encode()
    doc = json.loads(card.path.read_text())  # type: ignore[union-attr]
    entry = next(a for a in doc["aps"] if a["aid"] == ap.aid.hex().upper())
    assert entry["type"] == kind
    assert entry["lifecycle"] == 0x0F
    assert entry["load_file"] == ap.load_file.hex().upper()
    assert entry["area"] == EXT_HEX
    if kind in ("A", "D"):
        assert entry["access_key"] == ACCESS_KEY.hex().upper()
        assert entry["pin"] == {"value": PIN, "max_tries": 3, "tries": 3}
        assert entry["user_id"] == USER_ID




@pytest.mark.parametrize("level", [0x01, 0x03, 0x11, 0x13, 0x33])
def test_every_security_level_loads(card: VirtualCard, level: int) -> None:
    ap = spec("C")
    assert all(r.sw == 0x9000 for r in load_ap(card, ap, level=level))
    assert read_type(card, "C", ap.aid)[2:15] == USER_ID.encode()


def test_card_keys_are_kdf3_of_the_master_with_the_kdd(card: VirtualCard) -> None:
    kdd = (bytes.fromhex(card.state.cplc["ic_fabricator"]) + bytes.fromhex("1A2B3C4D0001")
           + bytes(2))
    assert card.state.static_keys == DiversifyingKeyStore(DEV_MASTER_KEYS).card_keys(kdd, 0x30)
    session = open_scp(card)
    assert session.card.kdd == kdd
    assert session.card.kvn == 0x30
    assert session.card.i == 0x70
    assert session.card.sequence_counter == b"\x00\x00\x00"
    assert card.state.sequence_counter == 1
    assert card.path is not None
    assert json.loads(card.path.read_text())["keys"]["sequence_counter"] == 1
    again = VirtualCard.load(card.path)  # type: ignore[arg-type]
    again.power_on()
    assert open_scp(again).card.sequence_counter == b"\x00\x00\x01"


def test_other_master_keys_and_aes256(tmp_path: Path) -> None:
    master = StaticKeys(bytes(range(32)), bytes(range(1, 33)), bytes(range(2, 34)))
    card = VirtualCard.create(path=tmp_path / "c.json", master_keys=master)
    card.power_on()
    assert send(card, CommandApdu(0x00, 0xA4, 0x04, 0x0C, ISD)).sw == 0x9000
    session = Scp03Session(DiversifyingKeyStore(master), isd_aid=ISD)
    ext = session.open(send(card, session.begin()))
    session.confirm(send(card, ext))
    assert secure(card, session, get_data(0xFF21)).sw == 0x9000
    with pytest.raises(CardAuthenticationError):  # the dev master is not this card's
        open_scp(card)


def test_card_file_without_keys_loads_with_dev_master(card: VirtualCard) -> None:
    path = card.path
    assert path is not None
    doc = json.loads(path.read_text())
    del doc["keys"], doc["load_files"], doc["areas"]["regional"]
    path.write_text(json.dumps(doc))
    again = VirtualCard.load(path)
    again.power_on()
    open_scp(again)  # the dev master's diversification, counter 0
    assert again.state.sequence_counter == 1


def test_content_management_needs_the_secure_channel(card: VirtualCard) -> None:
    cmd = install_for_install(b"\xD3\x92\xF0\x00\x4C\x41", MODULE["C"], b"\xD3\x92\xF0\x00\x99",
                              parameters=install_parameters(b"\x43"))
    assert send(card, cmd).sw == 0x6982
    assert send(card, delete(b"\xD3\x92\xF0\x00\x99")).sw == 0x6982
    assert send(card, CommandApdu(0x84, 0xE4, 0x00, 0x00, b"\x4F\x05" + bytes(5) + bytes(8))
                ).sw == 0x6982
    session = open_scp(card)
    plain = send(card, delete(b"\xD3\x92\xF0\x00\x99"))
    assert plain.sw == 0x6982  # a plain command inside a session closes it
    assert secure(card, session, get_data(0xFF21)).sw == 0x6982


def test_select_another_ap_closes_the_channel(card: VirtualCard) -> None:
    session = open_scp(card)
    assert secure(card, session, get_data(0xFF21)).sw == 0x9000
    assert sel(card, bytes.fromhex("D392F000260100000001")) == 0x9000
    assert sel(card, ISD) == 0x9000
    assert send(card, session.wrap(get_data(0xFF21))).sw == 0x6982
    session = open_scp(card)
    card.power_off()
    card.power_on()
    assert send(card, session.wrap(get_data(0xFF21))).sw == 0x6982


def test_install_errors(card: VirtualCard) -> None:
    ap = spec("C")
    session = open_scp(card)
    resps = [secure(card, session, c) for c in load_script(card, session, ap)[:-1]]
    assert all(r.sw == 0x9000 for r in resps)
    again = install_for_install(ap.load_file, MODULE["C"], ap.aid,
                                parameters=install_parameters(b"\x43"))
    assert secure(card, session, again).sw == 0x6A89
    unknown = install_for_install(ap.load_file, bytes.fromhex("D392F0004F5A"),
                                  b"\xD3\x92\xF0\x00\x98", parameters=install_parameters(b"\x43"))
    assert secure(card, session, unknown).sw == 0x6A80
    mismatch = install_for_install(ap.load_file, MODULE["A"], b"\xD3\x92\xF0\x00\x98",
                                   parameters=install_parameters(b"\x43"))
    assert secure(card, session, mismatch).sw == 0x6A80
    no_file = install_for_install(b"\xD3\x92\xF0\x00\x77", MODULE["C"], b"\xD3\x92\xF0\x00\x98",
                                  parameters=install_parameters(b"\x43"))
    assert secure(card, session, no_file).sw == 0x6A88
    assert secure(card, session, install_for_load(ap.load_file, EXT)).sw == 0x6985
    assert secure(card, session, install_for_load(b"\xD3\x92\xF0\x00\x76", ISD)).sw == 0x6A80
    # installed but not personalised: READ answers 6985
    assert sel(card, ap.aid) == 0x9000
    assert send(card, CommandApdu(0x00, 0xB0, 0x00, 0x00, le=0x21)).sw == 0x6985

