"""Revocation through the real stack: the loading service's feed, SyncRevocation, local
suspension (SetUserIDStatus) and the stale-feed policies, seen in ReadUserID."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cardap.v1 import cards_pb2, terminal_pb2
from cardap_sim.stack import Stack
from cardap_sim.vcard.identity import fake_my_number

from .conftest import expect_error
from .secure_helpers import (
    A_AID,
    C_AID,
    CUSTOM_AID,
    D_AID,
    ap_pin_tries,
    call,
    loaded_card,
    new_stack,
    read,
    secrets,
    start_gate,
)
from .test_load_basic import audit_ops

A, C, D, CUSTOM = (cards_pb2.AP_TYPE_A, cards_pb2.AP_TYPE_C, cards_pb2.AP_TYPE_D,
                   cards_pb2.AP_TYPE_CUSTOM)
S = cards_pb2


@pytest.fixture
def gstack(tmp_path: Path) -> Iterator[Stack]:
    """A stack with the loading service and the gate's [[read.aps]] configuration."""
    s = new_stack(tmp_path)
    try:
        yield s
    finally:
        s.stop()


def publish(stack: Stack, entries: list[tuple[str, str, str]]) -> None:
    """Restart the loading service with org-a's feed = `entries` (aid, user ID, status)."""
    path = stack.dir / "revocations.json"
    # A feed only grows: keep the dev feed's three entries first, as a real feed would.
    dev = [(C_AID, "000000000001C", "in_operation"), (C_AID, "000000000002Q", "suspended"),
           (C_AID, "0000000000032", "abolished")]
    path.write_text(json.dumps({"org-a": [{"aid": a, "user_id": u, "status": st}
                                          for a, u, st in dev + entries]}))
    stack.revocations = path
    stack.stop_loadsvc()
    stack.start_loadsvc()


def sync(stack: Stack) -> terminal_pb2.SyncRevocationResponse:
    """SyncRevocation on the ops socket."""
    return call(stack, "ops", "SyncRevocation",  # type: ignore[no-any-return]
                terminal_pb2.SyncRevocationRequest())


def set_status(stack: Stack, aid: str, user_id: str, status: int,
               organisation: str = "org-a") -> None:
    """SetUserIDStatus on the ops socket."""
    call(stack, "ops", "SetUserIDStatus", terminal_pb2.SetUserIDStatusRequest(
        organisation=organisation, aid=aid, user_id=user_id, status=status,
        reason="test"))


def test_feed_and_local_suspension(gstack: Stack) -> None:
    _, ids = loaded_card(gstack)
    pin = secrets(gstack, "org-a/org-a-cert-a")[1].encode()
    publish(gstack, [(A_AID, ids["A"], "suspended"), (D_AID, ids["D"], "abolished"),
                     (C_AID, ids["C"], "in_operation")])
    synced = sync(gstack)
    assert synced.entries == 3
    assert synced.feed_time.seconds > 0
    a = read(gstack, A, A_AID, pin)
    assert (a.user_id, a.status) == (ids["A"], S.USER_ID_STATUS_SUSPENDED)
    assert a.feed_age_s < 60
    assert not a.feed_stale
    assert read(gstack, D, D_AID).status == S.USER_ID_STATUS_ABOLISHED
    assert read(gstack, C, C_AID, fresh=True).status == S.USER_ID_STATUS_IN_OPERATION
    assert read(gstack, CUSTOM, CUSTOM_AID).status == S.USER_ID_STATUS_IN_OPERATION
    # A local suspension shows at once, survives a restart, and a resume lifts it.
    set_status(gstack, CUSTOM_AID, ids["custom"], S.USER_ID_STATUS_SUSPENDED)
    assert read(gstack, CUSTOM, CUSTOM_AID).status == S.USER_ID_STATUS_SUSPENDED
    start_gate(gstack)
    assert read(gstack, CUSTOM, CUSTOM_AID).status == S.USER_ID_STATUS_SUSPENDED
    set_status(gstack, CUSTOM_AID, ids["custom"], S.USER_ID_STATUS_IN_OPERATION)
    assert read(gstack, CUSTOM, CUSTOM_AID).status == S.USER_ID_STATUS_IN_OPERATION
    # A local suspension never hides an abolition.
    set_status(gstack, D_AID, ids["D"], S.USER_ID_STATUS_SUSPENDED)
    assert read(gstack, D, D_AID).status == S.USER_ID_STATUS_ABOLISHED
    # An incremental pull picks up a later change.
    publish(gstack, [(A_AID, ids["A"], "suspended"), (D_AID, ids["D"], "abolished"),
                     (C_AID, ids["C"], "in_operation"), (A_AID, ids["A"], "in_operation")])
    sync(gstack)
    assert read(gstack, A, A_AID, pin).status == S.USER_ID_STATUS_IN_OPERATION
    ops = audit_ops(gstack)
    assert ("set_user_id_status", "ok") in ops
    assert ("revocation_sync", "ok") in ops


