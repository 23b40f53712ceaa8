"""Type A reads: mutual authentication, the guarded AP PIN, three strictly checked records."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from test_myna_type_helpers import (
    ACCESS_KEY_32,
    PIN,
    PROFILES,
    Ap,
    card_tries,
    connect,
    make_ap,
    make_card,
    set_tries,
)

from cardap_sim.vcard.card import VirtualCard
from cardapd.errors import (
    ApNotFound,
    CardDataInvalid,
    CardRemoved,
    InvalidArgument,
    InvalidPinError,
    PinBlocked,
    PinGuardRefused,
)
from cardapd.myna.mutual_auth import ApAuthFailed
from cardapd.myna.pin_guard import PinGuard
from cardapd.myna.typea import TypeARecord, TypeASession
from cardlib.errors import StatusWordError
from cardlib.traffic import TRAFFIC

A = make_ap("A")
A32 = make_ap("A", 2, access_key=ACCESS_KEY_32)


@pytest.fixture(params=PROFILES)
def card(request: pytest.FixtureRequest) -> VirtualCard:
    return make_card(str(request.param), A, A32)


def read(card: VirtualCard, ap: Ap = A, *, pin: bytes = PIN, key: bytes | None = None,
         floor: int = 1) -> tuple[object, int]:
    """One Type A read; returns (record or raised error, PIN VERIFYs the card processed)."""
    proto, link = connect(card)
    try:
        result: object = TypeASession(proto).read(ap.aid, key or ap.access_key, pin,
                                                   PinGuard(floor))
    except Exception as exc:
        result = exc
    return result, link.pin_verifies()


@pytest.mark.parametrize("ap", [A, A32], ids=["key16", "key32"])
def test_read(card: VirtualCard, ap: Ap) -> None:
    record, verifies = read(card, ap)
    assert record == TypeARecord(ap.user_id, ap.info1, ap.info2)
    assert verifies == 1
    assert card_tries(card, ap) == 3


def test_keys_and_pin_never_logged(card: VirtualCard, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(TRAFFIC, logger="test.myna.types")
    record, _ = read(card, A32)
    assert not isinstance(record, Exception)
    lines = [r.getMessage() for r in caplog.records if r.name == "test.myna.types"]
    assert "> 00820081 [32 bytes redacted] 00" in lines  # our cryptogram
    assert lines.count("< [32 bytes redacted] 9000") == 1  # the card's cryptogram
    assert "< [8 bytes redacted] 9000" in lines  # RND.ICC
    text = "\n".join(lines)
    for secret in (ACCESS_KEY_32.hex().upper(), PIN.hex().upper()):
        assert secret not in text


def test_wrong_access_key(card: VirtualCard) -> None:
    result, verifies = read(card, key=bytes(16))
    assert isinstance(result, ApAuthFailed)
    assert result.reason == "AP_AUTH_FAILED"
    assert verifies == 0
    assert card_tries(card, A) == 3  # no counter for the access key, no PIN try
    result, _ = read(card, A32, key=ACCESS_KEY_32[:16])
    assert isinstance(result, ApAuthFailed)
    record, _ = read(card)
    assert not isinstance(record, Exception)


def test_bad_key_length_sends_nothing(card: VirtualCard) -> None:
    proto, link = connect(card)
    with pytest.raises(InvalidArgument):
        TypeASession(proto).read(A.aid, bytes(24), PIN, PinGuard())
    assert [c[1] for c, _ in link.answered] == [0xA4]  # SELECT only


def test_wrong_pin_decrements_and_reports(card: VirtualCard) -> None:
    result, verifies = read(card, pin=b"0000")
    assert isinstance(result, InvalidPinError)
    assert (result.tries_left, verifies, card_tries(card, A)) == (2, 1, 2)
    result, verifies = read(card, pin=b"0000")
    assert isinstance(result, InvalidPinError)
    assert (result.tries_left, verifies, card_tries(card, A)) == (1, 1, 1)


def test_one_try_left_is_refused_without_verify(card: VirtualCard) -> None:
    set_tries(card, A, 1)
    for pin in (PIN, b"0000"):
        result, verifies = read(card, pin=pin)
        assert isinstance(result, PinGuardRefused)
        assert result.tries_left == 1
        assert result.metadata["tries_left"] == "1"
        assert verifies == 0
    assert card_tries(card, A) == 1


def test_floor_two(card: VirtualCard) -> None:
    set_tries(card, A, 2)
    result, verifies = read(card, floor=2)
    assert isinstance(result, PinGuardRefused)
    assert verifies == 0
    record, verifies = read(card, floor=1)
    assert not isinstance(record, Exception)
    assert (verifies, card_tries(card, A)) == (1, 3)


def test_blocked_pin_sends_no_verify(card: VirtualCard) -> None:
    set_tries(card, A, 0)
    result, verifies = read(card)
    assert isinstance(result, PinBlocked)
    assert (result.tries_left, verifies) == (0, 0)


def test_bad_pin_format_spends_nothing(card: VirtualCard) -> None:
    proto, link = connect(card)
    for pin in (b"12", b"1" * 17, b"12 4", "１２３４".encode()):
        with pytest.raises(InvalidArgument):
            TypeASession(proto).read(A.aid, A.access_key, pin, PinGuard())
    assert link.answered == []


def test_missing_instance(card: VirtualCard) -> None:
    proto, _ = connect(card)
    with pytest.raises(ApNotFound):
        TypeASession(proto).read(bytes.fromhex("D392F0004F41FF01"), A.access_key, PIN,
                                 PinGuard())


@pytest.mark.parametrize("tear_after", [3, 4, 5, 6])  # after MA, counter read, VERIFY, record 1
def test_card_pulled_between_authentication_and_read(card: VirtualCard, tear_after: int) -> None:
    card.faults.tear_after = tear_after
    result, _ = read(card)
    assert isinstance(result, CardRemoved)
    card.power_on()
    assert card_tries(card, A) == 3
    record, _ = read(card)
    assert not isinstance(record, Exception)


def _corrupt_record(n: int, data: bytes) -> Callable[[bytes, bytes], bytes]:
    """Make record n answer `data` instead (a response rewrite on the link)."""
    def tamper(cmd: bytes, resp: bytes) -> bytes:
        if cmd[1] == 0xB2 and cmd[2] == n:
            return data + b"\x90\x00"
        return resp
    return tamper


@pytest.mark.parametrize(("n", "data"), [
    (1, b"\xC1\x0D" + b"ABCDEFGH1234\x00"),  # a user ID that is not printable ASCII
    (1, b"\xC1\x0C" + b"ABCDEFGH1234"),
    (1, b"\xC2\x0D" + b"ABCDEFGH1234S"),
    (2, b"\xC2\x75" + bytes(117)),
    (3, b"\xC3\x76" + bytes(117)),
    (3, b""),
])
def test_bad_layout_is_card_data_invalid(card: VirtualCard, n: int, data: bytes) -> None:
    proto, _ = connect(card, _corrupt_record(n, data))
    with pytest.raises(CardDataInvalid):
        TypeASession(proto).read(A.aid, A.access_key, PIN, PinGuard())


def test_record_error_status(card: VirtualCard) -> None:
    def tamper(cmd: bytes, resp: bytes) -> bytes:
        return b"\x69\x82" if cmd[1] == 0xB2 else resp
    proto, _ = connect(card, tamper)
    with pytest.raises(StatusWordError):
        TypeASession(proto).read(A.aid, A.access_key, PIN, PinGuard())
