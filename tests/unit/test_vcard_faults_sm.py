"""Issue 6 faults of the virtual card: the tamper man-in-the-middle and the APDU header log.

What a tampered answer does to each read (the flip is the last data byte, XOR FF):
- Type D: the last data byte is the MAC's, so every tampered SM answer fails the terminal's
  MAC check: `IntegrityError`, and nothing of the content is returned. By default the first
  tampered answer is the guarded retry-counter read, so the read fails before any PIN is
  presented; with `tamper_ins=0xB0` the READ BINARY answer is hit after a right PIN.
- Type A: no MAC. READ RECORD 1's last byte is the user ID's check character, so the read
  fails with `CardDataInvalid`; records 2 and 3 (info fields) come back corrupted but well
  formed - nothing on a Type A card can detect that.
- Type C: no MAC either. The last byte of the 33-byte answer is info 3's last byte: the read
  returns a corrupted-but-well-formed record (user ID intact, info 3 altered), no error.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_myna_type_helpers import (
    PIN,
    PROFILES,
    Ap,
    card_tries,
    connect,
    make_ap,
    make_card,
    set_tries,
)
from test_vcard_link import FakeVpcd

from cardap_sim.vcard.card import APDU_LOG_MAX, TypeCSpec, VirtualCard, presents_pin
from cardap_sim.vcard.control import SimControl, SimControlError
from cardap_sim.vcard.errors import CardMute, CardNotPowered
from cardap_sim.vcard.faults import Faults
from cardap_sim.vcard.identity import make_user_id
from cardap_sim.vcard.server import serve
from cardapd.errors import (
    CardDataInvalid,
    IntegrityError,
    InvalidPinError,
    PinBlocked,
    PinGuardRefused,
)
from cardapd.myna.mutual_auth import ApAuthFailed
from cardapd.myna.pin_guard import PinGuard
from cardapd.myna.typea import TypeARecord, TypeASession
from cardapd.myna.typec import TypeCRecord, TypeCSession
from cardapd.myna.typed import TypeDRecord, TypeDSession

A = make_ap("A")
D = make_ap("D")
TYPE_C_AID = bytes.fromhex("D392F00043010001")
TYPE_C_INFO = (b"\x01\x02\x03\x04", b"\xA0\xB0\xC0\xD0", b"\x10\x20\x30\x40")


@pytest.fixture(params=PROFILES)
def card(request: pytest.FixtureRequest) -> VirtualCard:
    c = make_card(str(request.param), A, D)
    c.clear_apdus()  # forget the loading session
    return c


def read_d(card: VirtualCard, *, pin: bytes = PIN, floor: int = 1) -> object:
    """One Type D read through the daemon's session; the record or the raised error."""
    proto, _ = connect(card)
    try:
        return TypeDSession(proto).read(D.aid, D.access_key, pin, PinGuard(floor))
    except Exception as exc:
        return exc


def read_a(card: VirtualCard, *, pin: bytes = PIN, floor: int = 1) -> object:
    """One Type A read through the daemon's session; the record or the raised error."""
    proto, _ = connect(card)
    try:
        return TypeASession(proto).read(A.aid, A.access_key, pin, PinGuard(floor))
    except Exception as exc:
        return exc


def record(ap: Ap) -> TypeARecord:
    return TypeARecord(ap.user_id, ap.info1, ap.info2)


# --- tamper ------------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [{"tamper": 1}, {"tamper": -1},
                                      {"tamper": 1, "tamper_ins": 0xB0},
                                      {"tamper": 1, "tamper_ins": 0x20}])
def test_tampered_type_d_read_is_integrity_error(card: VirtualCard,
                                                 settings: dict[str, Any]) -> None:
    card.faults.update(**settings)
    result = read_d(card)
    assert isinstance(result, IntegrityError)
    assert result.reason == "SM_INTEGRITY_ERROR"
    text = str(result) + repr(result.metadata) + repr(result.args)
    assert D.user_id not in text
    assert card_tries(card, D) == 3  # no try spent, whatever was hit
    if settings["tamper"] == 1:
        assert card.faults.tamper == 0  # spent
        assert read_d(card) == TypeDRecord(D.user_id, D.info1, D.info2)  # the card is intact


