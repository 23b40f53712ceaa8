"""Virtual card Types A and D: mutual authentication, AP PIN counters, secure messaging."""

from __future__ import annotations

from pathlib import Path

import pytest
from _typed_host import (
    PIN,
    USER_ID,
    load_ap,
    mutual_auth,
    send,
    sm_send,
    sm_unwrap,
    sm_wrap,
    spec,
)

from cardap_sim.vcard.card import VirtualCard
from cardlib.apdu import CommandApdu

A = spec("A")
D = spec("D")


@pytest.fixture(params=["vendor-a", "vendor-b"])
def card(request: pytest.FixtureRequest, tmp_path: Path) -> VirtualCard:
    c = VirtualCard.create(profile=request.param, path=tmp_path / "card.json", serial=7)
    c.power_on()
    for ap in (A, D):
        assert all(r.sw == 0x9000 for r in load_ap(c, ap))
    return c


def sel(card: VirtualCard, aid: bytes) -> None:
    assert send(card, CommandApdu(0x00, 0xA4, 0x04, 0x0C, aid)).sw == 0x9000


def verify(card: VirtualCard, pin: bytes | None) -> int:
    return send(card, CommandApdu(0x00, 0x20, 0x00, 0x81, pin or b"")).sw


def test_type_a_records(card: VirtualCard) -> None:
    sel(card, A.aid)
    assert send(card, CommandApdu(0x00, 0xB2, 0x01, 0x04, le=256)).sw == 0x6982
    assert verify(card, PIN.encode()) == 0x6982  # before mutual authentication
    _, keys = mutual_auth(card)
    assert keys is not None
    assert send(card, CommandApdu(0x00, 0xB2, 0x01, 0x04, le=256)).sw == 0x6982  # before PIN
    assert verify(card, None) == 0x63C3
    assert verify(card, PIN.encode()) == 0x9000
    records = [send(card, CommandApdu(0x00, 0xB2, n, 0x04, le=256)) for n in (1, 2, 3)]
    assert records[0].data == b"\xC1\x0D" + USER_ID.encode()
    assert records[1].data == b"\xC2\x76" + A.infos[0]
    assert records[2].data == b"\xC3\x76" + A.infos[1]
    assert sum(len(r.data) for r in records) == 255
    assert send(card, CommandApdu(0x00, 0xB2, 0x04, 0x04, le=256)).sw == 0x6A83
    card.power_off()
    card.power_on()
    sel(card, A.aid)
    assert send(card, CommandApdu(0x00, 0xB2, 0x01, 0x04, le=256)).sw == 0x6982


@pytest.mark.parametrize("ap", [A, D], ids=["A", "D"])
def test_wrong_access_key_is_6300_without_counter(card: VirtualCard, ap: object) -> None:
    aid = A.aid if ap is A else D.aid
    sel(card, aid)
    for _ in range(5):
        resp, keys = mutual_auth(card, key=bytes(16))
        assert (resp.sw, keys) == (0x6300, None)
    _, keys = mutual_auth(card)
    assert keys is not None
    # MUTUAL AUTHENTICATE without GET CHALLENGE first (Type D: any plain command is 6988 now)
    sw = send(card, CommandApdu(0x00, 0x82, 0x00, 0x81, bytes(32), le=256)).sw
    assert sw == (0x6985 if ap is A else 0x6988)


def test_type_a_pin_counter_persists(card: VirtualCard) -> None:
    sel(card, A.aid)
    mutual_auth(card)
    assert verify(card, b"0000") == 0x63C2
    assert verify(card, b"0000") == 0x63C1
    again = VirtualCard.load(card.path)  # type: ignore[arg-type]
    again.power_on()
    sel(again, A.aid)
    mutual_auth(again)
    assert verify(again, None) == 0x63C1
    assert verify(again, b"9999") == 0x63C0
    assert verify(again, None) == 0x6984
    assert verify(again, PIN.encode()) == 0x6983
    assert send(again, CommandApdu(0x00, 0xB2, 0x01, 0x04, le=256)).sw == 0x6982


def test_type_d_secure_messaging(card: VirtualCard) -> None:
    sel(card, D.aid)
    assert send(card, CommandApdu(0x00, 0xB0, 0x00, 0x00, le=255)).sw == 0x6982
    _, keys = mutual_auth(card)
    assert keys is not None
    assert sm_send(card, keys, 0x20, 0x00, 0x81).sw == 0x63C3
    assert sm_send(card, keys, 0xB0, 0x00, 0x00, le=16).sw == 0x6982  # before the PIN
    assert sm_send(card, keys, 0x20, 0x00, 0x81, b"0000").sw == 0x63C2
    assert sm_send(card, keys, 0x20, 0x00, 0x81, PIN.encode()).sw == 0x9000
    data = sm_send(card, keys, 0xB0, 0x00, 0x00, le=255).data
    assert data == (b"\xD1\x0D" + USER_ID.encode() + b"\xD2\x76" + D.infos[0]
                    + b"\xD3\x76" + D.infos[1])
    assert sm_send(card, keys, 0xB0, 0x00, 0x02, le=13).data == USER_ID.encode()
    assert sm_send(card, keys, 0xB2, 0x01, 0x04, le=0).sw == 0x6D00
    # a plain command after mutual authentication: 6988, the session is closed
    assert send(card, CommandApdu(0x00, 0xB0, 0x00, 0x00, le=16)).sw == 0x6988
    assert send(card, sm_wrap(keys, 0xB0, 0x00, 0x00, le=16)).sw == 0x6988


def test_type_d_tampered_mac_closes_the_session(card: VirtualCard) -> None:
    sel(card, D.aid)
    _, keys = mutual_auth(card)
    assert keys is not None
    assert sm_send(card, keys, 0x20, 0x00, 0x81, PIN.encode()).sw == 0x9000
    assert send(card, sm_wrap(keys, 0xB0, 0x00, 0x00, le=16, tamper=True)).sw == 0x6988
    keys.bump()
    assert send(card, sm_wrap(keys, 0xB0, 0x00, 0x00, le=16)).sw == 0x6988
    # a fresh authentication works again
    _, keys = mutual_auth(card)
    assert keys is not None
    resp = send(card, sm_wrap(keys, 0x20, 0x00, 0x81, PIN.encode()))
    assert sm_unwrap(keys, resp).sw == 0x9000
    bad = sm_wrap(keys, 0xB0, 0x00, 0x00, le=16)
    flipped = CommandApdu(bad.cla, bad.ins, bad.p1, bad.p2,
                          bytes((bad.data[0], bad.data[1], bad.data[2] ^ 0xFF)) + bad.data[3:],
                          le=bad.le)
    assert send(card, flipped).sw == 0x6988


def test_type_d_pin_counter_persists(card: VirtualCard) -> None:
    sel(card, D.aid)
    _, keys = mutual_auth(card)
    assert keys is not None
    assert sm_send(card, keys, 0x20, 0x00, 0x81, b"bad!").sw == 0x63C2
    again = VirtualCard.load(card.path)  # type: ignore[arg-type]
    again.power_on()
    sel(again, D.aid)
    _, keys = mutual_auth(again)
    assert keys is not None
    assert sm_send(again, keys, 0x20, 0x00, 0x81).sw == 0x63C2
