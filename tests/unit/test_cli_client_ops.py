"""CardapClient's operator, roster and audit methods, with the gRPC stub replaced.

What is tested is the client's own logic: the login dialogue over the bidirectional
stream (Start first, the password only after ENTER_PASSWORD, cancel on abandon), request
building (rights, timestamps, filters), the session metadata and error decoding. The
daemon's behaviour is covered by the integration tests against the real daemon.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import grpc
import pytest

from cardap.client import CardapClient, CardapClientError, right_value
from cardap.v1 import audit_pb2, operators_pb2, terminal_pb2

SECRET = "s3cret-Passw0rd!"


class FakeCall:
    """A streaming call: iterates a generator, remembers cancel()."""

    def __init__(self, events: Iterator[Any]) -> None:
        self.events = events
        self.cancelled = False

    def __iter__(self) -> Iterator[Any]:
        return self.events

    def cancel(self) -> bool:
        self.cancelled = True
        return True


class FakeRpcError(grpc.RpcError):
    """A failed call as grpc raises it (no rich status)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[Any, ...]:
        return ()


def prompt(code: str) -> terminal_pb2.AuthenticateEvent:
    return terminal_pb2.AuthenticateEvent(prompt=terminal_pb2.Prompt(code=code, message=code))


SESSION = terminal_pb2.AuthenticateEvent(session=terminal_pb2.OperatorSession(
    token="tok", operator=operators_pb2.Operator(organisation="c", operator_id="o")))


class FakeStub:
    """The daemon side of AuthenticateOperator as a script; unary methods echo requests."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.received: list[terminal_pb2.AuthenticateRequest] = []
        self.call: FakeCall | None = None
        self.unary: list[tuple[str, Any, Any]] = []

    def AuthenticateOperator(self, requests: Iterator[terminal_pb2.AuthenticateRequest],
                             timeout: float | None, metadata: Any) -> FakeCall:
        def run() -> Iterator[terminal_pb2.AuthenticateEvent]:
            self.received.append(next(requests))
            for step in self.script:
                if step == "read":
                    self.received.append(next(requests))
                elif isinstance(step, BaseException):
                    raise step
                else:
                    yield step
        self.call = FakeCall(run())
        return self.call

    def __getattr__(self, name: str) -> Any:
        def unary(request: Any, timeout: float | None = None, metadata: Any = None) -> Any:
            self.unary.append((name, request, metadata))
            if name == "ExportAudit":
                return FakeCall(iter([audit_pb2.AuditRecord(seq=1)]))
            return operators_pb2.Operator()
        return unary


def client(script: list[Any] | None = None, session: str | None = None
           ) -> tuple[CardapClient, FakeStub]:
    c = CardapClient("/nonexistent/cardapd.sock", session=session)
    stub = FakeStub(script or [])
    c.stub = stub  # type: ignore[assignment]
    return c, stub


def test_fingerprint_login_yields_prompts_then_the_session() -> None:
    c, stub = client([prompt("PLACE_FINGER"), prompt("RETRY_SCAN"), SESSION])
    items = list(c.authenticate("c", "o", timeout_s=30))
    assert [getattr(i, "code", "session") for i in items] == [
        "PLACE_FINGER", "RETRY_SCAN", "session"]
    assert isinstance(items[-1], terminal_pb2.OperatorSession)
    assert items[-1].token == "tok"
    start = stub.received[0].start
    assert (start.organisation, start.operator_id, start.method, start.timeout_s) == (
        "c", "o", operators_pb2.AUTH_METHOD_FINGERPRINT, 30)
    assert stub.call is not None
    assert not stub.call.cancelled


def test_password_is_sent_only_after_the_prompt() -> None:
    asked: list[str] = []

    def provider() -> str:
        asked.append("x")
        return SECRET
    c, stub = client([prompt("ENTER_PASSWORD"), "read", SESSION])
    seen = []
    for item in c.authenticate("c", "o", "password", provider):
        seen.append((item, list(asked)))
    assert seen[0][1] == []  # the prompt came before the provider was asked
    assert stub.received[0].start.method == operators_pb2.AUTH_METHOD_PASSWORD
    assert stub.received[1].WhichOneof("step") == "password"
    assert stub.received[1].password == SECRET
    assert asked == ["x"]


def test_password_prompt_without_provider_cancels() -> None:
    c, stub = client([prompt("ENTER_PASSWORD"), "read", SESSION])
    with pytest.raises(CardapClientError) as exc:
        list(c.authenticate("c", "o"))
    assert (exc.value.code, exc.value.reason) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                  "PASSWORD_REQUIRED")
    assert stub.call is not None
    assert stub.call.cancelled


def test_abandoning_the_login_sends_cancel() -> None:
    c, stub = client([prompt("PLACE_FINGER"), "read", SESSION])
    login = c.authenticate("c", "o")
    next(login)
    login.close()
    assert stub.call is not None
    assert stub.call.cancelled
    next(stub.call.events)  # the daemon side reads what the client queued next
    assert stub.received[1].WhichOneof("step") == "cancel"


def test_login_errors_are_decoded_and_a_missing_session_is_an_error() -> None:
    c, _ = client([prompt("PLACE_FINGER"),
                   FakeRpcError(grpc.StatusCode.UNAUTHENTICATED, "not matched")])
    with pytest.raises(CardapClientError) as exc:
        list(c.authenticate("c", "o"))
    assert exc.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert SECRET not in str(exc.value)
    c, _ = client([prompt("PLACE_FINGER")])
    with pytest.raises(CardapClientError) as exc:
        list(c.authenticate("c", "o"))
    assert exc.value.reason == "LOGIN_INCOMPLETE"


def test_unknown_method_is_refused() -> None:
    c, _ = client()
    with pytest.raises(ValueError, match="method"):
        list(c.authenticate("c", "o", "retina"))


def test_requests_carry_rights_timestamps_and_the_session() -> None:
    c, stub = client(session="admin-token")
    c.add_operator("c", "o", "Name", ["load", "RIGHT_DELETE", operators_pb2.RIGHT_DIAGNOSE])
    expires = datetime(2027, 1, 1, tzinfo=timezone(timedelta(hours=9)))
    c.grant_password_fallback("c", "o", reason="r", expires_at=expires, password=SECRET)
    list(c.export_audit(since=datetime(2026, 1, 1, tzinfo=UTC), operations=["load_ap"]))
    (n1, add, meta), (n2, grant, _), (n3, export, _) = stub.unary
    assert (n1, n2, n3) == ("AddOperator", "GrantPasswordFallback", "ExportAudit")
    assert list(add.rights) == [operators_pb2.RIGHT_LOAD, operators_pb2.RIGHT_DELETE,
                                operators_pb2.RIGHT_DIAGNOSE]
    assert ("cardap-session", "admin-token") in meta
    assert grant.expires_at.ToDatetime(tzinfo=UTC) == expires
    assert grant.password == SECRET
    assert export.HasField("since")
    assert not export.HasField("until")
    assert list(export.operations) == ["load_ap"]


def test_naive_datetimes_and_unknown_rights_are_refused() -> None:
    c, stub = client()
    with pytest.raises(ValueError, match="timezone"):
        c.grant_password_fallback("c", "o", reason="r", expires_at=datetime(2027, 1, 1),
                                  password=SECRET)
    with pytest.raises(ValueError, match="unknown right"):
        right_value("fly")
    assert stub.unary == []
