"""The operation history: ExportAudit, VerifyAudit, GetYearlyReport, AcknowledgeAuditReset
(ops socket)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from cardap.v1 import audit_pb2, terminal_pb2
from cardapd.api import convert_audit
from cardapd.api.base import RpcBase
from cardapd.api.rpc import Ctx, session_token, stream, unary
from cardapd.domain import AUDIT_OPERATIONS, OpContext, Right
from cardapd.errors import InvalidArgument, Unauthenticated
from cardapd.mynumber import withheld


class AuditRpc(RpcBase):
    """Each call is itself audited by the audit service."""

    @stream
    async def ExportAudit(self, request: terminal_pb2.ExportAuditRequest, context: Ctx,
                          ctx: OpContext) -> AsyncIterator[audit_pb2.AuditRecord]:
        unknown = sorted(set(request.operations) - AUDIT_OPERATIONS)
        if unknown:
            name = withheld(unknown[0])[:64]
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
        checkpoints = convert_audit.checkpoints(request.checkpoints)
        return convert_audit.verification(await self.services.audit_log.verify(
            ctx, full=request.full, checkpoints=checkpoints,
            from_service=request.checkpoints_from_service))

    @unary
    async def GetYearlyReport(self, request: terminal_pb2.GetYearlyReportRequest,
                              context: Ctx, ctx: OpContext) -> terminal_pb2.YearlyReport:
        return convert_audit.report(await self.services.audit_log.yearly(
            ctx, request.year, self.language(context)))

    @unary
    async def AcknowledgeAuditReset(self, request: terminal_pb2.AcknowledgeAuditResetRequest,
                                    context: Ctx, ctx: OpContext
                                    ) -> terminal_pb2.AcknowledgeAuditResetResponse:
        by = self.services.admin.acting(session_token(context), self.connection)
        if by is None:
            # No bootstrap rule: an anchor reset may be a rewrite of the terminal's history,
            # so only an administrator explains it away (on a roster without one, root
            # appoints the first: `cardapd bootstrap-admin --session-file`, D41).
            raise Unauthenticated("acknowledging an audit anchor reset needs an "
                                  "administrator's session: log in on the ops socket first "
                                  "(metadata cardap-session)", reason="NO_OPERATOR_SESSION")
        by.require(Right.ADMINISTER)
        actor = by.actor
        ctx = OpContext(role=ctx.role, request_id=ctx.request_id, operator=actor,
                        cancel=ctx.cancel)
        seq = await asyncio.shield(self.services.audit_log.acknowledge(
            ctx, actor, request.reset_seq, request.reason))
        return terminal_pb2.AcknowledgeAuditResetResponse(acknowledgement_seq=seq)
