"""The daemon: builds every part from the configuration and wires each its ports,
runs until SIGTERM/SIGINT, and stops in order (fwupd's main → daemon → IPC shape).

SIGHUP re-reads the configuration file and applies what can change live, keeping every
socket and stream open (docs/decisions.md D19). SIGTERM/SIGINT refuse new card writes at
once, wait (at most [daemon] shutdown_grace_s) for those in progress, then stop the
servers and the parts (D20); a second signal stops without waiting.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cardapd import __version__, sdnotify
from cardapd.api.base import Services
from cardapd.api.roles import Role
from cardapd.api.server import (
    ConnectionLimits,
    RoleServer,
    SocketSpec,
    SocketWatch,
    check_specs,
    fd_budget_problem,
)
from cardapd.audit import AsyncAuditLog
from cardapd.audit.checkpoints import CheckpointSender, JournalOut
from cardapd.audit.log import now_us
from cardapd.audit.maintenance import AuditMaintenance, Retention
from cardapd.audit.service import AuditService
from cardapd.audit.sink import StoreAuditSink
from cardapd.config import Config, DaemonConfig, load_config, plan_reload
from cardapd.config.secrets import load_or_create_key_file
from cardapd.domain import (
    AuditSink,
    DaemonStatus,
    FeedState,
    LoadingLinkStatus,
    Operator,
    OperatorSessions,
)
from cardapd.errors import CardapError, ConfigError, StoreError, Unauthenticated
from cardapd.loading.journal import Journal
from cardapd.loading.loader import Loader
from cardapd.loading.schedule import ScheduleFetch, ServiceCalendar
from cardapd.myna.cardid import CardIdKey
from cardapd.operators.admin import RosterAdmin
from cardapd.operators.biometric import BiometricBackend
from cardapd.operators.fprintd import FprintdClient
from cardapd.operators.login import OperatorService
from cardapd.operators.roster import Roster, SessionManager
from cardapd.operators.sessions import current_connection
from cardapd.readers.owner import CardLimits
from cardapd.readers.service import Readers
from cardapd.readers.settings import ReaderSettings
from cardapd.reads.revocation import Revocation
from cardapd.reads.revocation_store import RevocationStore
from cardapd.reads.service import UserIdReads
from cardapd.servicelink.client import LoadingClient
from cardapd.servicelink.tls import TerminalTls, certificate_cn, read_tls
from cardapd.telemetry.logsetup import set_format
from cardapd.telemetry.metrics import Check, Metrics
from cardapd.telemetry.oplog import OperationLog
from cardapd.telemetry.recorder import Recorder
from cardapd.telemetry.refusals import RefusalLedger
from cardapd.transport.udev import resolve_source
from cardlib.traffic import TRAFFIC

log = logging.getLogger(__name__)
CARD_ID_KEY_FILE = "card-id.key"  # the terminal's key for card ids (D50), 0600 in state_dir
SCHEDULE_FILE = "service-schedule.json"  # the loading service's last schedule (D53)
CLOCK_OFFSET_WARN_S = 60.0
SERVER_GRACE_S = 2.0  # after the card writes: what reads in flight get before streams end
ABORT_WAIT_S = 3.0  # after the grace period: the cut writes' journal and audit rows
RETENTION_INTERVAL_S = 86400.0  # journal and revocation store retention: daily


def connection_limits(cfg: Config) -> ConnectionLimits:
    """The role sockets' connection timeouts ([sockets])."""
    s = cfg.sockets
    return ConnectionLimits(handshake_s=s.handshake_timeout_s, idle_s=s.idle_timeout_s,
                            keepalive_s=s.keepalive_s, min_client_ping_s=s.min_client_ping_s)


def reader_settings(cfg: Config) -> ReaderSettings:
    """The readers' knobs from the configuration."""
    return ReaderSettings(
        type_c_aids=tuple(cfg.tap.type_c_aids), read_on_insert=cfg.tap.read_on_insert,
        readers_include=tuple(cfg.pcsc.readers_include),
        readers_exclude=tuple(cfg.pcsc.readers_exclude),
        reconnect_interval_s=cfg.pcsc.reconnect_interval_s,
        probe_type_c=cfg.diagnose.probe_type_c,
        hotplug=resolve_source(cfg.pcsc.hotplug),
        limits=CardLimits(apdu_s=cfg.card.apdu_timeout_s, read_s=cfg.card.read_timeout_s,
                          write_s=cfg.card.write_timeout_s),
        user_id_rules=cfg.user_id_rules())


