"""The daemon's shared domain types: who asks, who operates, what a user ID's status is,
and the audit sink every operation is recorded through. Plain dataclasses and protocols;
no I/O, no gRPC. Each capability package defines the rest of its types itself.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from cardapd.errors import NotAuthorized


@dataclass(frozen=True)
class OpContext:
    """Who asks (the socket role, the operator), the request id for the audit row and the
    logs, and the call's cancel event: set when the client goes away, so that work on a
    reader's thread stops before its next APDU."""

    role: str
    request_id: str
    operator: str = ""
    cancel: threading.Event = field(default_factory=threading.Event, compare=False,
                                    repr=False)

    @property
    def actor(self) -> str:
        """`role` or `role:organisation/operator`."""
        return f"{self.role}:{self.operator}" if self.operator else self.role


def system_context(request_id: str = "", operator: str = "") -> OpContext:
    """The context of work the daemon does on its own (reconciliation, schedules)."""
    return OpContext(role="system", request_id=request_id, operator=operator)


class Right(enum.Enum):
    """What an operator may do (mirrors cardap.v1.Right)."""

    LOAD = "load"
    DELETE = "delete"
    DIAGNOSE = "diagnose"
    ADMINISTER = "administer"


@dataclass(frozen=True)
class Operator:
    """An authenticated operator."""

    organisation: str
    operator_id: str
    rights: frozenset[Right]

    @property
    def actor(self) -> str:
        """`organisation/operator` for audit rows."""
        return f"{self.organisation}/{self.operator_id}"

    def require(self, right: Right) -> None:
        """PERMISSION_DENIED unless the operator holds `right`."""
        if right not in self.rights:
            raise NotAuthorized(f"operator {self.actor} has no {right.value} right",
                                reason="RIGHT_MISSING", metadata={"right": right.value})


class OperatorSessions(Protocol):
    """Validates an operator session token (gRPC metadata `cardap-session`)."""

    def validate(self, token: str) -> Operator:
        """The token's operator; raises Unauthenticated when it is not a live session."""
        ...


def connection_of(role: str) -> str:
    """The connection id operator sessions bind to for a socket role (D18: gRPC over a
    Unix socket names no connection, so a session belongs to its socket)."""
    return f"socket:{role}"


KIOSK_CONNECTION = connection_of("kiosk")
"""Where the counter's operator is logged in."""

CARD_RIGHTS = frozenset({Right.LOAD, Right.DELETE, Right.DIAGNOSE})
"""The rights that let an operator handle a card at the counter."""


class CounterSessions(OperatorSessions, Protocol):
    """Sessions as the counter's card actions see them: who acts, and whether anyone is
    logged in on the calling socket (card events carry user IDs only then)."""

    def live(self, token: str) -> bool:
        """Whether an operator session is live on the calling socket (`token`: the one the
        caller sent, "" for none; a live session of the socket counts either way)."""
        ...

    def holder(self, connection: str) -> Operator | None:
        """The operator of the live session on `connection` (no refresh), or None."""
        ...


@dataclass(frozen=True)
class OrganisationRules:
    """What an organisation's administrators allow its operators at this terminal, under
    the loading service's catalogue: the APs they may load and delete (`restricted` False:
    every AP of the catalogue), the preset sets (name → AP ids in load order) and the one
    loaded when a load names no AP."""

    organisation: str
    restricted: bool = False
    loadable: frozenset[str] = frozenset()
    deletable: frozenset[str] = frozenset()
    presets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    default_preset: str = ""

    def may_load(self, ap_id: str) -> bool:
        """Whether the organisation's operators may load `ap_id` (catalogue permitting)."""
        return not self.restricted or ap_id in self.loadable

    def may_delete(self, ap_id: str) -> bool:
        """Whether they may delete it (catalogue permitting)."""
        return not self.restricted or ap_id in self.deletable


class IdStatus(enum.Enum):
    """A user ID's revocation status (mirrors cards.proto UserIDStatus)."""

    UNKNOWN = "unknown"
    IN_OPERATION = "in_operation"
    SUSPENDED = "suspended"
    ABOLISHED = "abolished"