def test_default_tamper_hits_the_counter_read_before_any_pin(card: VirtualCard) -> None:
    card.faults.update(tamper=1)
    assert isinstance(read_d(card), IntegrityError)
    log = card.apdu_log
    assert [h.hex().upper() for h, _ in log][-1] == "0C200081"  # the guard's counter read
    assert not any(pin for _, pin in log)


def test_tamper_on_read_binary_after_a_right_pin(card: VirtualCard) -> None:
    card.faults.update(tamper=1, tamper_ins=0xB0)
    assert isinstance(read_d(card), IntegrityError)
    assert sum(pin for _, pin in card.apdu_log) == 1
    assert card_tries(card, D) == 3


def test_handshake_is_spared_unless_named(card: VirtualCard) -> None:
    card.faults.update(tamper=-1, tamper_ins=0x84)  # GET CHALLENGE: RND.ICC flipped
    result = read_d(card)
    assert isinstance(result, ApAuthFailed)
    assert not any(pin for _, pin in card.apdu_log)
    card.faults.clear()
    card.faults.update(tamper=-1, tamper_ins=0xCA)  # nothing of a Type D read
    assert read_d(card) == TypeDRecord(D.user_id, D.info1, D.info2)
    assert card.faults.tamper == -1


def test_tampered_type_a_read(card: VirtualCard) -> None:
    card.faults.update(tamper=1)  # READ RECORD 1: the user ID's check character
    assert isinstance(read_a(card), CardDataInvalid)
    assert card_tries(card, A) == 3
    assert card.faults.tamper == 0
    assert read_a(card) == record(A)


def test_tampered_type_a_info_is_undetectable(card: VirtualCard) -> None:
    proto, link = connect(card)

    def arm_after_record_1(cmd: bytes, resp: bytes) -> bytes:
        if cmd[:4] == bytes.fromhex("00B20104"):
            card.faults.update(tamper=1)  # the next data answer: record 2
        return resp
    link.tamper = arm_after_record_1
    result = TypeASession(proto).read(A.aid, A.access_key, PIN, PinGuard())
    assert result.user_id == A.user_id
    assert result.info2 == A.info2
    assert result.info1 == A.info1[:-1] + bytes((A.info1[-1] ^ 0xFF,))


@pytest.mark.parametrize("profile", PROFILES)
def test_tampered_type_c_read_is_well_formed_but_corrupted(profile: str) -> None:
    uid = make_user_id("0123456789AB")
    card = VirtualCard.create(profile=profile,
                              type_c=[TypeCSpec(TYPE_C_AID, uid, TYPE_C_INFO)])
    card.power_on()
    proto, _ = connect(card)
    session = TypeCSession(proto)
    card.faults.update(tamper=1)
    tampered = session.read(TYPE_C_AID)
    assert tampered.user_id == uid
    assert tampered.info[:2] == TYPE_C_INFO[:2]
    assert tampered.info[2] == b"\x10\x20\x30\xBF"  # 40 ^ FF: no error, wrong content
    assert session.read(TYPE_C_AID) == TypeCRecord(uid, TYPE_C_INFO)
    assert card.faults.tamper == 0


def test_tamper_spares_answers_without_data(card: VirtualCard) -> None:
    card.faults.update(tamper=1)
    assert card.transmit(bytes.fromhex("00A4040C") + bytes((len(A.aid),)) + A.aid) \
        == b"\x90\x00"
    assert card.transmit(bytes.fromhex("00B2010400")) == b"\x69\x82"
    assert card.faults.tamper == 1
    card.reset()  # the ISD answers GET DATA
    cplc = card.transmit(bytes.fromhex("80CA9F7F00"))
    assert card.faults.tamper == 0
    card.faults.update(tamper=0)
    clean = card.transmit(bytes.fromhex("80CA9F7F00"))
    assert cplc[:-3] == clean[:-3]
    assert cplc[-3] == clean[-3] ^ 0xFF
    assert cplc[-2:] == clean[-2:] == b"\x90\x00"


