"""The one wrapper every RPC goes through: admission, cancellation, errors, counting.

`unary` and `stream` wrap each servicer method: the per-method role table admits the call
or refuses it (PERMISSION_DENIED `WRONG_ROLE`), the request id is taken or made,
the log context and the operator-session scope are set, a request whose bytes did not
parse is INVALID_ARGUMENT, a client that goes away sets the call's cancel event (the
reader thread stops before its next APDU), domain errors become rich gRPC statuses and
the call is counted. A call refused or failed without an audit row of its own (wrong
socket, no session, a malformed request, …) is accounted for in the `RefusalLedger`: per
socket, method and reason, at a bounded number of rows (docs/decisions.md D33). A method
receives the request, the gRPC context and its `OpContext`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc

from cardapd.api.language import call_language
from cardapd.api.roles import Role, allowed
from cardapd.api.status import internal, to_status
from cardapd.domain import AuditSink, OpContext
from cardapd.errors import CardapError, InvalidArgument, NotAuthorized, from_card
from cardapd.operators.sessions import connection_scope, current_connection
from cardapd.telemetry import logcontext, oplog
from cardapd.telemetry.refusals import CallMark, RefusalLedger, begin_call
from cardlib.errors import CardLibError

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Ctx = grpc.aio.ServicerContext[Any, Any]
"""The gRPC context of a call."""

SESSION_METADATA = "cardap-session"
"""The gRPC metadata key that carries an operator session token."""

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_DIGIT_RUN = re.compile(r"\d{12}")


class Admitting(Protocol):
    """What the wrapper needs of a servicer: its role, its connection, the ledger of
    refused calls, a counter of finished calls, and the language of errors for people."""

    role: Role
    connection: str
    audit: AuditSink
    refusals: RefusalLedger

    def count(self, method: str, code: str) -> None:
        """Count one finished call."""
        ...

    def default_language(self) -> str:
        """`[daemon] language`: the language of a call that names none."""
        ...


class MalformedRequest:
    """Stands in for a request whose bytes did not parse (see `api.server._tolerant`)."""

    def __init__(self, problem: str) -> None:
        self.problem = problem


class _Denied(Exception):
    def __init__(self, rid: str, error: CardapError) -> None:
        super().__init__(error.message)
        self.rid, self.error = rid, error


def request_id(context: Ctx) -> str:
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


def session_token(context: Ctx) -> str:
    """The operator session token from the `cardap-session` metadata ("" if none)."""
    for key, value in context.invocation_metadata() or ():
        if key == SESSION_METADATA and isinstance(value, str):
            return value
    return ""


def _admit(servicer: Admitting, name: str, context: Ctx) -> OpContext:
    """The call's OpContext, or `_Denied` when the role table refuses this socket."""
    rid = request_id(context)
    # Each call runs in its own task: set, not scoped, like `current_connection` (D21).
    logcontext.set_fields(operation=logcontext.operation_name(name), request_id=rid,
                          role=str(servicer.role))
    oplog.begin_call()
    if not allowed(name, servicer.role):
        raise _Denied(rid, NotAuthorized(
            f"{name} is not available on the {servicer.role} socket",
            reason="WRONG_ROLE", metadata={"method": name, "role": str(servicer.role)}))
    return OpContext(role=str(servicer.role), request_id=rid)


async def _refused(servicer: Admitting, name: str, context: Ctx, denied: _Denied) -> None:
    """Account for a call refused by the role table, then abort it (PERMISSION_DENIED)."""
    await _fail(servicer, name, context, denied.rid, denied.error, None)


async def _fail(servicer: Admitting, name: str, context: Ctx, rid: str,
                exc: BaseException, mark: CallMark | None) -> None:
    """Abort the call with the rich status of `exc` (INTERNAL for the unexpected); a call
    with no audit row of its own goes to the ledger of refused calls first."""
    if isinstance(exc, CardapError):
        err = exc
    elif isinstance(exc, CardLibError):  # card work always passes a reader's thread,
        err = from_card(exc)  # which translates; this is the safety net
    else:
        log.exception("unexpected error in %s (request %s)", name, rid)
        err = internal(rid)
    if mark is None or not mark.audited:
        # counted at a bounded number of audit rows (D33); the ledger writes through the
        # operation log, so the log lines of refused calls are bounded the same way
        await servicer.refusals.refused(str(servicer.role), name, err.reason, rid,
                                        err.message)
    status = to_status(err, rid, call_language(context, servicer.default_language()))
    servicer.count(name, status.code.name)
    await context.abort(status.code, status.details, status.trailing_metadata)


def _check_parsed(request: object) -> None:
    if isinstance(request, MalformedRequest):
        raise InvalidArgument(f"the request is not a valid message: {request.problem}",
                              reason="MALFORMED_REQUEST")


S = TypeVar("S", bound=Admitting)


def unary(fn: Callable[[S, Req, Ctx, OpContext], Awaitable[Resp]], *, name: str = ""
          ) -> Callable[[S, Req, Ctx], Awaitable[Resp]]:
    """The wrapper of a unary method, served as `name` (default: the function's name)."""
    name = name or fn.__name__

    @functools.wraps(fn)
    async def wrapper(self: S, request: Req, context: Ctx) -> Resp:
        try:
            ctx = _admit(self, name, context)
        except _Denied as denied:
            await _refused(self, name, context, denied)
            raise AssertionError("abort returned") from None
        mark = begin_call()
        try:
            _check_parsed(request)
            with connection_scope(self.connection):
                response = await fn(self, request, context, ctx)
        except asyncio.CancelledError:
            ctx.cancel.set()  # the client went away: stop the card work
            raise
        except Exception as exc:
            await _fail(self, name, context, ctx.request_id, exc, mark)
            raise AssertionError("abort returned") from None
        self.count(name, "OK")
        return response
    return wrapper


def stream(fn: Callable[[S, Req, Ctx, OpContext], AsyncIterator[Resp]], *, name: str = ""
           ) -> Callable[[S, Req, Ctx], AsyncIterator[Resp]]:
    """The same as `unary`, for server-streaming methods."""
    name = name or fn.__name__

    @functools.wraps(fn)
    async def wrapper(self: S, request: Req, context: Ctx) -> AsyncIterator[Resp]:
        try:
            ctx = _admit(self, name, context)
        except _Denied as denied:
            await _refused(self, name, context, denied)
            return
        mark = begin_call()
        try:
            _check_parsed(request)
            # Set, not scoped: a generator may be closed from another Context, where a
            # reset fails; each RPC runs in its own task, so nothing leaks to other calls.
            current_connection.set(self.connection)
            async for item in fn(self, request, context, ctx):
                yield item
        except (asyncio.CancelledError, GeneratorExit):
            ctx.cancel.set()
            raise
        except Exception as exc:
            await _fail(self, name, context, ctx.request_id, exc, mark)
            return
        self.count(name, "OK")
    return wrapper


def renamed(method: Callable[..., Any], name: str) -> Callable[..., Any]:
    """`method` (wrapped by `unary` or `stream`) served again under its deprecated v1.0.0
    `name`: the same implementation, while the role check, logs, metrics and refusals
    name the method the client called (so that operators see who still uses it)."""
    inner = inspect.unwrap(method)  # the function `unary`/`stream` wrapped
    if inspect.isasyncgenfunction(inner):
        return stream(inner, name=name)
    return unary(inner, name=name)
