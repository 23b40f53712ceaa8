"""The operation history: ExportAudit, VerifyAudit, GetYearlyReport (ops socket)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from cardap.v1 import audit_pb2, terminal_pb2
from cardapd.api import convert_audit
from cardapd.api.base import RpcBase
from cardapd.api.rpc import Ctx, stream, unary
from cardapd.domain import AUDIT_OPERATIONS, OpContext
from cardapd.errors import InvalidArgument
from cardapd.mynumber import looks_like_my_number


class AuditRpc(RpcBase):
    """Each call is itself audited by the audit service."""

    @stream
    async def ExportAudit(self, request: terminal_pb2.ExportAuditRequest, context: Ctx,
                          ctx: OpContext) -> AsyncIterator[audit_pb2.AuditRecord]:
        unknown = sorted(set(request.operations) - AUDIT_OPERATIONS)
        if unknown:
            name = "(withheld)" if looks_like_my_number(unknown[0]) else unknown[0][:64]
            raise InvalidArgument(
                f"unknown operation {name!r}; the audit log knows "
                f"{', '.join(sorted(AUDIT_OPERATIONS))}", reason="UNKNOWN_OPERATION",
                metadata={"operation": name, "field": "operations"})
        flt = convert_audit.audit_filter(request)
        async for rec in self.services.audit_log.export(ctx, flt):
            yield convert_audit.record(rec)

    @unary
    async def VerifyAudit(self, request: terminal_pb2.VerifyAuditRequest, context: Ctx,
                          ctx: OpContext) -> terminal_pb2.VerifyAuditResponse:
        return convert_audit.verification(await self.services.audit_log.verify(ctx))

    @unary
    async def GetYearlyReport(self, request: terminal_pb2.GetYearlyReportRequest,
                              context: Ctx, ctx: OpContext) -> terminal_pb2.YearlyReport:
        return convert_audit.report(await self.services.audit_log.yearly(ctx, request.year))