def socket_specs(cfg: Config) -> list[SocketSpec]:
    """The enabled role sockets."""
    specs = []
    for role in Role:
        sock = getattr(cfg.sockets, role.value)
        if sock.enabled:
            specs.append(SocketSpec(role, Path(sock.path), sock.group, sock.mode,
                                    sock.max_connections))
    check_specs(specs)
    return specs


class RosterSessions:
    """The production provider: roster sessions; a missing token is NO_OPERATOR_SESSION."""

    def __init__(self, real: SessionManager, test: OperatorSessions | None = None) -> None:
        self._real = real
        self._test = test  # TEST-ONLY (cardapd_testing.main): `test:` tokens go there

    def validate(self, token: str) -> Operator:
        """The operator of a live session on the calling socket."""
        if self._test is not None and token.startswith("test:"):
            return self._test.validate(token)
        if not token:
            raise Unauthenticated("log in first: no operator session (metadata "
                                  "cardap-session)", reason="NO_OPERATOR_SESSION")
        return self._real.validate(token)

    def live(self, token: str) -> bool:
        """Whether an operator is logged in on the calling socket (a test token counts
        when it is valid)."""
        if self._test is not None and token.startswith("test:"):
            try:
                self._test.validate(token)
            except CardapError:
                return False
            return True
        connection = current_connection.get()
        return connection is not None and self._real.holder(connection) is not None

    def holder(self, connection: str) -> Operator | None:
        """The operator of the live roster session on `connection` (no refresh)."""
        return self._real.holder(connection)


def acting_for(cfg: Config) -> frozenset[str]:
    """The organisations this terminal acts for ([operators.organisations])."""
    return frozenset(org for org, _ in cfg.operators.organisations)


def session_manager(cfg: Config, roster: Roster) -> SessionManager:
    """Sessions with the configured timeouts, re-checking the roster at each use."""
    return SessionManager(idle_timeout=timedelta(seconds=cfg.operators.idle_timeout_s),
                          absolute_timeout=timedelta(seconds=cfg.operators.absolute_timeout_s),
                          current=roster.current)


def terminal_id(cfg: Config) -> str:
    """This terminal's id in audit checkpoints and exports: `[audit] terminal_id`, else the
    CN of the loading-service certificate, else the host name."""
    return (cfg.audit.terminal_id or (certificate_cn(cfg.loading.cert)
                                      if cfg.loading.configured else "")
            or socket.gethostname())


def store_retention(cfg: Config, journal: Journal, store: RevocationStore) -> Check:
    """The daily retention of the journal and the revocation store ([retention])."""
    days = cfg.retention

    async def prune_stores() -> float:
        now = datetime.now(UTC)
        for name, keep, prune in (("journal", days.journal_days, journal.prune),
                                  ("revocation", days.revocation_days, store.prune)):
            if keep > 0:
                try:
                    gone = await asyncio.to_thread(prune, now - timedelta(days=keep))
                except StoreError as exc:
                    log.error("%s retention failed: %s", name, exc.message)
                else:
                    if gone:
                        log.info("%s retention: %d row(s) older than %g days dropped", name,
                                 gone, keep)
        return RETENTION_INTERVAL_S

    return prune_stores


def biometric(cfg: Config) -> BiometricBackend | None:
    """fprintd on the configured bus (else $DBUS_SYSTEM_BUS_ADDRESS, else the system bus)."""
    if cfg.operators.biometric == "none":
        return None
    address = (cfg.operators.bus_address or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
               or "unix:path=/run/dbus/system_bus_socket")
    return FprintdClient(address)


async def add_organisations(cfg: Config, roster: Roster, sink: AuditSink) -> None:
    """Add the configured organisations the roster lacks (audited durably)."""
    known = {o.organisation for o in await asyncio.to_thread(roster.organisations)}
    for org, name in cfg.operators.organisations:
        if org not in known:
            change = await asyncio.to_thread(roster.add_organisation, org, name)
            entry = change.entry(role="config")
            await sink.record(None, entry.operation, result="ok", detail=entry.detail,
                              durable=True)


