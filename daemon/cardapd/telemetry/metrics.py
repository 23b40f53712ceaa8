"""Prometheus metrics of the daemon, on a registry of its own.

`/metrics` on localhost (beside `/healthz`, see `telemetry.httpd`) and the WatchMetrics
stream read the same registry, so both carry the same numbers. Label values are bounded
sets (operation names, stable reasons, gRPC codes, reader names), never user IDs or card
ids.

Besides what the services count, four states are watched: the loading service link (each
call's outcome, and a background check), the revocation feeds' age (computed when
scraped, so it grows between pulls), the fingerprint device (each use, and a background
check that never claims it), and the audit chain (verified at start, every
[audit] verify_interval_s, and by VerifyAudit). Background checks run through `watch`
and end with `stop`.

The registry also carries the standard process metrics (`process_*`: CPU, memory, file
descriptors, start time) and `python_info`; counters and histograms expose no `_created`
series (prometheus_client's are switched off process-wide: this is the only registry).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

import cardapd
from cardapd.telemetry import httpd
from cardapd.telemetry.httpd import Health

OPERATION_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                     2.5, 5.0, 10.0, 30.0)
APDU_BUCKETS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0)
LINK_ERRORS = ("unreachable", "tls", "timeout", "tls_files")
BIOMETRIC_STATES = ("unknown", "ok", "no_device", "unavailable", "not_configured")
WATCH_RETRY_S = 60.0

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[float | None]]
"""A background check: does its work, returns the seconds until it runs again (None: done)."""


@dataclass(frozen=True)
class Sample:
    """One exposition sample (name, labels, value)."""

    name: str
    labels: dict[str, str]
    value: float


class BootTimeProcessCollector(ProcessCollector):
    """prometheus_client's process collector, with the boot time from CLOCK_BOOTTIME when
    /proc/stat is hidden: under the unit's `ProcSubset=pid` only /proc/<pid>/ is visible,
    and the stock collector then exports no process metric at all."""

    def _boot_time(self) -> float:
        try:
            return float(super()._boot_time())  # type: ignore[no-untyped-call]
        except OSError:
            # /proc/<pid>/stat counts the start time in ticks of CLOCK_BOOTTIME
            return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


class Metrics:
    """Every metric the daemon exports."""

    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        BootTimeProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.build = Info("cardapd_build", "Version of the running daemon.", registry=r)
        self.build.info({"version": cardapd.__version__})
        self.operations = Counter(
            "cardapd_operations", "Operations by kind and result (reason is a stable code).",
            ["operation", "result", "reason"], registry=r)
        self.operation_seconds = Histogram(
            "cardapd_operation_duration_seconds", "Time to complete an operation.",
            ["operation"], buckets=OPERATION_BUCKETS, registry=r)
        self.apdu_seconds = Histogram(
            "cardapd_apdu_duration_seconds", "Round trip of one APDU to the card.",
            buckets=APDU_BUCKETS, registry=r)
        self.readers = Gauge("cardapd_readers", "Readers seen through PC/SC.", registry=r)
        self.cards = Gauge("cardapd_cards_present", "Readers holding a card.", registry=r)
        self.pcsc_up = Gauge("cardapd_pcsc_up", "1 when pcscd is reachable.", registry=r)
        self.socket_connections = Gauge(
            "cardapd_socket_connections", "Open client connections of each role socket.",
            ["role"], registry=r)
        self.socket_connection_limit = Gauge(
            "cardapd_socket_connection_limit", "The most connections a role socket accepts "
            "at once ([sockets.<role>] max_connections).", ["role"], registry=r)
        self.card_events = Counter(
            "cardapd_card_events", "Card and reader events by kind.", ["kind"], registry=r)
        self.event_subscribers = Gauge(
            "cardapd_event_subscribers", "Clients watching card events.", registry=r)
        self.grpc_requests = Counter(
            "cardapd_grpc_requests", "gRPC calls by method, socket role and status code.",
            ["method", "role", "code"], registry=r)
        self.audit_rows = Counter(
            "cardapd_audit_rows_written", "Audit rows appended.", registry=r)
        self.audit_head = Gauge(
            "cardapd_audit_head_sequence", "Sequence number of the newest audit row.",
            registry=r)
        self.audit_chain_verified = Gauge(
            "cardapd_audit_chain_verified",
            "1 when the last verification of the audit hash chain and head anchor passed; 0 "
            "when it found a problem or could not read the log, and before the first one "
            "finishes (cardapd_audit_chain_last_verified_timestamp_seconds is 0 until then).",
            registry=r)
        self.audit_chain_verified_at = Gauge(
            "cardapd_audit_chain_last_verified_timestamp_seconds",
            "Unix time the last audit chain verification finished (0: none yet).", registry=r)
        self.audit_resets_open = Gauge(
            "cardapd_audit_anchor_resets_unacknowledged",
            "Anchor resets (the database disagreed with its head anchor at start) that no "
            "administrator acknowledged yet; each fails every verification.", registry=r)
        self.audit_checkpoint_at = Gauge(
            "cardapd_audit_last_checkpoint_timestamp_seconds",
            "Unix time the audit chain head last left the terminal, by target: journal "
            "(a native journal entry), service (kept by the loading service).",
            ["target"], registry=r)
        for target in ("journal", "service"):
            self.audit_checkpoint_at.labels(target)
        self.audit_segments = Gauge(
            "cardapd_audit_segments",
            "Sealed audit segments by state: kept (rows on the terminal), exported (a file "
            "written), dropped (rows deleted by retention after verification and export).",
            ["state"], registry=r)
        for state in ("kept", "exported", "dropped"):
            self.audit_segments.labels(state)
        self.loading_configured = Gauge(
            "cardapd_loading_configured",
            "1 when a loading service is configured ([loading] address); without one the "
            "loading link metrics stay 0.", registry=r)
        self.loading_link_up = Gauge(
            "cardapd_loading_link_up",
            "1 when the last contact with the loading service got an answer (connected, "
            "certificates accepted); 0 after it was unreachable, refused the TLS handshake "
            "or the certificate, or timed out, before the first contact, and when none is "
            "configured (cardapd_loading_configured 0).", registry=r)
        self.loading_link_success = Gauge(
            "cardapd_loading_link_last_success_timestamp_seconds",
            "Unix time of the last answer from the loading service (0: none yet).",
            registry=r)
        self.loading_link_errors = Counter(
            "cardapd_loading_link_errors",
            "Failed contacts with the loading service by reason: unreachable (no connection, "
            "or the connection lost), tls (the TLS handshake failed or was closed by the "
            "service: a certificate refused by either side), timeout, tls_files (this "
            "terminal's TLS files unreadable).", ["reason"], registry=r)
        for reason in LINK_ERRORS:
            self.loading_link_errors.labels(reason)
        self.loading_cert_expiry = Gauge(
            "cardapd_loading_client_cert_expiry_timestamp_seconds",
            "Unix time this terminal's client certificate for the loading service expires "
            "(notAfter of [loading] cert, as the link in use holds it; 0: no loading "
            "service, or the certificate cannot be read). Renew before it passes: the "
            "service refuses an expired certificate.", registry=r)
        self.loading_clock_offset = Gauge(
            "cardapd_loading_clock_offset_seconds",
            "The loading service's clock minus this terminal's, measured at each schedule "
            "fetch (the midpoint of the call); service hours are judged on the service's "
            "clock.", registry=r)
        self.loading_schedule_success = Gauge(
            "cardapd_loading_schedule_last_success_timestamp_seconds",
            "Unix time the service's schedule (hours, closures, maintenance) was last "
            "fetched (0: never in this run).", registry=r)
        self.loading_service_open = Gauge(
            "cardapd_loading_service_open",
            "1 while the loading service's schedule says it takes card sessions; 0 while it "
            "is closed (hours, closure, maintenance) or no schedule is known.", registry=r)
        self.revocation_feed_age = Gauge(
            "cardapd_revocation_feed_age_seconds",
            "Seconds since the organisation's revocation feed was last pulled successfully "
            "(absent until the first pull; cardapd_revocation_feed_stale is 1 then).",
            ["organisation"], registry=r)
        self.revocation_feed_success = Gauge(
            "cardapd_revocation_feed_last_success_timestamp_seconds",
            "Unix time of the last successful pull of the organisation's revocation feed "
            "(0: never).", ["organisation"], registry=r)
        self.revocation_feed_stale = Gauge(
            "cardapd_revocation_feed_stale",
            "1 while the organisation's revocation feed is older than [revocation] max_age_s "
            "or was never pulled: reads then warn or are refused, per stale_policy.",
            ["organisation"], registry=r)
        self.biometric_state = Gauge(
            "cardapd_biometric_device_state",
            "The fingerprint device's state, 1 for the current one: ok (fprintd answers with "
            "a device), no_device, unavailable (fprintd or its bus unreachable), "
            "not_configured ([operators] biometric = none), unknown (not checked yet).",
            ["state"], registry=r)
        self._biometric = "unknown"
        self.audit_chain_ok: bool | None = None  # the last verification (None: none yet)
        for state in BIOMETRIC_STATES:
            self.biometric_state.labels(state).set_function(self._is_biometric(state))
        self.stopping = threading.Event()  # set by stop(): long checks give up
        self._watches: set[asyncio.Task[None]] = set()
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ states

    def set_biometric_state(self, state: str) -> None:
        """The fingerprint device's current state (one of BIOMETRIC_STATES)."""
        if state not in BIOMETRIC_STATES:
            raise ValueError(f"unknown biometric state {state!r}")
        self._biometric = state

    def _is_biometric(self, state: str) -> Callable[[], float]:
        return lambda: float(self._biometric == state)

    @property
    def biometric(self) -> str:
        """The fingerprint device's current state."""
        return self._biometric

    def audit_chain(self, ok: bool, when: float | None = None) -> None:
        """Record the outcome of one audit chain verification."""
        self.audit_chain_ok = ok
        self.audit_chain_verified.set(1 if ok else 0)
        self.audit_chain_verified_at.set(time.time() if when is None else when)

    def link_ok(self) -> None:
        """The loading service answered."""
        self.loading_link_up.set(1)
        self.loading_link_success.set(time.time())

    def link_failed(self, reason: str) -> None:
        """The loading service could not be reached (`reason`: one of LINK_ERRORS)."""
        self.loading_link_up.set(0)
        self.loading_link_errors.labels(reason).inc()

    # ------------------------------------------------------------------ background checks

    def watch(self, *checks: Check) -> None:
        """Run each check in the background now, then again after the seconds it returns,
        until it returns None or `stop` is called. A check that raises is logged and
        retried after WATCH_RETRY_S."""
        for check in checks:
            task = asyncio.ensure_future(self._repeat(check))
            self._watches.add(task)
            task.add_done_callback(self._watches.discard)

    async def _repeat(self, check: Check) -> None:
        while not self.stopping.is_set():
            try:
                delay = await check()
            except Exception:
                log.exception("background check %s failed",
                              getattr(check, "__qualname__", check))
                delay = WATCH_RETRY_S
            if delay is None:
                return
            await asyncio.sleep(max(delay, 0.0))

    def serve(self, host: str, port: int, health: Health | None = None) -> int:
        """Serve /metrics and /healthz over HTTP on host:port (port 0 picks one); returns
        the port. `health` lists the daemon's problems (none: healthy)."""
        server, thread = httpd.serve(self.registry, host, port, health or (lambda: []))
        self._server, self._thread = server, thread
        return int(server.server_port)

    def stop(self) -> None:
        """Stop the background checks and the HTTP endpoint."""
        self.stopping.set()
        for task in list(self._watches):
            task.cancel()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def samples(self, prefixes: Iterable[str] = ()) -> list[Sample]:
        """Every current sample, optionally only families starting with a prefix."""
        wanted = tuple(prefixes)
        out: list[Sample] = []
        for family in self.registry.collect():
            if wanted and not family.name.startswith(wanted):
                continue
            out.extend(Sample(s.name, dict(s.labels), float(s.value)) for s in family.samples)
        return out
