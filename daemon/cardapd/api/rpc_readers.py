"""Readers and cards: status, the reader table, card events, fault isolation, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from cardap.v1 import cards_pb2, terminal_pb2
from cardapd.api import convert, validate
from cardapd.api.base import RpcBase
from cardapd.api.roles import Role
from cardapd.api.rpc import Ctx, session_token, stream, unary
from cardapd.domain import OpContext, Right
from cardapd.errors import ServiceUnavailable
from cardapd.readers.diagnose import Diagnosis, worst
from cardapd.readers.hub import now
from cardapd.readers.model import EventKind, ReaderState, ReaderView

STATUS_POLL_S = 0.5
"""How often WatchStatus looks for a change (every state it reports is in memory)."""


def status_key(msg: terminal_pb2.GetStatusResponse) -> tuple[object, ...]:
    """What a change of makes WatchStatus send: everything but the audit head and the
    ages that grow every second (feed ages are compared by staleness)."""
    svc = msg.loading_service
    return (msg.pcsc_available, msg.readers, msg.cards, tuple(msg.capabilities),
            svc.link, svc.availability, svc.next_opening.seconds, svc.next_closing.seconds,
            svc.next_maintenance.SerializeToString(), svc.schedule_fetched_at.seconds,
            tuple((f.organisation, f.stale, f.age_s < 0) for f in msg.revocation_feeds),
            msg.fingerprint_device)


class ReadersRpc(RpcBase):
    """GetStatus, ListReaders, WatchCardEvents, Diagnose, WatchMetrics. On the kiosk socket
    a diagnosis needs an operator with the DIAGNOSE right, and card views carry tap-read
    user IDs only while an operator is logged in there; status needs no session."""

    @unary
    async def GetStatus(self, request: terminal_pb2.GetStatusRequest, context: Ctx,
                        ctx: OpContext) -> terminal_pb2.GetStatusResponse:
        return convert.status(self.services.status(), str(self.role))

    @stream
    async def WatchStatus(self, request: terminal_pb2.WatchStatusRequest, context: Ctx,
                          ctx: OpContext) -> AsyncIterator[terminal_pb2.GetStatusResponse]:
        heartbeat = validate.interval(request.heartbeat_s, default=60)
        last: tuple[object, ...] | None = None
        sent_at = 0.0
        loop = asyncio.get_running_loop()
        while True:
            msg = convert.status(self.services.status(), str(self.role))
            key = status_key(msg)
            if key != last or loop.time() - sent_at >= heartbeat:
                yield msg
                last, sent_at = key, loop.time()
            await asyncio.sleep(STATUS_POLL_S)

    @unary
    async def ListReaders(self, request: terminal_pb2.ListReadersRequest, context: Ctx,
                          ctx: OpContext) -> terminal_pb2.ListReadersResponse:
        readers = self.services.readers
        users = self.shows_user_ids(context)
        return terminal_pb2.ListReadersResponse(
            readers=[convert.reader(v, users) for v in readers.readers()],
            pcsc_available=readers.pcsc_available)

    @stream
    async def WatchCardEvents(self, request: terminal_pb2.WatchCardEventsRequest,
                              context: Ctx, ctx: OpContext
                              ) -> AsyncIterator[cards_pb2.CardEvent]:
        readers = self.services.readers
        sub = readers.subscribe(validate.reader_filter(list(request.readers)))
        kiosk = self.role is Role.KIOSK
        try:
            async for event in sub.events():
                if event.kind is EventKind.PRESET_READY and not kiosk:
                    continue  # a kiosk matter: the gate's stream stays as it was
                # On the kiosk socket, user IDs only while an operator is logged in there.
                yield convert.event(event, self.shows_user_ids(context))
            if sub.overflowed:
                raise ServiceUnavailable("this client fell too far behind the card "
                                         "events; reconnect to get a fresh snapshot",
                                         reason="EVENT_QUEUE_OVERFLOW")
        finally:
            readers.unsubscribe(sub)

    @unary
    async def Diagnose(self, request: terminal_pb2.DiagnoseRequest, context: Ctx,
                       ctx: OpContext) -> terminal_pb2.DiagnoseResponse:
        ctx, _ = self.counter(context, ctx, Right.DIAGNOSE)
        readers = self.services.readers
        reader = validate.reader_name(request.reader)
        token = session_token(context)
        organisation = self.services.loading.operator(token).organisation if token else ""
        diags = await readers.diagnose(ctx, reader=reader, organisation=organisation)
        bad = worst(diags) or Diagnosis(ReaderView("", ReaderState.UNAVAILABLE))
        lang = self.language(context)
        return terminal_pb2.DiagnoseResponse(
            pcsc_available=readers.pcsc_available,
            readers=[convert.diagnosis(d, lang) for d in diags],
            verdict=convert.VERDICT[bad.verdict], next_action=bad.next_action_text(lang),
            next_action_code=convert.ACTION_CODE[bad.action],
            next_action_values=convert.text_values(bad.action_values), language=lang,
            verdict_text=convert.verdict_text(bad.verdict, lang))

    @stream
    async def WatchMetrics(self, request: terminal_pb2.WatchMetricsRequest, context: Ctx,
                           ctx: OpContext) -> AsyncIterator[terminal_pb2.MetricsSnapshot]:
        interval = validate.interval(request.interval_s)
        prefixes = validate.prefixes(list(request.prefixes))
        while True:
            yield terminal_pb2.MetricsSnapshot(
                time=convert.timestamp(now()),
                samples=convert.samples(self.services.metrics.samples(prefixes)))
            await asyncio.sleep(interval)
