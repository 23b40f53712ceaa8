"""Audit RPC bodies: export (streamed in pages), verification and the yearly report; and
the background verification of the chain. Every verification sets the audit chain
metrics (`cardapd_audit_chain_*`)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from cardap.v1 import audit_pb2, terminal_pb2
from cardapd.api.convert import timestamp
from cardapd.errors import Cancelled, InvalidArgument, StoreError
from cardapd.metrics import Check, Metrics
from cardapd.store import AuditFilter, AuditRecord, VerifyResult, query, verify
from cardapd.store.report import JST, YearlyReport, build_report

log = logging.getLogger(__name__)

PAGE = 500
_OPERATION_MAX = 64


def record(rec: AuditRecord) -> audit_pb2.AuditRecord:
    """One stored row as cardap.v1.AuditRecord."""
    return audit_pb2.AuditRecord(
        seq=rec.seq, time=timestamp(rec.ts), request_id=rec.request_id or "",
        actor=rec.actor, operation=rec.operation, reader=rec.reader or "",
        card_id=rec.card_id or "", result=rec.result, reason=rec.reason or "",
        detail_json=rec.detail_json, hash=rec.hash.hex())


def audit_filter(request: terminal_pb2.ExportAuditRequest) -> AuditFilter:
    """The filter of an ExportAudit request."""
    since = request.since.ToDatetime(tzinfo=UTC) if request.HasField("since") else None
    until = request.until.ToDatetime(tzinfo=UTC) if request.HasField("until") else None
    if since and until and until <= since:
        raise InvalidArgument("until must be after since", metadata={"field": "until"})
    ops = list(request.operations)
    if any(not o or len(o) > _OPERATION_MAX for o in ops) or len(ops) > 64:
        raise InvalidArgument("operations: up to 64 names of 1-64 characters",
                              metadata={"field": "operations"})
    return AuditFilter(since=since, until=until,
                       operations=frozenset(ops) if ops else None, limit=PAGE)


def _page(path: Path, flt: AuditFilter) -> list[AuditRecord]:
    """One page of rows (a snapshot per page)."""
    return list(query(path, flt))


async def export(path: Path, flt: AuditFilter) -> AsyncIterator[audit_pb2.AuditRecord]:
    """Stream the matching rows in seq order, a page at a time off the event loop."""
    after = 0
    while True:
        rows = await asyncio.to_thread(_page, path, replace(flt, after_seq=after))
        for rec in rows:
            yield record(rec)
        if len(rows) < PAGE:
            return
        after = rows[-1].seq


def verification(result: VerifyResult) -> terminal_pb2.VerifyAuditResponse:
    """A verify result as VerifyAuditResponse."""
    return terminal_pb2.VerifyAuditResponse(
        ok=result.ok, rows_checked=result.rows_checked,
        first_bad_seq=result.first_bad_seq or 0,
        problem=str(result.problem) if result.problem is not None else "")


async def verify_log(path: Path, metrics: Metrics | None = None, *,
                     cancel: threading.Event | None = None) -> VerifyResult:
    """Verify the whole chain in a thread; the outcome goes to `metrics` (a log that
    cannot be read counts as not verified)."""
    try:
        result = await asyncio.to_thread(verify, path, cancel=cancel)
    except StoreError:
        if metrics is not None:
            metrics.audit_chain(False)
        raise
    if metrics is not None:
        metrics.audit_chain(result.ok)
    return result


def chain_check(path: Path, metrics: Metrics, interval_s: float) -> Check:
    """The background verification (see `Metrics.watch`): now, then every `interval_s`
    (0: only at start; VerifyAudit still verifies on demand)."""

    async def verify_audit_chain() -> float | None:
        try:
            result = await verify_log(path, metrics, cancel=metrics.stopping)
        except Cancelled:
            return None
        except StoreError as exc:
            log.error("the audit log could not be verified: %s", exc.message)
        else:
            if result.ok:
                log.info("audit chain verified: %d rows", result.rows_checked)
            else:
                log.error("audit chain verification FAILED: %s at seq %s (cardapctl audit "
                          "verify)", result.problem, result.first_bad_seq)
        return interval_s if interval_s > 0 else None

    return verify_audit_chain


async def yearly(path: Path, year: int) -> YearlyReport:
    """The year's report (year 0: the current year in Japan time)."""
    if year == 0:
        year = datetime.now(JST).year
    if not 2000 <= year <= 9999:
        raise InvalidArgument("year: 2000-9999", metadata={"field": "year"})
    return await asyncio.to_thread(build_report, path, year)


def report(rep: YearlyReport) -> terminal_pb2.YearlyReport:
    """A report as cardap.v1.YearlyReport (document: the text with its SHA-256 line)."""
    a = rep.audit
    return terminal_pb2.YearlyReport(
        year=rep.year,
        organisations=[terminal_pb2.OrganisationLoads(
            organisation=o.organisation, loads=o.loads, charge_yen=o.charge_yen)
            for o in rep.organisations],
        audit=terminal_pb2.VerifyAuditResponse(ok=a.ok, rows_checked=a.rows_checked,
                                               first_bad_seq=a.first_bad_seq,
                                               problem=a.problem),
        document=rep.document)