def apply_logging(old: DaemonConfig, new: DaemonConfig) -> None:
    """A reload's log level and format (a `--log-level` given at start stays in force
    until the file's own value changes)."""
    root = logging.getLogger()
    if new.log_level != old.log_level:
        level = TRAFFIC if new.log_level == "traffic" else int(
            logging.getLevelName(new.log_level.upper()))
        root.setLevel(level)
        logging.getLogger("grpc").setLevel(max(level, logging.WARNING))
    if new.log_format != old.log_format:
        set_format(new.log_format)


LOADING_CAPABILITIES = ["load_ap", "delete_ap", "list_card_aps", "reconcile"]
BASE_CAPABILITIES = ["events", "tap_to_id", "diagnose.v1", "metrics", "audit.append"]


@dataclass(frozen=True)
class Running:
    """The parts of a running daemon: what the API serves and what a reload reconfigures
    through each part's documented replace point (D19)."""

    services: Services
    sessions: SessionManager
    roster: Roster
    started_at: datetime
    loading_link: Callable[[], LoadingLinkStatus]  # the link in use (a reload may swap it)
    tls: Callable[[], TerminalTls | None]  # what the loading link in use holds
    calendar: ServiceCalendar

    def status(self) -> DaemonStatus:
        """Daemon health for GetStatus and WatchStatus (with what operations should act on
        soon)."""
        s = self.services
        readers, cards = s.readers.counts()
        caps = list(BASE_CAPABILITIES) + s.reads.capabilities()
        if s.loading.service.configured:
            caps += LOADING_CAPABILITIES
        caps += ["revocation", "user_id_status.local", "service_schedule", "watch_status"]
        tls = self.tls() if s.loading.service.configured else None
        warning = tls.warning(datetime.now(UTC)) if tls is not None else ""
        rev = s.revocation
        return DaemonStatus(version=__version__, started_at=self.started_at,
                            pcsc_available=s.readers.pcsc_available, readers=readers,
                            cards=cards, audit_head_seq=s.sink.head(),
                            capabilities=tuple(caps), loading_link=self.loading_link(),
                            loading_cert_not_after=tls.not_after if tls else None,
                            warnings=(warning,) if warning else (),
                            service=self.calendar.state(),
                            feeds=tuple(FeedState(org, rev.feed_age(org), rev.feed_stale(org))
                                        for org in rev.organisations),
                            fingerprint_device=s.metrics.biometric)


