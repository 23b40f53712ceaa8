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
from cardapd.audit import query
from cardapd.operators.login import fprint_user

from .conftest import expect_error, insert_and_wait, wait_until

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
          timeout_s: int = 10, replace: bool = True) -> tuple[list[str], str]:
    """Log in (finger: present `images` at each PLACE_FINGER); (prompt codes, token).
    `replace`: end another operator's session on the socket (these tests do not care)."""
    method = (operators_pb2.AUTH_METHOD_PASSWORD if password is not None
              else operators_pb2.AUTH_METHOD_FINGERPRINT)
    start = terminal_pb2.AuthenticateRequest(start=terminal_pb2.AuthenticateStart(
        organisation=ORG, operator_id=operator_id, method=method, timeout_s=timeout_s,
        replace_session=replace))
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


def bootstrap(stack: Stack, images: list[GreyImage], operator_id: str = "admin-1") -> str:
    """The local act appoints `operator_id`, who enrols a finger with that session and
    then logs in on ops by finger; the token of that login."""
    boot = stack.bootstrap_admin(operator_id, ORG, rights="load")
    enrol(stack, operator_id, images[:8], boot)
    rpc(stack, "ops", "EndOperatorSession", terminal_pb2.EndOperatorSessionRequest(token=boot))
    return login(stack, operator_id, "ops", images=images[6:])[1]


@pytest.fixture(scope="module")
def admin(bstack: Stack, prints: dict[str, list[GreyImage]]) -> str:
    """admin-1 appointed by `cardapd bootstrap-admin`, enrolled, logged in on ops; its
    token."""
    token = bootstrap(bstack, prints["arch"])
    add = terminal_pb2.AddOperatorRequest(organisation=ORG, operator_id="op-1",
                                          display_name="Operator 1",
                                          rights=[operators_pb2.RIGHT_LOAD,
                                                  operators_pb2.RIGHT_DELETE])
    rpc(bstack, "ops", "AddOperator", add, token)
    enrol(bstack, "op-1", prints["loop-right"][:8], token)
    return token


def test_roster_changes_need_an_administrator_session(bstack: Stack, admin: str) -> None:
    add = terminal_pb2.AddOperatorRequest(organisation=ORG, operator_id="op-x",
                                          display_name="X", rights=[])
    expect_error(lambda: rpc(bstack, "ops", "AddOperator", add),
                 grpc.StatusCode.PERMISSION_DENIED, "ADMINISTRATOR_REQUIRED")
    ops = rpc(bstack, "ops", "ListOperators", terminal_pb2.ListOperatorsRequest())
    byid = {o.operator_id: o for o in ops.operators}
    assert byid["admin-1"].administrator
    assert byid["admin-1"].enrolled_fingers == ["right-index-finger"]
    assert byid["op-1"].enrolled_fingers == ["right-index-finger"]
    assert ("ops:org-a/admin-1", "ok", "") in audit_rows(bstack, "roster_add_operator")
    assert ("ops:org-a/admin-1", "ok", "") in audit_rows(bstack,
                                                        "roster_bootstrap_administrator")


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


def test_wrong_finger_refused_and_audited(bstack: Stack, admin: str,
                                          prints: dict[str, list[GreyImage]]) -> None:
    with pytest.raises(CardapClientError) as info:
        login(bstack, "op-1", images=prints["whorl"][6:7])
    err = info.value
    assert (err.code, err.reason) == (grpc.StatusCode.UNAUTHENTICATED, "LOGIN_REFUSED")
    assert "NOT_MATCHED" in err.codes  # type: ignore[attr-defined]
    assert ("kiosk", "error", "FINGER_NOT_MATCHED") in audit_rows(bstack, "operator_login")