def test_set_status_refusals(gstack: Stack) -> None:
    # a user ID is 13 printable bytes (or 0x + 26 hex digits)
    for not_an_id in ("NOT-AN-ID", "FOURTEEN-CHARS", "TAB\tINSIDE-12"):
        expect_error(lambda u=not_an_id: set_status(gstack, A_AID, u, S.USER_ID_STATUS_SUSPENDED),
                     grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    expect_error(lambda: set_status(gstack, A_AID, "000000000001C", S.USER_ID_STATUS_ABOLISHED),
                 grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    expect_error(lambda: set_status(gstack, "", "000000000001C", S.USER_ID_STATUS_SUSPENDED),
                 grpc.StatusCode.INVALID_ARGUMENT, "AID_REQUIRED")
    # An AID no [[read.aps]] names is the client's text: one holding a My Number is refused
    # before anything is stored (D59); a configured AID is the configuration's, never refused.
    typed = f"D{fake_my_number()}A"
    err = expect_error(lambda: set_status(gstack, typed, "000000000001C",
                                          S.USER_ID_STATUS_SUSPENDED),
                       grpc.StatusCode.INVALID_ARGUMENT, "MY_NUMBER_REFUSED")
    assert err.metadata["field"] == "aid"
    assert typed[1:13] not in err.message
    db = sqlite3.connect(f"file:{gstack.dir / 'state' / 'revocation.db'}?mode=ro", uri=True)
    try:
        assert db.execute("SELECT count(*) FROM local WHERE aid = ?", (typed,)).fetchone() \
            == (0,)
    finally:
        db.close()
    expect_error(lambda: call(gstack, "gate", "SetUserIDStatus",
                              terminal_pb2.SetUserIDStatusRequest()),
                 grpc.StatusCode.PERMISSION_DENIED, "WRONG_ROLE")


def test_service_down_sync_is_unavailable(gstack: Stack) -> None:
    gstack.stop_loadsvc()
    expect_error(lambda: sync(gstack), grpc.StatusCode.UNAVAILABLE,
                 "LOADING_SERVICE_UNAVAILABLE")
    assert ("revocation_sync", "error") in audit_ops(gstack)


def test_sync_without_an_organisation_to_read_for(tmp_path: Path) -> None:
    """A loading service but no [[read.aps]]: no organisation's feed to pull. The refusal
    says so (in the caller's language too) and is audited."""
    stack = Stack(tmp_path / "s", loading=True)
    try:
        stack.start()
        err = expect_error(lambda: sync(stack), grpc.StatusCode.INVALID_ARGUMENT,
                           "NO_ORGANISATION")
        assert "[[read.aps]]" in err.message
        ja = expect_error(lambda: call(stack, "ops", "SyncRevocation",
                                       terminal_pb2.SyncRevocationRequest(),
                                       metadata=[("accept-language", "ja")]),
                          grpc.StatusCode.INVALID_ARGUMENT, "NO_ORGANISATION")
        assert ja.locale == "ja"
        assert ja.localized.startswith("この端末ではどの団体のカードAPも読み取りません"), \
            ja.localized
        assert audit_ops(stack)[-2:] == [("revocation_sync", "error")] * 2
    finally:
        stack.stop()


def test_stale_feed_deny(gstack: Stack) -> None:
    card, ids = loaded_card(gstack)
    start_gate(gstack, revocation='[revocation]\nmax_age_s = 5\nstale_policy = "deny"\n')
    sync(gstack)
    assert read(gstack, D, D_AID).user_id == ids["D"]
    time.sleep(5.5)  # past max_age_s (5 s: a fresh read on a busy machine stays fresh)
    before = gstack.control.status()["slots"][0]["apdu_count"]
    err = expect_error(lambda: read(gstack, D, D_AID), grpc.StatusCode.FAILED_PRECONDITION,
                       "REVOCATION_FEED_STALE")
    assert int(err.metadata["feed_age_s"]) >= 5
    assert gstack.control.status()["slots"][0]["apdu_count"] == before  # card untouched
    assert ap_pin_tries(card, D_AID) == 3
    sync(gstack)
    assert read(gstack, D, D_AID).user_id == ids["D"]


def test_stale_feed_allow_with_warning(gstack: Stack) -> None:
    _, ids = loaded_card(gstack)
    start_gate(gstack, revocation='[revocation]\nmax_age_s = 5\n'
                                  'stale_policy = "allow_with_warning"\n')
    sync(gstack)
    fresh = read(gstack, D, D_AID)
    assert (fresh.feed_stale, fresh.warning) == (False, "")
    time.sleep(5.5)  # past max_age_s (5 s: a fresh read on a busy machine stays fresh)
    stale = read(gstack, D, D_AID)
    assert stale.user_id == ids["D"]
    assert stale.feed_stale
    assert stale.feed_age_s >= 5
    assert "revocation feed" in stale.warning
    assert stale.status == S.USER_ID_STATUS_IN_OPERATION