class AuditSink(Protocol):
    """Appends one audit row; returns its sequence number once it is committed.

    `durable=True` asks for power-loss safety (card writes, administration, logins);
    False for process-crash safety only (high-rate reads). Raises `StoreError` when the
    row cannot be written: the operation must then be refused.
    """

    async def record(self, ctx: OpContext | None, operation: str, *, result: str,
                     reason: str = "", reader: str = "", card_id: str = "",
                     detail: Mapping[str, object] | None = None,
                     durable: bool = False) -> int:
        """Append one row."""
        ...

    def head(self) -> int:
        """Sequence number of the newest row."""
        ...


@dataclass(frozen=True)
class LoadingLinkStatus:
    """The loading service link for GetStatus: `up` None before the first contact."""

    configured: bool
    up: bool | None = None
    last_error: str = ""  # the failure reason while down (metrics' LINK_ERRORS)
    last_success: datetime | None = None
    address: str = ""


@dataclass(frozen=True)
class ScheduleWindow:
    """A closure or a maintenance window: [start, end)."""

    start: datetime
    end: datetime
    description: str = ""
    announced_at: datetime | None = None

    def covers(self, at: datetime) -> bool:
        """Whether `at` falls inside the window."""
        return self.start <= at < self.end


@dataclass(frozen=True)
class ServiceState:
    """What the terminal knows about the service's availability right now."""

    known: bool  # a schedule was ever received
    open: bool = False
    maintenance: ScheduleWindow | None = None  # in progress now
    next_opening: datetime | None = None  # while closed
    next_closing: datetime | None = None  # while open
    next_maintenance: ScheduleWindow | None = None
    clock_offset_s: float = 0.0
    fetched_at: float = 0.0  # this terminal's time.time() of the last successful fetch


@dataclass(frozen=True)
class FeedState:
    """One organisation's revocation feed: seconds since its last pull (None: never)."""

    organisation: str
    age_s: float | None
    stale: bool


@dataclass(frozen=True)
class DaemonStatus:
    """Daemon health for GetStatus and WatchStatus: the readers, the audit log, the
    loading service (link and availability), the revocation feeds, the fingerprint device."""

    version: str
    started_at: datetime
    pcsc_available: bool
    readers: int
    cards: int
    audit_head_seq: int
    capabilities: tuple[str, ...] = ()
    loading_link: LoadingLinkStatus = LoadingLinkStatus(configured=False)
    loading_cert_not_after: datetime | None = None
    warnings: tuple[str, ...] = ()
    service: ServiceState = ServiceState(known=False)
    feeds: tuple[FeedState, ...] = ()
    fingerprint_device: str = "unknown"  # see telemetry.metrics.BIOMETRIC_STATES


AUDIT_OPERATIONS: frozenset[str] = frozenset({
    # card events and the daemon's own life
    "card_inserted", "card_removed", "daemon_started", "daemon_stopped", "config_reload",
    "journal_interrupted", "journal_card_ids_renamed", "audit_anchor_reset", "rpc_refused",
    # reads and diagnoses
    "read_user_id", "read_user_id_a", "read_user_id_d", "read_user_id_custom", "diagnose",
    "revocation_sync", "set_user_id_status",
    # card APs
    "load", "load_started", "delete", "delete_started", "list_card_aps", "reconcile",
    # operators and the roster
    "operator_login", "operator_logout", "roster_add_organisation", "roster_add_operator",
    "roster_set_enabled", "roster_appoint_administrator", "roster_grant_password_fallback",
    "roster_unlock", "roster_set_fingers", "roster_enroll_finger",
    "roster_set_permitted_aps", "roster_set_preset", "roster_prints_deleted",
    "roster_bootstrap_administrator", "roster_remove_operator", "roster_set_rights",
    "roster_set_organisation_aps", "roster_set_default_preset",
    # the audit trail itself
    "audit_export", "audit_verify", "yearly_report",
})
"""Every operation name an audit row can carry: what `ExportAudit` filters on (an unknown
name is refused, not silently matched by nothing). A test checks the daemon writes no
other."""