def test_a_fingerprint_login_tells_nobody_who_exists(bstack: Stack, admin: str) -> None:
    """Unknown, unenrolled and enrolled operators whose finger never comes look the same:
    PLACE_FINGER, then BIOMETRIC_TIMEOUT after the same wait; the audit knows why."""
    rpc(bstack, "ops", "AddOperator", terminal_pb2.AddOperatorRequest(
        organisation=ORG, operator_id="op-2", display_name="Two",
        rights=[operators_pb2.RIGHT_LOAD]), admin)
    outcomes = []
    for operator_id in ("nobody", "op-2", "op-1"):
        with pytest.raises(CardapClientError) as info:
            login(bstack, operator_id, timeout_s=2)
        err = info.value
        outcomes.append((err.code, err.reason, err.message, err.codes))  # type: ignore[attr-defined]
    assert outcomes == [(grpc.StatusCode.CANCELLED, "BIOMETRIC_TIMEOUT",
                         "no finger decision within 2 s", ["PLACE_FINGER"])] * 3, outcomes
    reasons = [r[2] for r in audit_rows(bstack, "operator_login")][-3:]
    assert reasons == ["OPERATOR_NOT_FOUND", "NO_ENROLLED_FINGER", "BIOMETRIC_TIMEOUT"]


def test_password_fallback_lockout_unlock(bstack: Stack, admin: str) -> None:
    rpc(bstack, "ops", "AddOperator", terminal_pb2.AddOperatorRequest(
        organisation=ORG, operator_id="op-3", display_name="Three",
        rights=[operators_pb2.RIGHT_LOAD]), admin)
    expect_error(lambda: login(bstack, "op-3", password=PASSWORD),
                 grpc.StatusCode.UNAUTHENTICATED, "LOGIN_REFUSED")
    grant = terminal_pb2.GrantPasswordFallbackRequest(
        organisation=ORG, operator_id="op-3", reason="injured finger", password=PASSWORD)
    grant.expires_at.FromDatetime(datetime.now(UTC) + timedelta(days=30))
    rpc(bstack, "ops", "GrantPasswordFallback", grant, admin)
    codes, token = login(bstack, "op-3", password=PASSWORD)
    assert codes == ["ENTER_PASSWORD"]
    assert token
    for _ in range(5):
        expect_error(lambda: login(bstack, "op-3", password="wrong password 1"),
                     grpc.StatusCode.UNAUTHENTICATED, "LOGIN_REFUSED")
    expect_error(lambda: login(bstack, "op-3", password=PASSWORD),
                 grpc.StatusCode.UNAUTHENTICATED, "LOGIN_REFUSED")
    assert [r[2] for r in audit_rows(bstack, "operator_login")][-6:] == [
        "PASSWORD_WRONG"] * 4 + ["OPERATOR_LOCKED"] * 2
    rpc(bstack, "ops", "UnlockOperator", terminal_pb2.UnlockOperatorRequest(
        organisation=ORG, operator_id="op-3"), admin)
    assert login(bstack, "op-3", password=PASSWORD)[1]
    # an approval that runs out
    grant.expires_at.FromDatetime(datetime.now(UTC) + timedelta(seconds=3))
    rpc(bstack, "ops", "GrantPasswordFallback", grant, admin)
    time.sleep(3.5)
    expect_error(lambda: login(bstack, "op-3", password=PASSWORD),
                 grpc.StatusCode.UNAUTHENTICATED, "LOGIN_REFUSED")
    assert audit_rows(bstack, "operator_login")[-1][2] == "PASSWORD_APPROVAL_EXPIRED"
    assert len([r for r in audit_rows(bstack, "operator_login") if "op-3" in r[0]
                or r[2].startswith("PASSWORD") or r[2] == "OPERATOR_LOCKED"]) >= 9


def test_removal_deletes_the_prints_from_fprintd(bstack: Stack, admin: str,
                                                 prints: dict[str, list[GreyImage]]) -> None:
    rpc(bstack, "ops", "AddOperator", terminal_pb2.AddOperatorRequest(
        organisation=ORG, operator_id="op-r", display_name="Leaving",
        rights=[operators_pb2.RIGHT_LOAD]), admin)
    enrol(bstack, "op-r", prints["whorl"][:8], admin)
    stored = bstack.bio.fprintd.state_dir / fprint_user(ORG, "op-r")
    assert any(p.is_file() for p in stored.rglob("*")), "fprintd holds the print"
    removed = rpc(bstack, "ops", "RemoveOperator", terminal_pb2.RemoveOperatorRequest(
        organisation=ORG, operator_id="op-r"), admin)
    assert removed.removed
    assert list(removed.enrolled_fingers) == []  # fprintd confirmed the deletion
    assert not any(p.is_file() for p in stored.rglob("*")), "the print is gone"
    row = [r for r in query(bstack.dir / "state" / "audit.db")
           if r.operation == "roster_remove_operator"][-1]
    assert (row.result, row.detail["prints_deleted"]) == ("ok", "yes")
    with pytest.raises(CardapClientError) as info:
        login(bstack, "op-r", timeout_s=2)
    assert info.value.reason == "BIOMETRIC_TIMEOUT"  # as for anyone without a print
    assert audit_rows(bstack, "operator_login")[-1][2] == "OPERATOR_REMOVED"


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


