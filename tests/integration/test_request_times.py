"""Times outside the range of google.protobuf.Timestamp are INVALID_ARGUMENT with a reason,
wherever a Timestamp enters the daemon (issue 15, point 4): ExportAudit's since/until,
GrantPasswordFallback's expires_at. Before, `ToDatetime` raised and the client got
INTERNAL with a traceback in the log."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from cardap.client import CardapClientError
from cardap.v1 import terminal_pb2, terminal_pb2_grpc
from cardap_sim.stack import Stack

from .conftest import expect_error, serving

BAD = [Timestamp(seconds=0, nanos=-1), Timestamp(seconds=0, nanos=1_000_000_000),
       Timestamp(seconds=253402300800), Timestamp(seconds=-62135596801)]
IDS = ["nanos=-1", "nanos=1e9", "after 9999-12-31", "before 0001-01-01"]


def call(stack: Stack, method: str, request: object) -> Callable[[], object]:
    def run() -> object:
        with grpc.insecure_channel(f"unix:{stack.socket('ops')}") as ch:
            fn = getattr(terminal_pb2_grpc.TerminalStub(ch), method)
            try:
                reply = fn(request, timeout=10)
                return list(reply) if method == "ExportAudit" else reply
            except grpc.RpcError as exc:
                raise CardapClientError.from_rpc_error(exc) from None
    return run


@pytest.mark.parametrize("bad", BAD, ids=IDS)
@pytest.mark.parametrize("field", ["since", "until"])
def test_export_audit_refuses_an_impossible_time(shared_stack: Stack, bad: Timestamp,
                                                 field: str) -> None:
    request = terminal_pb2.ExportAuditRequest(**{field: bad})
    err = expect_error(call(shared_stack, "ExportAudit", request),
                       grpc.StatusCode.INVALID_ARGUMENT, "TIMESTAMP_OUT_OF_RANGE")
    assert err.metadata.get("field") == field
    assert serving(shared_stack)


@pytest.mark.parametrize("bad", BAD, ids=IDS)
def test_grant_password_fallback_refuses_an_impossible_expiry(shared_stack: Stack,
                                                              bad: Timestamp) -> None:
    request = terminal_pb2.GrantPasswordFallbackRequest(
        organisation="org-a", operator_id="op-1", reason="test", expires_at=bad,
        password="correct horse battery")
    err = expect_error(call(shared_stack, "GrantPasswordFallback", request),
                       grpc.StatusCode.INVALID_ARGUMENT, "TIMESTAMP_OUT_OF_RANGE")
    assert err.metadata.get("field") == "expires_at"


def test_the_range_edges_are_accepted(shared_stack: Stack) -> None:
    request = terminal_pb2.ExportAuditRequest(since=Timestamp(seconds=-62135596800),
                                              until=Timestamp(seconds=253402300799,
                                                              nanos=999_999_999))
    assert call(shared_stack, "ExportAudit", request)() is not None


def test_no_traceback_in_the_log(shared_stack: Stack) -> None:
    text = (shared_stack.dir / "cardapd.log").read_text(errors="replace")
    assert "Traceback" not in text
    assert "unexpected error" not in text
