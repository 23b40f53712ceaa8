"""Lifecycle through the real stack: SIGHUP reload without dropping streams, graceful stop.

The stack is pcscd + vpcd + the simulator + the reference loading service + the daemon
started by the test-only entry point (operator tokens `test:org-a:op-1`), as in
test_load_faults.py, whose helpers these tests share. Each test starts its own stack: the
daemon is signalled, and in the stop tests it ends.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cardap.client import CardapClient, CardapClientError
from cardap.v1 import cards_pb2
from cardap_sim.stack import demo_user_id, port_open
from cardapd.audit import AuditRecord

from .conftest import client, restart_daemon, wait_event, wait_until
from .test_load_faults import (
    AP_C,
    AP_D,
    LOAD_FILES,
    SESSION_MD,
    LoadStack,
    apdu_count,
    assert_all_or_nothing,
    assert_audit_chain,
    audit_rows,
    inspect_card,
    journal_rows,
    load,
    result_of,
    wait_reconciled,
)

K = cards_pb2
R0, R1 = "Virtual PCD 00 00", "Virtual PCD 00 01"
STOP_MARGIN_S = 10.0  # what stopping servers, engine and process may add to the grace
GRACE_LINE = "shutdown_grace_s = 5\n"  # as Stack.write_config writes it


# ------------------------------------------------------------------------------ harness


@contextlib.contextmanager
def lifecycle_stack(tmp_path: Path, grace_s: float = 30.0) -> Iterator[LoadStack]:
    """A started LoadStack whose daemon has `[daemon] shutdown_grace_s = grace_s`."""
    s = LoadStack(tmp_path / "stack")
    try:
        s.write_config()
        edit_config(s, GRACE_LINE, f"shutdown_grace_s = {grace_s:g}\n")
        s.start()
        yield s
    finally:
        s.stop()


def edit_config(stack: LoadStack, old: str, new: str) -> None:
    """Replace `old` (which must be there) in the daemon's configuration file."""
    text = stack.config_path.read_text()
    assert old in text, f"{old!r} not in the configuration"
    stack.config_path.write_text(text.replace(old, new, 1))


def daemon_proc(stack: LoadStack) -> Any:
    assert stack.daemon is not None, "cardapd was not started"
    assert stack.daemon.poll() is None, "cardapd is not running"
    return stack.daemon


def reload_rows(stack: LoadStack) -> list[AuditRecord]:
    return [r for r in audit_rows(stack) if r.operation == "config_reload"]


def sighup(stack: LoadStack) -> tuple[AuditRecord, dict[str, Any]]:
    """SIGHUP the daemon; its new `config_reload` audit row and that row's detail."""
    before = len(reload_rows(stack))
    daemon_proc(stack).send_signal(signal.SIGHUP)
    wait_until(lambda: len(reload_rows(stack)) > before, 20, "a config_reload audit row")
    row = reload_rows(stack)[-1]
    assert daemon_proc(stack).poll() is None, "a reload must never stop the daemon"
    return row, json.loads(row.detail_json)


def daemon_log(stack: LoadStack) -> list[dict[str, Any]]:
    """The daemon's JSON log lines."""
    out = []
    for line in (stack.dir / "cardapd.log").read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def logged(stack: LoadStack, fragment: str, wait: float = 5.0,
           more_than: int = 0) -> list[dict[str, Any]]:
    """The log lines holding `fragment`, waiting up to `wait` s for more than `more_than`
    of them (the daemon writes its log from a thread of its own, a moment after the
    event)."""
    deadline = time.monotonic() + wait
    while True:
        found = [e for e in daemon_log(stack) if fragment in str(e.get("message", ""))]
        if len(found) > more_than or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def insert(stack: LoadStack, events: Iterator[K.CardEvent], card: Path) -> K.CardEvent:
    """Insert `card` in slot 0; its CARD_INSERTED from the open stream `events`."""
    stack.control.insert(0, card)
    return wait_event(events, K.CARD_EVENT_KIND_CARD_INSERTED, 15)


def remove(stack: LoadStack, events: Iterator[K.CardEvent]) -> None:
    stack.control.remove(0)
    wait_event(events, K.CARD_EVENT_KIND_CARD_REMOVED, 15)


def tap_ids(event: K.CardEvent) -> list[str]:
    return [t.user_id for t in event.reader.card.tap]


def kiosk(stack: LoadStack) -> CardapClient:
    return CardapClient(stack.socket("kiosk"), timeout=30, session=SESSION_MD[0][1])


# ------------------------------------------------------------------------------ reload


