"""The state metrics through the real stack: loading service link, revocation feed age,
fingerprint device and audit chain, each the same on /metrics and on WatchMetrics."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cardap.client import CardapClientError
from cardap.v1 import terminal_pb2
from cardap_sim.biometric import nist_print, variants
from cardap_sim.loadsvc.devca import DevCa, write_private
from cardap_sim.stack import Stack

from .conftest import cardapctl, client, expect_error, wait_until
from .secure_helpers import SESSION, call, new_stack
from .test_load_faults import LoadStack
from .test_metrics_and_cli import samples, scrape
from .test_operators import ORG, enrol, login, rpc

Key = tuple[str, tuple[tuple[str, str], ...]]
STATE_PREFIXES = ("cardapd_loading_", "cardapd_revocation_feed_", "cardapd_biometric_",
                  "cardapd_audit_chain_")


def http(stack: Stack, prefixes: tuple[str, ...] = STATE_PREFIXES) -> dict[Key, float]:
    """/metrics samples of the families starting with `prefixes`."""
    return {k: v for k, v in samples(scrape(stack)).items() if k[0].startswith(prefixes)}


def stream(stack: Stack, prefixes: tuple[str, ...] = STATE_PREFIXES) -> dict[Key, float]:
    """The first WatchMetrics snapshot of the same families."""
    with client(stack, "ops") as ops:
        snap = next(iter(ops.metrics(interval_s=1, prefixes=list(prefixes), timeout=10)))
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in snap.samples}


def same_on_both(stack: Stack, prefixes: tuple[str, ...] = STATE_PREFIXES) -> dict[Key, float]:
    """The samples, checked equal on /metrics and on the stream; returns them."""
    first = http(stack, prefixes)
    assert first
    assert stream(stack, prefixes) == first
    return first


def get(stack: Stack, name: str, **labels: str) -> float | None:
    """One sample's value on /metrics (None: absent)."""
    return samples(scrape(stack)).get((name, tuple(sorted(labels.items()))))


def has(stack: Stack, name: str, expected: float, **labels: str) -> bool:
    return get(stack, name, **labels) == expected


def list_loadable(stack: Stack) -> Any:
    return call(stack, "kiosk", "ListLoadableAPs", terminal_pb2.ListLoadableAPsRequest(),
                metadata=SESSION)


def catalogue_ok(stack: Stack) -> bool:
    try:
        list_loadable(stack)
    except CardapClientError:
        return False
    return True


def tamper(stack: Stack) -> int:
    """Change one row of the audit database behind the daemon's back; returns its seq."""
    db = sqlite3.connect(stack.dir / "state" / "audit.db")
    try:
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"
                                  ).fetchall():
            db.execute(f"DROP TRIGGER {name}")
        seq = 2
        assert db.execute("UPDATE audit SET reason = 'tampered' WHERE seq = ?",
                          (seq,)).rowcount == 1
        db.commit()
    finally:
        db.close()
    return seq


# ------------------------------------------------------------------------ loading + revocation


