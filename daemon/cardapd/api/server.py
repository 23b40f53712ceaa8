"""The gRPC servers: one per socket role, each on its own Unix socket (0660, role group).

Each server carries the Terminal servicer bound to its role, the standard health service
and server reflection.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import message_factory
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from cardap.v1 import terminal_pb2
from cardapd.api.base import Services
from cardapd.api.roles import Role
from cardapd.api.rpc import MalformedRequest
from cardapd.api.servicer import TerminalServicer
from cardapd.errors import ConfigError

log = logging.getLogger(__name__)

SERVICE_NAME = terminal_pb2.DESCRIPTOR.services_by_name["Terminal"].full_name
MAX_MESSAGE_BYTES = 1 << 20


def _tolerant(parse: Callable[[bytes], Message]) -> Callable[[bytes], object]:
    """A request deserializer that hands bad bytes to the servicer instead of raising.

    grpc.aio answers a deserializer exception with UNKNOWN and a traceback; the servicer
    turns a `MalformedRequest` into INVALID_ARGUMENT with a reason, like any bad field.
    """
    def deserialize(data: bytes) -> object:
        try:
            return parse(data)
        except DecodeError as exc:
            return MalformedRequest(str(exc))
    return deserialize


def terminal_handlers(servicer: TerminalServicer) -> grpc.GenericRpcHandler[object, object]:
    """Method handlers of cardap.v1.Terminal built from the service descriptor."""
    service = terminal_pb2.DESCRIPTOR.services_by_name["Terminal"]
    kinds = {(False, False): grpc.unary_unary_rpc_method_handler,
             (False, True): grpc.unary_stream_rpc_method_handler,
             (True, False): grpc.stream_unary_rpc_method_handler,
             (True, True): grpc.stream_stream_rpc_method_handler}
    handlers = {}
    for method in service.methods:
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        make = kinds[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(getattr(servicer, method.name),
                                     request_deserializer=_tolerant(request.FromString),
                                     response_serializer=response.SerializeToString)
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


@dataclass(frozen=True)
class SocketSpec:
    """Where and how one role's socket is created."""

    role: Role
    path: Path
    group: str | None
    mode: int


class RoleServer:
    """One grpc.aio server for one role."""

    def __init__(self, services: Services, spec: SocketSpec) -> None:
        self.spec = spec
        self.server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", 16 * MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ])
        self.server.add_generic_rpc_handlers((terminal_handlers(
            TerminalServicer(services, spec.role)),))
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)

    async def start(self) -> None:
        """Bind the socket (replacing a stale one), set owner/mode, start serving."""
        path = self.spec.path
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if path.is_socket():
                path.unlink()
        self.server.add_insecure_port(f"unix:{path}")
        await self.server.start()
        os.chmod(path, self.spec.mode)
        if self.spec.group:
            try:
                gid = grp.getgrnam(self.spec.group).gr_gid
            except KeyError:
                log.warning("group %r for the %s socket does not exist; socket left in the "
                            "daemon's group", self.spec.group, self.spec.role)
            else:
                os.chown(path, -1, gid)
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving the %s role on %s", self.spec.role, path)

    async def stop(self, grace: float) -> None:
        """Stop accepting calls; give running calls `grace` seconds."""
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace)
        with contextlib.suppress(FileNotFoundError):
            self.spec.path.unlink()


def check_specs(specs: list[SocketSpec]) -> None:
    """Refuse two roles on one path."""
    paths = [s.path for s in specs]
    if len(set(paths)) != len(paths):
        raise ConfigError("sockets: two roles cannot share one socket path")
