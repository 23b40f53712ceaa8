"""The Terminal servicer: one instance per socket role, thin over the engine.

Each method is wrapped by `unary` or `stream`, which enforces the per-method role table, assigns the
request id, turns domain errors into rich gRPC statuses and counts the call. Methods whose
capability is not built yet answer UNIMPLEMENTED naming it; none pretends to work.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from cardap.v1 import audit_pb2, cards_pb2, operators_pb2, terminal_pb2, terminal_pb2_grpc
from cardapd import logcontext
from cardapd.api import audit as audit_api
from cardapd.api import convert, validate
from cardapd.api import operators as ops_api
from cardapd.api.roles import Role, allowed
from cardapd.api.status import internal, to_status
from cardapd.config import ApKind
from cardapd.engine.diagnose import worst
from cardapd.engine.engine import Engine
from cardapd.engine.hub import now
from cardapd.engine.loading import Loader, LoadOutcome, Progress
from cardapd.engine.model import OpContext
from cardapd.engine.operators import OperatorService
from cardapd.engine.revocation import Revocation
from cardapd.engine.revocation_store import IdStatus
from cardapd.engine.roster_admin import RosterAdmin
from cardapd.engine.secure_read import SecureReads
from cardapd.errors import (
    CardapError,
    InvalidArgument,
    NotAuthorized,
    NotImplementedYet,
    Unauthenticated,
)
from cardapd.loading import convert as loading_convert
from cardapd.loading.operators import SESSION_METADATA, Operator
from cardapd.myna.userid import validate_user_id
from cardapd.roster import OperatorRecord, connection_scope, current_connection

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Ctx = grpc.aio.ServicerContext[Any, Any]
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_DIGIT_RUN = re.compile(r"\d{12}")
_AP_KINDS: dict[int, ApKind] = {
    cards_pb2.AP_TYPE_UNSPECIFIED: "C", cards_pb2.AP_TYPE_C: "C", cards_pb2.AP_TYPE_A: "A",
    cards_pb2.AP_TYPE_D: "D", cards_pb2.AP_TYPE_CUSTOM: "custom"}
_STATUS_TO = {
    IdStatus.UNKNOWN: cards_pb2.USER_ID_STATUS_UNKNOWN,
    IdStatus.IN_OPERATION: cards_pb2.USER_ID_STATUS_IN_OPERATION,
    IdStatus.SUSPENDED: cards_pb2.USER_ID_STATUS_SUSPENDED,
    IdStatus.ABOLISHED: cards_pb2.USER_ID_STATUS_ABOLISHED}


def _request_id(context: Ctx) -> str:
    """The client's x-request-id if well formed, else a new one.

    Ids never hold 12 digits in a row: the audit log refuses anything shaped like a My
    Number, so a generated id is two 8-character hex groups joined by a dash.
    """
    for key, value in context.invocation_metadata() or ():
        if (key == "x-request-id" and isinstance(value, str) and _REQUEST_ID.fullmatch(value)
                and not _DIGIT_RUN.search(value)):
            return value
    raw = os.urandom(8).hex()
    return f"{raw[:8]}-{raw[8:]}"


async def _refused(servicer: TerminalServicer, name: str, context: Ctx,
                   denied: _Denied) -> None:
    """Audit a call refused by the role table, then abort it with PERMISSION_DENIED."""
    try:
        await servicer.engine.audit.record(
            OpContext(role=str(servicer.role), request_id=denied.rid), "rpc_refused",
            result="error", reason=denied.error.reason, detail={"method": name})
    except CardapError:
        log.exception("could not audit a refused %s call", name)
    await _fail(servicer, name, context, denied.rid, denied.error)


async def _fail(servicer: TerminalServicer, name: str, context: Ctx, rid: str,
                exc: BaseException) -> None:
    """Abort the call with the rich status of `exc` (INTERNAL for the unexpected)."""
    if isinstance(exc, CardapError):
        err = exc
    else:
        log.exception("unexpected error in %s (request %s)", name, rid)
        err = internal(rid)
    status = to_status(err, rid)
    servicer.count(name, status.code.name)
    await context.abort(status.code, status.details, status.trailing_metadata)


def _admit(servicer: TerminalServicer, name: str, context: Ctx) -> OpContext:
    """The call's OpContext, or `_Denied` when the role table refuses this socket."""
    rid = _request_id(context)
    # Each call runs in its own task: set, not scoped, like `current_connection` (D21).
    logcontext.set_fields(operation=logcontext.operation_name(name), request_id=rid,
                          role=str(servicer.role))
    if not allowed(name, servicer.role):
        raise _Denied(rid, NotAuthorized(
            f"{name} is not available on the {servicer.role} socket",
            reason="WRONG_ROLE", metadata={"method": name, "role": str(servicer.role)}))
    return OpContext(role=str(servicer.role), request_id=rid)


