"""ReadUserID of Type A, Type D and custom APs through the real stack: loaded by LoadAP, read
with mutual authentication, the PIN guard and secure messaging; every way it can fail."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cardap.v1 import cards_pb2
from cardap_sim.stack import Stack

from .conftest import expect_error, insert_and_wait
from .secure_helpers import (
    A_AID,
    CUSTOM_AID,
    CUSTOM_USER_ID,
    D_AID,
    WRONG_PIN,
    ap_pin_tries,
    clear_apdus,
    loaded_card,
    new_stack,
    read,
    secrets,
    start_gate,
    verify_headers,
)
from .test_load_basic import audit_ops

A, D, CUSTOM = cards_pb2.AP_TYPE_A, cards_pb2.AP_TYPE_D, cards_pb2.AP_TYPE_CUSTOM


@pytest.fixture
def gstack(tmp_path: Path) -> Iterator[Stack]:
    """A stack with the loading service and the gate's [[read.aps]] configuration."""
    s = new_stack(tmp_path)
    try:
        yield s
    finally:
        s.stop()


def test_reads_a_d_custom(gstack: Stack) -> None:
    card, ids = loaded_card(gstack)
    pin = secrets(gstack, "org-a/org-a-cert-a")[1].encode()
    a = read(gstack, A, A_AID, pin)
    assert (a.user_id, a.cached, a.aid) == (ids["A"], False, A_AID)
    assert a.info[0].startswith(b"ORG-A")
    d = read(gstack, D, D_AID)  # system PIN from the configuration
    assert d.user_id == ids["D"]
    c = read(gstack, CUSTOM, CUSTOM_AID)
    assert c.user_id == CUSTOM_USER_ID == ids["custom"]
    for r in (a, d, c):
        assert r.status == cards_pb2.USER_ID_STATUS_IN_OPERATION
        assert not r.feed_stale
    assert ap_pin_tries(card, A_AID) == 3
    ops = audit_ops(gstack)
    for op in ("read_user_id_a", "read_user_id_d", "read_user_id_custom"):
        assert (op, "ok") in ops
    logs = "\n".join(gstack.logs().values()).lower()
    for ref in ("org-a/org-a-cert-a", "org-a/org-a-records-d"):
        assert secrets(gstack, ref)[0] not in logs  # no access key in any log
    assert pin.hex() not in logs  # nor the PIN as APDU bytes
    details = _audit_details(gstack)
    assert details
    assert not any("pin" in d for row in details for d in json.loads(row))


def test_wrong_pin_then_guard_refuses(gstack: Stack) -> None:
    card, _ = loaded_card(gstack)
    err = expect_error(lambda: read(gstack, A, A_AID, WRONG_PIN),
                       grpc.StatusCode.UNAUTHENTICATED, "PIN_WRONG")
    assert err.metadata["tries_left"] == "2"
    assert ap_pin_tries(card, A_AID) == 2
    err = expect_error(lambda: read(gstack, A, A_AID, WRONG_PIN),
                       grpc.StatusCode.UNAUTHENTICATED, "PIN_WRONG")
    assert err.metadata["tries_left"] == "1"
    assert ap_pin_tries(card, A_AID) == 1
    # One try left (= the floor): refused before any VERIFY with a PIN, even the right one.
    right = secrets(gstack, "org-a/org-a-cert-a")[1].encode()
    clear_apdus(gstack)
    for pin in (WRONG_PIN, right):
        err = expect_error(lambda p=pin: read(gstack, A, A_AID, p),  # type: ignore[misc]
                           grpc.StatusCode.FAILED_PRECONDITION, "PIN_TRIES_TOO_FEW")
        assert err.metadata["tries_left"] == "1"
    assert ap_pin_tries(card, A_AID) == 1
    verifies = verify_headers(gstack)
    if verifies is not None:  # only the two retry-counter reads (VERIFY without data)
        assert verifies == 2
    assert ("read_user_id_a", "error") in audit_ops(gstack)


