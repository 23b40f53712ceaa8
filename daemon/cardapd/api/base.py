"""What the API serves, and the base every servicer part stands on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from cardapd.api.language import call_language
from cardapd.api.roles import Role
from cardapd.api.rpc import Ctx, session_token
from cardapd.audit.service import AuditService
from cardapd.domain import (
    CARD_RIGHTS,
    AuditSink,
    CounterSessions,
    DaemonStatus,
    OpContext,
    Operator,
    Right,
    connection_of,
)
from cardapd.errors import NotAuthorized
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
    sessions: CounterSessions  # operator sessions, as the counter's card actions check them
    language: Callable[[], str]  # `[daemon] language` now (a reload changes it)


class RpcBase:
    """The state every part of the servicer shares: its role, its connection (sessions
    bind to the socket, D18) and the services."""

    def __init__(self, services: Services, role: Role) -> None:
        self.services = services
        self.role = role
        # gRPC over a Unix socket names no connection: sessions bind to the socket (D18).
        self.connection = connection_of(role)
        self.audit = services.sink
        self.refusals = services.refusals
        self._grpc_requests = services.metrics.grpc_requests

    def language(self, context: Ctx) -> str:
        """The language of this call's texts for people: its accept-language, else
        `[daemon] language` (logs, metrics and audit rows never use it)."""
        return call_language(context, self.services.language())

    def count(self, method: str, code: str) -> None:
        """Count one finished call."""
        self._grpc_requests.labels(method, str(self.role), code).inc()

    def default_language(self) -> str:
        """`[daemon] language`: the language of a call that names none."""
        return self.services.language()

    def counter(self, context: Ctx, ctx: OpContext, right: Right | None = None
                ) -> tuple[OpContext, Operator | None]:
        """On the kiosk socket, the operator behind a card action: a live session holding
        `right` (or, without one, any of load, delete, diagnose), named in the call's
        audit row; UNAUTHENTICATED / PERMISSION_DENIED otherwise. Other sockets: none."""
        if self.role is not Role.KIOSK:
            return ctx, None
        operator = self.services.sessions.validate(session_token(context))
        if right is not None:
            operator.require(right)
        elif not operator.rights & CARD_RIGHTS:
            raise NotAuthorized(f"operator {operator.actor} has no right to handle cards "
                                "(load, delete or diagnose)", reason="RIGHT_MISSING",
                                metadata={"right": "load|delete|diagnose"})
        return replace(ctx, operator=operator.actor), operator

    def shows_user_ids(self, context: Ctx) -> bool:
        """Whether the card views this call returns carry tap-read user IDs: on the kiosk
        socket only while an operator is logged in there; elsewhere always."""
        return self.role is not Role.KIOSK or self.services.sessions.live(
            session_token(context))
