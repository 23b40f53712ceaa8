"""The engine's view of the audit log: every operation goes through `AuditSink.record`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Protocol

from cardapd.engine.model import OpContext
from cardapd.errors import CardapError
from cardapd.metrics import Metrics


class AuditSink(Protocol):
    """Appends one audit row; returns its sequence number once it is durable.

    `durable=True` asks for power-loss safety (loads, logins); False for process-crash
    safety only (high-rate reads). Raises `StoreError` when the row cannot be written:
    the operation must then be refused.
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


async def finish_operation(audit: AuditSink, metrics: Metrics, ctx: OpContext | None,
                           operation: str, start: float, exc: CardapError | None, *,
                           reader: str = "", card_id: str = "",
                           detail: Mapping[str, object] | None = None,
                           durable: bool = False) -> None:
    """Audit, then count, one finished operation.

    The audit row comes first: when it cannot be written the operation fails, and the
    metrics count it as the failure the client sees (reason STORE_ERROR), not as done.
    """
    result = "ok" if exc is None else "error"
    reason = "" if exc is None else exc.reason
    try:
        await audit.record(ctx, operation, result=result, reason=reason, reader=reader,
                           card_id=card_id, detail=detail, durable=durable)
    except CardapError as failure:
        result, reason = "error", failure.reason
        raise
    finally:
        metrics.operations.labels(operation, result, reason).inc()
        metrics.operation_seconds.labels(operation).observe(time.perf_counter() - start)
