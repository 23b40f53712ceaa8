"""The audit log as a service: export (paged), verification and the yearly report, each
audited; the background verification of the chain. Every verification sets the audit
chain metrics (`cardapd_audit_chain_*`). Knows no gRPC: `cardapd.api` converts."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from cardapd.audit.export import AuditFilter, query
from cardapd.audit.log import AuditRecord
from cardapd.audit.report import JST, YearlyReport, build_report
from cardapd.audit.verify import VerifyResult, verify
from cardapd.domain import AuditSink, OpContext
from cardapd.errors import Cancelled, InvalidArgument, StoreError
from cardapd.telemetry.metrics import Check, Metrics

log = logging.getLogger(__name__)

PAGE = 500


class AuditService:
    """Reads of the audit database (a read-only connection per call, beside the writer)."""

    def __init__(self, path: Path, audit: AuditSink, metrics: Metrics) -> None:
        self.path = path
        self.audit = audit
        self.metrics = metrics

    async def export(self, ctx: OpContext, flt: AuditFilter) -> AsyncIterator[AuditRecord]:
        """The matching rows in seq order, a page at a time off the event loop; the export
        itself is audited (durably) before the first row goes out."""
        await self.audit.record(ctx, "audit_export", result="ok", detail={
            "operations": sorted(flt.operations or ())}, durable=True)
        after = 0
        while True:
            rows = await asyncio.to_thread(self._page, replace(flt, after_seq=after,
                                                               limit=PAGE))
            for rec in rows:
                yield rec
            if len(rows) < PAGE:
                return
            after = rows[-1].seq

    def _page(self, flt: AuditFilter) -> list[AuditRecord]:
        """One page of rows (a snapshot per page)."""
        return list(query(self.path, flt))

    async def check(self, cancel: threading.Event | None = None) -> VerifyResult:
        """Verify the whole chain in a thread; the outcome goes to the metrics (a log that
        cannot be read counts as not verified)."""
        try:
            result = await asyncio.to_thread(verify, self.path, cancel=cancel)
        except StoreError:
            self.metrics.audit_chain(False)
            raise
        self.metrics.audit_chain(result.ok)
        return result

    async def verify(self, ctx: OpContext) -> VerifyResult:
        """VerifyAudit: check the chain now; audited durably."""
        result = await self.check()
        await self.audit.record(ctx, "audit_verify", result="ok", detail={
            "ok": result.ok, "rows_checked": result.rows_checked,
            "first_bad_seq": result.first_bad_seq or 0,
            "problem": str(result.problem) if result.problem is not None else ""},
            durable=True)
        return result

    async def yearly(self, ctx: OpContext, year: int) -> YearlyReport:
        """The year's report (year 0: the current year in Japan time); it verifies the
        whole chain, so the chain metrics follow. Audited durably."""
        if year == 0:
            year = datetime.now(JST).year
        if not 2000 <= year <= 9999:
            raise InvalidArgument("year: 2000-9999", metadata={"field": "year"})
        rep = await asyncio.to_thread(build_report, self.path, year)
        self.metrics.audit_chain(rep.audit.ok)
        await self.audit.record(ctx, "yearly_report", result="ok", detail={
            "year": rep.year, "audit_ok": rep.audit.ok}, durable=True)
        return rep

    def chain_check(self, interval_s: float) -> Check:
        """The background verification (see `Metrics.watch`): now, then every `interval_s`
        (0: only at start; VerifyAudit still verifies on demand)."""

        async def verify_audit_chain() -> float | None:
            try:
                result = await self.check(cancel=self.metrics.stopping)
            except Cancelled:
                return None
            except StoreError as exc:
                log.error("the audit log could not be verified: %s", exc.message)
            else:
                if result.ok:
                    log.info("audit chain verified: %d rows", result.rows_checked)
                else:
                    log.error("audit chain verification FAILED: %s at seq %s (cardapctl "
                              "audit verify)", result.problem, result.first_bad_seq)
            return interval_s if interval_s > 0 else None

        return verify_audit_chain
