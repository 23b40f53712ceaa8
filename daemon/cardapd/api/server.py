"""The gRPC servers: one per socket role, each on its own Unix socket (0660, role group).

Each server carries the Terminal servicer bound to its role, the standard health service
and server reflection. Each has its own connection limit, a handshake deadline, an idle
timeout and keepalive enforcement (docs/decisions.md D30), so that no client, and no
flood of half-open connections, can take the file descriptors another socket needs: the
ops socket keeps answering while the kiosk socket is flooded. `SocketWatch` counts each
socket's open connections (a gauge) and logs when one reaches its limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import resource
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
from cardapd.api.roles import RENAMED, Role
from cardapd.api.rpc import MalformedRequest
from cardapd.api.servicer import TerminalServicer
from cardapd.errors import ConfigError
from cardapd.telemetry.metrics import Metrics

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
    """Method handlers of cardap.v1.Terminal built from the service descriptor.

    A method renamed for the one acronym style keeps its v1.0.0 name (`RENAMED`) and reads
    and writes its successor's messages: the deprecated messages are the same fields under
    the old names (a unit test holds them wire-identical), so the implementation sees one
    request type and a v1.0.0 client the bytes it always got.
    """
    service = terminal_pb2.DESCRIPTOR.services_by_name["Terminal"]
    kinds = {(False, False): grpc.unary_unary_rpc_method_handler,
             (False, True): grpc.unary_stream_rpc_method_handler,
             (True, False): grpc.stream_unary_rpc_method_handler,
             (True, True): grpc.stream_stream_rpc_method_handler}
    handlers = {}
    for method in service.methods:
        types = service.methods_by_name[RENAMED.get(method.name, method.name)]
        request = message_factory.GetMessageClass(types.input_type)
        response = message_factory.GetMessageClass(types.output_type)
        make = kinds[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(getattr(servicer, method.name),
                                     request_deserializer=_tolerant(request.FromString),
                                     response_serializer=response.SerializeToString)
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a connection may take to start, stay idle, or go unheard ([sockets])."""

    handshake_s: float = 5.0
    idle_s: float = 600.0
    keepalive_s: float = 60.0
    keepalive_timeout_s: float = 20.0
    min_client_ping_s: float = 10.0


@dataclass(frozen=True)
class SocketSpec:
    """Where and how one role's socket is created."""

    role: Role
    path: Path
    group: str | None
    mode: int
    max_connections: int = 128


def server_options(spec: SocketSpec, limits: ConnectionLimits) -> list[tuple[str, int]]:
    """The gRPC core options of one role's server."""
    def ms(seconds: float) -> int:
        return int(seconds * 1000)

    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", 16 * MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),
        # Connections past the limit are accepted and closed at once (their descriptor
        # lives microseconds); the limit is per server, so per socket.
        ("grpc.max_allowed_incoming_connections", spec.max_connections),
        # Preface and SETTINGS within this time, or the connection is closed (an idle
        # connect() or a preface alone holds nothing for long).
        ("grpc.server_handshake_timeout_ms", ms(limits.handshake_s)),
        ("grpc.max_connection_idle_ms", ms(limits.idle_s)),
        ("grpc.keepalive_time_ms", ms(limits.keepalive_s)),
        ("grpc.keepalive_timeout_ms", ms(limits.keepalive_timeout_s)),
        # Keepalive enforcement: a client pinging more often than this gets GOAWAY
        # (ENHANCE_YOUR_CALM) after two such pings.
        ("grpc.http2.min_ping_interval_without_data_ms", ms(limits.min_client_ping_s)),
        ("grpc.http2.max_ping_strikes", 2),
    ]


class RoleServer:
    """One grpc.aio server for one role."""

    def __init__(self, services: Services, spec: SocketSpec,
                 limits: ConnectionLimits | None = None) -> None:
        self.spec = spec
        self.server = grpc.aio.server(options=server_options(spec, limits or
                                                             ConnectionLimits()))
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


FD_RESERVE = 256
"""Descriptors kept for everything but the role sockets' clients: the listeners, pcscd
(one context per reader and the monitor's), the stores (a database and its WAL each),
journald, the metrics endpoint, the loading service, D-Bus."""


def fd_budget_problem(specs: list[SocketSpec]) -> str | None:
    """Why the open-file limit cannot hold every socket at its limit, or None.

    Under systemd the unit's LimitNOFILE sets it (SystemCallFilter=~@resources keeps
    the daemon from raising it itself)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = sum(s.max_connections for s in specs) + FD_RESERVE
    if soft == resource.RLIM_INFINITY or soft >= need:
        return None
    return (f"the open-file limit is {soft} but the role sockets may hold "
            f"{need - FD_RESERVE} connections plus ~{FD_RESERVE} other descriptors: raise "
            "LimitNOFILE in the unit or lower [sockets.<role>] max_connections")


class SocketWatch:
    """Counts each role socket's open connections (the kernel's list of Unix sockets:
    accepted connections carry the listener's path) into a gauge, and logs when a socket
    reaches its limit and when it has room again."""

    def __init__(self, specs: list[SocketSpec], metrics: Metrics,
                 interval_s: float = 1.0, table: Path = Path("/proc/self/net/unix")) -> None:
        self._specs = {str(s.path): s for s in specs}
        self._metrics = metrics
        self._interval = interval_s
        self._table = table
        self._full: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        for spec in specs:
            metrics.socket_connection_limit.labels(str(spec.role)).set(spec.max_connections)
            metrics.socket_connections.labels(str(spec.role)).set(0)

    def start(self) -> None:
        """Sample every `interval_s` until `stop`."""
        self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        """End the sampling."""
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            try:
                counts = await asyncio.to_thread(self.count)
            except OSError as exc:
                log.warning("cannot count the role sockets' connections: %s", exc)
                return
            self.update(counts)
            await asyncio.sleep(self._interval)

    def count(self) -> dict[str, int]:
        """Open connections per socket path: accepted ones only (a connection still in
        the listen backlog has no inode yet; the listener carries the listening flag)."""
        counts = dict.fromkeys(self._specs, 0)
        with self._table.open() as table:
            next(table, None)
            for line in table:
                parts = line.split()
                # Num RefCount Protocol Flags Type St Inode Path; flag 0x10000: listening
                if len(parts) >= 8 and parts[7] in counts and parts[6] != "0" \
                        and not int(parts[3], 16) & 0x10000:
                    counts[parts[7]] += 1
        return counts

    def update(self, counts: dict[str, int]) -> None:
        """Set the gauges; log a socket reaching its limit, and its recovery, once."""
        for path, n in counts.items():
            spec = self._specs[path]
            role = str(spec.role)
            self._metrics.socket_connections.labels(role).set(n)
            if n >= spec.max_connections and path not in self._full:
                self._full.add(path)
                log.warning("the %s socket has reached its limit of %d connections: new "
                            "clients are refused until some close ([sockets.%s] "
                            "max_connections)", role, spec.max_connections, role,
                            extra={"role": role})
            elif n < spec.max_connections * 0.9 and path in self._full:
                self._full.discard(path)
                log.info("the %s socket has room again (%d of %d connections)", role, n,
                         spec.max_connections, extra={"role": role})


def check_specs(specs: list[SocketSpec]) -> None:
    """Refuse two roles on one path."""
    paths = [s.path for s in specs]
    if len(set(paths)) != len(paths):
        raise ConfigError("sockets: two roles cannot share one socket path")