# ------------------------------------------------------------------ the login stream's own ends


def password_start(operator_id: str = "nobody", timeout_s: int = 10
                   ) -> terminal_pb2.AuthenticateRequest:
    """Start{} of a password login (whoever is named: the stream ends the same way)."""
    return terminal_pb2.AuthenticateRequest(start=terminal_pb2.AuthenticateStart(
        organisation=ORG, operator_id=operator_id, method=operators_pb2.AUTH_METHOD_PASSWORD,
        timeout_s=timeout_s, replace_session=True))


def stream_login(stack: Stack, requests: Iterator[terminal_pb2.AuthenticateRequest],
                 language: str = "") -> list[str]:
    """AuthenticateOperator on the kiosk socket with the client's own `requests`: the
    prompt codes until the error it must end with (raised as CardapClientError)."""
    meta = [("accept-language", language)] if language else []
    codes: list[str] = []
    with grpc.insecure_channel(f"unix://{stack.socket('kiosk')}") as ch:
        try:
            for ev in terminal_pb2_grpc.TerminalStub(ch).AuthenticateOperator(
                    requests, metadata=meta, timeout=30):
                assert not ev.HasField("session"), "no session may come of this stream"
                codes.append(ev.prompt.code)
        except grpc.RpcError as exc:
            err = CardapClientError.from_rpc_error(exc)
            err.codes = codes  # type: ignore[attr-defined]
            raise err from None
    raise AssertionError(f"the login ended without an error; prompts {codes}")


def finger_start(operator_id: str, timeout_s: int = 60) -> terminal_pb2.AuthenticateRequest:
    """Start{} of a fingerprint login (the default method)."""
    return terminal_pb2.AuthenticateRequest(start=terminal_pb2.AuthenticateStart(
        organisation=ORG, operator_id=operator_id, timeout_s=timeout_s, replace_session=True))


def cancelled_login(stack: Stack, start: terminal_pb2.AuthenticateRequest, *,
                    send_cancel: bool = True) -> tuple[CardapClientError, list[str]]:
    """Send `start`, then at the first prompt Cancel{true} (or, without `send_cancel`,
    just end the client's messages); the error the login ends with and its prompt codes."""
    prompted = threading.Event()
    codes: list[str] = []

    def requests() -> Iterator[terminal_pb2.AuthenticateRequest]:
        yield start
        assert prompted.wait(20)
        if send_cancel:
            yield terminal_pb2.AuthenticateRequest(cancel=True)

    def drain(call: Any) -> None:
        for ev in call:
            codes.append(ev.prompt.code)
            prompted.set()

    with grpc.insecure_channel(f"unix://{stack.socket('kiosk')}") as ch:
        call = terminal_pb2_grpc.TerminalStub(ch).AuthenticateOperator(requests(), timeout=30)
        try:
            with pytest.raises(grpc.RpcError) as raised:
                drain(call)
        finally:
            prompted.set()
    return CardapClientError.from_rpc_error(raised.value), codes


def test_a_login_stream_must_begin_with_its_start(bstack: Stack) -> None:
    before = len(audit_rows(bstack, "operator_login"))
    # The client half-closes at once: no message at all.
    err = expect_error(lambda: stream_login(bstack, iter(())),
                       grpc.StatusCode.INVALID_ARGUMENT, "START_REQUIRED")
    assert err.metadata["field"] == "start"
    # A password before any Start (in Japanese: what it means and what to do next).
    ja = expect_error(lambda: stream_login(bstack, iter([terminal_pb2.AuthenticateRequest(
        password=PASSWORD)]), "ja"), grpc.StatusCode.INVALID_ARGUMENT, "START_REQUIRED")
    assert ja.locale == "ja"
    assert ja.localized.startswith("このストリームの最初のメッセージは開始メッセージでなければ"
                                   "なりません。"), ja.localized
    assert "Start" in ja.message  # status.message stays English
    assert ja.codes == []  # type: ignore[attr-defined]
    assert len(audit_rows(bstack, "operator_login")) == before, "no login was attempted"


