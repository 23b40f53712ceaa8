"""What the API serves, and the base every servicer part stands on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cardapd.api.roles import Role
from cardapd.audit.service import AuditService
from cardapd.domain import AuditSink, DaemonStatus
from cardapd.loading.loader import Loader
from cardapd.operators.admin import RosterAdmin
from cardapd.operators.login import OperatorService
from cardapd.readers.service import Readers
from cardapd.reads.revocation import Revocation
from cardapd.reads.service import UserIdReads
from cardapd.telemetry.metrics import Metrics
from cardapd.telemetry.refusals import RefusalLedger


@dataclass(frozen=True)
class Services:
    """Each capability's service, the audit sink, the ledger of refused calls, the metrics
    and the daemon's status. The services reconfigure themselves on a reload; this never
    changes."""

    readers: Readers
    reads: UserIdReads
    revocation: Revocation
    loading: Loader
    operators: OperatorService
    admin: RosterAdmin
    audit_log: AuditService
    sink: AuditSink
    metrics: Metrics
    status: Callable[[], DaemonStatus]
    refusals: RefusalLedger


class RpcBase:
    """The state every part of the servicer shares: its role, its connection (sessions
    bind to the socket, D18) and the services."""

    def __init__(self, services: Services, role: Role) -> None:
        self.services = services
        self.role = role
        # gRPC over a Unix socket names no connection: sessions bind to the socket (D18).
        self.connection = f"socket:{role}"
        self.audit = services.sink
        self.refusals = services.refusals
        self._grpc_requests = services.metrics.grpc_requests

    def count(self, method: str, code: str) -> None:
        """Count one finished call."""
        self._grpc_requests.labels(method, str(self.role), code).inc()
