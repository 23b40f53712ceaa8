"""Operator login through the real stack: roster, real fprintd (virtual_image), sessions, audit."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from cardap.client import CardapClientError
from cardap.v1 import operators_pb2, terminal_pb2, terminal_pb2_grpc
from cardap_sim.biometric import GreyImage, nist_print, variants
from cardap_sim.stack import Stack

from .conftest import expect_error, insert_and_wait

ORG = "org-a"
STAFF_C = "org-a-staff-c"
PASSWORD = "correct horse battery"


def rpc(stack: Stack, role: str, method: str, request: Any, token: str = "",
        timeout: float = 30) -> Any:
    """Call a unary or server-streaming method (streams: the list of items)."""
    meta = [("cardap-session", token)] if token else []
    with grpc.insecure_channel(f"unix://{stack.socket(role)}") as ch:
        fn = getattr(terminal_pb2_grpc.TerminalStub(ch), method)
        try:
            out = fn(request, metadata=meta, timeout=timeout)
            return out if hasattr(out, "ListFields") else list(out)
        except grpc.RpcError as exc:
            raise CardapClientError.from_rpc_error(exc) from None


def login(stack: Stack, operator_id: str, role: str = "kiosk", *,
          images: list[GreyImage] | None = None, password: str | None = None,
          timeout_s: int = 10) -> tuple[list[str], str]:
    """Log in (finger: present `images` at each PLACE_FINGER); (prompt codes, token)."""
    method = (operators_pb2.AUTH_METHOD_PASSWORD if password is not None
              else operators_pb2.AUTH_METHOD_FINGERPRINT)
    start = terminal_pb2.AuthenticateRequest(start=terminal_pb2.AuthenticateStart(
        organisation=ORG, operator_id=operator_id, method=method, timeout_s=timeout_s))
    ready = threading.Event()

    def requests() -> Iterator[terminal_pb2.AuthenticateRequest]:
        yield start
        if password is not None:
            ready.wait(20)
            yield terminal_pb2.AuthenticateRequest(password=password)
        ready.wait(30)

    queue = list(images or [])
    codes: list[str] = []
    with grpc.insecure_channel(f"unix://{stack.socket(role)}") as ch:
        try:
            for ev in terminal_pb2_grpc.TerminalStub(ch).AuthenticateOperator(
                    requests(), timeout=40):
                if ev.HasField("session"):
                    ready.set()
                    return codes, ev.session.token
                codes.append(ev.prompt.code)
                if ev.prompt.code == "ENTER_PASSWORD":
                    ready.set()
                if ev.prompt.code == "PLACE_FINGER" and queue:
                    stack.bio.sensor.image(queue.pop(0))
        except grpc.RpcError as exc:
            ready.set()
            err = CardapClientError.from_rpc_error(exc)
            err.codes = codes  # type: ignore[attr-defined]
            raise err from None
    raise AssertionError(f"no session; prompts {codes}")


def enrol(stack: Stack, operator_id: str, images: list[GreyImage], token: str = "") -> None:
    """Enrol the right index finger from `images` (one per PLACE_FINGER)."""
    queue = list(images)
    meta = (("cardap-session", token),) if token else ()
    with grpc.insecure_channel(f"unix://{stack.socket('ops')}") as ch:
        call = terminal_pb2_grpc.TerminalStub(ch).EnrollFinger(
            terminal_pb2.EnrollFingerRequest(organisation=ORG, operator_id=operator_id,
                                             finger="right-index-finger"),
            metadata=meta, timeout=60)
        done = False
        for ev in call:
            if ev.HasField("completed"):
                done = True
            elif ev.prompt.code == "PLACE_FINGER" and queue:
                stack.bio.sensor.image(queue.pop(0))
        assert done


def audit_rows(stack: Stack, operation: str) -> list[tuple[str, str, str]]:
    """(actor, result, reason) of the rows of `operation`."""
    db = sqlite3.connect(f"file:{stack.dir / 'state' / 'audit.db'}?mode=ro", uri=True)
    try:
        return [tuple(r) for r in db.execute(
            "SELECT actor, result, coalesce(reason, '') FROM audit WHERE operation = ? "
            "ORDER BY seq", (operation,))]
    finally:
        db.close()


@pytest.fixture(scope="module")
def bstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack with loading and real fprintd; admin-1 (arch) and op-1 (loop-right) enrolled."""
    s = Stack(tmp_path_factory.mktemp("bio") / "s", loading=True, biometric=True)
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def prints() -> dict[str, list[GreyImage]]:
    return {n: variants(nist_print(n)) for n in ("arch", "loop-right", "whorl")}


