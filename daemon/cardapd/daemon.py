"""The daemon: builds the store, metrics, engine and role servers from the configuration,
runs until SIGTERM/SIGINT, and stops in order (fwupd's main → daemon → IPC shape).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from cardapd import sdnotify
from cardapd.api.roles import Role
from cardapd.api.server import RoleServer, SocketSpec, check_specs
from cardapd.config import Config
from cardapd.engine.engine import Engine
from cardapd.engine.journal import Journal
from cardapd.engine.loading import Loader
from cardapd.engine.model import OpContext
from cardapd.engine.operators import OperatorService
from cardapd.engine.revocation import Revocation
from cardapd.engine.revocation_store import RevocationStore
from cardapd.engine.secure_read import SecureReads
from cardapd.engine.settings import EngineSettings
from cardapd.errors import StoreError, Unauthenticated
from cardapd.loading.client import LoadingClient
from cardapd.loading.operators import Operator, OperatorSessions
from cardapd.metrics import Metrics
from cardapd.operators.biometric import BiometricBackend
from cardapd.operators.fprintd import FprintdClient
from cardapd.roster import Roster, SessionManager
from cardapd.store import AsyncAuditLog, AuditEntry, Durability

log = logging.getLogger(__name__)


class StoreAuditSink:
    """The engine's `AuditSink` on the SQLite audit log; counts rows in the metrics."""

    def __init__(self, log_: AsyncAuditLog, metrics: Metrics) -> None:
        self._log = log_
        self._metrics = metrics
        self._head = 0

    async def record(self, ctx: OpContext | None, operation: str, *, result: str,
                     reason: str = "", reader: str = "", card_id: str = "",
                     detail: Mapping[str, object] | None = None,
                     durable: bool = False) -> int:
        """Append one row; returns once it is committed (see `Durability`)."""
        entry = AuditEntry(
            operation=operation, result=result, actor=ctx.actor if ctx else "system",
            card_id=card_id or None, reader=reader or None, reason=reason or None,
            request_id=ctx.request_id if ctx else None, detail=dict(detail or {}))
        try:
            rec = await self._log.append(
                entry, Durability.FULL if durable else Durability.PROCESS)
        except StoreError:
            raise
        except Exception as exc:  # never let a store fault look like success
            raise StoreError(f"the audit log could not be written: {exc}") from exc
        self._head = rec.seq
        self._metrics.audit_rows.inc()
        self._metrics.audit_head.set(rec.seq)
        return rec.seq

    def head(self) -> int:
        """Newest sequence number written by this process (or found at open)."""
        return self._head

    def set_head(self, seq: int) -> None:
        """Seed the head from the store at start."""
        self._head = seq


def engine_settings(cfg: Config) -> EngineSettings:
    """The engine's knobs from the configuration."""
    return EngineSettings(
        type_c_aids=tuple(cfg.tap.type_c_aids), read_on_insert=cfg.tap.read_on_insert,
        readers_include=tuple(cfg.pcsc.readers_include),
        readers_exclude=tuple(cfg.pcsc.readers_exclude),
        reconnect_interval_s=cfg.pcsc.reconnect_interval_s,
        probe_type_c=cfg.diagnose.probe_type_c)


def socket_specs(cfg: Config) -> list[SocketSpec]:
    """The enabled role sockets."""
    specs = []
    for role in Role:
        sock = getattr(cfg.sockets, role.value)
        if sock.enabled:
            specs.append(SocketSpec(role, Path(sock.path), sock.group, sock.mode))
    check_specs(specs)
    return specs


class RosterSessions:
    """The production provider: roster sessions; a missing token is NO_OPERATOR_SESSION."""

    def __init__(self, real: SessionManager, test: OperatorSessions | None = None) -> None:
        self._real = real
        self._test = test  # TEST-ONLY (cardapd.testing.main): `test:` tokens go there

    def validate(self, token: str) -> Operator:
        """The operator of a live session on the calling socket."""
        if self._test is not None and token.startswith("test:"):
            return self._test.validate(token)
        if not token:
            raise Unauthenticated("log in first: no operator session (metadata "
                                  "cardap-session)", reason="NO_OPERATOR_SESSION")
        return self._real.validate(token)


def session_manager(cfg: Config, roster: Roster) -> SessionManager:
    """Sessions with the configured timeouts, re-checking the roster at each use."""
    return SessionManager(idle_timeout=timedelta(seconds=cfg.operators.idle_timeout_s),
                          absolute_timeout=timedelta(seconds=cfg.operators.absolute_timeout_s),
                          current=roster.current)


def biometric(cfg: Config) -> BiometricBackend | None:
    """fprintd on the configured bus (else $DBUS_SYSTEM_BUS_ADDRESS, else the system bus)."""
    if cfg.operators.biometric == "none":
        return None
    address = (cfg.operators.bus_address or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
               or "unix:path=/run/dbus/system_bus_socket")
    return FprintdClient(address)