@pytest.mark.timeout(180)
def test_sighup_applies_a_valid_configuration_and_keeps_streams(tmp_path: Path) -> None:
    with lifecycle_stack(tmp_path) as stack, client(stack, "gate") as gate, \
            client(stack, "ops") as ops:
        events = gate.watch(timeout=150)
        wait_event(events, K.CARD_EVENT_KIND_SNAPSHOT_END)
        samples = ops.metrics(interval_s=1, timeout=150)
        next(samples)
        card = stack.demo_card()
        assert tap_ids(insert(stack, events, card)) == [demo_user_id()]
        remove(stack, events)

        edit_config(stack, "[tap]\n", "[tap]\nread_on_insert = false\n")
        edit_config(stack, "[pcsc]\n", f'[pcsc]\nreaders_exclude = ["{R1}"]\n')
        edit_config(stack, f"127.0.0.1:{stack.metrics_port}", "127.0.0.1:1")
        with stack.config_path.open("a") as f:
            f.write('\n[presets]\nready_event = true\n')
        row, detail = sighup(stack)

        assert (row.result, row.reason) == ("ok", None), row
        assert detail["file"] == str(stack.config_path)
        assert set(detail["applied"]) == {"tap.read_on_insert", "pcsc.readers_exclude",
                                          "presets.ready_event"}, detail
        assert detail["restart_required"] == ["metrics.listen"], detail
        assert logged(stack, "configuration reloaded")
        assert any("metrics.listen" in e["message"] and e["level"] == "warning"
                   for e in logged(stack, "after a restart"))
        # The stream opened before the reload goes on: the excluded reader leaves it ...
        removed = wait_event(events, K.CARD_EVENT_KIND_READER_REMOVED, 15)
        assert removed.reader.name == R1
        # ... and the next insertion arrives on it, read the new way (no tap-to-ID read).
        inserted = insert(stack, events, card)
        assert inserted.reader.name == R0
        assert tap_ids(inserted) == []
        read = gate.read_user_id(fresh=False)
        assert (read.user_id, read.cached) == (demo_user_id(), False)
        assert [r.name for r in gate.readers().readers] == [R0]
        # The metrics stream is still open; the listener stays where it was (restart key).
        next(samples)
        assert port_open(stack.metrics_port)
        assert ops.status().pcsc_available
    assert_audit_chain(stack)


@pytest.mark.timeout(180)
def test_sighup_with_an_invalid_configuration_keeps_the_running_one(tmp_path: Path) -> None:
    with lifecycle_stack(tmp_path) as stack, client(stack, "gate") as gate:
        events = gate.watch(timeout=150)
        wait_event(events, K.CARD_EVENT_KIND_SNAPSHOT_END)
        card = stack.demo_card()
        good = stack.config_path.read_text()

        # 1. Not TOML at all.
        stack.config_path.write_text(good + "\n[tap\nthis is not = = toml\n")
        row, detail = sighup(stack)
        assert (row.result, row.reason) == ("error", "CONFIG_INVALID"), row
        assert detail["file"] == str(stack.config_path)
        assert "invalid TOML" in detail["error"]
        errors = logged(stack, "configuration reload refused")
        assert errors
        assert errors[-1]["level"] == "error"
        assert str(stack.config_path) in errors[-1]["message"]

        # 2. Valid TOML, an invalid value (and a valid change that must not sneak in).
        aid = next(iter(stack.type_c_aids)).hex().upper()
        bad = good.replace("[tap]\n", "[tap]\nread_on_insert = false\n").replace(
            f'"{aid}"', '"NOT-HEX"')
        stack.config_path.write_text(bad)
        row, detail = sighup(stack)
        assert (row.result, row.reason) == ("error", "CONFIG_INVALID"), row
        assert detail["key"] == "tap.type_c_aids[0]", detail
        assert "not hex" in detail["error"]
        second = logged(stack, "configuration reload refused", more_than=len(errors))
        assert len(second) > len(errors), "the second refusal is logged"
        message = second[-1]["message"]
        assert str(stack.config_path) in message
        assert "tap.type_c_aids[0]" in message

        # The daemon serves with the old configuration, on the same stream.
        assert daemon_proc(stack).poll() is None
        assert tap_ids(insert(stack, events, card)) == [demo_user_id()]
        remove(stack, events)

        # 3. Fixed: applied.
        stack.config_path.write_text(good.replace("[tap]\n", "[tap]\nread_on_insert = false\n"))
        row, detail = sighup(stack)
        assert (row.result, row.reason) == ("ok", None), row
        assert detail["applied"] == ["tap.read_on_insert"], detail
        assert tap_ids(insert(stack, events, card)) == []
    assert_audit_chain(stack)


def added_organisations(stack: LoadStack) -> list[str]:
    """The organisations the audit says were added to the roster, in order."""
    return [json.loads(r.detail_json)["organisation"] for r in audit_rows(stack)
            if r.operation == "roster_add_organisation" and r.result == "ok"]