class Daemon:
    """One run of cardapd."""

    def __init__(self, cfg: Config, config_path: Path | None = None, *,
                 operator_sessions: OperatorSessions | None = None,
                 audit_clock: Callable[[], int] = now_us) -> None:
        self.cfg = cfg
        self.config_path = config_path
        # Production: roster sessions; cardapd_testing.main adds its test tokens (D14).
        self.test_sessions = operator_sessions
        # Production: the wall clock; cardapd_testing.main may move it (days pass in tests).
        self.audit_clock = audit_clock
        self.metrics = Metrics()
        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()  # a second stop request: do not wait for card writes
        self._ready = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._running: Running | None = None
        self._link: LoadingClient | None = None  # the loading service link in use
        self._checkpoints: CheckpointSender | None = None  # audit checkpoints, over the link
        self._tasks: set[asyncio.Task[Any]] = set()
        self.metrics_port: int | None = None

    async def run(self) -> int:
        """Serve until asked to stop; returns the process exit code."""
        cfg = self.cfg
        await asyncio.to_thread(Path(cfg.daemon.state_dir).mkdir, parents=True, exist_ok=True)
        audit_log = AsyncAuditLog(Path(cfg.audit.path), clock=self.audit_clock)
        await audit_log.open()
        sink = OperationLog(StoreAuditSink(audit_log, self.metrics))  # one line per row
        journal_out = JournalOut()
        checkpoints = self._checkpoints = CheckpointSender(
            terminal_id(cfg), audit_log.durable_head, journal_out, self.metrics)
        recorder = Recorder(sink, self.metrics)
        key = CardIdKey(await asyncio.to_thread(
            load_or_create_key_file, Path(cfg.daemon.state_dir) / CARD_ID_KEY_FILE))
        readers = Readers(reader_settings(cfg), recorder, key)
        journal = await asyncio.to_thread(Journal, Path(cfg.daemon.state_dir) / "journal.db")
        interrupted = await asyncio.to_thread(journal.mark_interrupted)
        renamed = await asyncio.to_thread(journal.adopt_legacy_ids, key)
        link = self._link = LoadingClient(cfg.loading, self.metrics, checkpoints)
        # A link that cannot be set up (TLS files) is down, not fatal: reads go on.
        await asyncio.to_thread(link.preflight)
        checkpoints.reconfigure(link)
        roster = await asyncio.to_thread(Roster, Path(cfg.operators.roster))
        sessions = session_manager(cfg, roster)
        operators = OperatorService(
            roster, sessions, biometric(cfg), sink,
            verify_timeout_s=cfg.operators.verify_timeout_s,
            enroll_timeout_s=cfg.operators.enroll_timeout_s, metrics=self.metrics)
        counter_sessions = RosterSessions(sessions, self.test_sessions)
        loader = Loader(readers, link, journal, counter_sessions, recorder, roster,
                        organisations=acting_for(cfg),
                        ready_event=cfg.presets.ready_event)
        store = await asyncio.to_thread(RevocationStore,
                                        Path(cfg.daemon.state_dir) / "revocation.db")
        revocation = Revocation(store, link if cfg.loading.configured else None,
                                [ap.organisation for ap in cfg.read_aps], cfg.revocation,
                                recorder)
        reads = UserIdReads(readers, revocation, recorder, cfg.read_aps, cfg.pin.floor,
                            cfg.user_id_rules())
        maintenance = AuditMaintenance(audit_log, Retention(
            checkpoints.terminal_id, Path(cfg.audit.export_dir), cfg.retention.audit_days),
            checkpoints, self.metrics, clock=self.audit_clock)
        audit = AuditService(Path(cfg.audit.path), sink, self.metrics, maintenance,
                             checkpoints)
        refusals = RefusalLedger(sink, cfg.audit.refused_window_s)
        services = Services(readers=readers, reads=reads, revocation=revocation,
                            loading=loader, operators=operators,
                            admin=RosterAdmin(operators, Path(cfg.daemon.state_dir)),
                            audit_log=audit, sink=sink, metrics=self.metrics,
                            status=lambda: running.status(), refusals=refusals,
                            sessions=counter_sessions,
                            language=lambda: self.cfg.daemon.language)
        calendar = ServiceCalendar(lambda: self._current_link(),
                                   Path(cfg.daemon.state_dir) / SCHEDULE_FILE,
                                   on_fetch=self._schedule_fetched,
                                   interval_s=lambda: self.cfg.loading.schedule_interval_s)
        self.metrics.loading_service_open.set_function(lambda: float(calendar.state().open))
        running = Running(services, sessions, roster, started_at=readers.started_at,
                          loading_link=self._link_status,
                          tls=lambda: self._link.tls if self._link is not None else None,
                          calendar=calendar)
        self._running = running
        self.metrics.watch(link.check_link, operators.check_device, calendar.refresh)
        servers: list[RoleServer] = []
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        watchdog: asyncio.Task[None] | None = None
        sockets_watch: SocketWatch | None = None
        stopped: dict[str, object] = {}
        try:
            if cfg.metrics.enabled:
                host, port = cfg.metrics.host, cfg.metrics.port
                self.metrics_port = self.metrics.serve(host, port, self.health)
                log.info("metrics on http://%s:%d/metrics, health on /healthz", host,
                         self.metrics_port)
            # The start rows and the configured organisations before any card or socket is
            # served: the first client already sees the roster the configuration names, and
            # the first reconciliation follows the row that says why it is needed.
            await sink.record(None, "daemon_started", result="ok", durable=True,
                              detail={"version": __version__})
            await add_organisations(cfg, roster, sink)
            if renamed:
                await sink.record(None, "journal_card_ids_renamed", result="ok", durable=True,
                                  detail={"rows": renamed})
            if interrupted:
                await sink.record(None, "journal_interrupted", result="ok", durable=True,
                                  detail={"rows": interrupted})
                log.warning("%d load/delete operation(s) were interrupted by the last stop; "
                            "they are reconciled when their card is seen", interrupted)
            await readers.start()
            specs = socket_specs(cfg)
            if (problem := fd_budget_problem(specs)) is not None:
                log.warning("%s", problem)
            for spec in specs:
                server = RoleServer(services, spec, connection_limits(cfg))
                await server.start()
                servers.append(server)
            sockets_watch = SocketWatch(specs, self.metrics)
            sockets_watch.start()
            # After the start row: the first checkpoint names it (and any anchor reset).
            self.metrics.watch(audit.chain_check(cfg.audit.verify_interval_s),
                               store_retention(cfg, journal, store))
            sdnotify.ready()
            sdnotify.status(f"serving {len(servers)} sockets; "
                            f"pcsc {'up' if readers.pcsc_available else 'down'}")
            watchdog = asyncio.create_task(self._watchdog(readers))
            revocation.start()
            log.info("cardapd ready")
            self._ready.set()
            await self._stop.wait()
            stopped = await self._drain(loader)
        finally:
            self._stop.set()  # also after a failed start: no reload from here on
            for task in list(self._tasks):
                task.cancel()
            if watchdog is not None:
                watchdog.cancel()
            if sockets_watch is not None:
                sockets_watch.stop()
            for server in servers:
                await server.stop(grace=min(self.cfg.daemon.shutdown_grace_s, SERVER_GRACE_S))
            await readers.stop()
            await loader.close()
            await revocation.stop()
            await refusals.close()
            try:
                await sink.record(None, "daemon_stopped", result="ok", durable=True,
                                  detail=stopped)
            except StoreError:
                log.exception("could not audit the stop")
            else:
                await audit.stopping()
            journal_out.close()
            await audit_log.aclose()
            await asyncio.to_thread(roster.close)
            self.metrics.stop()
        return 0

    def health(self) -> list[tuple[str, str]]:
        """What keeps the daemon from doing its job now, as (reason, message); none when
        healthy. Called on the HTTP endpoint's thread: it only reads state."""
        if self._stop.is_set():
            return [("SHUTTING_DOWN", "cardapd is stopping")]
        running = self._running
        if running is None or not self._ready.is_set():
            return [("STARTING", "cardapd is starting")]
        readers = running.services.readers
        problems = []
        if not readers.healthy():
            problems.append(("READER_MONITOR_STOPPED", "the PC/SC reader monitor is not "
                             "running (the watchdog is withheld)"))
        if not readers.pcsc_available:
            problems.append(("PCSC_UNAVAILABLE", "pcscd is not reachable; cardapd "
                             "reconnects by itself (systemctl status pcscd.socket)"))
        if self.metrics.audit_chain_ok is False:
            problems.append(("AUDIT_CHAIN_BROKEN", "the last verification of the audit "
                             "log failed (cardapctl audit verify)"))
        return problems

    def _link_status(self) -> LoadingLinkStatus:
        """The state of the loading link in use."""
        if self._link is None:
            return LoadingLinkStatus(configured=self.cfg.loading.configured)
        return self._link.status()
    def _current_link(self) -> LoadingClient:
        """The loading service link in use (set at start, replaced by a reload)."""
        assert self._link is not None
        return self._link

    def _schedule_fetched(self, fetched: ScheduleFetch) -> None:
        """A fresh service schedule: the clock offset and the fetch time as metrics."""
        self.metrics.loading_clock_offset.set(fetched.clock_offset_s)
        self.metrics.loading_schedule_success.set(fetched.received_at)
        if abs(fetched.clock_offset_s) > CLOCK_OFFSET_WARN_S:
            log.warning("this terminal's clock is %+.1f s off the loading service's; service "
                        "hours are judged on the service's clock, but fix NTP",
                        -fetched.clock_offset_s)

    def request_stop(self) -> None:
        """Ask the daemon to stop (SIGTERM, SIGINT, tests): new card writes are refused at
        once; asked again, it stops without waiting for the writes in progress."""
        if self._stop.is_set() and not self._hurry.is_set():
            log.warning("asked to stop again: not waiting for card writes in progress")
            self._hurry.set()
        self._stop.set()
        if self._running is not None:
            self._running.services.loading.begin_stop()

    async def _drain(self, loader: Loader) -> dict[str, object]:
        """The first half of a graceful stop (D20): new card writes are refused, those in
        progress get [daemon] shutdown_grace_s to finish, then are cut short (their journal
        rows are reconciled the next time the card is seen). Reads are served meanwhile."""
        grace = self.cfg.daemon.shutdown_grace_s
        loader.begin_stop()
        busy = loader.in_progress()
        sdnotify.stopping()
        if not busy:
            log.info("stopping: new card writes are refused; none is in progress")
            return {"writes_waited": 0}
        log.info("stopping: new card writes are refused; waiting up to %g s for %d in "
                 "progress (%s)", grace, len(busy), ", ".join(busy))
        sdnotify.status(f"stopping: waiting up to {grace:g} s for {len(busy)} card write(s)")
        if await loader.drain(grace, self._hurry):
            log.info("stopping: the card writes in progress finished")
            return {"writes_waited": len(busy)}
        left = loader.in_progress()
        log.warning("stopping: %d card write(s) still in progress (%s) after the shutdown "
                    "grace period of %g s; cutting them short: the journal keeps them and "
                    "they are reconciled the next time their card is seen",
                    len(left), ", ".join(left), grace)
        await loader.abort(ABORT_WAIT_S)
        return {"writes_waited": len(busy), "writes_interrupted": len(left)}

    # ------------------------------------------------------------------ reload (D19)

    def request_reload(self) -> None:
        """SIGHUP: reload the configuration in the background (one reload at a time)."""
        task = asyncio.ensure_future(self.reload())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self) -> bool:
        """Re-read and validate the configuration file, apply what changes live; True when
        it was applied. An invalid file changes nothing. Sockets and streams stay open."""
        await self._ready.wait()  # a SIGHUP during the start is handled once serving
        async with self._reload_lock:
            if self._stop.is_set() or self._running is None:
                log.warning("SIGHUP while stopping: the configuration is not reloaded")
                return False
            sdnotify.reloading()
            status = "configuration reload failed"
            try:
                ok, status = await self._reload(self._running)
            finally:
                if not self._stop.is_set():  # back to serving, whatever the outcome
                    sdnotify.ready(status)
            return ok

    async def _reload(self, running: Running) -> tuple[bool, str]:
        """One reload; (applied, the status line for systemd)."""
        path = self.config_path
        where = str(path) if path is not None else "(no configuration file: defaults)"
        try:
            new = await asyncio.to_thread(load_config, path)
        except ConfigError as exc:
            log.error("configuration reload refused, the running configuration stays in "
                      "force: %s", exc.message, extra={"operation": "config_reload"})
            await self._audit_reload(running, "error", exc.reason, {
                "file": exc.metadata.get("file", where), "key": exc.metadata.get("key", ""),
                "error": exc.message})
            return False, f"configuration reload refused: {exc.message}"
        try:
            tls = await asyncio.to_thread(read_tls, new.loading) if new.loading.configured \
                else None
        except ConfigError as exc:  # a rotation half done: keep the pair that works
            log.error("configuration reload refused, the running configuration stays in "
                      "force: %s", exc.message, extra={"operation": "config_reload"})
            await self._audit_reload(running, "error", exc.reason, {
                "file": where, "key": exc.metadata.get("key", ""), "error": exc.message})
            return False, f"configuration reload refused: {exc.message}"
        plan = plan_reload(self.cfg, new)
        live = list(plan.live)
        # The one store write first (it only adds, so a retry repeats it safely): a roster
        # that cannot take it (locked, full disk) leaves the running configuration whole.
        try:
            await add_organisations(plan.config, running.roster, running.services.sink)
        except Exception as exc:
            log.error("configuration reload from %s failed: the roster could not take its "
                      "new organisations (%s: %s); the running configuration stays in force",
                      where, type(exc).__name__, exc, extra={"operation": "config_reload"})
            await self._audit_reload(running, "error", "RELOAD_FAILED", {
                "file": where, "stage": "roster", "error": f"{type(exc).__name__}: {exc}"})
            return False, "configuration reload failed: nothing changed (see the log)"
        try:
            if await self._apply(running, self.cfg, plan.config, tls):
                live.append("loading certificate (rotated)")
        except Exception as exc:  # every value was validated: a bug, but keep serving
            log.exception("configuration reload from %s failed while applying it; some "
                          "changes may be in force, restart to be sure", where)
            await self._audit_reload(running, "error", "RELOAD_FAILED", {
                "file": where, "stage": "apply", "error": f"{type(exc).__name__}: {exc}"})
            return False, "configuration reload failed: restart cardapd"
        self.cfg = plan.config
        log.info("configuration reloaded from %s: %s", where,
                 f"applied {', '.join(live)}" if live else "no change to apply",
                 extra={"operation": "config_reload"})
        if plan.restart:
            log.warning("configuration reloaded from %s: %s changed but take(s) effect only "
                        "after a restart (systemctl restart cardapd); the running values "
                        "stay in force until then", where, ", ".join(plan.restart),
                        extra={"operation": "config_reload"})
        await self._audit_reload(running, "ok", "", {
            "file": where, "applied": live, "restart_required": list(plan.restart)})
        if plan.restart:
            return True, f"configuration reloaded; restart needed for {', '.join(plan.restart)}"
        return True, "configuration reloaded"

    async def _apply(self, run: Running, old: Config, new: Config,
                     tls: TerminalTls | None) -> bool:
        """Apply a validated configuration to the running parts: new objects are built
        first, then swapped in. Nothing here touches a socket, a stream or a store (the
        roster's new organisations are added before, by `_reload`). True when the loading
        link's TLS files changed under the same keys (a rotation)."""
        s = run.services
        link = self._link
        assert link is not None  # set at start
        rotated = (new.loading == old.loading and tls is not None
                   and (link.tls is None or link.tls.digest != tls.digest))
        if new.loading != old.loading or rotated:
            link = LoadingClient(new.loading, self.metrics, self._checkpoints, tls)
            await asyncio.to_thread(link.preflight)
            if self._checkpoints is not None:
                self._checkpoints.reconfigure(link)
        apply_logging(old.daemon, new.daemon)
        s.readers.apply_settings(reader_settings(new))
        s.reads.reconfigure(new.read_aps, new.pin.floor, new.user_id_rules())
        # A session in progress keeps the old link.
        s.loading.reconfigure(link, organisations=acting_for(new),
                              ready_event=new.presets.ready_event)
        if link is not self._link:
            self._link = link
            self.metrics.watch(link.check_link)
        organisations = [ap.organisation for ap in new.read_aps]
        if (new.loading, new.revocation, organisations) != (
                old.loading, old.revocation, [ap.organisation for ap in old.read_aps]):
            s.revocation.reconfigure(link if new.loading.configured else None,
                                     organisations, new.revocation)
        s.operators.reconfigure(verify_timeout_s=new.operators.verify_timeout_s,
                                enroll_timeout_s=new.operators.enroll_timeout_s)
        # New sessions get the new timeouts; open ones keep theirs.
        run.sessions.reconfigure(
            idle_timeout=timedelta(seconds=new.operators.idle_timeout_s),
            absolute_timeout=timedelta(seconds=new.operators.absolute_timeout_s))
        return rotated

    async def _audit_reload(self, running: Running, result: str, reason: str,
                            detail: Mapping[str, object]) -> None:
        """The durable `config_reload` row (a store failure is logged, not raised)."""
        try:
            await running.services.sink.record(None, "config_reload", result=result,
                                               reason=reason, detail=detail, durable=True)
        except CardapError:
            log.exception("could not audit the configuration reload")

    async def _watchdog(self, readers: Readers) -> None:
        """Feed the systemd watchdog only while the event loop and the monitor are healthy."""
        interval = sdnotify.watchdog_interval()
        if interval is None:
            return
        while True:
            await asyncio.sleep(interval / 2)
            if readers.healthy():
                sdnotify.watchdog_ping()
            else:
                log.error("reader monitor is not running: withholding the watchdog ping")
