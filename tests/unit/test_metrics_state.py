"""The state metrics: loading link, revocation feed age, fingerprint device, audit chain;
the background checks that feed them; promtool's verdict on the whole exposition."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest
from prometheus_client import generate_latest
from test_revocation_store import Audit, Source
from testenv import need

from cardap_sim.loadsvc.devca import write_bundle
from cardapd.audit import AsyncAuditLog, AuditEntry, AuditLog, Durability, verify
from cardapd.audit.checkpoints import CheckpointSender, JournalOut
from cardapd.audit.maintenance import AuditMaintenance, Retention
from cardapd.audit.service import AuditService
from cardapd.audit.verify import CANCEL_EVERY, Mode
from cardapd.config import LoadingConfig, RevocationConfig
from cardapd.domain import OpContext
from cardapd.errors import Cancelled, ServiceUnavailable
from cardapd.operators.fprintd import device_state_of, unavailable
from cardapd.operators.login import OperatorService
from cardapd.reads.revocation import Revocation
from cardapd.reads.revocation_store import RevocationStore
from cardapd.servicelink.client import LoadingClient, link_failure
from cardapd.telemetry.metrics import BIOMETRIC_STATES, Metrics
from cardapd.telemetry.recorder import Recorder


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


# ---------------------------------------------------------------- loading link

S = grpc.StatusCode


@pytest.mark.parametrize(("code", "details", "reason"), [
    (S.UNAVAILABLE, "failed to connect to all addresses; last error: UNKNOWN: "
                    "ipv4:127.0.0.1:1: Failed to connect to remote host: Connection refused",
     "unreachable"),
    (S.UNAVAILABLE, "Ssl handshake failed: SSL_ERROR_SSL: error:1000007d:SSL routines:"
                    "OPENSSL_internal:CERTIFICATE_VERIFY_FAILED", "tls"),
    (S.UNAVAILABLE, "failed to connect to all addresses; last error: UNAVAILABLE: "
                    "ipv4:127.0.0.1:46563: Socket closed", "tls"),  # client cert refused
    (S.UNAVAILABLE, "Socket closed", "unreachable"),  # an established connection lost
    (S.UNKNOWN, "tlsv13 alert certificate required", "tls"),
    (S.UNAUTHENTICATED, "a client certificate is required", "tls"),
    (S.DEADLINE_EXCEEDED, "Deadline Exceeded", "timeout"),
    (S.PERMISSION_DENIED, "organisation org-b is not this terminal's", None),
    (S.INVALID_ARGUMENT, "bad request", None),
    (S.UNKNOWN, "Exception calling application", None),
])
def test_link_failure_reasons(code: grpc.StatusCode, details: str, reason: str | None) -> None:
    assert link_failure(code, details) == reason


async def test_loading_not_configured_exports_zeros_and_never_checks() -> None:
    m = Metrics()
    client = LoadingClient(LoadingConfig(), m)
    assert await client.check_link() is None
    assert value(m, "cardapd_loading_configured") == 0
    assert value(m, "cardapd_loading_link_up") == 0
    with pytest.raises(ServiceUnavailable):
        await client.catalogue("")
    assert value(m, "cardapd_loading_link_errors_total", reason="unreachable") == 0


async def test_unreachable_service_sets_the_link_down(unused_tcp_port: int,
                                                      tmp_path: Path) -> None:
    m = Metrics()
    write_bundle(tmp_path, [("kiosk-01", "org-a")])
    client = LoadingClient(LoadingConfig(
        address=f"127.0.0.1:{unused_tcp_port}", ca=tmp_path / "ca.pem",
        cert=tmp_path / "kiosk-01.pem", key=tmp_path / "kiosk-01.key", timeout_s=3), m)
    assert value(m, "cardapd_loading_configured") == 1
    try:
        delay = await client.check_link()  # nobody listens: down, retry soon
        assert delay == 30.0
        assert client.link_up is False
        assert value(m, "cardapd_loading_link_up") == 0
        assert value(m, "cardapd_loading_link_errors_total", reason="unreachable") == 1
        assert value(m, "cardapd_loading_link_last_success_timestamp_seconds") == 0
        assert 0 < await client.check_link() <= 30.0  # no new contact before the retry
        assert value(m, "cardapd_loading_link_errors_total", reason="unreachable") == 1
    finally:
        await client.close()
    assert await client.check_link() is None


async def test_unreadable_tls_files_count_as_tls_files(tmp_path: Path) -> None:
    m = Metrics()
    client = LoadingClient(LoadingConfig(address="127.0.0.1:1", ca=tmp_path / "missing.pem",
                                         cert=tmp_path / "missing.pem",
                                         key=tmp_path / "missing.key"), m)
    with pytest.raises(ServiceUnavailable):
        await client.revocation_feed("org-a", 0)
    assert value(m, "cardapd_loading_link_errors_total", reason="tls_files") == 1


def test_link_ok_sets_up_and_the_timestamp() -> None:
    m = Metrics()
    m.link_failed("timeout")
    before = time.time()
    m.link_ok()
    assert value(m, "cardapd_loading_link_up") == 1
    assert (value(m, "cardapd_loading_link_last_success_timestamp_seconds") or 0) >= before
    assert value(m, "cardapd_loading_link_errors_total", reason="timeout") == 1


# ---------------------------------------------------------------- revocation feed age


def _revocation(tmp_path: Path, m: Metrics, clock: float = 0.0,
                max_age: float = 3600.0) -> tuple[Revocation, Source]:
    source = Source()
    store = RevocationStore(tmp_path / "r.db",
                            clock=(lambda: time.time() - clock) if clock else None)
    cfg = RevocationConfig(86400.0, max_age, "allow_with_warning")
    return Revocation(store, source, ["org-a", "org-b"], cfg, Recorder(Audit(), m)), source


async def test_feed_age_absent_until_pulled_then_grows(tmp_path: Path) -> None:
    m = Metrics()
    rev, _ = _revocation(tmp_path, m)
    assert value(m, "cardapd_revocation_feed_age_seconds", organisation="org-a") is None
    assert value(m, "cardapd_revocation_feed_stale", organisation="org-a") == 1
    assert value(m, "cardapd_revocation_feed_last_success_timestamp_seconds",
                 organisation="org-a") == 0
    source_orgs = rev.organisations
    rev.organisations = ("org-a",)  # pull one of the two
    await rev.sync(OpContext("ops", "r1"))
    rev.organisations = source_orgs
    first = value(m, "cardapd_revocation_feed_age_seconds", organisation="org-a")
    assert first is not None
    assert 0 <= first < 5
    await asyncio.sleep(0.2)
    later = value(m, "cardapd_revocation_feed_age_seconds", organisation="org-a")
    assert later is not None
    assert later >= first + 0.15  # computed when collected: it grows between pulls
    assert value(m, "cardapd_revocation_feed_stale", organisation="org-a") == 0
    assert (value(m, "cardapd_revocation_feed_last_success_timestamp_seconds",
                  organisation="org-a") or 0) > time.time() - 10
    assert value(m, "cardapd_revocation_feed_age_seconds", organisation="org-b") is None
    assert value(m, "cardapd_revocation_feed_stale", organisation="org-b") == 1
    await rev.stop()


async def test_feed_age_read_from_the_store_at_start(tmp_path: Path) -> None:
    """A feed pulled 500 s ago by an earlier run: the age starts at 500, stale past max_age."""
    m = Metrics()
    rev, _ = _revocation(tmp_path, m, clock=500.0, max_age=100.0)
    await rev.sync(None)
    await rev.stop()
    m2 = Metrics()
    rev2, _ = _revocation(tmp_path, m2, max_age=100.0)
    age = value(m2, "cardapd_revocation_feed_age_seconds", organisation="org-a")
    assert age is not None
    assert 500 <= age < 510
    assert value(m2, "cardapd_revocation_feed_stale", organisation="org-a") == 1
    await rev2.sync(None)  # a pull resets it
    age = value(m2, "cardapd_revocation_feed_age_seconds", organisation="org-a")
    assert age is not None
    assert age < 5
    assert value(m2, "cardapd_revocation_feed_stale", organisation="org-a") == 0
    await rev2.stop()


# ---------------------------------------------------------------- fingerprint device


def test_biometric_state_is_one_of_a_set() -> None:
    m = Metrics()
    for state in BIOMETRIC_STATES:
        m.set_biometric_state(state)
        values = {s: value(m, "cardapd_biometric_device_state", state=s)
                  for s in BIOMETRIC_STATES}
        assert values == {s: (1.0 if s == state else 0.0) for s in BIOMETRIC_STATES}
    with pytest.raises(ValueError, match="biometric state"):
        m.set_biometric_state("on fire")


@pytest.mark.parametrize(("cause", "state"), [
    ("no_device", "no_device"), ("sensor_disconnected", "no_device"),
    ("no_bus", "unavailable"), ("not_running", "unavailable"),
    ("fprintd_exited", "unavailable"), ("bus_lost", "unavailable"),
    ("no_answer", "unavailable"), ("dbus_error", "unavailable"),
    ("sensor_error", None), ("fprintd_error", None),
])
def test_device_state_of_a_failure(cause: str, state: str | None) -> None:
    assert device_state_of(unavailable(cause)) == state


def test_device_state_of_other_failures_is_unknown() -> None:
    assert device_state_of(Cancelled("timeout", reason="BIOMETRIC_TIMEOUT")) is None
    assert device_state_of(ServiceUnavailable("x", reason="LOADING_SERVICE_UNAVAILABLE")) is None


async def test_no_biometric_backend_is_not_configured() -> None:
    m = Metrics()
    service = OperatorService(None, None, None, Audit(), metrics=m)  # type: ignore[arg-type]
    assert m.biometric == "not_configured"
    assert await service.check_device() is None


# ---------------------------------------------------------------- audit chain


def _audit_db(path: Path, rows: int) -> None:
    with AuditLog(path) as log:
        log.append_batch([(AuditEntry(operation="read_user_id", result="ok", actor="gate"),
                           Durability.PROCESS) for _ in range(rows)])
        log.write_head()


def _tamper(path: Path, seq: int) -> None:
    db = sqlite3.connect(path)
    try:
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"
                                  ).fetchall():
            db.execute(f"DROP TRIGGER {name}")
        db.execute("UPDATE audit SET reason = 'tampered' WHERE seq = ?", (seq,))
        db.commit()
    finally:
        db.close()


async def _service(path: Path, m: Metrics) -> tuple[AuditService, AsyncAuditLog]:
    """The audit service as the daemon builds it, over an open log."""
    log = AsyncAuditLog(path)
    await log.open()
    sender = CheckpointSender("t-1", log.durable_head, JournalOut(), m)
    maintenance = AuditMaintenance(log, Retention("t-1", path.parent / "export"), sender, m)
    return AuditService(path, Audit(), m, maintenance, sender), log


async def test_chain_check_sets_the_gauges(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    _audit_db(path, 20)
    m = Metrics()
    assert value(m, "cardapd_audit_chain_last_verified_timestamp_seconds") == 0
    service, log = await _service(path, m)
    try:
        check = service.chain_check(3600.0)
        assert await check() == 3600.0
        assert value(m, "cardapd_audit_chain_verified") == 1
        assert (value(m, "cardapd_audit_chain_last_verified_timestamp_seconds") or 0) > 0
        _tamper(path, 7)
        assert await check() == 3600.0
        assert value(m, "cardapd_audit_chain_verified") == 0
        result = await service.maintenance.verify(Mode.FULL)  # VerifyAudit's way: the same
        assert (result.ok, result.first_bad_seq) == (False, 7)
        assert value(m, "cardapd_audit_chain_verified") == 0
    finally:
        await log.aclose()


async def test_an_unreadable_log_is_not_verified(tmp_path: Path) -> None:
    m = Metrics()
    m.audit_chain(True)
    path = tmp_path / "audit.db"
    service, log = await _service(path, m)
    try:
        for suffix in ("", "-wal", "-shm"):  # gone from under the daemon
            await asyncio.to_thread(Path(f"{path}{suffix}").unlink, missing_ok=True)
        assert await service.chain_check(60.0)() == 60.0
        assert value(m, "cardapd_audit_chain_verified") == 0
    finally:
        await log.aclose()


def test_verify_can_be_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    _audit_db(path, CANCEL_EVERY + 10)
    stop = threading.Event()
    assert verify(path, cancel=stop).ok
    stop.set()
    with pytest.raises(Cancelled):
        verify(path, cancel=stop)


# ---------------------------------------------------------------- background checks


async def test_watch_repeats_retries_and_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cardapd.telemetry.metrics.WATCH_RETRY_S", 0.01)
    m = Metrics()
    calls: list[str] = []

    async def twice() -> float | None:
        calls.append("twice")
        return 0.01 if calls.count("twice") < 2 else None

    async def failing() -> float | None:
        calls.append("failing")
        raise RuntimeError("boom")

    m.watch(twice, failing)
    await asyncio.sleep(0.2)
    assert calls.count("twice") == 2
    assert calls.count("failing") >= 3  # logged and retried
    m.stop()
    await asyncio.sleep(0.05)
    n = len(calls)
    await asyncio.sleep(0.05)
    assert len(calls) == n
    assert m.stopping.is_set()


# ---------------------------------------------------------------- exposition


def test_promtool_accepts_every_state_metric(tmp_path: Path) -> None:
    tool = need("promtool")
    m = Metrics()
    m.link_ok()
    m.link_failed("tls")
    m.set_biometric_state("ok")
    m.audit_chain(True)
    m.revocation_feed_age.labels("org-a").set(12.5)
    m.revocation_feed_success.labels("org-a").set(time.time())
    m.revocation_feed_stale.labels("org-a").set(0)
    body = generate_latest(m.registry)
    result = subprocess.run([tool, "check", "metrics"], input=body, capture_output=True,
                            timeout=30, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b""), result
