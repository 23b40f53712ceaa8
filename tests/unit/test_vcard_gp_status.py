"""Virtual card ISD: GET STATUS forms and 6310, FF21 free space, 6A84 capacity, DELETE."""

from __future__ import annotations

from pathlib import Path

import pytest
from _typed_host import (
    EXT,
    ISD,
    MODULE,
    REG,
    load_ap,
    load_script,
    open_scp,
    secure,
    send,
    spec,
)

from cardap_sim.vcard.card import VirtualCard
from cardlib.apdu import CommandApdu, ResponseApdu
from cardlib.gp.commands import (
    delete,
    get_data,
    install_for_install,
    install_for_load,
    install_parameters,
    load_commands,
    load_file_data_block,
)
from cardlib.gp.registry import Scope, get_status, parse_get_status, read_registry
from cardlib.gp.scp03 import Scp03Session


@pytest.fixture(params=["vendor-a", "vendor-b"])
def card(request: pytest.FixtureRequest, tmp_path: Path) -> VirtualCard:
    c = VirtualCard.create(profile=request.param, path=tmp_path / "card.json", serial=0x01020304)
    c.power_on()
    return c


def areas(card: VirtualCard) -> dict[bytes, tuple[int, int]]:
    """FF21 without a secure channel: {area AID: (capacity, used)}."""
    resp = send(card, get_data(0xFF21))
    assert resp.sw == 0x9000
    assert resp.data[:2] == b"\xFF\x21"
    assert resp.data[2] == 44
    out = {}
    for n in range(2):
        g = resp.data[3 + 22 * n:3 + 22 * (n + 1)]
        assert g[:2] == b"\x4F\x08"
        assert g[10:12] == b"\x81\x04"
        assert g[16:18] == b"\x82\x04"
        out[g[2:10]] = (int.from_bytes(g[12:16], "big"), int.from_bytes(g[18:22], "big"))
    return out


def registry(card: VirtualCard, session: Scp03Session, scope: Scope) -> list:  # type: ignore[type-arg]
    def tx(cmd: CommandApdu) -> ResponseApdu:
        return secure(card, session, cmd)
    return read_registry(tx, scope, tlv=card.profile.get_status_tlv)


def test_ff21_capacity_per_profile(card: VirtualCard) -> None:
    assert areas(card) == {EXT: (card.profile.extended_area_size, 0), REG: (8192, 0)}


def test_get_status_after_loads(card: VirtualCard) -> None:
    for kind in ("A", "C", "D"):
        assert all(r.sw == 0x9000 for r in load_ap(card, spec(kind)))
    session = open_scp(card)
    isd = registry(card, session, Scope.ISD)
    assert [(e.aid, e.lifecycle) for e in isd] == [(ISD, 0x0F)]
    apps = registry(card, session, Scope.APPLICATIONS)
    assert [e.aid for e in apps][:2] == [EXT, REG]
    assert all(e.is_security_domain for e in apps[:2])
    assert {e.aid: e.lifecycle for e in apps[2:]} == {spec(k).aid: 0x0F for k in "ACD"}
    files = registry(card, session, Scope.LOAD_FILES)
    assert {e.aid: e.lifecycle for e in files} == {spec(k).load_file: 0x01 for k in "ACD"}
    mods = registry(card, session, Scope.LOAD_FILES_AND_MODULES)
    assert all(set(e.modules) == set(MODULE.values()) for e in mods)
    used = areas(card)[EXT][1]
    assert used == 3 * (600 + 4)  # C4 82 xx xx header + image


def test_get_status_forms_per_profile(card: VirtualCard) -> None:
    session = open_scp(card)
    tlv = secure(card, session, get_status(Scope.ISD, tlv=True))
    legacy = secure(card, session, get_status(Scope.ISD, tlv=False))
    assert legacy.sw == 0x9000
    assert parse_get_status(Scope.ISD, legacy.data, tlv=False)[0].aid == ISD
    if card.profile.get_status_tlv:
        assert tlv.sw == 0x9000
        assert tlv.data[0] == 0xE3
    else:
        assert tlv.sw == 0x6A86
    assert secure(card, session, get_status(Scope.LOAD_FILES,
                                            tlv=card.profile.get_status_tlv)).sw == 0x6A88
    assert secure(card, session, get_status(Scope.ISD, tlv=False, next_=True)).sw == 0x6985
    assert secure(card, session, CommandApdu(0x80, 0xF2, 0x30, 0x00, b"\x4F\x00")).sw == 0x6A86