def test_blocked_pin_is_clear_and_sends_no_verify(gstack: Stack) -> None:
    card, _ = loaded_card(gstack)
    gstack.control.remove(0)
    data = json.loads(card.read_text())
    _set_tries(data, A_AID, 0)
    card.write_text(json.dumps(data))
    insert_and_wait(gstack, 0, card)
    clear_apdus(gstack)
    err = expect_error(lambda: read(gstack, A, A_AID, b"1234"),
                       grpc.StatusCode.FAILED_PRECONDITION, "PIN_BLOCKED")
    assert err.metadata["tries_left"] == "0"
    assert ap_pin_tries(card, A_AID) == 0
    verifies = verify_headers(gstack)
    if verifies is not None:
        assert verifies == 1  # the counter read only


def _audit_details(stack: Stack) -> list[str]:
    db = sqlite3.connect(f"file:{stack.dir / 'state' / 'audit.db'}?mode=ro", uri=True)
    try:
        return [str(r[0]) for r in db.execute(
            "SELECT detail FROM audit WHERE operation LIKE 'read_user_id%'")]
    finally:
        db.close()


def _set_tries(node: object, aid: str, tries: int) -> None:
    if isinstance(node, dict):
        if node.get("aid") == aid and isinstance(node.get("pin"), dict):
            node["pin"]["tries"] = tries
        for v in node.values():
            _set_tries(v, aid, tries)
    elif isinstance(node, list):
        for v in node:
            _set_tries(v, aid, tries)


def test_wrong_access_key_fails_cleanly(gstack: Stack) -> None:
    card, _ = loaded_card(gstack)
    start_gate(gstack, a_key="00" * 16)
    err = expect_error(lambda: read(gstack, A, A_AID, b"1234"),
                       grpc.StatusCode.FAILED_PRECONDITION, "AP_AUTH_FAILED")
    assert "access key" in err.message
    assert ap_pin_tries(card, A_AID) == 3  # no PIN was tried


def test_card_pulled_between_authentication_and_read(gstack: Stack) -> None:
    card, _ = loaded_card(gstack)
    # Type D: SELECT, GET CHALLENGE, MUTUAL AUTHENTICATE answered; the card then vanishes.
    gstack.control.fault(0, tear_after=3)
    expect_error(lambda: read(gstack, D, D_AID), grpc.StatusCode.ABORTED, "CARD_REMOVED")
    assert ap_pin_tries(card, D_AID) == 3


def test_unconfigured_and_mismatched(gstack: Stack) -> None:
    loaded_card(gstack)
    expect_error(lambda: read(gstack, A, "D392F000410A00FF", b"1234"),
                 grpc.StatusCode.FAILED_PRECONDITION, "AP_NOT_CONFIGURED")
    expect_error(lambda: read(gstack, A, D_AID, b"1234"),
                 grpc.StatusCode.INVALID_ARGUMENT, "AP_TYPE_MISMATCH")
    expect_error(lambda: read(gstack, A, A_AID), grpc.StatusCode.INVALID_ARGUMENT,
                 "PIN_REQUIRED")
    expect_error(lambda: read(gstack, D, D_AID, b"1234"), grpc.StatusCode.INVALID_ARGUMENT,
                 "INVALID_ARGUMENT")


def test_tampered_type_d_response_is_an_integrity_error(gstack: Stack) -> None:
    card, ids = loaded_card(gstack)
    gstack.control.fault(0, tamper=1, tamper_ins=0xB0)  # the SM READ BINARY answer
    err = expect_error(lambda: read(gstack, D, D_AID), grpc.StatusCode.DATA_LOSS,
                       "SM_INTEGRITY_ERROR")
    assert ids["D"] not in err.message
    assert ap_pin_tries(card, D_AID) == 3  # the PIN was right; nothing was spent
    assert read(gstack, D, D_AID).user_id == ids["D"]  # the next session is clean