@pytest.fixture(scope="module")
def admin(bstack: Stack, prints: dict[str, list[GreyImage]]) -> str:
    """Bootstrap admin-1 (enrolled before appointment), log in on ops; its token."""
    add = terminal_pb2.AddOperatorRequest(organisation=ORG, operator_id="admin-1",
                                          display_name="Admin", rights=[operators_pb2.RIGHT_LOAD])
    rpc(bstack, "ops", "AddOperator", add)
    enrol(bstack, "admin-1", prints["arch"][:8])
    rpc(bstack, "ops", "AppointAdministrator", terminal_pb2.AppointAdministratorRequest(
        organisation=ORG, operator_id="admin-1"))
    _, token = login(bstack, "admin-1", "ops", images=prints["arch"][6:])
    add = terminal_pb2.AddOperatorRequest(organisation=ORG, operator_id="op-1",
                                          display_name="Operator 1",
                                          rights=[operators_pb2.RIGHT_LOAD,
                                                  operators_pb2.RIGHT_DELETE])
    rpc(bstack, "ops", "AddOperator", add, token)
    enrol(bstack, "op-1", prints["loop-right"][:8], token)
    return token


def test_bootstrap_closes_after_appointment(bstack: Stack, admin: str) -> None:
    add = terminal_pb2.AddOperatorRequest(organisation=ORG, operator_id="op-x",
                                          display_name="X", rights=[])
    expect_error(lambda: rpc(bstack, "ops", "AddOperator", add),
                 grpc.StatusCode.PERMISSION_DENIED, "ADMINISTRATOR_REQUIRED")
    ops = rpc(bstack, "ops", "ListOperators", terminal_pb2.ListOperatorsRequest())
    byid = {o.operator_id: o for o in ops.operators}
    assert byid["admin-1"].administrator
    assert byid["op-1"].enrolled_fingers == ["right-index-finger"]
    assert ("ops:org-a/admin-1", "ok", "") in audit_rows(bstack, "roster_add_operator")


def test_finger_login_then_load(bstack: Stack, admin: str,
                                prints: dict[str, list[GreyImage]]) -> None:
    insert_and_wait(bstack, 0, bstack.demo_card())
    expect_error(lambda: list(rpc(bstack, "kiosk", "LoadAP",
                                  terminal_pb2.LoadAPRequest(ap_id=STAFF_C))),
                 grpc.StatusCode.UNAUTHENTICATED, "NO_OPERATOR_SESSION")
    codes, token = login(bstack, "op-1", images=prints["loop-right"][6:])
    assert codes[0] == "PLACE_FINGER"
    assert "MATCHED" in codes
    events = rpc(bstack, "kiosk", "LoadAP", terminal_pb2.LoadAPRequest(ap_id=STAFF_C), token,
                 timeout=60)
    assert any(e.HasField("result") and e.result.ok for e in events)
    assert ("kiosk:org-a/op-1", "ok", "") in audit_rows(bstack, "operator_login")
    # the kiosk token is not valid on another socket
    expect_error(lambda: rpc(bstack, "ops", "EndOperatorSession",
                             terminal_pb2.EndOperatorSessionRequest(token=token)),
                 grpc.StatusCode.UNAUTHENTICATED, "SESSION_WRONG_CONNECTION")
    rpc(bstack, "kiosk", "EndOperatorSession", terminal_pb2.EndOperatorSessionRequest(token=token))
    expect_error(lambda: rpc(bstack, "kiosk", "LoadAP",
                             terminal_pb2.LoadAPRequest(ap_id=STAFF_C), token),
                 grpc.StatusCode.UNAUTHENTICATED, "SESSION_UNKNOWN")
    report = rpc(bstack, "ops", "GetYearlyReport", terminal_pb2.GetYearlyReportRequest(
        year=datetime.now(UTC).astimezone(timezone_jst()).year))
    org = {o.organisation: o for o in report.organisations}[ORG]
    assert org.loads >= 1
    assert org.charge_yen == 10 * org.loads
    assert report.audit.ok
    assert report.document


def timezone_jst() -> Any:
    from cardapd.audit.report import JST
    return JST


def test_wrong_finger_not_matched_and_audited(bstack: Stack, admin: str,
                                              prints: dict[str, list[GreyImage]]) -> None:
    with pytest.raises(CardapClientError) as info:
        login(bstack, "op-1", images=prints["whorl"][6:7])
    err = info.value
    assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "FINGER_NOT_MATCHED")
    assert "NOT_MATCHED" in err.codes  # type: ignore[attr-defined]
    assert ("kiosk", "error", "FINGER_NOT_MATCHED") in audit_rows(bstack, "operator_login")