@pytest.mark.parametrize(("profile", "tlv"), [
    ("vendor-a", True), ("vendor-a", False),
    ("vendor-b", False)])  # vendor-b answers GET STATUS in the legacy form only
def test_get_status_continuation_6310(profile: str, tlv: bool, tmp_path: Path) -> None:
    card = VirtualCard.create(profile=profile, path=tmp_path / "card.json", serial=0x01020304)
    card.power_on()
    assert card.profile.get_status_tlv or not tlv
    ap = spec("C")
    assert load_ap(card, ap)[-1].sw == 0x9000
    session = open_scp(card)
    count = 8 if tlv else 24
    aids = [bytes.fromhex("D392F00099") + bytes((n,)) for n in range(count)]
    for aid in aids:
        assert secure(card, session, install_for_install(
            ap.load_file, MODULE["C"], aid, parameters=install_parameters(b"\x43"))).sw == 0x9000
    first = secure(card, session, get_status(Scope.APPLICATIONS, tlv=tlv))
    assert first.sw == 0x6310
    entries = read_registry(lambda c: secure(card, session, c), Scope.APPLICATIONS, tlv=tlv)
    assert [e.aid for e in entries] == [EXT, REG, ap.aid, *aids]
    assert {e.lifecycle for e in entries[3:]} == {0x07}
    prefixed = read_registry(lambda c: secure(card, session, c), Scope.APPLICATIONS, tlv=tlv,
                             aid_prefix=aids[3])
    assert [e.aid for e in prefixed] == [aids[3]]


def test_capacity_6a84_and_delete_returns_space(card: VirtualCard) -> None:
    cap = card.profile.extended_area_size
    big = spec("C", image_size=cap - 2000)
    assert load_ap(card, big)[-1].sw == 0x9000
    session = open_scp(card)
    lf = bytes.fromhex("D392F0004C5A01")
    assert secure(card, session, install_for_load(lf, EXT)).sw == 0x9000
    blocks = load_commands(load_file_data_block(bytes(3000)), 200)
    sws = [secure(card, session, c).sw for c in blocks]
    assert 0x6A84 in sws
    failed_at = sws.index(0x6A84)
    assert areas(card)[EXT][1] == cap - 2000 + 4 + 200 * failed_at  # half-loaded file counts
    session = open_scp(card)
    files = registry(card, session, Scope.LOAD_FILES)
    assert {e.aid: e.lifecycle for e in files} == {big.load_file: 0x01, lf: 0x00}
    assert secure(card, session, delete(lf)).sw == 0x9000
    assert areas(card)[EXT][1] == cap - 2000 + 4
    session = open_scp(card)
    assert secure(card, session, delete(big.load_file)).sw == 0x6985  # an instance uses it
    assert secure(card, session, delete(big.load_file, related=True)).sw == 0x9000
    assert areas(card)[EXT] == (cap, 0)
    assert secure(card, session, delete(big.aid)).sw == 0x6A88
    assert secure(card, session, delete(ISD)).sw == 0x6985
    assert big.aid not in card.applets


def test_regional_area(card: VirtualCard) -> None:
    ap = spec("C", area=REG, image_size=8000)
    assert load_ap(card, ap)[-1].sw == 0x9000
    assert areas(card)[REG] == (8192, 8004)
    too_big = spec("C", 2, area=REG, image_size=500)
    assert 0x6A84 in [r.sw for r in load_ap(card, too_big)]


def test_delete_instance_only(card: VirtualCard) -> None:
    ap = spec("A")
    load_ap(card, ap)
    session = open_scp(card)
    assert secure(card, session, delete(ap.aid)).sw == 0x9000
    assert send(card, CommandApdu(0x00, 0xA4, 0x04, 0x0C, ap.aid)).sw == 0x6A82
    assert areas(card)[EXT][1] == 604  # the load file stays


