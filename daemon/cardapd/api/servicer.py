"""The Terminal servicer: one instance per socket role, thin over the engine.

Each method is wrapped by `rpc`, which enforces the per-method role table, assigns the
request id, turns domain errors into rich gRPC statuses and counts the call. Methods whose
capability is not built yet answer UNIMPLEMENTED naming it; none pretends to work.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import re
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc

from cardap.v1 import cards_pb2, terminal_pb2, terminal_pb2_grpc
from cardapd.api import convert, validate
from cardapd.api.roles import Role, allowed
from cardapd.api.status import internal, to_status
from cardapd.engine.diagnose import worst
from cardapd.engine.engine import Engine
from cardapd.engine.hub import now
from cardapd.engine.model import OpContext
from cardapd.errors import CardapError, InvalidArgument, NotAuthorized, NotImplementedYet

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and isinstance(value, str) and _REQUEST_ID.fullmatch(value):
            return value
    return uuid.uuid4().hex[:16]


def rpc(fn: F) -> F:
    """Role check, request id, error mapping and metrics around one servicer method."""
    name = fn.__name__

    async def fail(self: TerminalServicer, context: grpc.aio.ServicerContext[Any, Any],
                   rid: str, exc: BaseException) -> None:
        if isinstance(exc, CardapError):
            err = exc
        else:
            log.exception("unexpected error in %s (request %s)", name, rid)
            err = internal(rid)
        status = to_status(err, rid)
        self.count(name, status.code.name)
        await context.abort(status.code, status.details, status.trailing_metadata)

    def check(self: TerminalServicer, context: grpc.aio.ServicerContext[Any, Any]) -> OpContext:
        rid = _request_id(context)
        if not allowed(name, self.role):
            raise _Denied(rid, NotAuthorized(
                f"{name} is not available on the {self.role} socket",
                reason="WRONG_ROLE", metadata={"method": name, "role": str(self.role)}))
        return OpContext(role=str(self.role), request_id=rid)

    if inspect.isasyncgenfunction(fn):
        @functools.wraps(fn)
        async def stream(self: TerminalServicer, request: Any,
                         context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            try:
                ctx = check(self, context)
            except _Denied as denied:
                await fail(self, context, denied.rid, denied.error)
                return
            try:
                async for item in fn(self, request, context, ctx):
                    yield item
            except Exception as exc:
                await fail(self, context, ctx.request_id, exc)
                return
            self.count(name, "OK")
        return stream  # type: ignore[return-value]

    @functools.wraps(fn)
    async def unary(self: TerminalServicer, request: Any,
                    context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            ctx = check(self, context)
        except _Denied as denied:
            await fail(self, context, denied.rid, denied.error)
            return None
        try:
            response = await fn(self, request, context, ctx)
        except Exception as exc:
            await fail(self, context, ctx.request_id, exc)
            return None
        self.count(name, "OK")
        return response
    return unary  # type: ignore[return-value]


class _Denied(Exception):
    def __init__(self, rid: str, error: CardapError) -> None:
        super().__init__(error.message)
        self.rid, self.error = rid, error


def _not_yet(capability: str, issue: int) -> NotImplementedYet:
    return NotImplementedYet(capability, issue)


class TerminalServicer(terminal_pb2_grpc.TerminalServicer):
    """cardap.v1.Terminal for one socket role."""

    def __init__(self, engine: Engine, role: Role) -> None:
        self.engine = engine
        self.role = role
        self._grpc_requests = engine.metrics.grpc_requests

    def count(self, method: str, code: str) -> None:
        """Count one finished call."""
        self._grpc_requests.labels(method, str(self.role), code).inc()

    # ------------------------------------------------------------ readers and cards

    @rpc
    async def GetStatus(self, request: terminal_pb2.GetStatusRequest, context: Any,
                        ctx: OpContext) -> terminal_pb2.GetStatusResponse:
        return convert.status(self.engine.status(), str(self.role))

    @rpc
    async def ListReaders(self, request: terminal_pb2.ListReadersRequest, context: Any,
                          ctx: OpContext) -> terminal_pb2.ListReadersResponse:
        return terminal_pb2.ListReadersResponse(
            readers=[convert.reader(v) for v in self.engine.readers()],
            pcsc_available=self.engine.pcsc_available)

    @rpc
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

    @rpc
    async def ReadUserID(self, request: terminal_pb2.ReadUserIDRequest, context: Any,
                         ctx: OpContext) -> terminal_pb2.ReadUserIDResponse:
        reader = validate.reader_name(request.reader)
        aid = validate.aid(request.aid)
        validate.pin(request.pin)
        if request.type not in (cards_pb2.AP_TYPE_UNSPECIFIED, cards_pb2.AP_TYPE_C):
            if request.type not in cards_pb2.APType.values():
                raise InvalidArgument(f"type: unknown AP type {request.type}",
                                      metadata={"field": "type"})
            raise _not_yet(f"{cards_pb2.APType.Name(request.type)} user ID reads "
                           "(mutual authentication, PIN guard, secure messaging)", 6)
        if request.pin:
            raise InvalidArgument("pin: a Type C AP is read without a PIN; send none",
                                  metadata={"field": "pin"})
        cancel = threading.Event()
        try:
            result = await self.engine.read_user_id(ctx, reader=reader, aid=aid,
                                                    fresh=request.fresh, cancel=cancel)
        except asyncio.CancelledError:
            cancel.set()
            raise
        return terminal_pb2.ReadUserIDResponse(
            user_id=result.user_id, info=list(result.info), card_id=result.card_id,
            reader=result.reader, cached=result.cached,
            status=cards_pb2.USER_ID_STATUS_UNKNOWN, aid=result.aid.hex().upper())

    @rpc
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

    @rpc
    async def WatchMetrics(self, request: terminal_pb2.WatchMetricsRequest, context: Any,
                           ctx: OpContext) -> AsyncIterator[terminal_pb2.MetricsSnapshot]:
        interval = validate.interval(request.interval_s)
        prefixes = validate.prefixes(list(request.prefixes))
        while True:
            yield terminal_pb2.MetricsSnapshot(
                time=convert.timestamp(now()),
                samples=convert.samples(self.engine.metrics.samples(prefixes)))
            await asyncio.sleep(interval)

    # ------------------------------------------------------------ later issues

    @rpc
    async def AuthenticateOperator(self, request_iterator: Any, context: Any,
                                   ctx: OpContext) -> AsyncIterator[Any]:
        raise _not_yet("operator authentication (fingerprint via fprintd, password fallback)", 5)
        yield  # pragma: no cover - makes this an async generator

    @rpc
    async def EndOperatorSession(self, request: Any, context: Any, ctx: OpContext) -> Any:
        raise _not_yet("operator sessions", 5)

    @rpc
    async def ListLoadableAPs(self, request: Any, context: Any, ctx: OpContext) -> Any:
        raise _not_yet("card AP loading (loading service catalogue)", 4)

    @rpc
    async def LoadAP(self, request: Any, context: Any, ctx: OpContext) -> AsyncIterator[Any]:
        raise _not_yet("card AP loading (SCP03 relay to the loading service)", 4)
        yield  # pragma: no cover

    @rpc
    async def DeleteAP(self, request: Any, context: Any, ctx: OpContext) -> Any:
        raise _not_yet("card AP deletion", 4)

    @rpc
    async def ListCardAPs(self, request: Any, context: Any, ctx: OpContext) -> Any:
        raise _not_yet("listing the card's APs (GlobalPlatform GET STATUS)", 4)

    @rpc
    async def ExportAudit(self, request: Any, context: Any,
                          ctx: OpContext) -> AsyncIterator[Any]:
        raise _not_yet("audit export", 5)
        yield  # pragma: no cover

    @rpc
    async def VerifyAudit(self, request: Any, context: Any, ctx: OpContext) -> Any:
        raise _not_yet("audit verification through the API", 5)

    @rpc
    async def GetYearlyReport(self, request: Any, context: Any, ctx: OpContext) -> Any:
        raise _not_yet("the yearly load report", 5)

    @rpc
    async def ListOperators(self, request: Any, context: Any, ctx: OpContext) -> Any:
        raise _not_yet("the operator roster", 5)

    @rpc
    async def AddOperator(self, request: Any, context: Any, ctx: OpContext) -> Any:
        raise _not_yet("the operator roster", 5)

    @rpc
    async def SetOperatorEnabled(self, request: Any, context: Any, ctx: OpContext) -> Any:
        raise _not_yet("the operator roster", 5)

    @rpc
    async def AppointAdministrator(self, request: Any, context: Any, ctx: OpContext) -> Any:
        raise _not_yet("the operator roster", 5)

    @rpc
    async def GrantPasswordFallback(self, request: Any, context: Any, ctx: OpContext) -> Any:
        raise _not_yet("password fallback approval", 5)

    @rpc
    async def UnlockOperator(self, request: Any, context: Any, ctx: OpContext) -> Any:
        raise _not_yet("the operator roster", 5)

    @rpc
    async def EnrollFinger(self, request: Any, context: Any,
                           ctx: OpContext) -> AsyncIterator[Any]:
        raise _not_yet("fingerprint enrolment (fprintd)", 5)
        yield  # pragma: no cover

    @rpc
    async def SyncRevocation(self, request: Any, context: Any, ctx: OpContext) -> Any:
        raise _not_yet("the revocation feed", 6)

    @rpc
    async def SetUserIDStatus(self, request: Any, context: Any, ctx: OpContext) -> Any:
        raise _not_yet("local suspension of user IDs", 6)