def unary(fn: Callable[[TerminalServicer, Req, Ctx, OpContext], Awaitable[Resp]]
          ) -> Callable[[TerminalServicer, Req, Ctx], Awaitable[Resp]]:
    """Role check, request id, error mapping and metrics around a unary method."""
    name = fn.__name__

    @functools.wraps(fn)
    async def wrapper(self: TerminalServicer, request: Req, context: Ctx) -> Resp:
        try:
            ctx = _admit(self, name, context)
        except _Denied as denied:
            await _refused(self, name, context, denied)
            raise AssertionError("abort returned") from None
        try:
            _check_parsed(request)
            with connection_scope(self.connection):
                response = await fn(self, request, context, ctx)
        except Exception as exc:
            await _fail(self, name, context, ctx.request_id, exc)
            raise AssertionError("abort returned") from None
        self.count(name, "OK")
        return response
    return wrapper


def stream(fn: Callable[[TerminalServicer, Req, Ctx, OpContext], AsyncIterator[Resp]]
           ) -> Callable[[TerminalServicer, Req, Ctx], AsyncIterator[Resp]]:
    """The same as `unary`, for server-streaming methods."""
    name = fn.__name__

    @functools.wraps(fn)
    async def wrapper(self: TerminalServicer, request: Req, context: Ctx) -> AsyncIterator[Resp]:
        try:
            ctx = _admit(self, name, context)
        except _Denied as denied:
            await _refused(self, name, context, denied)
            return
        try:
            _check_parsed(request)
            # Set, not scoped: a generator may be closed from another Context, where a
            # reset fails; each RPC runs in its own task, so nothing leaks to other calls.
            current_connection.set(self.connection)
            async for item in fn(self, request, context, ctx):
                yield item
        except Exception as exc:
            await _fail(self, name, context, ctx.request_id, exc)
            return
        self.count(name, "OK")
    return wrapper


class MalformedRequest:
    """Stands in for a request whose bytes did not parse (see `api.server._tolerant`)."""

    def __init__(self, problem: str) -> None:
        self.problem = problem


def _check_parsed(request: object) -> None:
    if isinstance(request, MalformedRequest):
        raise InvalidArgument(f"the request is not a valid message: {request.problem}",
                              reason="MALFORMED_REQUEST")


class _Denied(Exception):
    def __init__(self, rid: str, error: CardapError) -> None:
        super().__init__(error.message)
        self.rid, self.error = rid, error


def _session_token(context: Ctx) -> str:
    """The operator session token from the `cardap-session` metadata ("" if none)."""
    for key, value in context.invocation_metadata() or ():
        if key == SESSION_METADATA and isinstance(value, str):
            return value
    return ""


def _not_yet(capability: str, issue: int) -> NotImplementedYet:
    return NotImplementedYet(capability, issue)


