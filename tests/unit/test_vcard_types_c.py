"""Virtual card Type C and custom instances created by INSTALL + STORE DATA."""

from __future__ import annotations

from pathlib import Path

import pytest
from _typed_host import USER_ID, load_ap, load_script, open_scp, secure, send, spec

from cardap_sim.vcard.card import VirtualCard
from cardlib.apdu import CommandApdu
from cardlib.gp.commands import dgi, store_data


@pytest.fixture(params=["vendor-a", "vendor-b"])
def card(request: pytest.FixtureRequest, tmp_path: Path) -> VirtualCard:
    c = VirtualCard.create(profile=request.param, path=tmp_path / "card.json", serial=9)
    c.power_on()
    return c


def test_custom_content_as_is(card: VirtualCard) -> None:
    ap = spec("custom")
    load_ap(card, ap)
    assert send(card, CommandApdu(0x00, 0xA4, 0x04, 0x0C, ap.aid)).sw == 0x9000
    resp = send(card, CommandApdu(0x00, 0xB0, 0x00, 0x00, le=35))
    assert resp.data == ap.perso_plain()
    assert card.state.aps[-1].to_json()["content"] == ap.perso_plain().hex().upper()


def test_store_data_errors(card: VirtualCard) -> None:
    ap = spec("C")
    session = open_scp(card)
    for cmd in load_script(card, session, ap)[:-1]:
        assert secure(card, session, cmd).sw == 0x9000
    assert secure(card, session, store_data(b"", 1, last=True)).sw == 0x6A86  # wrong block
    bad = dgi(0x0101, b"\xC1\x0D" + USER_ID.encode())  # infos missing
    assert secure(card, session, store_data(bad, 0, last=True)).sw == 0x6A80
    good = dgi(0x0101, b"\xC1\x0D" + USER_ID.encode()
               + b"".join(bytes((t, 4)) + bytes(4) for t in (0xC2, 0xC3, 0xC4)))
    assert secure(card, session, store_data(good[:10], 0, last=False)).sw == 0x9000
    assert secure(card, session, store_data(good[10:], 1, last=True)).sw == 0x9000
    assert secure(card, session, store_data(good, 0, last=True)).sw == 0x6985  # personalised
    fresh = open_scp(card)
    assert secure(card, fresh, store_data(good, 0, last=True)).sw == 0x6985  # no target


def test_pre_issued_type_c_is_listed_and_deletable(tmp_path: Path) -> None:
    from cardap_sim.vcard.card import TypeCSpec
    aid = bytes.fromhex("D392F00043010001")
    card = VirtualCard.create(path=tmp_path / "c.json",
                              type_c=[TypeCSpec(aid, USER_ID)])
    card.power_on()
    from cardlib.gp.commands import delete
    from cardlib.gp.registry import Scope, read_registry
    session = open_scp(card)
    apps = read_registry(lambda c: secure(card, session, c), Scope.APPLICATIONS)
    assert apps[-1].aid == aid
    assert apps[-1].lifecycle == 0x0F
    assert secure(card, session, delete(aid)).sw == 0x9000
    assert VirtualCard.load(card.path).state.aps == []  # type: ignore[arg-type]
