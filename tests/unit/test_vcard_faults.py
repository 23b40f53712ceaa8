"""Fault injection of the virtual card and the in-process CardConnection adapter."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cardap_sim.vcard.card import VirtualCard
from cardap_sim.vcard.connection import InProcessConnection
from cardap_sim.vcard.errors import CardMute, CardTorn
from cardapd.errors import CardRemoved, CardUnresponsive, ReaderError
from cardlib.connection import CardConnection
from cardlib.errors import CardProtocolError

CPLC = bytes.fromhex("80CA9F7F2D")


@pytest.fixture
def card() -> VirtualCard:
    c = VirtualCard.create(profile="vendor-a")
    c.power_on()
    return c


def test_tear_after_n(card: VirtualCard) -> None:
    card.faults.tear_after = 2
    assert card.transmit(CPLC)[-2:] == b"\x90\x00"
    assert card.transmit(CPLC)[-2:] == b"\x90\x00"
    assert card.torn
    with pytest.raises(CardTorn):
        card.transmit(CPLC)
    with pytest.raises(CardTorn):
        card.transmit(CPLC)
    assert card.apdu_count == 2
    card.power_on()  # re-insertion
    assert card.transmit(CPLC)[-2:] == b"\x90\x00"


def test_tear_now(card: VirtualCard) -> None:
    card.faults.update(tear_after=0)
    with pytest.raises(CardTorn):
        card.transmit(CPLC)


def test_garbage_has_impossible_sw1(card: VirtualCard) -> None:
    card.faults.garbage = 3
    for _ in range(3):
        resp = card.transmit(CPLC)
        assert len(resp) >= 2
        assert not (0x60 <= resp[-2] <= 0x6F)
        assert not (0x90 <= resp[-2] <= 0x9F)
    assert card.transmit(CPLC)[-2:] == b"\x90\x00"
    card.faults.garbage = -1
    for _ in range(20):
        assert card.transmit(CPLC)[-2:] != b"\x90\x00"
    assert card.faults.garbage == -1


def test_truncate(card: VirtualCard) -> None:
    card.faults.truncate = 1
    assert card.transmit(CPLC) == b"\x9f"
    assert card.transmit(CPLC)[-2:] == b"\x90\x00"
    card.faults.truncate = -1
    for _ in range(5):
        assert card.transmit(CPLC) == b"\x9f"


def test_slow(card: VirtualCard) -> None:
    card.faults.slow_ms = 60
    t = time.monotonic()
    card.transmit(CPLC)
    assert time.monotonic() - t >= 0.05


def test_mute_answers_nothing(card: VirtualCard) -> None:
    card.faults.mute = True
    with pytest.raises(CardMute):
        card.transmit(CPLC)
    assert card.apdu_count == 0
    card.faults.clear()
    assert card.transmit(CPLC)[-2:] == b"\x90\x00"


def test_faults_held_until_n_commands_were_answered(card: VirtualCard) -> None:
    """`after=N`: the fault is counted by the card, so a test hits command N+1 exactly,
    however fast or slow the operation runs."""
    card.faults.update(after=3, garbage=1, mute=False)
    assert card.faults.to_json()["pending"] == {"garbage": 1, "mute": False}
    for _ in range(3):
        assert card.transmit(CPLC)[-2:] == b"\x90\x00"
    assert "pending" not in card.faults.to_json()
    assert card.faults.garbage == 1
    assert card.transmit(CPLC)[-2:] != b"\x90\x00"  # the 4th
    assert card.transmit(CPLC)[-2:] == b"\x90\x00"
    card.faults.update(after=1, mute=True)
    assert card.transmit(CPLC)[-2:] == b"\x90\x00"
    with pytest.raises(CardMute):
        card.transmit(CPLC)
    card.faults.update(after=5, mute=True)
    card.faults.clear()  # a clear drops what was held
    for _ in range(6):
        assert card.transmit(CPLC)[-2:] == b"\x90\x00"


@pytest.mark.parametrize("kw", [{"tear_after": -1}, {"garbage": -2}, {"truncate": -2},
                                {"slow_ms": -1}, {"after": -1}, {"after": 2},
                                {"slow_ms": "x"}, {"mute": 1}, {"bogus": 1}])
def test_fault_validation(card: VirtualCard, kw: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(kw))):
        card.faults.update(**kw)


def test_faults_are_not_persisted(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    c = VirtualCard.create(path=path)
    c.faults.mute = True
    c.block_pin("auth")
    assert not VirtualCard.load(path).faults.mute


# --- adapter --------------------------------------------------------------------------

def test_adapter_is_a_card_connection(card: VirtualCard) -> None:
    card.power_off()
    conn = InProcessConnection(card)
    assert isinstance(conn, CardConnection)
    assert card.powered
    assert conn.atr == bytes.fromhex("3BC5FF8131FB458073C6010000")
    assert conn.transmit(CPLC)[-2:] == b"\x90\x00"
    assert conn.card is card
    conn.close()
    assert card.powered
    with pytest.raises(ReaderError):
        conn.transmit(CPLC)


def test_adapter_maps_faults(card: VirtualCard) -> None:
    conn = InProcessConnection(card)
    card.faults.truncate = 1
    with pytest.raises(CardProtocolError):
        conn.transmit(CPLC)
    card.faults.mute = True
    with pytest.raises(CardUnresponsive):
        conn.transmit(CPLC)
    card.faults.clear()
    card.faults.tear_after = 0
    with pytest.raises(CardRemoved):
        conn.transmit(CPLC)
    card.power_on()
    card.power_off()
    with pytest.raises(CardUnresponsive):
        conn.transmit(CPLC)