@pytest.mark.timeout(180)
def test_sighup_failing_while_applied_is_reload_failed_and_the_daemon_keeps_serving(
        tmp_path: Path) -> None:
    """A validated reload whose one store write fails (another process holds the roster
    database's write lock, so adding the new organisation times out): audited as
    RELOAD_FAILED at the stage roster, logged, the daemon serves on with nothing of the new
    file in force (the write comes before any change); once the lock is gone the same file
    reloads, all of it."""
    with lifecycle_stack(tmp_path) as stack, client(stack, "gate") as gate, \
            client(stack, "ops") as ops:
        events = gate.watch(timeout=150)
        wait_event(events, K.CARD_EVENT_KIND_SNAPSHOT_END)
        card = stack.demo_card()
        edit_config(stack, "[operators.organisations]\n",
                    '[operators.organisations]\norg-z = "Organisation Z"\n')
        edit_config(stack, "[tap]\n", "[tap]\nread_on_insert = false\n")
        roster = stack.dir / "state" / "roster.db"
        assert roster.exists(), "the daemon keeps its roster in <state_dir>/roster.db"
        holder = sqlite3.connect(roster, timeout=0, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            row, detail = sighup(stack)
            assert (row.result, row.reason) == ("error", "RELOAD_FAILED"), row
            assert detail["file"] == str(stack.config_path)
            assert detail["stage"] == "roster"
            assert "locked" in detail["error"], detail
            failed = logged(stack, "the roster could not take its new organisations")
            assert failed
            assert failed[-1]["level"] == "error"
            # Serving on while the lock is still held: the stream, the status, a read; the
            # running configuration whole (read_on_insert still true: the tap read is done).
            assert daemon_proc(stack).poll() is None
            assert ops.status().pcsc_available
            inserted = insert(stack, events, card)
            assert tap_ids(inserted) == [demo_user_id()], "nothing of the failed reload"
            read = gate.read_user_id(fresh=False)
            assert (read.user_id, read.cached) == (demo_user_id(), True)
            remove(stack, events)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert added_organisations(stack) == ["org-a"], "org-z must not be in the roster yet"

        row, detail = sighup(stack)
        assert (row.result, row.reason) == ("ok", None), row
        assert added_organisations(stack) == ["org-a", "org-z"]
        inserted = insert(stack, events, card)
        assert inserted.kind == K.CARD_EVENT_KIND_CARD_INSERTED
        assert tap_ids(inserted) == [], "read_on_insert = false is in force now"
    assert_audit_chain(stack)


# ------------------------------------------------------------------------------ stop


def fresh_card_slot0(stack: LoadStack, name: str) -> tuple[Path, str]:
    path = stack.new_card(f"{name}-{time.monotonic_ns()}")
    with client(stack) as gate:
        events = gate.watch(timeout=30)
        wait_event(events, K.CARD_EVENT_KIND_SNAPSHOT_END)
        card_id = insert(stack, events, path).reader.card.card_id
    return path, card_id


def load_in_background(stack: LoadStack, ap_id: str) -> tuple[threading.Thread, list[object]]:
    """LoadAP in a thread; the list receives its events or the error."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(load(stack, ap_id, timeout=120))
        except Exception as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    return worker, outcome


def wait_in_session(stack: LoadStack, start: int, apdus: int = 15) -> None:
    """Until the load's card session has sent `apdus` APDUs (it is in its LOAD blocks)."""
    wait_until(lambda: apdu_count(stack, 0) - start >= apdus, 60,
               "the load to reach its LOAD blocks", interval=0.05)


def ops_of(stack: LoadStack) -> list[tuple[str, str, str | None]]:
    return [(r.operation, r.result, r.reason) for r in audit_rows(stack)]


@pytest.mark.timeout(180)
def test_sighup_during_a_load_keeps_its_progress_stream(tmp_path: Path) -> None:
    with lifecycle_stack(tmp_path) as stack:
        path, _ = fresh_card_slot0(stack, "reload-load")
        base = inspect_card(path).ext_used()
        start = apdu_count(stack, 0)
        stack.control.fault(0, slow_ms=100)
        worker, outcome = load_in_background(stack, AP_D)
        wait_in_session(stack, start)
        # A new loading service client: the session in progress stays on the old one.
        edit_config(stack, "timeout_s = 20\n", "timeout_s = 25\n")
        row, detail = sighup(stack)
        assert (row.result, detail["applied"]) == ("ok", ["loading.timeout_s"]), detail
        assert worker.is_alive(), "the reload came after the load ended: slow the card more"
        worker.join(60)
        assert outcome, "the load did not return"
        assert not isinstance(outcome[0], Exception), outcome[0]
        events = outcome[0]
        assert result_of(events).ap_id == AP_D  # type: ignore[arg-type]
        stack.control.fault(0, slow_ms=0)
        assert assert_all_or_nothing(inspect_card(path), AP_D, base)
        # The next load goes through the new client.
        assert result_of(load(stack, AP_C)).ap_id == AP_C
    assert_audit_chain(stack)


@pytest.mark.reliability
@pytest.mark.timeout(180)
def test_sigterm_lets_a_load_in_progress_finish_and_refuses_new_ones(tmp_path: Path) -> None:
    grace = 30.0
    with lifecycle_stack(tmp_path, grace) as stack:
        path, card_id = fresh_card_slot0(stack, "drain")
        base = inspect_card(path).ext_used()
        start = apdu_count(stack, 0)
        stack.control.fault(0, slow_ms=100)  # ~45 APDUs: seconds of card session
        worker, outcome = load_in_background(stack, AP_D)
        wait_in_session(stack, start)
        proc = daemon_proc(stack)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: logged(stack, "new card writes are refused"), 10,
                   "the daemon to start its graceful stop")

        with pytest.raises(CardapClientError) as refused:
            load(stack, AP_C)
        err = refused.value
        assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN"), err
        assert "stopping" in err.message
        assert proc.poll() is None, "the daemon waits for the load in progress"
        with client(stack, "gate") as gate:  # reads are served during the drain
            assert gate.readers().readers

        worker.join(grace)
        assert outcome, "the load did not return"
        assert not isinstance(outcome[0], Exception), outcome[0]
        res = result_of(outcome[0])  # type: ignore[arg-type]
        assert res.ap_id == AP_D
        assert proc.wait(grace + STOP_MARGIN_S) == 0
        assert time.monotonic() - t0 < grace + STOP_MARGIN_S
        stack.control.fault(0, slow_ms=0)

        assert assert_all_or_nothing(inspect_card(path), AP_D, base), "the AP is on the card"
        rows = [r for r in journal_rows(stack) if r["card_id"] == card_id]
        assert [(r["state"], r["needs_reconcile"]) for r in rows] == [("done", 0)], rows
        ops = ops_of(stack)
        loaded = ops.index(("load", "ok", None))
        assert ("load", "error", "SHUTTING_DOWN") in ops
        assert ops[-1][:2] == ("daemon_stopped", "ok")
        assert loaded < len(ops) - 1
        stopped = audit_rows(stack)[-1]
        assert json.loads(stopped.detail_json) == {"writes_waited": 1}
    assert_audit_chain(stack)