def test_tamper_follows_get_response_to_its_command() -> None:
    c = VirtualCard.create(profile="vendor-a")
    c.power_on()
    c.faults.update(tamper=1, tamper_ins=0xCA)
    assert c.transmit(bytes.fromhex("80CA9F7F"))[0] == 0x61  # no data yet: not spent
    assert c.faults.tamper == 1
    first = c.transmit(bytes.fromhex("00C0000005"))
    assert c.faults.tamper == 0
    c.faults.update(tamper=0)
    c.transmit(bytes.fromhex("80CA9F7F"))
    clean = c.transmit(bytes.fromhex("00C0000005"))
    assert first[:4] == clean[:4]
    assert first[4] == clean[4] ^ 0xFF


@pytest.mark.parametrize("kw", [{"tamper": -2}, {"tamper": "1"}, {"tamper": True},
                                {"tamper_ins": 256}, {"tamper_ins": -1}, {"tamper_ins": True},
                                {"tamper_ins": "B0"}])
def test_tamper_validation(kw: dict[str, object]) -> None:
    faults = Faults()
    with pytest.raises(ValueError, match=next(iter(kw))):
        faults.update(**kw)
    assert faults == Faults()


def test_tamper_status_shape_and_clear() -> None:
    faults = Faults()
    assert "tamper" not in faults.to_json()
    assert "tamper_ins" not in faults.to_json()
    faults.update(tamper=-1, tamper_ins=0)
    assert faults.to_json()["tamper"] == -1
    assert faults.to_json()["tamper_ins"] == 0
    faults.clear()
    assert faults == Faults()


# --- APDU header log ----------------------------------------------------------------------


def test_log_of_a_type_d_read_holds_headers_only(card: VirtualCard) -> None:
    assert read_d(card) == TypeDRecord(D.user_id, D.info1, D.info2)
    headers = card.apdus
    assert all(len(h) == 4 for h in headers)
    assert [h.hex().upper() for h in headers if h[1] != 0xC0] == [
        "00A4040C", "00840000", "00820081", "0C200081", "0C200081", "0CB00000"]
    assert [h.hex().upper() for h, pin in card.apdu_log if pin] == ["0C200081"]
    assert PIN not in b"".join(headers)


def test_log_of_a_type_a_read(card: VirtualCard) -> None:
    assert read_a(card) == record(A)
    log = card.apdu_log
    assert [h.hex().upper() for h, _ in log if h[1] != 0xC0] == [
        "00A4040C", "00840000", "00820081", "00200081", "00200081",
        "00B20104", "00B20204", "00B20304"]
    assert [pin for h, pin in log if h[1] == 0x20] == [False, True]  # counter read, VERIFY


@pytest.mark.parametrize("reader", [read_a, read_d], ids=["A", "D"])
def test_guard_refusal_presents_no_pin(card: VirtualCard, reader: Any) -> None:
    ap = A if reader is read_a else D
    set_tries(card, ap, 1)
    result = reader(card)
    assert isinstance(result, PinGuardRefused)
    assert result.tries_left == 1
    assert sum(1 for h in card.apdus if h[1] == 0x20) == 1  # the counter read only
    assert not any(pin for _, pin in card.apdu_log)
    set_tries(card, ap, 0)
    card.clear_apdus()
    assert isinstance(reader(card), PinBlocked)
    assert not any(pin for _, pin in card.apdu_log)
    assert card_tries(card, ap) == 0


def test_wrong_pin_is_one_presentation(card: VirtualCard) -> None:
    result = read_d(card, pin=b"bad!")
    assert isinstance(result, InvalidPinError)
    assert sum(pin for _, pin in card.apdu_log) == 1
    assert b"bad!" not in b"".join(card.apdus)


def test_presents_pin_on_the_wire() -> None:
    assert presents_pin(bytes.fromhex("00200081") + b"\x04" + PIN)
    assert presents_pin(bytes.fromhex("0020008104") + b"\x00\x00")  # malformed: still sent
    assert not presents_pin(bytes.fromhex("00200081"))  # counter read
    assert not presents_pin(bytes.fromhex("0020008100"))  # counter read with Le
    assert not presents_pin(bytes.fromhex("0C2000810A8E08") + bytes(8))  # SM counter read
    assert presents_pin(bytes.fromhex("0C20008113871101") + bytes(16) + bytes.fromhex("8E08"))
    assert not presents_pin(bytes.fromhex("00B0000004") + PIN)