async def add_organisations(cfg: Config, roster: Roster, sink: StoreAuditSink) -> None:
    """Add the configured organisations the roster lacks (audited durably)."""
    known = {o.organisation for o in await asyncio.to_thread(roster.organisations)}
    for org, name in cfg.operators.organisations:
        if org not in known:
            change = await asyncio.to_thread(roster.add_organisation, org, name)
            entry = change.entry(role="config")
            await sink.record(None, entry.operation, result="ok", detail=entry.detail,
                              durable=True)


class Daemon:
    """One run of cardapd."""

    def __init__(self, cfg: Config, config_path: Path | None = None, *,
                 operator_sessions: OperatorSessions | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        # Production: roster sessions; cardapd.testing.main adds its test tokens (D14).
        self.test_sessions = operator_sessions
        self.metrics = Metrics()
        self._stop = asyncio.Event()
        self.metrics_port: int | None = None

    async def run(self) -> int:
        """Serve until asked to stop; returns the process exit code."""
        cfg = self.cfg
        await asyncio.to_thread(Path(cfg.daemon.state_dir).mkdir, parents=True, exist_ok=True)
        audit_log = AsyncAuditLog(Path(cfg.audit.path))
        await audit_log.open()
        sink = StoreAuditSink(audit_log, self.metrics)
        sink.set_head(audit_log.last_seq())
        engine = Engine(engine_settings(cfg), sink, self.metrics)
        journal = await asyncio.to_thread(Journal, Path(cfg.daemon.state_dir) / "journal.db")
        interrupted = await asyncio.to_thread(journal.mark_interrupted)
        client = LoadingClient(cfg.loading)
        roster = await asyncio.to_thread(Roster, Path(cfg.operators.roster))
        sessions = session_manager(cfg, roster)
        engine.operators = OperatorService(
            roster, sessions, biometric(cfg), sink,
            verify_timeout_s=cfg.operators.verify_timeout_s,
            enroll_timeout_s=cfg.operators.enroll_timeout_s)
        engine.audit_path = Path(cfg.audit.path)
        engine.loading = Loader(engine, client, journal,
                                RosterSessions(sessions, self.test_sessions), cfg.presets)
        engine.secure = SecureReads(engine, cfg.read_aps, cfg.pin.floor)
        store = await asyncio.to_thread(RevocationStore,
                                        Path(cfg.daemon.state_dir) / "revocation.db")
        engine.revocation = Revocation(
            store, client if cfg.loading.configured else None,
            [ap.organisation for ap in cfg.read_aps], cfg.revocation, sink, self.metrics)
        servers: list[RoleServer] = []
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        watchdog: asyncio.Task[None] | None = None
        try:
            if cfg.metrics.enabled:
                host, port = cfg.metrics.host, cfg.metrics.port
                self.metrics_port = self.metrics.serve(host, port)
                log.info("metrics on http://%s:%d/metrics", host, self.metrics_port)
            await engine.start()
            for spec in socket_specs(cfg):
                server = RoleServer(engine, spec)
                await server.start()
                servers.append(server)
            await sink.record(None, "daemon_started", result="ok", durable=True,
                              detail={"version": engine.status().version})
            await add_organisations(cfg, roster, sink)
            if interrupted:
                await sink.record(None, "journal_interrupted", result="ok", durable=True,
                                  detail={"rows": interrupted})
                log.warning("%d load/delete operation(s) were interrupted by the last stop; "
                            "they are reconciled when their card is seen", interrupted)
            sdnotify.ready()
            sdnotify.status(f"serving {len(servers)} sockets; "
                            f"pcsc {'up' if engine.pcsc_available else 'down'}")
            watchdog = asyncio.create_task(self._watchdog(engine))
            engine.revocation.start()
            log.info("cardapd ready")
            await self._stop.wait()
            log.info("stopping")
            sdnotify.stopping()
        finally:
            if watchdog is not None:
                watchdog.cancel()
            for server in servers:
                await server.stop(grace=min(cfg.daemon.shutdown_grace_s, 5.0))
            await engine.stop()
            try:
                await sink.record(None, "daemon_stopped", result="ok", durable=True)
            except StoreError:
                log.exception("could not audit the stop")
            await audit_log.aclose()
            await asyncio.to_thread(roster.close)
            self.metrics.stop()
        return 0

    def request_stop(self) -> None:
        """Ask the daemon to stop (tests and signal handlers)."""
        self._stop.set()

    def _reload(self) -> None:
        log.warning("SIGHUP: configuration reload without restart is not supported by this "
                    "version; restart the service to apply a changed configuration")

    async def _watchdog(self, engine: Engine) -> None:
        """Feed the systemd watchdog only while the event loop and the monitor are healthy."""
        interval = sdnotify.watchdog_interval()
        if interval is None:
            return
        while True:
            await asyncio.sleep(interval / 2)
            if engine.healthy():
                sdnotify.watchdog_ping()
            else:
                log.error("reader monitor is not running: withholding the watchdog ping")
