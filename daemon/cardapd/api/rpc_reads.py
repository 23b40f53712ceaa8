"""User ID reads and revocation: ReadUserId, SyncRevocation, SetUserIdStatus."""

from __future__ import annotations

from cardap.v1 import cards_pb2, terminal_pb2
from cardapd.api import convert, validate
from cardapd.api.base import RpcBase
from cardapd.api.rpc import Ctx, unary
from cardapd.domain import OpContext
from cardapd.errors import CardapError, InvalidArgument
from cardapd.myna.userid import is_user_id_text


class ReadsRpc(RpcBase):
    """The gate's read path and the ops socket's revocation calls."""

    def _check_typed_aid(self, aid: bytes) -> None:
        """An AID the configuration does not name is the client's text: refused when it
        looks like a My Number, before anything is stored (D59)."""
        if not self.services.reads.configured(aid):
            validate.free_text(aid.hex().upper(), "aid")

    @unary
    async def ReadUserId(self, request: terminal_pb2.ReadUserIdRequest, context: Ctx,
                         ctx: OpContext) -> terminal_pb2.ReadUserIdResponse:
        reader = validate.reader_name(request.reader)
        aid = validate.aid(request.aid)
        pin = validate.pin(request.pin)
        kind = convert.AP_KINDS.get(request.type)
        if kind is None:
            raise InvalidArgument(f"type: unknown AP type {request.type}",
                                  metadata={"field": "type"})
        if kind == "C" and request.pin:
            raise InvalidArgument("pin: a Type C AP is read without a PIN; send none",
                                  metadata={"field": "pin"})
        if aid is not None:
            self._check_typed_aid(aid)
        ctx, _ = self.counter(context, ctx)  # the kiosk: an operator behind every read
        result = await self.services.reads.read(ctx, reader=reader, kind=kind, aid=aid,
                                                pin=pin, fresh=request.fresh)
        return convert.user_id_read(result)

    @unary
    async def SyncRevocation(self, request: terminal_pb2.SyncRevocationRequest, context: Ctx,
                             ctx: OpContext) -> terminal_pb2.SyncRevocationResponse:
        result = await self.services.revocation.sync(ctx)
        response = terminal_pb2.SyncRevocationResponse(entries=result.entries)
        if result.feed_time is not None:
            response.feed_time.FromDatetime(result.feed_time)
        return response

    @unary
    async def SetUserIdStatus(self, request: terminal_pb2.SetUserIdStatusRequest, context: Ctx,
                              ctx: OpContext) -> terminal_pb2.SetUserIdStatusResponse:
        if not 1 <= len(request.organisation) <= 64:
            raise InvalidArgument("organisation: 1-64 characters",
                                  metadata={"field": "organisation"})
        aid = validate.aid(request.aid)
        if aid is None:
            raise InvalidArgument("aid: the AP's AID is required", reason="AID_REQUIRED",
                                  metadata={"field": "aid"})
        if not is_user_id_text(request.user_id):
            raise InvalidArgument("user_id: 13 printable ASCII characters, or 0x and 26 hex "
                                  "digits for a user ID that is not printable",
                                  metadata={"field": "user_id"})
        rule = self.services.reads.rule(aid)
        if rule.organisation == request.organisation:
            try:
                rule.check_format(request.user_id, "user_id")
            except CardapError as exc:
                raise InvalidArgument(exc.message, reason=exc.reason,
                                      metadata={"field": "user_id"}) from None
        if request.status not in (cards_pb2.USER_ID_STATUS_SUSPENDED,
                                  cards_pb2.USER_ID_STATUS_IN_OPERATION):
            raise InvalidArgument("status: SUSPENDED or IN_OPERATION (abolition comes from "
                                  "the feed only)", metadata={"field": "status"})
        validate.free_text(request.reason, "reason")  # still guarded (D9), before storing
        self._check_typed_aid(aid)
        await self.services.revocation.set_local(
            ctx, organisation=request.organisation, aid=aid, user_id=request.user_id,
            suspend=request.status == cards_pb2.USER_ID_STATUS_SUSPENDED,
            reason=request.reason)
        return terminal_pb2.SetUserIdStatusResponse()
