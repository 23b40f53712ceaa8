"""Card APs at the kiosk: ListLoadableAps, LoadAp (progress streamed), DeleteAp, ListCardAps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from cardap.v1 import terminal_pb2
from cardapd.api import convert_loading, validate
from cardapd.api.base import RpcBase
from cardapd.api.rpc import Ctx, session_token, stream, unary
from cardapd.domain import OpContext
from cardapd.errors import InvalidArgument
from cardapd.loading.loader import LoadOutcome, Progress

DELETE_REASONS_PB = {terminal_pb2.DELETE_REASON_HOLDER_REQUEST: "holder_request",
                     terminal_pb2.DELETE_REASON_CARD_RENEWAL: "card_renewal",
                     terminal_pb2.DELETE_REASON_OTHER: "other"}


class LoadingRpc(RpcBase):
    """Every card action on the kiosk socket needs an operator session (metadata
    `cardap-session`); ListCardAps on the ops socket does not."""

    @unary
    async def ListLoadableAps(self, request: terminal_pb2.ListLoadableApsRequest, context: Ctx,
                              ctx: OpContext) -> terminal_pb2.ListLoadableApsResponse:
        loader = self.services.loading
        operator = loader.operator(session_token(context))
        got = await loader.list_loadable(operator)
        return terminal_pb2.ListLoadableApsResponse(
            aps=[convert_loading.catalogue_entry(e) for e in got.entries],
            presets=[terminal_pb2.PresetSet(name=n, ap_ids=ids)
                     for n, ids in got.presets.items()],
            default_preset=got.default_preset)

    @stream
    async def LoadAp(self, request: terminal_pb2.LoadApRequest, context: Ctx,
                     ctx: OpContext) -> AsyncIterator[terminal_pb2.LoadApEvent]:
        loader = self.services.loading
        operator = loader.operator(session_token(context))
        reader = validate.reader_name(request.reader)
        which = request.WhichOneof("what")
        ap_id = request.ap_id if which == "ap_id" else ""
        preset = request.preset if which == "preset" else ""
        default = which == "default_preset" and request.default_preset
        if not (ap_id or preset or default) or len(ap_id) > 128 or len(preset) > 128:
            raise InvalidArgument("ap_id, preset or default_preset: name one AP, one preset, "
                                  "or ask for the default preset (≤ 128 bytes)",
                                  metadata={"field": "what"})
        if len(request.custom_user_id) > 13:
            raise InvalidArgument("custom_user_id: 13 characters",
                                  metadata={"field": "custom_user_id"})
        queue: asyncio.Queue[Progress | LoadOutcome] = asyncio.Queue()
        task = asyncio.ensure_future(loader.load(
            ctx, operator, reader=reader, ap_id=ap_id, preset=preset,
            custom_user_id=request.custom_user_id, progress=queue.put_nowait,
            result=queue.put_nowait, default_preset=default))
        # Should the client go away, the wrapper sets ctx.cancel: the load stops before its
        # next APDU and finishes its journal and audit rows on its own.
        while not (task.done() and queue.empty()):
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait([getter, task], return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield convert_loading.event(getter.result())
            else:
                getter.cancel()
        task.result()

    @unary
    async def DeleteAp(self, request: terminal_pb2.DeleteApRequest, context: Ctx,
                       ctx: OpContext) -> terminal_pb2.DeleteApResponse:
        loader = self.services.loading
        operator = loader.operator(session_token(context))
        reader = validate.reader_name(request.reader)
        aid = validate.aid(request.aid)
        if aid is None:
            raise InvalidArgument("aid: the AID of the AP to delete is required",
                                  reason="AID_REQUIRED", metadata={"field": "aid"})
        reason = DELETE_REASONS_PB.get(request.reason)
        if reason is None:
            raise InvalidArgument("reason: say why the AP is deleted (HOLDER_REQUEST, "
                                  "CARD_RENEWAL or OTHER with reason_detail)",
                                  reason="DELETE_REASON_REQUIRED", metadata={"field": "reason"})
        detail = validate.free_text(request.reason_detail, "reason_detail")
        if reason == "other" and not detail:
            raise InvalidArgument("reason_detail: say what the other reason is",
                                  reason="DELETE_REASON_REQUIRED",
                                  metadata={"field": "reason_detail"})
        out = await loader.delete(ctx, operator, reader=reader, aid=aid, reason=reason,
                                  reason_detail=detail)
        return terminal_pb2.DeleteApResponse(outcome=out.outcome, free_bytes=out.free_bytes,
                                             aid=out.aid, reader=out.reader,
                                             card_id=out.card_id, ap_id=out.ap_id)

    @unary
    async def ListCardAps(self, request: terminal_pb2.ListCardApsRequest, context: Ctx,
                          ctx: OpContext) -> terminal_pb2.ListCardApsResponse:
        ctx, operator = self.counter(context, ctx)
        found, free = await self.services.loading.list_card_aps(
            ctx, reader=validate.reader_name(request.reader),
            organisation=operator.organisation if operator is not None else None)
        return terminal_pb2.ListCardApsResponse(
            aps=[convert_loading.card_ap(a) for a in found], free_bytes=free)

    @unary
    async def ConfirmReconcile(self, request: terminal_pb2.ConfirmReconcileRequest,
                               context: Ctx, ctx: OpContext
                               ) -> terminal_pb2.ConfirmReconcileResponse:
        loader = self.services.loading
        operator = loader.operator(session_token(context))
        reader = validate.reader_name(request.reader)
        if not 1 <= len(request.journal_id) <= 64:
            raise InvalidArgument("journal_id: the interrupted operation's journal id",
                                  metadata={"field": "journal_id"})
        out = await loader.confirm_reconcile(ctx, operator, reader=reader,
                                             journal_id=request.journal_id)
        return terminal_pb2.ConfirmReconcileResponse(outcome=out.outcome, message=out.message,
                                                     free_bytes=out.free_bytes)
