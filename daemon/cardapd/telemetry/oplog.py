"""One log line per operation: what, reader, card id, result, duration, operator, request id.

Every operation the daemon audits ends in one audit row; `OperationLog` wraps the audit
sink and, once the row is committed (or refused), logs one line for it on the
`cardapd.operations` logger: info when it succeeded, warning with its stable reason and
message when it failed, error when the audit row itself could not be written. Steps of an
operation (`load_started`) are audited without a line. A call refused before any audit
row (no session, a malformed request) gets its line from the RPC wrapper (`refused`), so
every failed call is in the log with its reason.

The line's fields (journald `CARDAPD_*`, JSON keys in lower case): `operation` (the gRPC
method, or the audit operation for the daemon's own work), `audit_operation`, `reader`,
`card_id`, `result`, `reason`, `duration_ms`, `operator`, `audit_seq`, and `request_id`
and `role` from the call's context. Values pass the same My Number scrub as every line.
Writing happens off the event loop (`logsetup` hands records to a thread).
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from cardapd.domain import AuditSink, OpContext
from cardapd.errors import CardapError
from cardapd.telemetry import logcontext

log = logging.getLogger("cardapd.operations")

DETAIL_SHOWN = ("ap_id", "preset", "aid", "method", "finger", "organisation",
                "operator_id", "outcome")
"""Detail keys named in the line (identifiers, never user IDs or secrets)."""
SEVERE = frozenset({"INTERNAL", "STORE_ERROR"})
"""Reasons logged as errors: the daemon itself failed, not the request."""
STEP_SUFFIX = "_started"


@dataclass
class _Call:
    """One RPC call: when it started, and whether an operation line was logged for it."""

    started: float
    logged: bool = False


_CALL: contextvars.ContextVar[_Call | None] = contextvars.ContextVar(
    "cardapd_oplog_call", default=None)


def begin_call() -> None:
    """Mark the start of an RPC call in this context (its task and the tasks it starts)."""
    _CALL.set(_Call(time.perf_counter()))


def spaced(aid: str) -> str:
    """An AID as bytes, `D3 92 10 00 31 ...`: how AIDs are written, and no run of digits
    in the line that the My Number checks would take for one."""
    return " ".join(aid[i:i + 2] for i in range(0, len(aid), 2))


def _what(operation: str, detail: Mapping[str, object]) -> str:
    """`load org-a-staff-c for org-a`, `operator_login org-a/op-1 (fingerprint)`."""
    parts = [operation]
    if detail.get("ap_id") or detail.get("preset"):
        parts.append(str(detail.get("ap_id") or f"preset {detail.get('preset')}"))
    elif detail.get("aid"):
        parts.append(f"AP {spaced(str(detail['aid']))}")
    if detail.get("organisation") and detail.get("operator_id"):
        parts.append(f"{detail['organisation']}/{detail['operator_id']}")
    elif detail.get("organisation"):  # whose AP, or the organisation acted on
        named = len(parts) > 1
        parts.append(f"for {detail['organisation']}" if named else str(detail["organisation"]))
    if detail.get("method"):
        parts.append(f"({detail['method']})")
    if detail.get("finger"):
        parts.append(str(detail["finger"]))
    return " ".join(parts)


def line(operation: str, *, result: str, reason: str = "", message: str = "",
         reader: str = "", card_id: str = "", ctx: OpContext | None = None,
         detail: Mapping[str, object] | None = None, started: float | None = None,
         seq: int | None = None) -> None:
    """Log the one line of a finished operation."""
    call = _CALL.get()
    if call is not None:
        call.logged = True
    began = started if started is not None else (call.started if call else None)
    shown = {k: v for k, v in (detail or {}).items() if k in DETAIL_SHOWN and v}
    fields: dict[str, str] = {"audit_operation": operation, "result": result}
    if not logcontext.current().get("operation"):
        fields["operation"] = operation
    if reason:
        fields["reason"] = reason
    if reader:
        fields["reader"] = reader
    if card_id:
        fields["card_id"] = card_id
    if ctx is not None and ctx.operator:
        fields["operator"] = ctx.operator
    if ctx is not None and ctx.request_id:
        fields["request_id"] = ctx.request_id
    if began is not None:
        fields["duration_ms"] = str(round((time.perf_counter() - began) * 1000))
    if seq is not None:
        fields["audit_seq"] = str(seq)
    text = [_what(operation, shown) + ":", result if not reason else f"{result} {reason}"]
    if result == "ok" and shown.get("outcome"):
        text.append(f"({shown['outcome']})")
    if message:
        text.append(f"({message})")
    if "duration_ms" in fields:
        text.append(f"in {fields['duration_ms']} ms")
    where = [f"reader {reader!r}" if reader else "", f"card {card_id}" if card_id else "",
             f"operator {ctx.operator}" if ctx is not None and ctx.operator else "",
             f"request {ctx.request_id}" if ctx is not None and ctx.request_id else ""]
    where = [w for w in where if w]
    msg = " ".join(text) + (f"; {', '.join(where)}" if where else "")
    level = (logging.INFO if result == "ok" else
             logging.ERROR if reason in SEVERE else logging.WARNING)
    log.log(level, "%s", msg, extra=fields)


class OperationLog:
    """An `AuditSink` that logs one line per audited operation."""

    def __init__(self, inner: AuditSink) -> None:
        self.inner = inner

    async def record(self, ctx: OpContext | None, operation: str, *, result: str,
                     reason: str = "", reader: str = "", card_id: str = "",
                     detail: Mapping[str, object] | None = None, durable: bool = False,
                     started: float | None = None, message: str = "",
                     quiet: bool = False) -> int:
        """Append the row, then log its line (`quiet`: a step, no line)."""
        quiet = quiet or operation.endswith(STEP_SUFFIX)
        try:
            seq = await self.inner.record(ctx, operation, result=result, reason=reason,
                                          reader=reader, card_id=card_id, detail=detail,
                                          durable=durable)
        except CardapError as failure:
            line(operation, result="error", reason=failure.reason,
                 message=f"the audit row could not be written: {failure.message}",
                 reader=reader, card_id=card_id, ctx=ctx, detail=detail, started=started)
            raise
        if not quiet:
            line(operation, result=result, reason=reason, message=message, reader=reader,
                 card_id=card_id, ctx=ctx, detail=detail, started=started, seq=seq)
        return seq

    def head(self) -> int:
        """Sequence number of the newest row."""
        return self.inner.head()
