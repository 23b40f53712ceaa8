"""The authorisation matrix: every Terminal method × every role socket, plus health/reflection.

Every method includes the v1.0.0 names deprecated for the one acronym style (`RENAMED`):
each is served on the sockets of its successor and answers as it does."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cardap.client import CardapClientError
from cardap.v1 import terminal_pb2
from cardap_sim.stack import Stack
from cardapd.api.roles import METHOD_ROLES, RENAMED, Role

SERVICE = terminal_pb2.DESCRIPTOR.services_by_name["Terminal"]
METHODS: list[MethodDescriptor] = list(SERVICE.methods)
ROLES = ("kiosk", "gate", "ops")
# Methods whose capability is built (issues 3-6); every other method is a later issue's.
BUILT = {"GetStatus", "WatchStatus", "ListReaders", "WatchCardEvents", "ReadUserId",
         "Diagnose", "WatchMetrics",
         "SyncRevocation", "SetUserIdStatus",
         "ListLoadableAps", "LoadAp", "DeleteAp", "ListCardAps", "ConfirmReconcile",
         "AuthenticateOperator", "EndOperatorSession", "ExportAudit", "VerifyAudit",
         "GetYearlyReport", "ListOperators", "AddOperator", "SetOperatorEnabled",
         "AppointAdministrator", "GrantPasswordFallback", "UnlockOperator", "EnrollFinger",
         "AcknowledgeAuditReset",
         "BootstrapAdministrator", "RemoveOperator", "SetOperatorRights",
         "GetOrganisationRights", "SetOrganisationAps", "SetPreset", "SetDefaultPreset",
         *RENAMED}


def roles_of(method: str) -> frozenset[Role]:
    """The roles that may call `method` (a deprecated name: those of its successor)."""
    return METHOD_ROLES[RENAMED.get(method, method)]


@pytest.fixture(scope="module")
def channels(shared_stack: Stack) -> Iterator[dict[str, grpc.Channel]]:
    chans = {r: grpc.insecure_channel(f"unix:{shared_stack.socket(r)}") for r in ROLES}
    try:
        yield chans
    finally:
        for ch in chans.values():
            ch.close()


def call_empty(channel: grpc.Channel, method: MethodDescriptor, timeout: float = 5.0,
               metadata: list[tuple[str, str]] | None = None) -> Any:
    """Call `method` with an empty request (streams: the first item); RpcError on failure."""
    path = f"/{SERVICE.full_name}/{method.name}"
    req_cls = message_factory.GetMessageClass(method.input_type)
    resp_cls = message_factory.GetMessageClass(method.output_type)
    ser, de = req_cls.SerializeToString, resp_cls.FromString
    if method.client_streaming and method.server_streaming:
        bidi = channel.stream_stream(path, request_serializer=ser, response_deserializer=de)
        call = bidi(iter([req_cls()]), timeout=timeout, metadata=metadata)
    elif method.server_streaming:
        call = channel.unary_stream(path, request_serializer=ser,
                                    response_deserializer=de)(req_cls(), timeout=timeout,
                                                                   metadata=metadata)
    elif method.client_streaming:
        return channel.stream_unary(path, request_serializer=ser,
                                    response_deserializer=de)(iter([req_cls()]), timeout=timeout,
                                                                   metadata=metadata)
    else:
        return channel.unary_unary(path, request_serializer=ser,
                                   response_deserializer=de)(req_cls(), timeout=timeout,
                                                             metadata=metadata)
    stream: Any = call
    try:
        return next(stream)
    finally:
        stream.cancel()


def test_table_covers_every_method_and_nothing_else() -> None:
    deprecated = {m.name for m in METHODS if m.GetOptions().deprecated}
    assert set(RENAMED) == deprecated
    assert set(METHOD_ROLES) == {m.name for m in METHODS} - deprecated
    assert set(RENAMED.values()) <= set(METHOD_ROLES)
    assert all(roles and roles <= set(Role) for roles in METHOD_ROLES.values())


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("method", METHODS, ids=[m.name for m in METHODS])
def test_role_matrix(channels: dict[str, grpc.Channel], method: MethodDescriptor,
                     role: str) -> None:
    allowed = Role(role) in roles_of(method.name)
    try:
        result = call_empty(channels[role], method)
    except grpc.RpcError as rpc_err:
        err = CardapClientError.from_rpc_error(rpc_err)
    else:
        assert allowed, f"{method.name} answered {type(result).__name__} on the {role} socket"
        assert method.name in BUILT, f"{method.name} works but is not in BUILT: update the test"
        return
    assert err.code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL,
                            grpc.StatusCode.DEADLINE_EXCEEDED), err
    if not allowed:
        assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "WRONG_ROLE"), err
        assert err.metadata.get("method") == method.name
        assert err.metadata.get("role") == role
        assert method.name in err.message
        assert role in err.message
        return
    assert err.code != grpc.StatusCode.PERMISSION_DENIED, err
    if method.name in BUILT:
        assert err.code != grpc.StatusCode.UNIMPLEMENTED, err
        assert err.reason, err
        assert "request_id" in err.metadata, err  # the daemon's ErrorInfo
    else:
        assert (err.code, err.reason) == (grpc.StatusCode.UNIMPLEMENTED, "NOT_IMPLEMENTED"), err
        assert err.metadata.get("capability"), err.metadata
        assert err.metadata.get("issue", "").isdigit(), err.metadata
        assert f"#{err.metadata['issue']}" in err.message


@pytest.mark.parametrize("role", ROLES)
def test_health_serving_on_every_socket(channels: dict[str, grpc.Channel], role: str) -> None:
    stub = health_pb2_grpc.HealthStub(channels[role])
    for service in ("", SERVICE.full_name):
        resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as info:
        stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("role", ROLES)
def test_reflection_lists_terminal(channels: dict[str, grpc.Channel], role: str) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channels[role])
    responses = list(stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert "cardap.v1.Terminal" in names
    assert "grpc.health.v1.Health" in names
    # and it can describe the service, so grpcurl-style tools work
    by_symbol = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="cardap.v1.Terminal")]), timeout=5))
    assert by_symbol[0].file_descriptor_response.file_descriptor_proto
