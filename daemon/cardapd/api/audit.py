"""Audit RPC bodies: export (streamed in pages), verification and the yearly report."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from cardap.v1 import audit_pb2, terminal_pb2
from cardapd.api.convert import timestamp
from cardapd.errors import InvalidArgument
from cardapd.store import AuditFilter, AuditRecord, VerifyResult, query, verify
from cardapd.store.report import JST, YearlyReport, build_report

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


async def verify_log(path: Path) -> VerifyResult:
    """Verify the whole chain in a thread."""
    return await asyncio.to_thread(verify, path)


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
