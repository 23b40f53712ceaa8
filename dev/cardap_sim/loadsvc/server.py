"""gRPC front of the loading service: LoadingService over mutual TLS, plus health.

A terminal is the CN of its client certificate; it acts for the organisation in its O and
for those the catalogue lets it serve (`[[terminal]]`: a counter shared by several
organisations). A request naming another organisation is PERMISSION_DENIED with the
trailing metadata `cardap-reason: ORGANISATION_NOT_ALLOWED`. The organisation of a call
decides its catalogue, its sessions and who is billed. No key, PIN or STORE DATA payload is
ever logged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from cardap.v1 import audit_pb2, cards_pb2, loading_pb2, loading_pb2_grpc
from cardap_sim.loadsvc.catalogue import ApType, Catalogue, CatalogueAp
from cardap_sim.loadsvc.checkpoints import PAGE as CHECKPOINT_PAGE
from cardap_sim.loadsvc.checkpoints import CheckpointStore, Kept
from cardap_sim.loadsvc.devca import TerminalIdentity, terminal_identity
from cardap_sim.loadsvc.hours import JST
from cardap_sim.loadsvc.revocation import CardStatus, RevocationFeeds
from cardap_sim.loadsvc.session import (
    Batch,
    BatchAnswer,
    CardSession,
    Done,
    Reason,
    ServiceCore,
    SessionRequest,
)

log = logging.getLogger("cardap_sim.loadsvc.server")

SERVICE_NAME = loading_pb2.DESCRIPTOR.services_by_name["LoadingService"].full_name
MAX_MESSAGE_BYTES = 4 << 20
BATCH_TIMEOUT_S = 60.0
_AP_TYPES = {ApType.A: cards_pb2.AP_TYPE_A, ApType.C: cards_pb2.AP_TYPE_C,
             ApType.D: cards_pb2.AP_TYPE_D, ApType.CUSTOM: cards_pb2.AP_TYPE_CUSTOM}
_STATUSES = {CardStatus.IN_OPERATION: cards_pb2.USER_ID_STATUS_IN_OPERATION,
             CardStatus.SUSPENDED: cards_pb2.USER_ID_STATUS_SUSPENDED,
             CardStatus.ABOLISHED: cards_pb2.USER_ID_STATUS_ABOLISHED}


@dataclass(frozen=True)
class TlsFiles:
    """PEM material of the service: its certificate and key, and the CA of the terminals."""

    cert_pem: bytes
    key_pem: bytes
    client_ca_pem: bytes


async def _caller(context: Any) -> TerminalIdentity:
    """The terminal identity from the verified client certificate, else UNAUTHENTICATED."""
    auth = context.auth_context()
    pems = auth.get("x509_pem_cert") or []
    if not pems:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a client certificate is required")
    try:
        return terminal_identity(bytes(pems[0]))
    except ValueError as exc:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        raise  # unreachable: abort raises


REASON_METADATA = "cardap-reason"
NOT_ALLOWED = "ORGANISATION_NOT_ALLOWED"


async def _organisation(context: Any, catalogue: Catalogue, ident: TerminalIdentity,
                        asked: str) -> str:
    """The organisation the call acts for (empty: the certificate's); PERMISSION_DENIED
    ORGANISATION_NOT_ALLOWED for one this terminal may not act for."""
    organisation = asked or ident.organisation
    if not catalogue.may_act_for(ident.terminal_id, ident.organisation, organisation):
        log.warning("terminal %s of %s asked to act for organisation %s", ident.terminal_id,
                    ident.organisation, organisation)
        await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                            f"terminal {ident.terminal_id} may not act for organisation "
                            f"{organisation}", trailing_metadata=((REASON_METADATA,
                                                                   NOT_ALLOWED),))
    return organisation


def _entry(ap: CatalogueAp) -> loading_pb2.CatalogueEntry:
    """A catalogue entry as the proto has it."""
    return loading_pb2.CatalogueEntry(
        ap_id=ap.ap_id, display_name=ap.display_name, type=_AP_TYPES[ap.type],
        instance_aid=ap.instance_aid.hex().upper(), image_bytes=dict(ap.image_bytes),
        area=ap.area, load_file_aid=ap.load_file_aid.hex().upper(),
        module_aid=ap.module_aid.hex().upper(), pin_required=ap.type.needs_access_key)


def batch_message(batch: Batch) -> loading_pb2.ServiceMessage:
    """An engine Batch as a ServiceMessage."""
    return loading_pb2.ServiceMessage(batch=loading_pb2.ApduBatch(
        batch_id=batch.batch_id, phase=int(batch.phase),  # type: ignore[arg-type]
        percent=batch.percent, step=batch.step,
        apdus=[loading_pb2.Apdu(command=a.command, expect_sw=list(a.expect_sw),
                                sensitive=a.sensitive) for a in batch.apdus]))


def done_message(done: Done) -> loading_pb2.ServiceMessage:
    """An engine Done as a ServiceMessage."""
    msg = loading_pb2.SessionDone(
        ok=done.ok, reason=str(done.reason), message=done.message, aid=done.aid,
        user_id=done.user_id, free_bytes=done.free_bytes or 0, card_id=done.card_id,
        round_trips=done.round_trips, billed=done.billed, profile=done.profile,
        needed_bytes=done.needed_bytes)
    if done.next_opening is not None:
        ts = Timestamp()
        ts.FromDatetime(done.next_opening)
        msg.next_opening.CopyFrom(ts)
    return loading_pb2.ServiceMessage(done=msg)


def answer_from(result: loading_pb2.BatchResult) -> BatchAnswer:
    """A BatchResult as the engine's BatchAnswer."""
    return BatchAnswer(result.batch_id, tuple(bytes(r) for r in result.responses),
                       result.complete, result.transport_error)


def _keep(store: CheckpointStore, ident: TerminalIdentity,
          cp: audit_pb2.AuditCheckpoint) -> tuple[int, bool]:
    """Keep one checkpoint under the certificate's terminal id."""
    return store.record(ident.terminal_id, cp.terminal_id, cp.seq, cp.hash,
                        cp.row_time.ToMicroseconds(), cp.kind, cp.segment,
                        cp.unacknowledged_resets)


def _checkpoint(k: Kept) -> audit_pb2.AuditCheckpoint:
    msg = audit_pb2.AuditCheckpoint(terminal_id=k.terminal_id, seq=k.seq, hash=k.hash,
                                    kind=k.kind, segment=k.segment,
                                    unacknowledged_resets=k.unacknowledged_resets)
    msg.row_time.FromMicroseconds(k.row_time_us)
    return msg


class LoadingServicer(loading_pb2_grpc.LoadingServiceServicer):
    """LoadingService: catalogue, card sessions, revocation feed, audit checkpoints."""

    def __init__(self, core: ServiceCore, feeds: RevocationFeeds,
                 checkpoints: CheckpointStore | None = None) -> None:
        self.core = core
        self.feeds = feeds
        self.checkpoints = checkpoints if checkpoints is not None else CheckpointStore()

    async def RecordAuditCheckpoint(self, request: loading_pb2.RecordAuditCheckpointRequest,
                                    context: Any) -> loading_pb2.RecordAuditCheckpointResponse:
        """Keep the caller's checkpoint (under its certificate's terminal id)."""
        ident = await _caller(context)
        cp = request.checkpoint
        if cp.seq == 0 or len(cp.hash) != 64:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "a checkpoint names a seq from 1 and a SHA-256 in hex")
        kept, diverged = await asyncio.to_thread(_keep, self.checkpoints, ident, cp)
        return loading_pb2.RecordAuditCheckpointResponse(kept=kept, diverged=diverged)

    async def ListAuditCheckpoints(self, request: loading_pb2.ListAuditCheckpointsRequest,
                                   context: Any) -> loading_pb2.ListAuditCheckpointsResponse:
        """The checkpoints kept for the caller's terminal, in the order received."""
        ident = await _caller(context)
        limit = min(request.limit or CHECKPOINT_PAGE, CHECKPOINT_PAGE)
        kept, cursor = await asyncio.to_thread(self.checkpoints.page, ident.terminal_id,
                                               request.after_seq, request.cursor, limit)
        return loading_pb2.ListAuditCheckpointsResponse(
            checkpoints=[_checkpoint(k) for k in kept], terminal_id=ident.terminal_id,
            next_cursor=cursor)

    async def GetCatalogue(self, request: loading_pb2.GetCatalogueRequest,
                           context: Any) -> loading_pb2.GetCatalogueResponse:
        """The APs the caller's organisation may load."""
        ident = await _caller(context)
        org = await _organisation(context, self.core.catalogue, ident, request.organisation)
        aps = self.core.catalogue.for_organisation(org)
        return loading_pb2.GetCatalogueResponse(aps=[_entry(ap) for ap in aps],
                                                organisation=org)

    async def GetRevocationFeed(self, request: loading_pb2.GetRevocationFeedRequest,
                                context: Any) -> loading_pb2.RevocationFeed:
        """Entries of the caller's organisation changed since `since_version`."""
        ident = await _caller(context)
        org = await _organisation(context, self.core.catalogue, ident, request.organisation)
        version, entries = self.feeds.since(org, request.since_version)
        feed = loading_pb2.RevocationFeed(version=version, organisation=org)
        feed.generated_at.FromDatetime(self.core.clock.now())
        for e in entries:
            item = feed.entries.add(aid=e.aid, user_id=e.user_id, status=_STATUSES[e.status],
                                    version=e.version)
            item.changed_at.FromDatetime(e.changed_at)
        return feed

    async def GetServiceSchedule(self, request: loading_pb2.GetServiceScheduleRequest,
                                 context: Any) -> loading_pb2.ServiceSchedule:
        """Hours, closures and announced maintenance, with the service's clock."""
        await _caller(context)
        now = self.core.clock.now()
        hours = self.core.hours
        out = loading_pb2.ServiceSchedule(
            utc_offset_minutes=int((JST.utcoffset(None) or dt.timedelta()).total_seconds() // 60),
            opens_at_minute=hours.open_hour * 60, closes_at_minute=hours.close_hour * 60)
        out.service_time.FromDatetime(now)
        for target, windows in ((out.closures, hours.closures(now)),
                                (out.maintenance, hours.announced(now))):
            for w in windows:
                item = target.add(description=w.description)
                item.start.FromDatetime(w.start)
                item.end.FromDatetime(w.end)
                if w.announced_at is not None:
                    item.announced_at.FromDatetime(w.announced_at)
        return out

    async def CardSession(self, request_iterator: AsyncIterator[loading_pb2.TerminalMessage],
                          context: Any) -> AsyncIterator[loading_pb2.ServiceMessage]:
        """Drive one card session: SessionOpen, then batch/result pairs, then SessionDone."""
        ident = await _caller(context)
        it = request_iterator.__aiter__()
        first = await _next(it)
        if first is None or first.WhichOneof("msg") != "open":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "a card session starts with SessionOpen")
            return
        op = first.open
        org = await _organisation(context, self.core.catalogue, ident, op.organisation)
        if op.HasField("checkpoint") and op.checkpoint.seq > 0:
            await asyncio.to_thread(_keep, self.checkpoints, ident, op.checkpoint)
        session = CardSession(self.core, SessionRequest(
            organisation=org, action=op.action, operator_id=op.operator_id,
            ap_id=op.ap_id, aid=op.aid, card_id=op.card_id, profile=op.profile,
            journal_id=op.journal_id, custom_user_id=op.custom_user_id,
            terminal_id=ident.terminal_id, delete_reason=op.delete_reason))
        log.info("card session opened", extra={
            "terminal": ident.terminal_id, "organisation": org,
            "action": op.action, "ap_id": op.ap_id, "journal_id": op.journal_id})
        step = await asyncio.to_thread(session.start)
        while isinstance(step, Batch):
            yield batch_message(step)
            try:
                msg = await asyncio.wait_for(_next(it), BATCH_TIMEOUT_S)
            except TimeoutError:
                step = session.abort(Reason.CARD_REMOVED, "the terminal did not answer a batch")
                break
            if msg is None or msg.WhichOneof("msg") != "result":
                step = session.abort(Reason.PROTOCOL_ERROR,
                                     "the terminal ended the session or sent no BatchResult")
                break
            step = await asyncio.to_thread(session.answer, answer_from(msg.result))
        yield done_message(step)


