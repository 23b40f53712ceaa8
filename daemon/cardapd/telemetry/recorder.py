"""Recording operations: the audit row first, then the metrics, one way for every service.

Rows go through `OperationLog`, so each finished operation also gets its one log line.

Every capability receives a `Recorder` (the audit sink and the metrics, nothing else) at
construction. `finish` writes the row of an operation's end and counts it; when the row
cannot be written the operation fails, and the metrics count it as the STORE_ERROR the
client sees, not as done.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from cardapd.domain import AuditSink, OpContext
from cardapd.errors import CardapError
from cardapd.telemetry.metrics import Metrics
from cardapd.telemetry.oplog import OperationLog

log = logging.getLogger(__name__)


class Recorder:
    """Audit rows and operation metrics."""

    def __init__(self, audit: AuditSink, metrics: Metrics) -> None:
        self.audit = audit if isinstance(audit, OperationLog) else OperationLog(audit)
        self.metrics = metrics

    async def record(self, ctx: OpContext | None, operation: str, *, result: str = "ok",
                     reason: str = "", reader: str = "", card_id: str = "",
                     detail: Mapping[str, object] | None = None,
                     durable: bool = False) -> int:
        """Append one audit row of a step (no log line); raises StoreError on failure."""
        return await self.audit.record(ctx, operation, result=result, reason=reason,
                                       reader=reader, card_id=card_id, detail=detail,
                                       durable=durable, quiet=True)

    async def quietly(self, ctx: OpContext | None, operation: str, *, reader: str = "",
                      card_id: str = "", detail: Mapping[str, object] | None = None) -> None:
        """Audit (and log) an event nobody waits for; a failure is logged, not raised."""
        try:
            await self.audit.record(ctx, operation, result="ok", reader=reader,
                                    card_id=card_id, detail=detail)
        except CardapError:
            log.exception("could not audit %s", operation)

    async def finish(self, ctx: OpContext | None, operation: str, start: float,
                     exc: CardapError | None, *, reader: str = "", card_id: str = "",
                     detail: Mapping[str, object] | None = None,
                     durable: bool = False) -> None:
        """Audit, then count, one finished operation (`start`: its perf_counter)."""
        result = "ok" if exc is None else "error"
        reason = "" if exc is None else exc.reason
        try:
            await self.audit.record(ctx, operation, result=result, reason=reason,
                                    reader=reader, card_id=card_id, detail=detail,
                                    durable=durable, started=start,
                                    message="" if exc is None else exc.message)
        except CardapError as failure:
            result, reason = "error", failure.reason
            raise
        finally:
            self.metrics.operations.labels(operation, result, reason).inc()
            self.metrics.operation_seconds.labels(operation).observe(
                time.perf_counter() - start)
