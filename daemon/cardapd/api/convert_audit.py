"""Audit rows, verifications and reports ↔ cardap.v1 messages."""

from __future__ import annotations

from cardap.v1 import audit_pb2, terminal_pb2
from cardapd.api import validate
from cardapd.api.convert import timestamp
from cardapd.audit.export import AuditFilter
from cardapd.audit.log import AuditRecord
from cardapd.audit.report import YearlyReport
from cardapd.audit.verify import VerifyResult
from cardapd.errors import InvalidArgument

OPERATION_MAX = 64


def record(rec: AuditRecord) -> audit_pb2.AuditRecord:
    """One stored row as cardap.v1.AuditRecord."""
    return audit_pb2.AuditRecord(
        seq=rec.seq, time=timestamp(rec.ts), request_id=rec.request_id or "",
        actor=rec.actor, operation=rec.operation, reader=rec.reader or "",
        card_id=rec.card_id or "", result=rec.result, reason=rec.reason or "",
        detail_json=rec.detail_json, hash=rec.hash.hex())


def audit_filter(request: terminal_pb2.ExportAuditRequest) -> AuditFilter:
    """The filter of an ExportAudit request."""
    since = validate.timestamp(request.since, "since") if request.HasField("since") else None
    until = validate.timestamp(request.until, "until") if request.HasField("until") else None
    if since and until and until <= since:
        raise InvalidArgument("until must be after since", metadata={"field": "until"})
    ops = list(request.operations)
    if any(not o or len(o) > OPERATION_MAX for o in ops) or len(ops) > 64:
        raise InvalidArgument("operations: up to 64 names of 1-64 characters",
                              metadata={"field": "operations"})
    return AuditFilter(since=since, until=until, operations=frozenset(ops) if ops else None)


def verification(result: VerifyResult) -> terminal_pb2.VerifyAuditResponse:
    """A verify result as VerifyAuditResponse."""
    return terminal_pb2.VerifyAuditResponse(
        ok=result.ok, rows_checked=result.rows_checked,
        first_bad_seq=result.first_bad_seq or 0,
        problem=str(result.problem) if result.problem is not None else "")


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