async def _next(it: AsyncIterator[loading_pb2.TerminalMessage]
                ) -> loading_pb2.TerminalMessage | None:
    """The next message of the stream, None at its end."""
    try:
        return await it.__anext__()
    except StopAsyncIteration:
        return None


class LoadingServer:
    """The grpc.aio server with LoadingService and health, on one mTLS port."""

    def __init__(self, core: ServiceCore, feeds: RevocationFeeds, tls: TlsFiles,
                 address: str = "127.0.0.1:0",
                 checkpoints: CheckpointStore | None = None) -> None:
        self.server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ])
        loading_pb2_grpc.add_LoadingServiceServicer_to_server(
            LoadingServicer(core, feeds, checkpoints), self.server)
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        creds = grpc.ssl_server_credentials([(tls.key_pem, tls.cert_pem)],
                                            root_certificates=tls.client_ca_pem,
                                            require_client_auth=True)
        self.port = self.server.add_secure_port(address, creds)
        if self.port == 0:
            raise OSError(f"cannot listen on {address}")

    async def start(self) -> None:
        """Start serving and report SERVING."""
        await self.server.start()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("loading service listening on port %d (mutual TLS)", self.port)

    async def stop(self, grace: float = 2.0) -> None:
        """Report NOT_SERVING, then stop (in-flight sessions get `grace` seconds)."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


__all__ = ["SERVICE_NAME", "LoadingServer", "LoadingServicer", "TlsFiles", "health"]