def test_full_extended_area_fault(card: VirtualCard) -> None:
    card.faults.update(full_extended_area=True)
    assert card.faults.to_json()["full_extended_area"] is True
    assert areas(card)[EXT] == (card.profile.extended_area_size,) * 2
    assert 0x6A84 in [r.sw for r in load_ap(card, spec("C"))]
    assert all(r.sw == 0x9000 for r in load_ap(card, spec("C", 2, area=REG)))
    card.faults.clear()
    assert areas(card)[EXT][1] == 0
    with pytest.raises(ValueError, match="boolean"):
        card.faults.update(full_extended_area=1)


# --- the refuse fault: one command answered with a chosen error status -------------------


def test_refused_install_for_install_does_nothing_and_keeps_the_channel(
        card: VirtualCard) -> None:
    """INSTALL [for install] (E6, P1 0C) refused with 6985 under SCP03: the bare status word
    (unwrap accepts it: no R-MAC on an error), no instance, the load file stays LOADED, the
    fault is spent, and the channel goes on (the C-MAC was checked and chained)."""
    ap = spec("C")
    card.faults.update(refuse_ins=0xE6, refuse_p1=0x0C, refuse_sw=0x6985)
    assert card.faults.to_json()["refuse_sw"] == 0x6985
    session = open_scp(card)
    answers = [secure(card, session, c) for c in load_script(card, session, ap)]
    sws = [r.sw for r in answers]
    first_e6 = next(i for i, r in enumerate(answers) if r.sw != 0x9000)
    assert sws[first_e6] == 0x6985
    assert answers[first_e6].data == b""
    assert sws[:first_e6] == [0x9000] * first_e6, "INSTALL [for load] (P1 02) is not refused"
    assert ap.aid not in card.applets
    assert "refuse_ins" not in card.faults.to_json(), "spent after one refusal"
    files = registry(card, session, Scope.LOAD_FILES)  # same session: still in step
    assert {e.aid: e.lifecycle for e in files} == {ap.load_file: 0x01}
    assert secure(card, session, install_for_install(
        ap.load_file, MODULE["C"], ap.aid,
        parameters=install_parameters(b"\x43"))).sw == 0x9000  # no longer refused


def test_refused_nth_load_block_abandons_the_load(card: VirtualCard) -> None:
    """The third LOAD answered 6581 (memory failure): blocks 0-1 stay as a half-loaded file,
    and the load is abandoned (block 2 sent again is 6985, as on a card that gave up)."""
    card.faults.update(refuse_ins=0xE8, refuse_nth=3, refuse_sw=0x6581)
    session = open_scp(card)
    lf = bytes.fromhex("D392F0004C5A02")
    assert secure(card, session, install_for_load(lf, EXT)).sw == 0x9000
    blocks = load_commands(load_file_data_block(bytes(1000)), 200)
    assert [secure(card, session, c).sw for c in blocks[:3]] == [0x9000, 0x9000, 0x6581]
    assert secure(card, session, blocks[2]).sw == 0x6985
    assert areas(card)[EXT][1] == 400  # what the two accepted blocks hold
    assert {e.aid: e.lifecycle for e in registry(card, session, Scope.LOAD_FILES)} == {
        lf: 0x00}


def test_refused_plain_command_and_fault_settings(card: VirtualCard) -> None:
    """A plain command is refused before any applet sees it; the settings are checked."""
    card.faults.update(refuse_ins=0xCA, refuse_sw=0x6A88)
    assert send(card, get_data(0xFF21)).sw == 0x6A88
    assert send(card, get_data(0xFF21)).sw == 0x9000
    for bad in ({"refuse_sw": 0x9000}, {"refuse_sw": 0x6310}, {"refuse_sw": 0x6C10},
                {"refuse_sw": True}, {"refuse_ins": 256}, {"refuse_p1": -1},
                {"refuse_nth": 0}, {"refuse_nth": "2"}, {"refuse_ins": 0x82},
                {"refuse_ins": 0xC0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            card.faults.update(**bad)
    card.faults.update(refuse_ins=0xE4, refuse_nth=2)
    assert card.faults.to_json()["refuse_nth"] == 2
    card.faults.clear()
    assert not any(k.startswith("refuse") for k in card.faults.to_json())
