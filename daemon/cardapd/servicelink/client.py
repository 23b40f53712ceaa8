"""The link to the loading service: a grpc.aio mutual TLS channel, the catalogue, card
sessions, the revocation feeds and audit checkpoints — the daemon's one adapter of the
loading-service wire protocol (it implements `loading.ports.LoadingService`,
`reads.revocation.FeedSource` and `audit.checkpoints.CheckpointUplink`; nothing below
`cardapd.api` sees protobuf or gRPC). Each card session carries a checkpoint of the audit
chain head in its SessionOpen (docs/decisions.md D32).

A card session is one bidirectional stream: SessionOpen, then for each ApduBatch the
caller's `run` executes it on the card and the BatchResult goes back, until SessionDone.
The service is reached before any APDU: when it is unreachable or refuses this
terminal's certificate the session fails with ServiceUnavailable and the card saw nothing.

Every call's outcome sets the link metrics (`cardapd_loading_link_*`): an answer, even a
refusal, means the link is up; unreachable, a refused handshake or certificate, a
timeout or unreadable TLS files mean it is down. `check_link` (run in the background by
`Metrics.watch`) contacts the service at start and whenever no call did for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import grpc

from cardap.v1 import loading_pb2, loading_pb2_grpc
from cardapd import __version__
from cardapd.audit.checkpoints import Checkpoint, CheckpointSender
from cardapd.config import LoadingConfig
from cardapd.config.files import FileProblem, loading_tls_problems
from cardapd.domain import LoadingLinkStatus
from cardapd.errors import CardapError, ConfigError, NotAuthorized, ServiceUnavailable
from cardapd.loading.ports import (
    CatalogueEntry,
    OnBatch,
    RunBatch,
    SessionOpen,
    SessionOutcome,
)
from cardapd.loading.schedule import ScheduleFetch
from cardapd.reads.revocation import PulledFeed
from cardapd.servicelink import convert
from cardapd.servicelink.tls import TerminalTls, read_tls
from cardapd.telemetry.metrics import Metrics

log = logging.getLogger(__name__)
MAX_MESSAGE_BYTES = 4 << 20
_EOF: Any = getattr(grpc.aio, "EOF")  # noqa: B009 - missing from the type stubs
LINK_CHECK_S = 300.0  # link up: check when no call answered for this long
LINK_RETRY_S = 30.0  # link down: check again this often
LINK_PROBE_TIMEOUT_S = 10.0
_TLS_MARKERS = ("ssl", "tls", "handshake", "certificate")
# Sent as the start of the HTTP/2 user-agent (gRPC appends its own, e.g.
# "grpc-python-asyncio/1.85.1 grpc-c/…"): the service sees which release calls it.
USER_AGENT = f"cardapd/{__version__}"


def link_failure(code: grpc.StatusCode, details: str) -> str | None:
    """The link error reason of a failed call (see metrics.LINK_ERRORS); None when the
    service was reached and answered (a refusal or an application error)."""
    text = details.lower()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "timeout"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return "tls"  # the service did not accept this terminal's certificate
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN):
        if any(marker in text for marker in _TLS_MARKERS):
            return "tls"
        if "failed to connect" in text and "socket closed" in text:
            # TCP connected, then closed during the handshake: under TLS 1.3 that is all
            # the terminal sees when the service refuses its certificate
            return "tls"
        if code == grpc.StatusCode.UNAVAILABLE:
            return "unreachable"
    return None


def service_error(exc: grpc.aio.AioRpcError, what: str) -> CardapError:
    """A gRPC failure of the service as a domain error: a call past its deadline is
    LOADING_SERVICE_TIMEOUT (the service was reached, or is being, but did not answer in
    time: the same reason as a card session's silence), not LOADING_SERVICE_UNAVAILABLE."""
    code = exc.code()
    detail = exc.details() or code.name
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ServiceUnavailable(f"the loading service did not answer in time ({what}): "
                                  f"{detail}", reason="LOADING_SERVICE_TIMEOUT")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        trailing: Any = exc.trailing_metadata() or ()
        said = next((str(v) for k, v in trailing if k == "cardap-reason"), "")
        if said == "ORGANISATION_NOT_ALLOWED":
            return NotAuthorized(f"the loading service does not let this terminal act for "
                                 f"that organisation ({detail})", reason=said)
        return NotAuthorized(f"the loading service refused {what}: {detail}",
                             reason="SERVICE_REFUSED")
    return ServiceUnavailable(f"the loading service is unavailable ({what}): {detail}",
                              reason="LOADING_SERVICE_UNAVAILABLE",
                              metadata={"grpc_code": code.name})


class LoadingClient:
    """One mTLS channel to the loading service (opened lazily, reused)."""

    def __init__(self, cfg: LoadingConfig, metrics: Metrics | None = None,
                 checkpoints: CheckpointSender | None = None,
                 tls: TerminalTls | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.checkpoints = checkpoints
        self._channel: Any = None  # grpc.aio.Channel (the stubs type it as sync)
        self._closed = False
        self.link_up: bool | None = None  # None: no contact yet
        self.last_error = ""  # the reason of the last failure
        self._last_success: datetime | None = None
        self._last_contact = 0.0  # monotonic time of the last call's outcome
        # The TLS material this link uses (read now when not given; None while unreadable:
        # the first call reads it again, and fails clearly if it still cannot).
        self.tls = tls if tls is not None or not cfg.configured else self._try_read()
        if metrics is not None:
            metrics.loading_configured.set(1 if cfg.configured else 0)
            self._show_cert()

    def _try_read(self) -> TerminalTls | None:
        try:
            return read_tls(self.cfg)
        except ConfigError as exc:
            # preflight() logs each problem once, with the fix; the first call reads again
            log.debug("the loading service's TLS files cannot be used: %s", exc.message)
            return None

    def _show_cert(self) -> None:
        """The expiry metric of the certificate this link holds (0: none)."""
        if self.metrics is not None:
            self.metrics.loading_cert_expiry.set(
                self.tls.not_after.timestamp() if self.tls is not None else 0)

    @property
    def configured(self) -> bool:
        """Whether a loading service is configured."""
        return self.cfg.configured

    @property
    def timeout_s(self) -> float:
        """How long the service's answers may take."""
        return self.cfg.timeout_s

    # ------------------------------------------------------------------ link state

    def status(self) -> LoadingLinkStatus:
        """The link's state for GetStatus."""
        return LoadingLinkStatus(configured=self.cfg.configured, up=self.link_up,
                                 last_error=self.last_error if self.link_up is False else "",
                                 last_success=self._last_success,
                                 address=str(self.cfg.address))

    def preflight(self) -> list[FileProblem]:
        """Check the TLS files before any call (at start and when [loading] changes): each
        problem is logged and the link is down (`tls_files`) from the start; everything
        else is served. The background check retries every LINK_RETRY_S, so fixed files
        bring the link up without a restart."""
        if not self.cfg.configured:
            return []
        problems = loading_tls_problems(self.cfg)
        for problem in problems:
            log.error("the loading link cannot be set up: %s; reads, events and diagnoses "
                      "are served, loads and deletes refused until it is fixed (checked "
                      "again every %g s)", problem, LINK_RETRY_S)
        if problems:
            self._link("tls_files")
        return problems

    def _link(self, reason: str | None) -> None:
        """Record a call's outcome: None = the service answered, else the failure reason."""
        self.link_up = reason is None
        self.last_error = reason or ""
        if reason is None:
            self._last_success = datetime.now(UTC)
        self._last_contact = time.monotonic()
        if self.metrics is not None:
            if reason is None:
                self.metrics.link_ok()
            else:
                self.metrics.link_failed(reason)

    def _rpc_failed(self, exc: grpc.aio.AioRpcError) -> None:
        """Record a failed call (an answer unless the link itself failed)."""
        if exc.code() == grpc.StatusCode.CANCELLED:
            return  # we gave up, the link says nothing
        self._link(link_failure(exc.code(), exc.details() or ""))

    async def check_link(self) -> float | None:
        """A background link check (see `Metrics.watch`): ask for the terminal's catalogue
        unless a call had an outcome recently; the seconds until the next check (None: no
        service configured, or the client is closed)."""
        if not self.cfg.configured or self._closed:
            return None
        interval = LINK_CHECK_S if self.link_up else LINK_RETRY_S
        idle = time.monotonic() - self._last_contact
        if self.link_up is not None and idle < interval:
            return interval - idle
        with contextlib.suppress(CardapError):
            await self.catalogue("", timeout_s=min(self.cfg.timeout_s, LINK_PROBE_TIMEOUT_S))
        return LINK_CHECK_S if self.link_up else LINK_RETRY_S

    def _stub(self) -> Any:
        """The LoadingService stub on the (lazily opened) channel."""
        if not self.cfg.configured:
            raise ServiceUnavailable("no loading service is configured ([loading] address)",
                                     reason="LOADING_SERVICE_NOT_CONFIGURED")
        if self._channel is None:
            if self.tls is None:
                try:
                    self.tls = read_tls(self.cfg)
                except ConfigError as exc:
                    self._link("tls_files")
                    raise ServiceUnavailable(f"cannot use the loading service TLS files: "
                                             f"{exc.message}",
                                             reason="LOADING_SERVICE_UNAVAILABLE") from exc
                self._show_cert()
            creds = grpc.ssl_channel_credentials(
                root_certificates=self.tls.ca, private_key=self.tls.key,
                certificate_chain=self.tls.cert)
            # Bounded reconnect backoff: after a short outage of the service the next load
            # must not be refused for minutes (gRPC's default grows to 120 s).
            self._channel = grpc.aio.secure_channel(self.cfg.address, creds, options=[
                ("grpc.primary_user_agent", USER_AGENT),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.min_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 2000)])
        return loading_pb2_grpc.LoadingServiceStub(self._channel)

    async def close(self) -> None:
        """Close the channel (and end the background link checks)."""
        self._closed = True
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None

    async def catalogue(self, organisation: str, *, timeout_s: float | None = None
                        ) -> list[CatalogueEntry]:
        """The APs `organisation` may load (the service checks it against the certificate)."""
        stub = self._stub()
        try:
            resp = await stub.GetCatalogue(
                loading_pb2.GetCatalogueRequest(organisation=organisation),
                timeout=timeout_s or self.cfg.timeout_s)
        except grpc.aio.AioRpcError as exc:
            self._rpc_failed(exc)
            raise service_error(exc, "the catalogue") from None
        self._link(None)
        entries, refused = convert.catalogue(resp.aps)
        for problem in refused:  # the rest of the catalogue stays usable
            log.error("the loading service's catalogue holds an entry this terminal refuses "
                      "(it is left out): %s", problem)
        return entries

    async def revocation_feed(self, organisation: str, since_version: int) -> PulledFeed:
        """Entries of `organisation`'s feed changed after `since_version` (0: all)."""
        stub = self._stub()
        try:
            feed: loading_pb2.RevocationFeed = await stub.GetRevocationFeed(
                loading_pb2.GetRevocationFeedRequest(organisation=organisation,
                                                     since_version=since_version),
                timeout=self.cfg.timeout_s)
        except grpc.aio.AioRpcError as exc:
            self._rpc_failed(exc)
            raise service_error(exc, f"the revocation feed of {organisation}") from None
        self._link(None)
        return convert.revocation_feed(organisation, feed)

    async def record_checkpoint(self, checkpoint: Checkpoint) -> bool:
        """Hand an audit checkpoint to the service; False when it keeps none."""
        stub = self._stub()
        try:
            await stub.RecordAuditCheckpoint(loading_pb2.RecordAuditCheckpointRequest(
                checkpoint=convert.checkpoint(checkpoint)), timeout=self.cfg.timeout_s)
        except grpc.aio.AioRpcError as exc:
            self._rpc_failed(exc)
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return False
            raise service_error(exc, "the audit checkpoint") from None
        self._link(None)
        return True

    async def list_checkpoints(self) -> list[Checkpoint]:
        """The audit checkpoints the service kept for this terminal, oldest first (every
        page of them)."""
        stub = self._stub()
        out: list[Checkpoint] = []
        cursor = 0
        while True:
            try:
                resp = await stub.ListAuditCheckpoints(
                    loading_pb2.ListAuditCheckpointsRequest(cursor=cursor),
                    timeout=self.cfg.timeout_s)
            except grpc.aio.AioRpcError as exc:
                self._rpc_failed(exc)
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    raise ServiceUnavailable("the loading service keeps no audit checkpoints",
                                             reason="CHECKPOINTS_NOT_KEPT") from None
                raise service_error(exc, "the audit checkpoints") from None
            self._link(None)
            out += [convert.checkpoint_from(c) for c in resp.checkpoints]
            if not resp.next_cursor or resp.next_cursor == cursor:
                return out
            cursor = resp.next_cursor

    async def schedule(self) -> ScheduleFetch:
        """The service's hours, closures and announced maintenance, with the local clock
        read just before and after the call (for the offset against the service's)."""
        stub = self._stub()
        sent = time.time()
        try:
            resp: loading_pb2.ServiceSchedule = await stub.GetServiceSchedule(
                loading_pb2.GetServiceScheduleRequest(), timeout=self.cfg.timeout_s)
        except grpc.aio.AioRpcError as exc:
            self._rpc_failed(exc)
            raise service_error(exc, "the service schedule") from None
        received = time.time()
        self._link(None)
        return ScheduleFetch(convert.service_schedule(resp), sent, received)

    async def session(self, open_: SessionOpen, run: RunBatch,
                      on_batch: OnBatch | None = None) -> SessionOutcome:
        """Run one card session to its SessionDone."""
        call: Any = self._stub().CardSession()
        batches = apdus = 0
        checkpoint = self.checkpoints.for_session() if self.checkpoints is not None else None
        try:
            await call.write(loading_pb2.TerminalMessage(
                open=convert.session_open(open_, checkpoint)))
            while True:
                msg = await asyncio.wait_for(call.read(), self.cfg.timeout_s)
                if msg is _EOF:
                    raise ServiceUnavailable("the loading service ended the session without "
                                             "a result", reason="LOADING_SERVICE_UNAVAILABLE",
                                             metadata={"batches": str(batches)})
                if batches == 0:
                    self._link(None)  # the service answered the SessionOpen
                    if checkpoint is not None and self.checkpoints is not None:
                        self.checkpoints.session_delivered()
                kind = msg.WhichOneof("msg")
                if kind == "done":
                    await call.done_writing()
                    return SessionOutcome(convert.session_done(msg.done), batches, apdus)
                if kind != "batch":
                    raise ServiceUnavailable("the loading service sent an empty message",
                                             reason="LOADING_SERVICE_PROTOCOL")
                batches += 1
                batch = convert.batch(msg.batch)
                result = await run(batch)
                apdus += len(result.responses)
                await call.write(loading_pb2.TerminalMessage(
                    result=convert.batch_result(result)))
                if on_batch is not None:
                    on_batch(batch)
        except grpc.aio.AioRpcError as exc:
            self._rpc_failed(exc)
            raise service_error(exc, f"card session, after {batches} batches") from None
        except TimeoutError:
            self._link("timeout")
            call.cancel()
            raise ServiceUnavailable(f"the loading service did not answer within "
                                     f"{self.cfg.timeout_s:g} s",
                                     reason="LOADING_SERVICE_TIMEOUT") from None
        except BaseException:
            call.cancel()
            raise