def test_a_password_that_never_comes_times_out(bstack: Stack) -> None:
    done = threading.Event()

    def requests() -> Iterator[terminal_pb2.AuthenticateRequest]:
        yield password_start(timeout_s=1)
        done.wait(30)  # the stream stays open: the daemon's wait ends it

    try:
        err = expect_error(lambda: stream_login(bstack, requests()),
                           grpc.StatusCode.CANCELLED, "PASSWORD_TIMEOUT")
    finally:
        done.set()
    assert err.codes == ["ENTER_PASSWORD"]  # type: ignore[attr-defined]
    assert "no password within 1 s" in err.message
    assert audit_rows(bstack, "operator_login")[-1] == ("kiosk", "error", "PASSWORD_TIMEOUT")


@pytest.mark.parametrize("how", ["cancel", "half-close"])
def test_a_login_cancelled_by_the_client(bstack: Stack, how: str) -> None:
    """Cancel{true}, or the end of the client's messages, where the password is due."""
    err, codes = cancelled_login(bstack, password_start(), send_cancel=how == "cancel")
    assert (err.code, err.reason) == (grpc.StatusCode.CANCELLED, "LOGIN_CANCELLED"), err
    assert err.message == "the login was cancelled"
    assert codes == ["ENTER_PASSWORD"]
    assert audit_rows(bstack, "operator_login")[-1] == ("kiosk", "error", "LOGIN_CANCELLED")


def test_a_client_gone_mid_login_is_audited(bstack: Stack) -> None:
    """The client cancels the call itself (or dies) while a finger is awaited: nobody is
    there to answer, so the audit row says what happened."""
    before = len(audit_rows(bstack, "operator_login"))
    done = threading.Event()
    start = finger_start("op-gone", timeout_s=30)

    def requests() -> Iterator[terminal_pb2.AuthenticateRequest]:
        yield start
        done.wait(30)

    try:
        with grpc.insecure_channel(f"unix://{bstack.socket('kiosk')}") as ch:
            call = terminal_pb2_grpc.TerminalStub(ch).AuthenticateOperator(requests(),
                                                                           timeout=30)
            assert next(call).prompt.code == "PLACE_FINGER"
            call.cancel()
    finally:
        done.set()
    wait_until(lambda: len(audit_rows(bstack, "operator_login")) > before, 10,
               "the login's audit row")
    assert audit_rows(bstack, "operator_login")[before:] == [
        ("kiosk", "error", "CLIENT_GONE")]


def test_cancel_abandons_a_fingerprint_login_at_once(bstack: Stack) -> None:
    """Cancel{true} while a finger is awaited ends the login now, not at its timeout, with
    the reason a password login's Cancel has; an unknown operator looks the same to the
    client (the audit keeps why)."""
    began = time.monotonic()
    err, codes = cancelled_login(bstack, finger_start("op-cancel"))
    assert (err.code, err.reason) == (grpc.StatusCode.CANCELLED, "LOGIN_CANCELLED"), err
    assert time.monotonic() - began < 20, "the login waited on after Cancel"
    assert codes == ["PLACE_FINGER"]
    assert audit_rows(bstack, "operator_login")[-1] == ("kiosk", "error", "OPERATOR_NOT_FOUND")


def test_cancel_of_an_enrolled_operators_login_releases_the_sensor(
        bstack: Stack, admin: str, prints: dict[str, list[GreyImage]]) -> None:
    """Cancel{true} while fprintd verifies a real operator: LOGIN_CANCELLED at once, and
    the device is released (the next login claims it and matches)."""
    began = time.monotonic()
    err, codes = cancelled_login(bstack, finger_start("op-1"))
    assert (err.code, err.reason) == (grpc.StatusCode.CANCELLED, "LOGIN_CANCELLED"), err
    assert time.monotonic() - began < 20, "the login waited on after Cancel"
    assert codes[0] == "PLACE_FINGER"
    assert audit_rows(bstack, "operator_login")[-1] == ("kiosk", "error", "LOGIN_CANCELLED")
    codes, token = login(bstack, "op-1", images=prints["loop-right"][6:])
    assert "MATCHED" in codes
    rpc(bstack, "kiosk", "EndOperatorSession", terminal_pb2.EndOperatorSessionRequest(token=token))
