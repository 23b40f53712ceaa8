"""A small synchronous client of the cardapd local API.

Errors come back as `CardapClientError` with the gRPC code, the daemon's stable reason
(from the ErrorInfo detail) and its metadata, so callers branch on `reason`, not on text.
"""

from __future__ import annotations

import os
import queue
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from cardap.v1 import audit_pb2, cards_pb2, operators_pb2, terminal_pb2, terminal_pb2_grpc

DEFAULT_SOCKET_DIR = Path("/run/cardapd")
AUTH_METHODS = {"fingerprint": operators_pb2.AUTH_METHOD_FINGERPRINT,
                "password": operators_pb2.AUTH_METHOD_PASSWORD}
PROMPT_ENTER_PASSWORD = "ENTER_PASSWORD"  # noqa: S105 (a prompt code)


def default_socket(role: str, socket_dir: Path | None = None) -> Path:
    """The socket of a role: $CARDAPD_SOCKET_DIR or /run/cardapd, then `<role>.sock`."""
    base = socket_dir or Path(os.environ.get("CARDAPD_SOCKET_DIR", DEFAULT_SOCKET_DIR))
    return base / f"{role}.sock"


class CardapClientError(Exception):
    """A failed call: gRPC code, stable reason, English message and metadata, and
    `localized`: what it means and what to do next in the call's language (the daemon's
    google.rpc.LocalizedMessage; "" when it sent none) with its `locale`."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str,
                 metadata: dict[str, str], localized: str = "", locale: str = "") -> None:
        super().__init__(f"{code.name} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.metadata = metadata
        self.localized = localized
        self.locale = locale

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError) -> CardapClientError:
        """Decode the rich status (ErrorInfo) of a failed call."""
        call: Any = err
        code = call.code() if hasattr(call, "code") else grpc.StatusCode.UNKNOWN
        message = call.details() if hasattr(call, "details") else str(err)
        reason, metadata = code.name, {}
        localized = locale = ""
        try:
            status = rpc_status.from_call(call)
        except ValueError:
            status = None
        if status is not None:
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                text = error_details_pb2.LocalizedMessage()
                if detail.Is(info.DESCRIPTOR) and detail.Unpack(info):
                    reason, metadata = info.reason, dict(info.metadata)
                elif detail.Is(text.DESCRIPTOR) and detail.Unpack(text):
                    localized, locale = text.message, text.locale
        if code == grpc.StatusCode.UNAVAILABLE and reason == "UNAVAILABLE":
            reason = "DAEMON_UNREACHABLE"
        return cls(code, reason, message or "", metadata, localized, locale)


DELETE_REASONS = {"holder_request": terminal_pb2.DELETE_REASON_HOLDER_REQUEST,
                  "card_renewal": terminal_pb2.DELETE_REASON_CARD_RENEWAL,
                  "other": terminal_pb2.DELETE_REASON_OTHER}


def right_value(right: str | int) -> operators_pb2.Right.ValueType:
    """A right by name (`load`, `RIGHT_LOAD`) or number, as the proto enum value."""
    if isinstance(right, int):
        return operators_pb2.Right.ValueType(right)
    name = right.strip().upper()
    name = name if name.startswith("RIGHT_") else f"RIGHT_{name}"
    try:
        return operators_pb2.Right.Value(name)
    except ValueError:
        raise ValueError(f"unknown right {right!r}") from None


def timestamp(when: datetime) -> Timestamp:
    """A datetime as a protobuf Timestamp; a naive datetime is refused (ambiguous)."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("a timezone-aware datetime is required")
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


