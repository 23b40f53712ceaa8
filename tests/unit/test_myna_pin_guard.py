"""The PIN guard: counter first, never the last try, VERIFY at most once, PIN never logged."""

from __future__ import annotations

import threading

import pytest
from test_iso7816_scripted import scripted
from test_myna_vcard import PROFILES, RecordingConnection, assert_deny_list_untouched, vcard

from cardap_sim.vcard.card import VirtualCard
from cardapd.errors import InvalidPinError, PinBlocked, PinGuardRefused
from cardapd.myna.jpki import JpkiSession
from cardapd.myna.pin_guard import PinGuard
from cardlib.errors import Cancelled, StatusWordError
from cardlib.protocol import ApduProtocol
from cardlib.traffic import TRAFFIC

RIGHT_AUTH, RIGHT_SIGN = b"1234", b"ABC123"


def _jpki(profile: str = "vendor-a"
          ) -> tuple[VirtualCard, JpkiSession, RecordingConnection]:
    card, proto, conn = vcard(profile)
    jpki = JpkiSession(proto)
    jpki.select()
    return card, jpki, conn


@pytest.mark.parametrize("profile", PROFILES)
def test_right_pin(profile: str) -> None:
    card, jpki, conn = _jpki(profile)
    jpki.verify_pin("auth", RIGHT_AUTH, PinGuard())
    jpki.verify_pin("sign", RIGHT_SIGN, PinGuard())
    assert card.state.auth_pin.tries == 3
    assert len(conn.verifies_with_data()) == 2
    assert_deny_list_untouched(card, conn)


def test_wrong_pin_then_guard_stops_before_the_last_try() -> None:
    card, jpki, conn = _jpki()
    guard = PinGuard()
    with pytest.raises(InvalidPinError) as info:
        jpki.verify_pin("auth", b"0000", guard)
    assert info.value.tries_left == 2
    assert info.value.reason == "PIN_WRONG"
    assert len(conn.verifies_with_data()) == 1  # no retry
    with pytest.raises(InvalidPinError) as info:
        jpki.verify_pin("auth", b"0000", guard)
    assert info.value.tries_left == 1
    with pytest.raises(PinGuardRefused) as refused:
        jpki.verify_pin("auth", RIGHT_AUTH, guard)  # even the right PIN is not risked
    assert refused.value.tries_left == 1
    assert len(conn.verifies_with_data()) == 2
    assert card.state.auth_pin.tries == 1  # the card is not locked


def test_blocked_pin_refused_without_verify() -> None:
    card, jpki, conn = _jpki()
    card.block_pin("sign")
    with pytest.raises(PinBlocked) as info:
        jpki.verify_pin("sign", RIGHT_SIGN, PinGuard())
    assert info.value.tries_left == 0
    assert conn.verifies_with_data() == []


def test_higher_floor() -> None:
    card, jpki, _conn = _jpki()
    with pytest.raises(InvalidPinError):
        jpki.verify_pin("sign", b"WRONG1", PinGuard(floor=3))  # 5 → 4
    with pytest.raises(InvalidPinError):
        jpki.verify_pin("sign", b"WRONG1", PinGuard(floor=3))  # 4 → 3
    with pytest.raises(PinGuardRefused):
        jpki.verify_pin("sign", RIGHT_SIGN, PinGuard(floor=3))
    assert card.state.sign_pin.tries == 3


def test_floor_must_protect_the_last_try() -> None:
    with pytest.raises(ValueError, match="floor"):
        PinGuard(floor=0)


def test_pin_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(TRAFFIC)
    _, jpki, _ = _jpki()
    jpki.verify_pin("sign", RIGHT_SIGN, PinGuard())
    with pytest.raises(InvalidPinError) as info:
        jpki.verify_pin("sign", b"WRONG9", PinGuard())
    text = "\n".join(caplog.messages) + str(info.value)
    for secret in (RIGHT_SIGN, b"WRONG9"):
        assert secret.hex().upper() not in text
        assert secret.decode() not in text
    assert "[6 bytes redacted]" in text


def test_cancel_before_verify() -> None:
    _, jpki, conn = _jpki()
    cancel = threading.Event()

    def select_then_cancel(proto: ApduProtocol) -> None:
        jpki.pin_selector("auth")(proto)
        cancel.set()

    with pytest.raises(Cancelled):
        PinGuard().verify(jpki.proto, select_then_cancel, RIGHT_AUTH, cancel=cancel)
    assert conn.verifies_with_data() == []


def _select_ap_pin(proto: ApduProtocol) -> None:
    """A Type A/D style selector: the AP is selected, the PIN is a reference in P2."""


@pytest.mark.parametrize(("sw", "error"), [
    ("63C0", PinBlocked), ("6983", PinBlocked), ("6984", PinBlocked),
    ("63C4", InvalidPinError), ("6A80", StatusWordError),
])
def test_verify_answers_with_custom_reference(sw: str, error: type[Exception]) -> None:
    proto, conn = scripted([("00200081", "63C5"), ("0020008104" + b"9999".hex(), sw)])
    with pytest.raises(error):
        PinGuard().verify(proto, _select_ap_pin, b"9999", p2=0x81, name="AP PIN")
    conn.assert_done()


def test_verify_success_with_custom_reference() -> None:
    proto, conn = scripted([("00200081", "63C2"), ("0020008104" + b"9999".hex(), "9000")])
    PinGuard().verify(proto, _select_ap_pin, b"9999", p2=0x81)
    conn.assert_done()


def test_counter_read_error_sends_no_pin() -> None:
    proto, conn = scripted([("00200080", "6986")])
    with pytest.raises(StatusWordError):
        PinGuard().verify(proto, _select_ap_pin, b"1234")
    conn.assert_done()


@pytest.mark.parametrize("pin", [b"", bytes(256)])
def test_pin_length(pin: bytes) -> None:
    proto, conn = scripted([])
    with pytest.raises(ValueError, match="PIN"):
        PinGuard().verify(proto, _select_ap_pin, pin)
    assert conn.sent == []


def test_tries_left() -> None:
    _, jpki, conn = _jpki()
    assert PinGuard().tries_left(jpki.proto, jpki.pin_selector("sign")) == 5
    assert conn.verifies_with_data() == []
