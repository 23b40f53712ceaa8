"""Type D reads: authentication, then guarded VERIFY and READ BINARY under secure messaging."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from test_myna_type_helpers import (
    ACCESS_KEY_32,
    PIN,
    PROFILES,
    Ap,
    Link,
    card_tries,
    connect,
    make_ap,
    make_card,
    set_tries,
)

from cardap_sim.vcard.card import VirtualCard
from cardapd.errors import CardRemoved, IntegrityError, InvalidPinError, PinBlocked, PinGuardRefused
from cardapd.myna.mutual_auth import ApAuthFailed
from cardapd.myna.pin_guard import PinGuard
from cardapd.myna.typed import TypeDRecord, TypeDSession
from cardlib.errors import CardProtocolError

D = make_ap("D")
D32 = make_ap("D", 2, access_key=ACCESS_KEY_32)
Tamper = Callable[[bytes, bytes], bytes]


@pytest.fixture(params=PROFILES)
def card(request: pytest.FixtureRequest) -> VirtualCard:
    return make_card(str(request.param), D, D32)


def read(card: VirtualCard, ap: Ap = D, *, pin: bytes = PIN, key: bytes | None = None,
         floor: int = 1, tamper: Tamper | None = None) -> tuple[object, Link]:
    """One Type D read; returns (record or raised error, the link)."""
    proto, link = connect(card, tamper)
    try:
        result: object = TypeDSession(proto).read(ap.aid, key or ap.access_key, pin,
                                                   PinGuard(floor))
    except Exception as exc:
        result = exc
    return result, link


@pytest.mark.parametrize("ap", [D, D32], ids=["key16", "key32"])
def test_read(card: VirtualCard, ap: Ap) -> None:
    record, link = read(card, ap)
    assert record == TypeDRecord(ap.user_id, ap.info1, ap.info2)
    assert link.pin_verifies() == 1
    # after MUTUAL AUTHENTICATE everything was SM (CLA 0C) except GET RESPONSE chaining
    after = [c for c, _ in link.answered][3:]
    assert after
    assert all(c[0] == 0x0C or c[1] == 0xC0 for c in after)
    assert all(c[0] != 0x00 or c[1] != 0x20 for c, _ in link.answered)  # no plain VERIFY


def test_nothing_plain_crosses(card: VirtualCard) -> None:
    _, link = read(card)
    wire = b"".join(c + r for c, r in link.answered)
    assert D.user_id.encode() not in wire
    assert D.info1[:16] not in wire
    assert PIN not in wire


def test_wrong_access_key(card: VirtualCard) -> None:
    result, link = read(card, key=bytes(32))
    assert isinstance(result, ApAuthFailed)
    assert link.pin_verifies() == 0
    assert link.ins_sent(0x20) == 0
    assert card_tries(card, D) == 3


def test_wrong_pin_decrements_and_reports(card: VirtualCard) -> None:
    result, link = read(card, pin=b"bad!")
    assert isinstance(result, InvalidPinError)
    assert (result.tries_left, link.pin_verifies(), card_tries(card, D)) == (2, 1, 2)


def test_one_try_left_refused_without_verify(card: VirtualCard) -> None:
    set_tries(card, D, 1)
    result, link = read(card)
    assert isinstance(result, PinGuardRefused)
    assert result.tries_left == 1
    assert link.pin_verifies() == 0
    assert link.ins_sent(0x20) == 1  # the SM counter read only
    assert card_tries(card, D) == 1


def test_blocked_pin_sends_no_verify(card: VirtualCard) -> None:
    set_tries(card, D, 0)
    result, link = read(card)
    assert isinstance(result, PinBlocked)
    assert link.pin_verifies() == 0


def _flip_on(ins: int, index: int, *, chaining_sw: bool = False) -> Tamper:
    """Flip one byte of the responses (data + SW as on the wire) to commands with `ins`.

    A negative index -1/-2 (the SW) hits only the final answer unless `chaining_sw`.
    """
    def tamper(cmd: bytes, resp: bytes) -> bytes:
        if index in (-1, -2) and (resp[-2] == 0x61) != chaining_sw:
            return resp
        if (cmd[0] == 0x0C and cmd[1] == ins) or (ins == 0xB0 and cmd[1] == 0xC0):
            pos = index % len(resp)
            return resp[:pos] + bytes((resp[pos] ^ 0x01,)) + resp[pos + 1:]
        return resp
    return tamper


@pytest.mark.parametrize("index", [0, 3, 5, 40, 200, -12, -3, -1, -2])
def test_tampered_read_response_is_integrity_error(card: VirtualCard, index: int) -> None:
    result, _link = read(card, tamper=_flip_on(0xB0, index))
    assert isinstance(result, IntegrityError)
    assert result.reason == "SM_INTEGRITY_ERROR"
    text = str(result) + repr(result.metadata) + repr(result.args)
    assert D.user_id not in text
    assert card_tries(card, D) == 3  # the PIN was right; nothing lost


@pytest.mark.parametrize("index", [-1, -2])
def test_tampered_chaining_status_returns_nothing(card: VirtualCard, index: int) -> None:
    result, _ = read(card, tamper=_flip_on(0xB0, index, chaining_sw=True))
    # the framing is outside SM: either an error, or (61 13 → 61 12) the card still delivers
    # every byte and the authentic record passes the MAC check; never anything else
    if not isinstance(result, (IntegrityError, CardProtocolError)):
        assert result == TypeDRecord(D.user_id, D.info1, D.info2)


@pytest.mark.parametrize("index", [2, -5])
def test_tampered_verify_response_is_integrity_error(card: VirtualCard, index: int) -> None:
    result, link = read(card, tamper=_flip_on(0x20, index))
    assert isinstance(result, IntegrityError)
    assert link.pin_verifies() == 0  # the counter read failed its check: no VERIFY risked


def test_stripped_response_is_integrity_error(card: VirtualCard) -> None:
    def strip(cmd: bytes, resp: bytes) -> bytes:
        return b"\x90\x00" if cmd[0] == 0x0C and cmd[1] == 0xB0 else resp
    result, _ = read(card, tamper=strip)
    assert isinstance(result, IntegrityError)


@pytest.mark.parametrize("tear_after", [3, 4, 5])  # after MA, counter read, VERIFY
def test_card_pulled_between_authentication_and_read(card: VirtualCard, tear_after: int) -> None:
    card.faults.tear_after = tear_after
    result, _ = read(card)
    assert isinstance(result, CardRemoved)
    card.power_on()
    record, _ = read(card)
    assert not isinstance(record, Exception)
    assert card_tries(card, D) == 3


def test_type_a_instance_is_not_type_d() -> None:
    a = make_ap("A", 3)
    card = make_card("vendor-a", a)
    proto, _ = connect(card)
    with pytest.raises(IntegrityError):  # Type A answers VERIFY plain: not a valid SM response
        TypeDSession(proto).read(a.aid, a.access_key, PIN, PinGuard())
    assert card_tries(card, a) == 3