@pytest.mark.reliability
@pytest.mark.timeout(240)
def test_sigterm_past_the_grace_period_leaves_the_load_to_reconciliation(
        tmp_path: Path) -> None:
    grace = 1.0
    with lifecycle_stack(tmp_path, grace) as stack:
        path, card_id = fresh_card_slot0(stack, "grace")
        base = inspect_card(path).ext_used()
        start = apdu_count(stack, 0)
        stack.control.fault(0, slow_ms=400)  # ~45 APDUs × 0.4 s: far beyond the grace
        worker, outcome = load_in_background(stack, AP_D)
        wait_in_session(stack, start)
        proc = daemon_proc(stack)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(grace + STOP_MARGIN_S) == 0
        elapsed = time.monotonic() - t0
        assert elapsed < grace + STOP_MARGIN_S, elapsed
        worker.join(10)
        assert outcome, "the load did not return"
        assert isinstance(outcome[0], CardapClientError), outcome
        err = outcome[0]
        assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN"), err
        assert err.metadata.get("interrupted") == "true"
        assert logged(stack, "after the shutdown grace period")
        stack.control.fault(0, slow_ms=0)

        # The journal keeps the torn load for reconciliation; the audit says what happened.
        rows = [r for r in journal_rows(stack) if r["card_id"] == card_id]
        assert len(rows) == 1, rows
        assert rows[0]["needs_reconcile"] == 1, rows
        assert rows[0]["state"] == "failed", rows
        assert rows[0]["outcome"].startswith("SHUTTING_DOWN"), rows
        ops = ops_of(stack)
        assert ("load_started", "ok", None) in ops
        assert ("load", "error", "SHUTTING_DOWN") in ops
        assert ops[-1][:2] == ("daemon_stopped", "ok")
        assert json.loads(audit_rows(stack)[-1].detail_json) == {
            "writes_waited": 1, "writes_interrupted": 1}
        assert inspect_card(path).has_load_file(LOAD_FILES[AP_D]), "cut in its LOAD blocks"

        # Next start: the card is still in the reader; the existing reconciliation runs.
        restart_daemon(stack)
        rows = wait_reconciled(stack, card_id, timeout=60)
        assert rows[-1]["state"] == "reconciled", rows
        assert not assert_all_or_nothing(inspect_card(path), AP_D, base)
        recon = [r for r in audit_rows(stack) if r.operation == "reconcile"]
        assert recon, "no reconciliation audited"
        assert recon[-1].result == "ok", recon
    assert_audit_chain(stack)

