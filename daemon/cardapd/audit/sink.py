"""The daemon's `AuditSink` on the SQLite audit log: every operation's row goes through
here; each row is counted in the metrics and marks the current call as audited (so a
failed call with a row of its own is not counted again as a refused one, D33)."""

from __future__ import annotations

from collections.abc import Mapping

from cardapd.audit.log import AuditEntry
from cardapd.audit.writer import AsyncAuditLog
from cardapd.domain import OpContext
from cardapd.errors import StoreError
from cardapd.storage import Durability
from cardapd.telemetry.metrics import Metrics
from cardapd.telemetry.refusals import mark_audited


class StoreAuditSink:
    """Appends rows to an open `AsyncAuditLog`."""

    def __init__(self, log: AsyncAuditLog, metrics: Metrics) -> None:
        self._log = log
        self._metrics = metrics
        self._head = log.last_seq()  # the log is open: its newest row

    async def record(self, ctx: OpContext | None, operation: str, *, result: str,
                     reason: str = "", reader: str = "", card_id: str = "",
                     detail: Mapping[str, object] | None = None,
                     durable: bool = False) -> int:
        """Append one row; returns once it is committed (`durable`: to survive a power
        loss, else the daemon's death)."""
        entry = AuditEntry(
            operation=operation, result=result, actor=ctx.actor if ctx else "system",
            card_id=card_id or None, reader=reader or None, reason=reason or None,
            request_id=ctx.request_id if ctx else None, detail=dict(detail or {}))
        try:
            rec = await self._log.append(
                entry, Durability.POWER if durable else Durability.PROCESS)
        except StoreError:
            raise
        except Exception as exc:  # never let a store fault look like success
            raise StoreError(f"the audit log could not be written: {exc}") from exc
        self._head = rec.seq
        mark_audited()
        self._metrics.audit_rows.inc()
        self._metrics.audit_head.set(rec.seq)
        return rec.seq

    def head(self) -> int:
        """Newest sequence number written by this process (or found at open)."""
        return self._head
