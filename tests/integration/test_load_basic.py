"""LoadAp / DeleteAp / ListCardAps through the real stack: daemon, loading service, card."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cardap.client import CardapClientError
from cardap.v1 import cards_pb2, terminal_pb2, terminal_pb2_grpc
from cardap_sim.stack import Stack
from cardap_sim.vcard.identity import fake_my_number, validate_user_id

from .conftest import client, expect_error, insert_and_wait, wait_event

STAFF_C = "org-a-staff-c"
STAFF_C_AID = "D392F000430A0001"
SESSION = [("cardap-session", "test:org-a:op-1")]


@pytest.fixture
def lstack(tmp_path: Path) -> Iterator[Stack]:
    """A stack with the loading service and the TEST-ONLY operator sessions."""
    s = Stack(tmp_path / "stack", loading=True, test_sessions=True)
    try:
        s.start()
        yield s
    finally:
        s.stop()


def stub(stack: Stack, role: str = "kiosk") -> tuple[grpc.Channel, terminal_pb2_grpc.TerminalStub]:
    ch = grpc.insecure_channel(f"unix://{stack.socket(role)}")
    return ch, terminal_pb2_grpc.TerminalStub(ch)


def load(stack: Stack, ap_id: str, session: list[tuple[str, str]] | None = None,
         role: str = "kiosk") -> list[terminal_pb2.LoadApEvent]:
    ch, t = stub(stack, role)
    with ch:
        try:
            return list(t.LoadAp(terminal_pb2.LoadApRequest(ap_id=ap_id),
                                 metadata=SESSION if session is None else session, timeout=60))
        except grpc.RpcError as exc:
            raise CardapClientError.from_rpc_error(exc) from None


def delete(stack: Stack, aid: str, reason: int = terminal_pb2.DELETE_REASON_HOLDER_REQUEST,
           reason_detail: str = "") -> terminal_pb2.DeleteApResponse:
    ch, t = stub(stack)
    with ch:
        try:
            return t.DeleteAp(terminal_pb2.DeleteApRequest(  # type: ignore[arg-type]
                aid=aid, reason=reason, reason_detail=reason_detail), metadata=SESSION,
                timeout=60)
        except grpc.RpcError as exc:
            raise CardapClientError.from_rpc_error(exc) from None


def _audit(stack: Stack, sql: str) -> list[tuple[str, ...]]:
    db = sqlite3.connect(f"file:{stack.dir / 'state' / 'audit.db'}?mode=ro", uri=True)
    try:
        return [tuple(r) for r in db.execute(sql).fetchall()]
    finally:
        db.close()


def audit_ops(stack: Stack) -> list[tuple[str, ...]]:
    """(operation, result) of every audit row."""
    return _audit(stack, "SELECT operation, result FROM audit ORDER BY seq")


def audit_actors(stack: Stack) -> list[str]:
    """The actor of every audit row."""
    return [r[0] for r in _audit(stack, "SELECT actor FROM audit")]


def test_load_read_delete(lstack: Stack) -> None:
    insert_and_wait(lstack, 0, lstack.demo_card())
    events = load(lstack, STAFF_C)
    progress = [e.progress for e in events if e.HasField("progress")]
    results = [e.result for e in events if e.HasField("result")]
    assert progress
    assert progress[0].phase == terminal_pb2.LOAD_PHASE_CONNECTING
    assert progress[-1].phase == terminal_pb2.LOAD_PHASE_DONE
    assert [p.percent for p in progress] == sorted(p.percent for p in progress)
    assert len(results) == 1
    assert events[-1].HasField("result")
    res = results[0]
    assert (res.ok, res.ap_id, res.aid) == (True, STAFF_C, STAFF_C_AID)
    assert validate_user_id(res.user_id)
    assert 0 < res.free_bytes < 32768
    with client(lstack) as gate:
        read = gate.read_user_id(aid=STAFF_C_AID, fresh=True)
    assert (read.user_id, read.cached) == (res.user_id, False)
    ch, t = stub(lstack, "ops")
    with ch:
        listed = t.ListCardAps(terminal_pb2.ListCardApsRequest(), timeout=30,
                               metadata=SESSION)
    assert STAFF_C_AID in [a.aid for a in listed.aps]
    assert listed.free_bytes["extended"] == res.free_bytes
    first = delete(lstack, STAFF_C_AID)
    assert first.outcome == "DELETED"
    assert first.free_bytes == 32768
    assert delete(lstack, STAFF_C_AID).outcome == "ALREADY_ABSENT"
    with client(lstack) as gate:
        expect_error(lambda: gate.read_user_id(aid=STAFF_C_AID, fresh=True),
                     grpc.StatusCode.NOT_FOUND, "AP_NOT_FOUND")
    ops = audit_ops(lstack)
    for op in ("load_started", "load", "delete_started", "delete"):
        assert (op, "ok") in ops
    assert any(actor == "kiosk:org-a/op-1" for actor in audit_actors(lstack))


def test_delete_keeps_its_reason(lstack: Stack) -> None:
    insert_and_wait(lstack, 0, lstack.demo_card())
    load(lstack, STAFF_C)
    R = terminal_pb2
    for reason, detail, code in (
            (R.DELETE_REASON_UNSPECIFIED, "", "DELETE_REASON_REQUIRED"),
            (R.DELETE_REASON_OTHER, "", "DELETE_REASON_REQUIRED"),
            (R.DELETE_REASON_OTHER, "x" * 257, "INVALID_ARGUMENT"),
            (R.DELETE_REASON_OTHER, f"form {fake_my_number()}", "MY_NUMBER_REFUSED")):
        expect_error(lambda r=reason, d=detail: delete(lstack, STAFF_C_AID, r, d),
                     grpc.StatusCode.INVALID_ARGUMENT, code)
    assert delete(lstack, STAFF_C_AID, R.DELETE_REASON_CARD_RENEWAL).outcome == "DELETED"
    load(lstack, STAFF_C)
    assert delete(lstack, STAFF_C_AID, R.DELETE_REASON_OTHER,
                  "holder moved abroad").outcome == "DELETED"
    rows = _audit(lstack, "SELECT operation, result, detail FROM audit WHERE operation IN "
                          "('delete_started', 'delete') ORDER BY seq")
    reasons = [(op, result, json.loads(d).get("delete_reason"), json.loads(d).get(
        "reason_detail")) for op, result, d in rows]
    assert reasons[-4:] == [
        ("delete_started", "ok", "card_renewal", None), ("delete", "ok", "card_renewal", None),
        ("delete_started", "ok", "other", "holder moved abroad"),
        ("delete", "ok", "other", "holder moved abroad")]
    assert not any(r[0] == "delete" and r[1] == "error" for r in reasons[:-4] if r[2]), \
        "a refused request is refused before anything is recorded as a deletion"


def test_an_aid_only_the_client_names_is_checked_like_its_text(lstack: Stack) -> None:
    """An AID no configuration, catalogue or card names is the client's text (D59): shaped
    like a My Number it is refused, and the audit row withholds it."""
    insert_and_wait(lstack, 0, lstack.demo_card())
    number = fake_my_number()
    typed = f"D{number}A"
    err = expect_error(lambda: delete(lstack, typed, terminal_pb2.DELETE_REASON_HOLDER_REQUEST),
                       grpc.StatusCode.INVALID_ARGUMENT, "MY_NUMBER_REFUSED")
    assert err.metadata["field"] == "aid"
    with client(lstack) as gate:
        err = expect_error(lambda: gate.read_user_id(aid=typed, fresh=True),
                           grpc.StatusCode.INVALID_ARGUMENT, "MY_NUMBER_REFUSED")
    assert err.metadata["field"] == "aid"
    [(detail,)] = _audit(lstack, "SELECT detail FROM audit WHERE operation = 'delete' "
                                 "AND result = 'error'")
    assert json.loads(detail)["aid"] == "(withheld)"
    rows = _audit(lstack, "SELECT * FROM audit")
    assert not any(number in str(value) for row in rows for value in row)


def test_second_load_already_exists(lstack: Stack) -> None:
    insert_and_wait(lstack, 0, lstack.demo_card())
    load(lstack, STAFF_C)
    ch, t = stub(lstack)
    seen: list[terminal_pb2.LoadAPEvent] = []
    with ch:
        call = t.LoadAP(terminal_pb2.LoadAPRequest(ap_id=STAFF_C),
                        metadata=[*SESSION, ("accept-language", "ja")], timeout=60)
        with pytest.raises(grpc.RpcError) as raised:
            seen.extend(call)
    err = CardapClientError.from_rpc_error(raised.value)
    assert (err.code, err.reason) == (grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS")
    assert err.metadata["aid"] == STAFF_C_AID
    assert err.metadata["ap_id"] == STAFF_C
    assert seen == [], "the instance answers SELECT: refused before any progress"
    assert err.locale == "ja"
    assert "すでにカードに搭載されています" in err.localized, err.localized
    assert "already on the card" in err.message  # status.message stays English


def test_refusals(lstack: Stack) -> None:
    insert_and_wait(lstack, 0, lstack.demo_card())
    expect_error(lambda: load(lstack, STAFF_C, session=[]), grpc.StatusCode.UNAUTHENTICATED,
                 "NO_OPERATOR_SESSION")
    expect_error(lambda: load(lstack, STAFF_C, role="gate"), grpc.StatusCode.PERMISSION_DENIED,
                 "WRONG_ROLE")
    unknown = expect_error(lambda: load(lstack, "org-b-door-c"), grpc.StatusCode.NOT_FOUND,
                           "UNKNOWN_AP")  # another organisation's AP is not in this catalogue
    assert unknown.metadata["ap_id"] == "org-b-door-c"
    expect_error(lambda: load(lstack, STAFF_C, session=[("cardap-session",
                                                         "test:org-a:op-2:delete")]),
                 grpc.StatusCode.PERMISSION_DENIED, "RIGHT_MISSING")
    ch, t = stub(lstack)
    with ch:
        listed = t.ListCardAps(terminal_pb2.ListCardApsRequest(), timeout=30,
                               metadata=SESSION)
    assert STAFF_C_AID not in [a.aid for a in listed.aps]


def test_service_down_is_unavailable_and_card_untouched(lstack: Stack) -> None:
    insert_and_wait(lstack, 0, lstack.demo_card())
    lstack.stop_loadsvc()
    expect_error(lambda: load(lstack, STAFF_C), grpc.StatusCode.UNAVAILABLE,
                 "LOADING_SERVICE_UNAVAILABLE")


def test_production_entry_point_refuses_test_tokens(tmp_path: Path) -> None:
    s = Stack(tmp_path / "stack", loading=True, test_sessions=False)
    try:
        s.start()
        insert_and_wait(s, 0, s.demo_card())
        expect_error(lambda: load(s, STAFF_C), grpc.StatusCode.UNAUTHENTICATED,
                     "SESSION_UNKNOWN")  # a test token is no roster session
        expect_error(lambda: load(s, STAFF_C, session=[]), grpc.StatusCode.UNAUTHENTICATED,
                     "NO_OPERATOR_SESSION")
    finally:
        s.stop()


def test_pulled_mid_load_is_aborted_then_reconciled(lstack: Stack) -> None:
    card = lstack.demo_card()
    insert_and_wait(lstack, 0, card)
    lstack.control.fault(0, tear_after=9)  # inside the LOAD blocks of batch 2
    err = expect_error(lambda: load(lstack, STAFF_C), grpc.StatusCode.ABORTED, "CARD_REMOVED")
    assert err.message
    with client(lstack) as gate:
        events = gate.watch(timeout=30)
        wait_event(events, cards_pb2.CARD_EVENT_KIND_SNAPSHOT_END)
        lstack.control.remove(0)
        lstack.control.insert(0, card)
        wait_event(events, cards_pb2.CARD_EVENT_KIND_CARD_INSERTED)
        told = wait_event(events, cards_pb2.CARD_EVENT_KIND_CARD_INSERTED, 20)
    assert told.detail.startswith("reconciled:"), told.detail
    ch, t = stub(lstack)
    with ch:
        listed = t.ListCardAps(terminal_pb2.ListCardApsRequest(), timeout=30,
                               metadata=SESSION)
    assert STAFF_C_AID not in [a.aid for a in listed.aps]
    assert listed.free_bytes["extended"] == 32768
    ops = audit_ops(lstack)
    assert ("load", "error") in ops
    assert ("reconcile", "ok") in ops
    # and the AP loads cleanly afterwards
    assert load(lstack, STAFF_C)[-1].result.ok