def test_unknown_and_unenrolled(bstack: Stack, admin: str) -> None:
    expect_error(lambda: login(bstack, "nobody"), grpc.StatusCode.NOT_FOUND,
                 "OPERATOR_NOT_FOUND")
    rpc(bstack, "ops", "AddOperator", terminal_pb2.AddOperatorRequest(
        organisation=ORG, operator_id="op-2", display_name="Two",
        rights=[operators_pb2.RIGHT_LOAD]), admin)
    expect_error(lambda: login(bstack, "op-2"), grpc.StatusCode.NOT_FOUND, "NO_ENROLLED_FINGER")
    reasons = [r[2] for r in audit_rows(bstack, "operator_login")]
    assert "OPERATOR_NOT_FOUND" in reasons
    assert "NO_ENROLLED_FINGER" in reasons


def test_password_fallback_lockout_unlock(bstack: Stack, admin: str) -> None:
    rpc(bstack, "ops", "AddOperator", terminal_pb2.AddOperatorRequest(
        organisation=ORG, operator_id="op-3", display_name="Three",
        rights=[operators_pb2.RIGHT_LOAD]), admin)
    expect_error(lambda: login(bstack, "op-3", password=PASSWORD),
                 grpc.StatusCode.PERMISSION_DENIED, "PASSWORD_NOT_APPROVED")
    grant = terminal_pb2.GrantPasswordFallbackRequest(
        organisation=ORG, operator_id="op-3", reason="injured finger", password=PASSWORD)
    grant.expires_at.FromDatetime(datetime.now(UTC) + timedelta(days=30))
    rpc(bstack, "ops", "GrantPasswordFallback", grant, admin)
    codes, token = login(bstack, "op-3", password=PASSWORD)
    assert codes == ["ENTER_PASSWORD"]
    assert token
    for _ in range(4):
        expect_error(lambda: login(bstack, "op-3", password="wrong password 1"),
                     grpc.StatusCode.UNAUTHENTICATED, "PASSWORD_WRONG")
    expect_error(lambda: login(bstack, "op-3", password="wrong password 1"),
                 grpc.StatusCode.PERMISSION_DENIED, "OPERATOR_LOCKED")
    expect_error(lambda: login(bstack, "op-3", password=PASSWORD),
                 grpc.StatusCode.PERMISSION_DENIED, "OPERATOR_LOCKED")
    rpc(bstack, "ops", "UnlockOperator", terminal_pb2.UnlockOperatorRequest(
        organisation=ORG, operator_id="op-3"), admin)
    assert login(bstack, "op-3", password=PASSWORD)[1]
    # an approval that runs out
    grant.expires_at.FromDatetime(datetime.now(UTC) + timedelta(seconds=3))
    rpc(bstack, "ops", "GrantPasswordFallback", grant, admin)
    time.sleep(3.5)
    expect_error(lambda: login(bstack, "op-3", password=PASSWORD),
                 grpc.StatusCode.PERMISSION_DENIED, "PASSWORD_APPROVAL_EXPIRED")
    assert len([r for r in audit_rows(bstack, "operator_login") if "op-3" in r[0]
                or r[2].startswith("PASSWORD") or r[2] == "OPERATOR_LOCKED"]) >= 9


def test_fprintd_killed_mid_verify(bstack: Stack, admin: str) -> None:
    killer = threading.Timer(1.0, bstack.bio.fprintd.kill)
    killer.start()
    try:
        expect_error(lambda: login(bstack, "op-1"), grpc.StatusCode.UNAVAILABLE,
                     "BIOMETRIC_UNAVAILABLE")
    finally:
        killer.join()
        bstack.bio.fprintd.start()
    assert ("kiosk", "error", "BIOMETRIC_UNAVAILABLE") in audit_rows(bstack, "operator_login")


def test_audit_export_and_tamper(bstack: Stack, admin: str) -> None:
    ok = rpc(bstack, "ops", "VerifyAudit", terminal_pb2.VerifyAuditRequest())
    assert ok.ok
    assert ok.rows_checked > 0
    rows = rpc(bstack, "ops", "ExportAudit", terminal_pb2.ExportAuditRequest(
        operations=["operator_login"]))
    assert rows
    assert all(r.operation == "operator_login" for r in rows)
    db = sqlite3.connect(bstack.dir / "state" / "audit.db")
    try:
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"
                                  ).fetchall():
            db.execute(f"DROP TRIGGER {name}")
        db.execute("UPDATE audit SET reason = 'tampered' WHERE seq = ?", (rows[0].seq,))
        db.commit()
    finally:
        db.close()
    bad = rpc(bstack, "ops", "VerifyAudit", terminal_pb2.VerifyAuditRequest())
    assert not bad.ok
    assert bad.first_bad_seq == rows[0].seq
    assert bad.problem == "changed"