class TerminalServicer(terminal_pb2_grpc.TerminalServicer):
    """cardap.v1.Terminal for one socket role."""

    def __init__(self, engine: Engine, role: Role) -> None:
        self.engine = engine
        self.role = role
        # gRPC over a Unix socket names no connection: sessions bind to the socket (D18).
        self.connection = f"socket:{role}"
        self._grpc_requests = engine.metrics.grpc_requests

    def count(self, method: str, code: str) -> None:
        """Count one finished call."""
        self._grpc_requests.labels(method, str(self.role), code).inc()

    # ------------------------------------------------------------ readers and cards

    @unary
    async def GetStatus(self, request: terminal_pb2.GetStatusRequest, context: Any,
                        ctx: OpContext) -> terminal_pb2.GetStatusResponse:
        return convert.status(self.engine.status(), str(self.role))

    @unary
    async def ListReaders(self, request: terminal_pb2.ListReadersRequest, context: Any,
                          ctx: OpContext) -> terminal_pb2.ListReadersResponse:
        return terminal_pb2.ListReadersResponse(
            readers=[convert.reader(v) for v in self.engine.readers()],
            pcsc_available=self.engine.pcsc_available)

    @stream
    async def WatchCardEvents(self, request: terminal_pb2.WatchCardEventsRequest, context: Any,
                              ctx: OpContext) -> AsyncIterator[cards_pb2.CardEvent]:
        readers = validate.reader_filter(list(request.readers))
        sub = self.engine.subscribe(readers)
        try:
            async for event in sub.events():
                yield convert.event(event)
            if sub.overflowed:
                raise CardapError("this client fell too far behind the card events; "
                                  "reconnect to get a fresh snapshot",
                                  reason="EVENT_QUEUE_OVERFLOW")
        finally:
            self.engine.unsubscribe(sub)

    @unary
    async def ReadUserID(self, request: terminal_pb2.ReadUserIDRequest, context: Any,
                         ctx: OpContext) -> terminal_pb2.ReadUserIDResponse:
        reader = validate.reader_name(request.reader)
        aid = validate.aid(request.aid)
        pin = validate.pin(request.pin)
        kind = _AP_KINDS.get(request.type)
        if kind is None:
            raise InvalidArgument(f"type: unknown AP type {request.type}",
                                  metadata={"field": "type"})
        if kind == "C" and request.pin:
            raise InvalidArgument("pin: a Type C AP is read without a PIN; send none",
                                  metadata={"field": "pin"})
        cancel = threading.Event()
        try:
            if kind == "C":
                result = await self.engine.read_user_id(ctx, reader=reader, aid=aid,
                                                        fresh=request.fresh, cancel=cancel)
            else:
                result = await self._secure().read(ctx, reader=reader, kind=kind, aid=aid,
                                                   pin=pin, cancel=cancel)
        except asyncio.CancelledError:
            cancel.set()
            raise
        return terminal_pb2.ReadUserIDResponse(
            user_id=result.user_id, info=list(result.info), card_id=result.card_id,
            reader=result.reader, cached=result.cached, status=_STATUS_TO[result.status],
            feed_age_s=result.feed_age_s, aid=result.aid.hex().upper(),
            feed_stale=result.feed_stale, warning=result.warning)

    def _secure(self) -> SecureReads:
        if self.engine.secure is None:
            raise InvalidArgument("no Type A/D/custom AP is configured ([[read.aps]])",
                                  reason="AP_NOT_CONFIGURED")
        return self.engine.secure

    @unary
    async def Diagnose(self, request: terminal_pb2.DiagnoseRequest, context: Any,
                       ctx: OpContext) -> terminal_pb2.DiagnoseResponse:
        reader = validate.reader_name(request.reader)
        cancel = threading.Event()
        try:
            diags = await self.engine.diagnose(ctx, reader=reader, cancel=cancel)
        except asyncio.CancelledError:
            cancel.set()
            raise
        bad = worst(diags)
        return terminal_pb2.DiagnoseResponse(
            pcsc_available=self.engine.pcsc_available,
            readers=[convert.diagnosis(d) for d in diags],
            verdict=convert.VERDICT[bad.verdict] if bad else terminal_pb2.VERDICT_OK,
            next_action=bad.next_action if bad else "")

    @stream
    async def WatchMetrics(self, request: terminal_pb2.WatchMetricsRequest, context: Any,
                           ctx: OpContext) -> AsyncIterator[terminal_pb2.MetricsSnapshot]:
        interval = validate.interval(request.interval_s)
        prefixes = validate.prefixes(list(request.prefixes))
        while True:
            yield terminal_pb2.MetricsSnapshot(
                time=convert.timestamp(now()),
                samples=convert.samples(self.engine.metrics.samples(prefixes)))
            await asyncio.sleep(interval)

    # ------------------------------------------------------------ operators

    def _operators(self) -> OperatorService:
        return ops_api.service(self.engine.operators)

    def _admin(self) -> RosterAdmin:
        return RosterAdmin(self._operators())

    @stream
    async def AuthenticateOperator(self, request_iterator: Any, context: Any,
                                   ctx: OpContext) -> AsyncIterator[terminal_pb2.AuthenticateEvent]:
        async for event in ops_api.authenticate(self._operators(), request_iterator, ctx,
                                                self.connection):
            yield event

    @unary
    async def EndOperatorSession(self, request: terminal_pb2.EndOperatorSessionRequest,
                                 context: Any, ctx: OpContext
                                 ) -> terminal_pb2.EndOperatorSessionResponse:
        token = request.token or _session_token(context)
        if not token:
            raise Unauthenticated("no session token (field token or metadata cardap-session)",
                                  reason="NO_OPERATOR_SESSION")
        await self._operators().logout(ctx, token, self.connection)
        return terminal_pb2.EndOperatorSessionResponse()

    @unary
    async def ListLoadableAPs(self, request: terminal_pb2.ListLoadableAPsRequest, context: Any,
                              ctx: OpContext) -> terminal_pb2.ListLoadableAPsResponse:
        loader = self._loader()
        operator = loader.operator(_session_token(context))
        entries, presets = await loader.list_loadable(operator)
        return terminal_pb2.ListLoadableAPsResponse(
            aps=entries, presets=[terminal_pb2.PresetSet(name=n, ap_ids=ids)
                                  for n, ids in presets.items()])

    @stream
    async def LoadAP(self, request: terminal_pb2.LoadAPRequest, context: Any,
                     ctx: OpContext) -> AsyncIterator[terminal_pb2.LoadAPEvent]:
        loader = self._loader()
        operator = loader.operator(_session_token(context))
        reader = validate.reader_name(request.reader)
        which = request.WhichOneof("what")
        ap_id = request.ap_id if which == "ap_id" else ""
        preset = request.preset if which == "preset" else ""
        if not (ap_id or preset) or len(ap_id) > 128 or len(preset) > 128:
            raise InvalidArgument("ap_id or preset: name one AP or one preset (≤ 128 bytes)",
                                  metadata={"field": "what"})
        if len(request.custom_user_id) > 13:
            raise InvalidArgument("custom_user_id: 13 characters",
                                  metadata={"field": "custom_user_id"})
        queue: asyncio.Queue[Progress | LoadOutcome] = asyncio.Queue()
        cancel = threading.Event()
        task = asyncio.ensure_future(loader.load(
            ctx, operator, reader=reader, ap_id=ap_id, preset=preset,
            custom_user_id=request.custom_user_id, progress=queue.put_nowait,
            result=queue.put_nowait, cancel=cancel))
        try:
            while not (task.done() and queue.empty()):
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait([getter, task], return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield loading_convert.event(getter.result())
                else:
                    getter.cancel()
            task.result()
        except asyncio.CancelledError:
            cancel.set()
            raise

    @unary
    async def DeleteAP(self, request: terminal_pb2.DeleteAPRequest, context: Any,
                       ctx: OpContext) -> terminal_pb2.DeleteAPResponse:
        loader = self._loader()
        operator = loader.operator(_session_token(context))
        reader = validate.reader_name(request.reader)
        aid = validate.aid(request.aid)
        if aid is None:
            raise InvalidArgument("aid: the AID of the AP to delete is required",
                                  reason="AID_REQUIRED", metadata={"field": "aid"})
        cancel = threading.Event()
        try:
            out = await loader.delete(ctx, operator, reader=reader, aid=aid, cancel=cancel)
        except asyncio.CancelledError:
            cancel.set()
            raise
        return terminal_pb2.DeleteAPResponse(outcome=out.outcome, free_bytes=out.free_bytes)

    @unary
    async def ListCardAPs(self, request: terminal_pb2.ListCardAPsRequest, context: Any,
                          ctx: OpContext) -> terminal_pb2.ListCardAPsResponse:
        loader = self._loader()
        reader = validate.reader_name(request.reader)
        cancel = threading.Event()
        try:
            found, free = await loader.list_card_aps(ctx, reader=reader, cancel=cancel)
        except asyncio.CancelledError:
            cancel.set()
            raise
        return terminal_pb2.ListCardAPsResponse(
            aps=[loading_convert.card_ap(a) for a in found], free_bytes=free)

    def _loader(self) -> Loader:
        if self.engine.loading is None:
            raise _not_yet("card AP loading (no loader wired)", 4)
        return self.engine.loading

    # ------------------------------------------------------------ audit

    def _audit_path(self) -> Path:
        if self.engine.audit_path is None:
            raise _not_yet("the audit API (no audit log path wired)", 5)
        return self.engine.audit_path

    @stream
    async def ExportAudit(self, request: terminal_pb2.ExportAuditRequest, context: Any,
                          ctx: OpContext) -> AsyncIterator[audit_pb2.AuditRecord]:
        path, flt = self._audit_path(), audit_api.audit_filter(request)
        await self.engine.audit.record(ctx, "audit_export", result="ok", detail={
            "operations": sorted(flt.operations or ())}, durable=True)
        async for rec in audit_api.export(path, flt):
            yield rec

    @unary
    async def VerifyAudit(self, request: terminal_pb2.VerifyAuditRequest, context: Any,
                          ctx: OpContext) -> terminal_pb2.VerifyAuditResponse:
        result = await audit_api.verify_log(self._audit_path(), self.engine.metrics)
        response = audit_api.verification(result)
        await self.engine.audit.record(ctx, "audit_verify", result="ok", detail={
            "ok": response.ok, "rows_checked": response.rows_checked,
            "first_bad_seq": response.first_bad_seq, "problem": response.problem},
            durable=True)
        return response

    @unary
    async def GetYearlyReport(self, request: terminal_pb2.GetYearlyReportRequest, context: Any,
                              ctx: OpContext) -> terminal_pb2.YearlyReport:
        rep = await audit_api.yearly(self._audit_path(), request.year)
        self.engine.metrics.audit_chain(rep.audit.ok)  # the report verified the whole chain
        await self.engine.audit.record(ctx, "yearly_report", result="ok", detail={
            "year": rep.year, "audit_ok": rep.audit.ok}, durable=True)
        return audit_api.report(rep)

    # ------------------------------------------------------------ roster administration

    def _acting(self, context: Any) -> Operator | None:
        return self._admin().acting(_session_token(context), self.connection)

    @unary
    async def ListOperators(self, request: terminal_pb2.ListOperatorsRequest, context: Any,
                            ctx: OpContext) -> terminal_pb2.ListOperatorsResponse:
        self._acting(context)  # a token, when sent, must be live
        records = await self._admin().list_operators(request.organisation)
        return terminal_pb2.ListOperatorsResponse(
            operators=[ops_api.operator(r) for r in records])

    def _answer(self, record: OperatorRecord | None) -> operators_pb2.Operator:
        return ops_api.operator(record) if record is not None else operators_pb2.Operator()

    @unary
    async def AddOperator(self, request: terminal_pb2.AddOperatorRequest, context: Any,
                          ctx: OpContext) -> operators_pb2.Operator:
        by = self._acting(context)
        return self._answer(await self._admin().add(
            ctx, by, request.organisation, request.operator_id, request.display_name,
            ops_api.rights(request.rights)))

    @unary
    async def SetOperatorEnabled(self, request: terminal_pb2.SetOperatorEnabledRequest,
                                 context: Any, ctx: OpContext) -> operators_pb2.Operator:
        by = self._acting(context)
        return self._answer(await self._admin().set_enabled(
            ctx, by, request.organisation, request.operator_id, request.enabled))

    @unary
    async def AppointAdministrator(self, request: terminal_pb2.AppointAdministratorRequest,
                                   context: Any, ctx: OpContext) -> operators_pb2.Operator:
        by = self._acting(context)
        return self._answer(await self._admin().appoint(
            ctx, by, request.organisation, request.operator_id))

    @unary
    async def GrantPasswordFallback(self, request: terminal_pb2.GrantPasswordFallbackRequest,
                                    context: Any, ctx: OpContext) -> operators_pb2.Operator:
        by = self._acting(context)
        return self._answer(await self._admin().grant_password(
            ctx, by, request.organisation, request.operator_id, request.reason,
            ops_api.expiry(request), request.password))

    @unary
    async def UnlockOperator(self, request: terminal_pb2.UnlockOperatorRequest, context: Any,
                             ctx: OpContext) -> operators_pb2.Operator:
        by = self._acting(context)
        return self._answer(await self._admin().unlock(
            ctx, by, request.organisation, request.operator_id))

    @stream
    async def EnrollFinger(self, request: terminal_pb2.EnrollFingerRequest, context: Any,
                           ctx: OpContext) -> AsyncIterator[terminal_pb2.EnrollEvent]:
        async for event in ops_api.enroll(self._admin(), request, ctx, _session_token(context),
                                          self.connection):
            yield event

    @unary
    async def SyncRevocation(self, request: terminal_pb2.SyncRevocationRequest, context: Any,
                             ctx: OpContext) -> terminal_pb2.SyncRevocationResponse:
        result = await self._revocation().sync(ctx)
        response = terminal_pb2.SyncRevocationResponse(entries=result.entries)
        if result.feed_time is not None:
            response.feed_time.FromDatetime(result.feed_time)
        return response

    @unary
    async def SetUserIDStatus(self, request: terminal_pb2.SetUserIDStatusRequest, context: Any,
                              ctx: OpContext) -> terminal_pb2.SetUserIDStatusResponse:
        rev = self._revocation()
        if not 1 <= len(request.organisation) <= 64:
            raise InvalidArgument("organisation: 1-64 characters",
                                  metadata={"field": "organisation"})
        aid = validate.aid(request.aid)
        if aid is None:
            raise InvalidArgument("aid: the AP's AID is required", reason="AID_REQUIRED",
                                  metadata={"field": "aid"})
        if not validate_user_id(request.user_id):
            raise InvalidArgument("user_id: 13 symbols with a right check character",
                                  metadata={"field": "user_id"})
        if request.status not in (cards_pb2.USER_ID_STATUS_SUSPENDED,
                                  cards_pb2.USER_ID_STATUS_IN_OPERATION):
            raise InvalidArgument("status: SUSPENDED or IN_OPERATION (abolition comes from "
                                  "the feed only)", metadata={"field": "status"})
        if len(request.reason) > 256:
            raise InvalidArgument("reason: at most 256 characters",
                                  metadata={"field": "reason"})
        await rev.set_local(ctx, organisation=request.organisation, aid=aid,
                            user_id=request.user_id,
                            suspend=request.status == cards_pb2.USER_ID_STATUS_SUSPENDED,
                            reason=request.reason)
        return terminal_pb2.SetUserIDStatusResponse()

    def _revocation(self) -> Revocation:
        if self.engine.revocation is None:
            raise _not_yet("the revocation feed (no revocation store wired)", 6)
        return self.engine.revocation