@pytest.fixture(scope="module")
def lstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Loading service, test operator sessions, [[read.aps]] of org-a (so a revocation feed)."""
    s = new_stack(tmp_path_factory.mktemp("mops"))
    try:
        yield s
    finally:
        s.stop()


def test_loading_link_follows_the_service(lstack: Stack, tmp_path: Path) -> None:
    wait_until(lambda: has(lstack, "cardapd_loading_link_up", 1), 30,
               "the link check at start")
    assert get(lstack, "cardapd_loading_configured") == 1
    before = get(lstack, "cardapd_loading_link_last_success_timestamp_seconds") or 0
    assert before > time.time() - 120
    time.sleep(0.05)
    list_loadable(lstack)
    up = same_on_both(lstack, ("cardapd_loading_",))
    assert up[("cardapd_loading_link_up", ())] == 1
    assert up[("cardapd_loading_link_last_success_timestamp_seconds", ())] > before
    unreachable = ("cardapd_loading_link_errors_total", (("reason", "unreachable"),))
    tls = ("cardapd_loading_link_errors_total", (("reason", "tls"),))

    lstack.stop_loadsvc()  # nothing listens on the configured port any more
    expect_error(lambda: list_loadable(lstack), grpc.StatusCode.UNAVAILABLE,
                 "LOADING_SERVICE_UNAVAILABLE")
    down = same_on_both(lstack, ("cardapd_loading_",))
    assert down[("cardapd_loading_link_up", ())] == 0
    assert down[unreachable] == up[unreachable] + 1
    assert down[("cardapd_loading_link_last_success_timestamp_seconds", ())] == \
        up[("cardapd_loading_link_last_success_timestamp_seconds", ())]

    # the service back, but trusting terminals of another CA only: the certificate is refused
    other = DevCa("another CA")
    (tmp_path / "other-ca.pem").write_bytes(other.cert_pem)
    write_private(tmp_path / "other-ca.key", other.key_pem)
    LoadStack.start_loadsvc_trusting(lstack, tmp_path / "other-ca.pem")  # type: ignore[arg-type]

    def refused_by_tls() -> bool:
        assert not catalogue_ok(lstack)  # (the first try may still see the old refusal)
        return (get(lstack, tls[0], reason="tls") or 0) > down[tls]

    wait_until(refused_by_tls, 20, "a call refused at the TLS level", interval=0.3)
    assert get(lstack, "cardapd_loading_link_up") == 0

    lstack.stop_loadsvc()
    lstack.start_loadsvc()
    wait_until(lambda: catalogue_ok(lstack), 30, "the daemon to reach the service again",
               interval=0.5)
    assert same_on_both(lstack, ("cardapd_loading_",))[("cardapd_loading_link_up", ())] == 1


def test_revocation_feed_age_grows_and_resets(lstack: Stack) -> None:
    age = "cardapd_revocation_feed_age_seconds"
    wait_until(lambda: get(lstack, age, organisation="org-a") is not None, 30,
               "the first pull of org-a's feed")
    first = get(lstack, age, organisation="org-a")
    assert first is not None
    time.sleep(2.0)
    grown = get(lstack, age, organisation="org-a")
    assert grown is not None
    assert grown >= first + 1.5  # computed at each scrape: it grows between pulls
    assert get(lstack, "cardapd_revocation_feed_stale", organisation="org-a") == 0
    pulled = get(lstack, "cardapd_revocation_feed_last_success_timestamp_seconds",
                 organisation="org-a") or 0

    call(lstack, "ops", "SyncRevocation", terminal_pb2.SyncRevocationRequest())
    reset = get(lstack, age, organisation="org-a")
    assert reset is not None
    assert reset < grown
    assert reset < 1.5
    assert (get(lstack, "cardapd_revocation_feed_last_success_timestamp_seconds",
                organisation="org-a") or 0) > pulled
    # the stream carries the same feed (its age a moment later)
    on_http = http(lstack, ("cardapd_revocation_feed_",))
    on_stream = stream(lstack, ("cardapd_revocation_feed_",))
    assert on_http.keys() == on_stream.keys()
    for key, value in on_http.items():
        assert abs(on_stream[key] - value) < 2.0, key


def test_audit_verify_through_the_api_sets_the_chain_gauge(lstack: Stack) -> None:
    """(Last in the module: it breaks the chain.)"""
    wait_until(lambda: has(lstack, "cardapd_audit_chain_verified", 1), 20,
               "the verification at start")
    at_start = get(lstack, "cardapd_audit_chain_last_verified_timestamp_seconds") or 0
    assert at_start > 0
    seq = tamper(lstack)
    assert get(lstack, "cardapd_audit_chain_verified") == 1  # next background run: a day
    time.sleep(0.05)
    broken = cardapctl(lstack.socket_dir, "--role", "ops", "audit", "verify")
    assert broken.returncode == 10, broken.stdout + broken.stderr
    assert f"row {seq}" in broken.stdout + broken.stderr
    chain = same_on_both(lstack, ("cardapd_audit_chain_",))
    assert chain[("cardapd_audit_chain_verified", ())] == 0
    assert chain[("cardapd_audit_chain_last_verified_timestamp_seconds", ())] > at_start


# ------------------------------------------------------------------------ no loading, no fprintd


def test_background_verify_and_nothing_configured(tmp_path: Path) -> None:
    """biometric = "none", no loading service, no feeds; the chain verified every second."""
    s = Stack(tmp_path / "stack", extra_config='[operators]\nbiometric = "none"\n')
    try:
        s.start(daemon=False)
        s.write_config()
        text = s.config_path.read_text()
        s.config_path.write_text(text.replace("[audit]\n", "[audit]\nverify_interval_s = 1\n"))
        s.start_daemon()
        wait_until(lambda: has(s, "cardapd_audit_chain_verified", 1), 20,
                   "the verification at start")
        first = same_on_both(s)
        assert first[("cardapd_biometric_device_state", (("state", "not_configured"),))] == 1
        assert sum(v for k, v in first.items()
                   if k[0] == "cardapd_biometric_device_state") == 1
        assert first[("cardapd_loading_configured", ())] == 0
        assert first[("cardapd_loading_link_up", ())] == 0
        assert not [k for k in first if k[0].startswith("cardapd_revocation_feed_")]
        tamper(s)
        wait_until(lambda: has(s, "cardapd_audit_chain_verified", 0), 10,
                   "the background verification to notice the changed row")
        assert same_on_both(s, ("cardapd_audit_chain_",))[
            ("cardapd_audit_chain_verified", ())] == 0
    finally:
        s.stop()


# ------------------------------------------------------------------------ real fprintd


def test_biometric_device_state_follows_fprintd(tmp_path: Path) -> None:
    s = Stack(tmp_path / "stack", biometric=True)
    state = "cardapd_biometric_device_state"
    try:
        s.start()
        wait_until(lambda: has(s, state, 1, state="ok"), 20, "the device check at start")
        boot = s.bootstrap_admin("op-m", ORG)  # an operator with a finger in fprintd
        enrol(s, "op-m", variants(nist_print("arch"))[:8], boot)
        rpc(s, "ops", "EndOperatorSession", terminal_pb2.EndOperatorSessionRequest(token=boot))
        s.bio.fprintd.stop()
        expect_error(lambda: login(s, "op-m"), grpc.StatusCode.UNAVAILABLE,
                     "BIOMETRIC_UNAVAILABLE")
        down = same_on_both(s, ("cardapd_biometric_",))
        assert down[(state, (("state", "unavailable"),))] == 1
        assert down[(state, (("state", "ok"),))] == 0
        s.bio.fprintd.start()
        expect_error(lambda: login(s, "op-m", timeout_s=2), grpc.StatusCode.CANCELLED,
                     "BIOMETRIC_TIMEOUT")  # fprintd answered and waited: the device is there
        up = same_on_both(s, ("cardapd_biometric_",))
        assert up[(state, (("state", "ok"),))] == 1
        assert sum(up.values()) == 1
    finally:
        s.stop()