def test_log_covers_faulted_and_torn_commands_and_is_bounded() -> None:
    c = VirtualCard.create(profile="vendor-a")
    c.power_on()
    c.faults.update(mute=True)
    with pytest.raises(CardMute):
        c.transmit(bytes.fromhex("0020008104") + PIN)
    c.faults.clear()
    c.power_off()
    with pytest.raises(CardNotPowered):
        c.transmit(bytes.fromhex("80CA9F7F00"))
    assert c.apdu_log == [(bytes.fromhex("00200081"), True), (bytes.fromhex("80CA9F7F"), False)]
    c.clear_apdus()
    assert c.apdus == []
    c.power_on()
    for _ in range(APDU_LOG_MAX + 3):
        c._apdus.append((b"\x00\x00\x00\x00", False))  # the bound only
    c.transmit(bytes.fromhex("80CA9F7F00"))
    assert len(c.apdus) == APDU_LOG_MAX
    assert c.apdus[-1] == bytes.fromhex("80CA9F7F")


# --- over the control protocol -----------------------------------------------------------


@pytest.fixture
def vpcd() -> Iterator[FakeVpcd]:
    v = FakeVpcd()
    try:
        yield v
    finally:
        v.close()


@pytest.fixture
def ctl(vpcd: FakeVpcd, tmp_path: Path) -> Iterator[SimControl]:
    control = tmp_path / "ctl.sock"
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=("127.0.0.1", vpcd.port, 1, control, stop),
                              daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while not control.exists():
            assert time.monotonic() < deadline, "control socket never appeared"
            time.sleep(0.01)
        yield SimControl(control)
    finally:
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive()


def raw_request(path: str, obj: dict[str, Any]) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(json.dumps(obj).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            data += sock.recv(65536)
    reply: dict[str, Any] = json.loads(data)
    return reply


def test_control_apdus_tamper_and_clear(ctl: SimControl, vpcd: FakeVpcd,
                                        tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    uid = make_user_id("0123456789AB")
    VirtualCard.create(profile="vendor-a", path=path,
                       type_c=[TypeCSpec(TYPE_C_AID, uid, TYPE_C_INFO)])
    ctl.insert(0, path)
    vpcd.accept()
    vpcd.send(b"\x01")
    assert vpcd.apdu("00A4040C08D392F00043010001") == "9000"
    clean = vpcd.apdu("00B0000021")
    assert vpcd.apdu("00200001" + "08" + "3132333435363738").startswith("6")  # a PIN on the wire
    assert vpcd.apdu("00200001").startswith("6")  # a counter read
    reply = raw_request(ctl.path, {"cmd": "apdus", "slot": 0})
    assert reply == {"ok": True, "apdus": ["00A4040C", "00B00000", "00200001", "00200001"],
                     "pin_verifies": [2]}
    assert "3132333435363738" not in json.dumps(reply)
    assert ctl.apdus(0) == [bytes.fromhex(h) for h in reply["apdus"]]
    assert ctl.pin_verifies(0) == [bytes.fromhex("00200001")]

    assert ctl.fault(0, tamper=1)["faults"]["tamper"] == 1
    assert ctl.status()["slots"][0]["faults"]["tamper"] == 1
    tampered = vpcd.apdu("00B0000021")
    assert tampered[:-6] == clean[:-6]
    assert tampered[-4:] == "9000"
    assert int(tampered[-6:-4], 16) == int(clean[-6:-4], 16) ^ 0xFF
    assert "tamper" not in ctl.status()["slots"][0]["faults"]
    assert vpcd.apdu("00B0000021") == clean
    with pytest.raises(SimControlError, match="tamper_ins"):
        ctl.fault(0, tamper=1, tamper_ins=300)
    assert "tamper" not in ctl.status()["slots"][0]["faults"]  # nothing changed

    assert ctl.clear_apdus(0) == {"ok": True, "cleared": [0]}
    assert ctl.apdus(0) == []
    vpcd.apdu("00B0000021")
    assert ctl.clear_apdus() == {"ok": True, "cleared": [0]}
    assert ctl.apdus(0) == []
    ctl.remove(0)
    with pytest.raises(SimControlError, match="empty"):
        ctl.apdus(0)
    assert ctl.clear_apdus() == {"ok": True, "cleared": []}
