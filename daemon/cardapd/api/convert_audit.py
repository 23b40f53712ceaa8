"""Audit rows, verifications and reports ↔ cardap.v1 messages."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

from cardap.v1 import audit_pb2, terminal_pb2
from cardapd.api import validate
from cardapd.api.convert import timestamp
from cardapd.audit.checkpoints import Checkpoint
from cardapd.audit.export import AuditFilter
from cardapd.audit.log import AuditRecord
from cardapd.audit.report import YearlyReport
from cardapd.audit.service import Verification
from cardapd.errors import InvalidArgument

OPERATION_MAX = 64
_HASH = re.compile(r"[0-9a-fA-F]{64}")
TERMINAL_MAX = 64


def record(rec: AuditRecord) -> audit_pb2.AuditRecord:
    """One stored row as cardap.v1.AuditRecord."""
    return audit_pb2.AuditRecord(
        seq=rec.seq, time=timestamp(rec.ts), request_id=rec.request_id or "",
        actor=rec.actor, operation=rec.operation, reader=rec.reader or "",
        card_id=rec.card_id or "", result=rec.result, reason=rec.reason or "",
        detail_json=rec.detail_json, hash=rec.hash.hex(), prev_hash=rec.prev_hash.hex())


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


def checkpoints(items: Iterable[audit_pb2.AuditCheckpoint]) -> list[Checkpoint]:
    """The checkpoints of a VerifyAuditRequest (each with a seq and a SHA-256 in hex)."""
    out = []
    for i, c in enumerate(items):
        if c.seq == 0 or not _HASH.fullmatch(c.hash) or len(c.terminal_id) > TERMINAL_MAX:
            raise InvalidArgument(f"checkpoints[{i}]: a seq from 1, a 64-digit hex hash and "
                                  f"a terminal id of at most {TERMINAL_MAX} characters",
                                  metadata={"field": f"checkpoints[{i}]"})
        out.append(Checkpoint(c.terminal_id, c.seq, c.hash.lower(),
                              c.row_time.ToMicroseconds(), c.kind[:32], c.segment,
                              c.unacknowledged_resets))
    return out


def verification(v: Verification) -> terminal_pb2.VerifyAuditResponse:
    """A verification as VerifyAuditResponse."""
    r, c = v.result, v.comparison
    return terminal_pb2.VerifyAuditResponse(
        ok=v.ok, rows_checked=r.rows_checked, first_bad_seq=v.first_bad_seq,
        problem=str(v.problem) if v.problem is not None else "",
        head_seq=r.last_seq, head_hash=r.last_hash, terminal_id=v.terminal_id,
        resets=[terminal_pb2.AuditReset(
            seq=x.seq, kind=x.kind, problem=x.problem, acknowledged=x.acknowledged,
            acknowledged_seq=x.acknowledged_seq, acknowledged_by=x.acknowledged_by,
            reason=x.reason, time=timestamp(datetime.fromtimestamp(x.ts_us / 1e6, UTC)))
            for x in r.resets],
        findings=[terminal_pb2.CheckpointFinding(
            problem=str(f.problem), seq=f.seq, checkpoint_hash=f.checkpoint_hash,
            chain_hash=f.chain_hash, source=f.source, message=f.message)
            for f in c.findings],
        checkpoints_matched=c.matched, checkpoints_other_terminal=c.other_terminal,
        checkpoints_before_kept=c.before_kept, checkpoints_superseded=c.superseded,
        mode=str(r.mode), first_seq=r.first_seq, segments_sealed=r.segments_sealed,
        segments_dropped=r.segments_dropped, summary=v.summary())


def report(rep: YearlyReport) -> terminal_pb2.YearlyReport:
    """A report as cardap.v1.YearlyReport (document: the text with its SHA-256 line)."""
    a = rep.audit
    return terminal_pb2.YearlyReport(
        year=rep.year,
        organisations=[terminal_pb2.OrganisationLoads(
            organisation=o.organisation, loads=o.loads, charge_yen=o.charge_yen)
            for o in rep.organisations],
        audit=terminal_pb2.VerifyAuditResponse(
            ok=a.ok, rows_checked=a.rows_checked, first_bad_seq=a.first_bad_seq,
            problem=a.problem, head_seq=a.head_seq, head_hash=a.head_hash,
            first_seq=a.first_seq, mode="full",
            resets=[terminal_pb2.AuditReset(
                seq=x.seq, kind=x.kind, problem=x.problem, acknowledged=x.acknowledged,
                acknowledged_seq=x.acknowledged_seq, acknowledged_by=x.acknowledged_by,
                reason=x.reason) for x in a.resets]),
        document=rep.document, language=rep.language)