class CardapClient:
    """Connects to one cardapd socket (`unix:/path` or a path)."""

    def __init__(self, socket: str | Path, *, timeout: float = 10.0,
                 request_id: str | None = None, session: str | None = None,
                 language: str | None = None) -> None:
        target = str(socket)
        if not target.startswith("unix:"):
            target = f"unix:{target}"
        self.channel = grpc.insecure_channel(target)
        self.stub = terminal_pb2_grpc.TerminalStub(self.channel)
        self.timeout = timeout
        meta = []
        if request_id:
            meta.append(("x-request-id", request_id))
        if session:  # the operator session token for load/delete (kiosk socket)
            meta.append(("cardap-session", session))
        if language:  # the texts for people in answers ("ja", "en" or an Accept-Language)
            meta.append(("accept-language", language))
        self._metadata = tuple(meta) or None

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

    def __enter__(self) -> CardapClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise CardapClientError.from_rpc_error(err) from None

    def _stream(self, method: Any, request: Any,
                timeout: float | None = None) -> Iterator[Any]:
        call = method(request, timeout=timeout, metadata=self._metadata)
        try:
            yield from call
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.CANCELLED:
                return
            raise CardapClientError.from_rpc_error(err) from None
        finally:
            call.cancel()

    def status(self) -> terminal_pb2.GetStatusResponse:
        """Daemon status."""
        return self._call(self.stub.GetStatus, terminal_pb2.GetStatusRequest())  # type: ignore[no-any-return]

    def watch_status(self, heartbeat_s: int = 0, timeout: float | None = None
                     ) -> Iterator[terminal_pb2.GetStatusResponse]:
        """The status now, then at each change (and every `heartbeat_s`, 0: 60)."""
        return self._stream(self.stub.WatchStatus,
                            terminal_pb2.WatchStatusRequest(heartbeat_s=heartbeat_s), timeout)

    def readers(self) -> terminal_pb2.ListReadersResponse:
        """Readers and their cards."""
        return self._call(self.stub.ListReaders, terminal_pb2.ListReadersRequest())  # type: ignore[no-any-return]

    def watch(self, readers: Sequence[str] = (),
              timeout: float | None = None) -> Iterator[cards_pb2.CardEvent]:
        """Card events: the snapshot, then live events (until the iterator is closed)."""
        return self._stream(self.stub.WatchCardEvents,
                            terminal_pb2.WatchCardEventsRequest(readers=list(readers)), timeout)

    def read_user_id(self, reader: str = "", aid: str = "", *, fresh: bool = False,
                     ap_type: int = cards_pb2.AP_TYPE_C) -> terminal_pb2.ReadUserIdResponse:
        """Read a user ID (Type C)."""
        return self._call(self.stub.ReadUserId, terminal_pb2.ReadUserIdRequest(  # type: ignore[no-any-return]
            reader=reader, aid=aid, fresh=fresh, type=ap_type))  # type: ignore[arg-type]

    def diagnose(self, reader: str = "") -> terminal_pb2.DiagnoseResponse:
        """Card fault isolation."""
        return self._call(self.stub.Diagnose, terminal_pb2.DiagnoseRequest(reader=reader))  # type: ignore[no-any-return]

    def loadable_aps(self) -> terminal_pb2.ListLoadableApsResponse:
        """The APs the session's organisation may load, and the preset sets."""
        return self._call(self.stub.ListLoadableAps,  # type: ignore[no-any-return]
                          terminal_pb2.ListLoadableApsRequest())

    def card_aps(self, reader: str = "") -> terminal_pb2.ListCardApsResponse:
        """The APs on the card and the free space per area."""
        return self._call(self.stub.ListCardAps,  # type: ignore[no-any-return]
                          terminal_pb2.ListCardApsRequest(reader=reader))

    def load_ap(self, ap_id: str = "", *, preset: str = "", reader: str = "",
                custom_user_id: str = "", default_preset: bool = False,
                timeout: float | None = 120.0) -> Iterator[terminal_pb2.LoadApEvent]:
        """Load one AP, a preset set, or (`default_preset`) the organisation's default
        preset: progress events, then a result per AP."""
        request = terminal_pb2.LoadApRequest(reader=reader, custom_user_id=custom_user_id)
        if default_preset:
            request.default_preset = True
        elif preset:
            request.preset = preset
        else:
            request.ap_id = ap_id
        return self._stream(self.stub.LoadAp, request, timeout)

    def delete_ap(self, aid: str, reader: str = "", *, reason: str,
                  reason_detail: str = "") -> terminal_pb2.DeleteApResponse:
        """Delete an AP instance (ALREADY_ABSENT is a success); `reason`: holder_request,
        card_renewal or other (then with `reason_detail`)."""
        code = DELETE_REASONS.get(reason)
        if code is None:
            raise ValueError(f"reason must be one of {', '.join(DELETE_REASONS)}")
        return self._call(self.stub.DeleteAp,  # type: ignore[no-any-return]
                          terminal_pb2.DeleteApRequest(reader=reader, aid=aid, reason=code,
                                                       reason_detail=reason_detail))

    def metrics(self, interval_s: int = 10, prefixes: Sequence[str] = (),
                timeout: float | None = None) -> Iterator[terminal_pb2.MetricsSnapshot]:
        """Metric snapshots every `interval_s` seconds."""
        return self._stream(self.stub.WatchMetrics, terminal_pb2.WatchMetricsRequest(
            interval_s=interval_s, prefixes=list(prefixes)), timeout)

    # ------------------------------------------------------------ operators (issue 5)

    def authenticate(self, organisation: str, operator_id: str, method: str = "fingerprint",
                     password_provider: Callable[[], str] | None = None, timeout_s: int = 0,
                     *, call_timeout: float | None = None, replace_session: bool = False,
                     ) -> Generator[terminal_pb2.Prompt | terminal_pb2.OperatorSession, None, None]:
        """Log an operator in: yields the prompts, then the OperatorSession as the last item.

        On an ENTER_PASSWORD prompt the password comes from `password_provider` (called
        after the prompt is yielded); without one the login is cancelled and
        `PASSWORD_REQUIRED` raised. Closing the iterator early cancels the login.
        `replace_session` ends another operator's live session on this socket.
        """
        if method not in AUTH_METHODS:
            raise ValueError(f"method must be one of {sorted(AUTH_METHODS)}")
        outbox: queue.SimpleQueue[terminal_pb2.AuthenticateRequest | None] = queue.SimpleQueue()
        outbox.put(terminal_pb2.AuthenticateRequest(start=terminal_pb2.AuthenticateStart(
            organisation=organisation, operator_id=operator_id, method=AUTH_METHODS[method],
            timeout_s=timeout_s, replace_session=replace_session)))

        def requests() -> Iterator[terminal_pb2.AuthenticateRequest]:
            while (item := outbox.get()) is not None:
                yield item

        call: Any = self.stub.AuthenticateOperator(requests(), timeout=call_timeout,
                                                   metadata=self._metadata)
        finished = False
        try:
            for event in call:
                if event.WhichOneof("event") == "session":
                    finished = True
                    outbox.put(None)  # half-close, then let the call end with OK (no cancel)
                    for _ in call:
                        pass
                    yield event.session
                    return
                if event.WhichOneof("event") != "prompt":
                    continue
                yield event.prompt
                if event.prompt.code == PROMPT_ENTER_PASSWORD:
                    if password_provider is None:
                        raise CardapClientError(
                            grpc.StatusCode.INVALID_ARGUMENT, "PASSWORD_REQUIRED",
                            "the daemon asks for a password and none can be given", {})
                    outbox.put(terminal_pb2.AuthenticateRequest(password=password_provider()))
            raise CardapClientError(grpc.StatusCode.UNKNOWN, "LOGIN_INCOMPLETE",
                                    "the daemon ended the login without a session", {})
        except grpc.RpcError as err:
            raise CardapClientError.from_rpc_error(err) from None
        finally:
            if not finished:
                outbox.put(terminal_pb2.AuthenticateRequest(cancel=True))
                outbox.put(None)
                call.cancel()

    def end_session(self, token: str) -> terminal_pb2.EndOperatorSessionResponse:
        """End an operator session at once."""
        return self._call(self.stub.EndOperatorSession,  # type: ignore[no-any-return]
                          terminal_pb2.EndOperatorSessionRequest(token=token))

    def list_operators(self, organisation: str = "") -> terminal_pb2.ListOperatorsResponse:
        """The roster (one organisation, or all when empty)."""
        return self._call(self.stub.ListOperators,  # type: ignore[no-any-return]
                          terminal_pb2.ListOperatorsRequest(organisation=organisation))

    def add_operator(self, organisation: str, operator_id: str, display_name: str = "",
                     rights: Iterable[str | int] = ("load",)) -> operators_pb2.Operator:
        """Add an operator with rights (names like `load` or Right values)."""
        return self._call(self.stub.AddOperator,  # type: ignore[no-any-return]
                          terminal_pb2.AddOperatorRequest(
                              organisation=organisation, operator_id=operator_id,
                              display_name=display_name,
                              rights=[right_value(r) for r in rights]))

    def set_operator_enabled(self, organisation: str, operator_id: str,
                             enabled: bool) -> operators_pb2.Operator:
        """Enable or disable an operator (a disabled operator's session stops at once)."""
        return self._call(self.stub.SetOperatorEnabled,  # type: ignore[no-any-return]
                          terminal_pb2.SetOperatorEnabledRequest(
                              organisation=organisation, operator_id=operator_id,
                              enabled=enabled))

    def appoint_administrator(self, organisation: str,
                              operator_id: str) -> operators_pb2.Operator:
        """Appoint an operator administrator of their organisation."""
        return self._call(self.stub.AppointAdministrator,  # type: ignore[no-any-return]
                          terminal_pb2.AppointAdministratorRequest(
                              organisation=organisation, operator_id=operator_id))

    def grant_password_fallback(self, organisation: str, operator_id: str, *, reason: str,
                                expires_at: datetime,
                                password: str) -> operators_pb2.Operator:
        """Approve ID + password login until `expires_at` (aware datetime), with its password."""
        return self._call(self.stub.GrantPasswordFallback,  # type: ignore[no-any-return]
                          terminal_pb2.GrantPasswordFallbackRequest(
                              organisation=organisation, operator_id=operator_id,
                              reason=reason, expires_at=timestamp(expires_at),
                              password=password))

    def unlock_operator(self, organisation: str, operator_id: str) -> operators_pb2.Operator:
        """Unlock an operator locked after too many wrong passwords."""
        return self._call(self.stub.UnlockOperator,  # type: ignore[no-any-return]
                          terminal_pb2.UnlockOperatorRequest(
                              organisation=organisation, operator_id=operator_id))

    def bootstrap_administrator(self, organisation: str, operator_id: str, *, secret: str,
                                display_name: str = "",
                                rights: Iterable[str | int] = ("load", "delete", "diagnose"),
                                replace_session: bool = False
                                ) -> terminal_pb2.OperatorSession:
        """Appoint an organisation's first administrator with the one-time secret of
        `cardapd bootstrap-admin` (a local act); their session on the ops socket."""
        return self._call(self.stub.BootstrapAdministrator,  # type: ignore[no-any-return]
                          terminal_pb2.BootstrapAdministratorRequest(
                              organisation=organisation, operator_id=operator_id,
                              display_name=display_name, secret=secret,
                              rights=[right_value(r) for r in rights],
                              replace_session=replace_session))

    def remove_operator(self, organisation: str, operator_id: str) -> operators_pb2.Operator:
        """Remove an operator (kept as removed; the id is never used again)."""
        return self._call(self.stub.RemoveOperator,  # type: ignore[no-any-return]
                          terminal_pb2.RemoveOperatorRequest(
                              organisation=organisation, operator_id=operator_id))

    def set_operator_rights(self, organisation: str, operator_id: str,
                            rights: Iterable[str | int]) -> operators_pb2.Operator:
        """Replace an operator's rights (names like `load` or Right values)."""
        return self._call(self.stub.SetOperatorRights,  # type: ignore[no-any-return]
                          terminal_pb2.SetOperatorRightsRequest(
                              organisation=organisation, operator_id=operator_id,
                              rights=[right_value(r) for r in rights]))

    def organisation_rights(self, organisation: str) -> terminal_pb2.OrganisationRights:
        """What the organisation allows its operators: APs, presets, the default preset."""
        return self._call(self.stub.GetOrganisationRights,  # type: ignore[no-any-return]
                          terminal_pb2.GetOrganisationRightsRequest(organisation=organisation))

    def set_organisation_aps(self, organisation: str, *, load: Sequence[str] = (),
                             delete: Sequence[str] = (), unrestricted: bool = False
                             ) -> terminal_pb2.OrganisationRights:
        """The APs the organisation's operators may load and delete (or every AP of its
        catalogue with `unrestricted`)."""
        return self._call(self.stub.SetOrganisationAps,  # type: ignore[no-any-return]
                          terminal_pb2.SetOrganisationApsRequest(
                              organisation=organisation, load_ap_ids=list(load),
                              delete_ap_ids=list(delete), unrestricted=unrestricted))

    def set_preset(self, organisation: str, name: str, ap_ids: Sequence[str], *,
                   make_default: bool = False) -> terminal_pb2.OrganisationRights:
        """Create, replace or (no APs) delete a preset set of the organisation."""
        return self._call(self.stub.SetPreset,  # type: ignore[no-any-return]
                          terminal_pb2.SetPresetRequest(
                              organisation=organisation, name=name, ap_ids=list(ap_ids),
                              make_default=make_default))

    def set_default_preset(self, organisation: str,
                           name: str) -> terminal_pb2.OrganisationRights:
        """The organisation's default preset ("" for none)."""
        return self._call(self.stub.SetDefaultPreset,  # type: ignore[no-any-return]
                          terminal_pb2.SetDefaultPresetRequest(organisation=organisation,
                                                               name=name))

    def enroll_finger(self, organisation: str, operator_id: str, finger: str,
                      timeout: float | None = None) -> Iterator[terminal_pb2.EnrollEvent]:
        """Enrol a finger: EnrollEvents (prompt, then `completed`) as they come."""
        return self._stream(self.stub.EnrollFinger, terminal_pb2.EnrollFingerRequest(
            organisation=organisation, operator_id=operator_id, finger=finger), timeout)

    # ------------------------------------------------------------ audit (issue 5)

    def export_audit(self, since: datetime | None = None, until: datetime | None = None,
                     operations: Sequence[str] = (),
                     timeout: float | None = None) -> Iterator[audit_pb2.AuditRecord]:
        """Audit rows in chain order, optionally within [since, until) and of some operations."""
        request = terminal_pb2.ExportAuditRequest(operations=list(operations))
        if since is not None:
            request.since.CopyFrom(timestamp(since))
        if until is not None:
            request.until.CopyFrom(timestamp(until))
        return self._stream(self.stub.ExportAudit, request, timeout)

    def verify_audit(self, timeout: float | None = None, *, full: bool = False,
                     checkpoints: Sequence[audit_pb2.AuditCheckpoint] = (),
                     from_service: bool = False) -> terminal_pb2.VerifyAuditResponse:
        """Verify the audit hash chain (incremental unless `full`), comparing it with
        `checkpoints` and, if asked, those the loading service kept (`timeout` overrides the
        per-call default)."""
        return self._call(self.stub.VerifyAudit,  # type: ignore[no-any-return]
                          terminal_pb2.VerifyAuditRequest(
                              full=full, checkpoints=list(checkpoints),
                              checkpoints_from_service=from_service), timeout)

    def acknowledge_audit_reset(self, reset_seq: int, reason: str
                                ) -> terminal_pb2.AcknowledgeAuditResetResponse:
        """Acknowledge the anchor reset at `reset_seq` (an administrator's session)."""
        return self._call(self.stub.AcknowledgeAuditReset,  # type: ignore[no-any-return]
                          terminal_pb2.AcknowledgeAuditResetRequest(reset_seq=reset_seq,
                                                                    reason=reason))

    def yearly_report(self, year: int,
                      timeout: float | None = None) -> terminal_pb2.YearlyReport:
        """The yearly report: loads and charge per organisation, and the audit result."""
        return self._call(self.stub.GetYearlyReport,  # type: ignore[no-any-return]
                          terminal_pb2.GetYearlyReportRequest(year=year), timeout)
