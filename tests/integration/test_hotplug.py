"""Readers pulled and plugged back, and pcscd restarted, while clients are busy (issue 7).

The reader is the vpcd reader behind cardap_sim.hotplug's driver: `unplug_reader()` makes
the driver answer IFD_NO_SUCH_DEVICE, which is what a CCID driver answers once its USB
device is gone, and pcscd's real code takes it from there (the reader turns unusable for
every client). `replug_reader()` brings it back. Both vpcd slots belong to that one
reader device, so both leave and come back together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from testenv import machine_lacks

from cardap.client import CardapClient, CardapClientError
from cardap.v1 import cards_pb2, terminal_pb2
from cardap_sim.hotplug import udev_event
from cardap_sim.stack import Stack, demo_user_id, running_stack
from cardapd.audit import query

from .conftest import client, insert_and_wait, reader_name, wait_event, wait_until
from .test_load_faults import (
    AP_C,
    LoadStack,
    apdu_count,
    assert_all_or_nothing,
    assert_audit_chain,
    audit_failure_and_reconcile,
    fresh_card,
    inspect_card,
    journal_rows,
    load,
    load_stack,
    wait_reconciled,
)

K = cards_pb2


class EventLog:
    """Every event of one WatchCardEvents stream, collected by a thread."""

    def __init__(self, stack: Stack) -> None:
        self._client = CardapClient(stack.socket("gate"), timeout=10)
        self._stream = self._client.watch(timeout=300)
        self.events: list[K.CardEvent] = []
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()
        self.wait_for(K.CARD_EVENT_KIND_SNAPSHOT_END)

    def _pump(self) -> None:
        try:
            for ev in self._stream:
                with self._cond:
                    self.events.append(ev)
                    self._cond.notify_all()
        except BaseException as exc:  # any end of the stream is reported by the test
            self.error = exc

    def wait_for(self, kind: int, reader: str = "", after: int = 0,
                 timeout: float = 15.0) -> int:
        """Index of the first event of `kind` (for `reader`) at or after index `after`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(after, len(self.events)):
                    ev = self.events[i]
                    if ev.kind == kind and (not reader or ev.reader.name == reader):
                        return i
                left = deadline - time.monotonic()
                if left <= 0 or self.error is not None:
                    names = [(K.CardEventKind.Name(e.kind), e.reader.name)
                             for e in self.events[after:]]
                    raise AssertionError(f"no {K.CardEventKind.Name(kind)} for {reader!r} "
                                         f"(stream error: {self.error}); saw {names}")
                self._cond.wait(left)

    def close(self) -> None:
        """Cancel the stream."""
        self._client.close()


@pytest.fixture
def hstack(tmp_path: Path) -> Iterator[Stack]:
    """A stack whose reader can be unplugged."""
    with running_stack(tmp_path / "stack", unpluggable=True) as s:
        yield s


def _readers(stack: Stack) -> dict[str, int]:
    with client(stack) as gate:
        return {r.name: r.state for r in gate.readers().readers}


def test_reader_removed_and_readded_during_a_watch(hstack: Stack) -> None:
    r0, r1 = reader_name(hstack, 0), reader_name(hstack, 1)
    insert_and_wait(hstack, 0, hstack.demo_card())
    log = EventLog(hstack)
    try:
        hstack.unplug_reader()
        gone0 = log.wait_for(K.CARD_EVENT_KIND_READER_REMOVED, r0)
        log.wait_for(K.CARD_EVENT_KIND_READER_REMOVED, r1)
        card_out = log.wait_for(K.CARD_EVENT_KIND_CARD_REMOVED, r0)
        assert card_out < gone0, "the card leaves before its reader"
        assert "unplugged" in log.events[gone0].detail
        assert _readers(hstack) == {}
        with client(hstack) as gate:
            with pytest.raises(CardapClientError) as info:
                gate.read_user_id()
            err = info.value
            assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NO_READER")
            status = gate.status()
            assert status.pcsc_available, "pcscd itself is fine: only the reader left"

        mark = len(log.events)
        hstack.replug_reader()
        back = log.wait_for(K.CARD_EVENT_KIND_READER_ADDED, r0, after=mark)
        log.wait_for(K.CARD_EVENT_KIND_READER_ADDED, r1, after=mark)
        inserted = log.wait_for(K.CARD_EVENT_KIND_CARD_INSERTED, r0, after=mark)
        assert back < inserted
        assert log.events[inserted].reader.card.card_id, "the card is identified again"
        assert log.error is None, f"the stream must survive the unplug: {log.error}"
        assert _readers(hstack) == {r0: K.READER_STATE_CARD_PRESENT, r1: K.READER_STATE_EMPTY}
        with client(hstack) as gate:
            assert gate.read_user_id(fresh=True).user_id == demo_user_id()
    finally:
        log.close()


def test_reader_pulled_during_a_read_ends_that_read_only(hstack: Stack) -> None:
    r0 = reader_name(hstack, 0)
    insert_and_wait(hstack, 0, hstack.demo_card())
    log = EventLog(hstack)
    hstack.control.fault(0, slow_ms=400)  # every APDU takes 0.4 s: the read is in flight
    outcome: dict[str, Any] = {}

    def read() -> None:
        try:
            with client(hstack, timeout=30) as gate:
                outcome["ok"] = gate.read_user_id(fresh=True)
        except CardapClientError as exc:
            outcome["error"] = exc

    try:
        before = apdu_count(hstack, 0)
        reader_thread = threading.Thread(target=read)
        reader_thread.start()
        wait_until(lambda: apdu_count(hstack, 0) > before, 10, "the read to reach the card")
        hstack.unplug_reader()
        reader_thread.join(30)
        err = outcome.get("error")
        assert isinstance(err, CardapClientError), outcome
        assert (err.code, err.reason) == (grpc.StatusCode.ABORTED, "READER_REMOVED"), err
        assert "unplugged" in err.message
        log.wait_for(K.CARD_EVENT_KIND_READER_REMOVED, r0)

        # The rest of the daemon carries on: other sockets, metrics, a new stream.
        with client(hstack, "ops") as ops:
            assert ops.status().pcsc_available
        with client(hstack) as gate:
            fresh = gate.watch(timeout=10)
            wait_event(fresh, K.CARD_EVENT_KIND_SNAPSHOT_END)

        hstack.control.fault(0, clear=True)
        hstack.replug_reader()
        log.wait_for(K.CARD_EVENT_KIND_CARD_INSERTED, r0)
        with client(hstack) as gate:
            assert gate.read_user_id(fresh=True).user_id == demo_user_id()
        assert log.error is None

        rows = [r for r in query(hstack.dir / "state" / "audit.db")
                if r.operation == "read_user_id" and r.result != "ok"]
        assert rows
        assert rows[-1].reason == "READER_REMOVED", rows
    finally:
        log.close()


def test_diagnose_during_unplug_reports_the_reader(hstack: Stack) -> None:
    insert_and_wait(hstack, 0, hstack.demo_card())
    hstack.control.fault(0, slow_ms=300)
    result: dict[str, Any] = {}

    def diagnose() -> None:
        with client(hstack, "ops", timeout=30) as ops:
            result["d"] = ops.diagnose(reader_name(hstack, 0))

    before = apdu_count(hstack, 0)
    t = threading.Thread(target=diagnose)
    t.start()
    wait_until(lambda: apdu_count(hstack, 0) > before, 10, "the diagnosis to reach the card")
    hstack.unplug_reader()
    t.join(30)
    diag = result["d"].readers[0]
    failed = [c for c in diag.checks if not c.ok]
    assert failed
    assert failed[-1].reason == "READER_REMOVED", diag
    assert diag.verdict == terminal_pb2.VERDICT_READER_FAULT
    assert "unplug" in diag.next_action


# ------------------------------------------------------------------------------ loads


@pytest.fixture
def lstack(tmp_path: Path) -> Iterator[LoadStack]:
    """A loading stack (service + test sessions) whose reader can be unplugged."""
    with load_stack(tmp_path / "stack", unpluggable=True) as s:
        yield s


def _load_in_background(stack: Stack, ap_id: str) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["events"] = load(stack, ap_id)
        except CardapClientError as exc:
            outcome["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    return t, outcome


def _cut_mid_load(stack: LoadStack, name: str, cut: Callable[[], None]
                  ) -> tuple[CardapClientError, Path, str, int]:
    """A slowed load of AP_C on a fresh card, `cut()` once it is in its LOAD blocks; the
    client's error, the card file, its id and the extended area used before."""
    path, card_id = fresh_card(stack, name)
    before_space = inspect_card(path).ext_used()
    # A cut comes from outside the card (pcscd, the reader), so it races the load: at
    # 150 ms a command the ~10 commands after the 12th leave it 1.5 s to land.
    stack.control.fault(0, slow_ms=150)
    start = apdu_count(stack, 0)
    t, outcome = _load_in_background(stack, AP_C)
    wait_until(lambda: apdu_count(stack, 0) >= start + 12, 30, "the load to be in its LOADs")
    assert t.is_alive(), "the load ended before the cut"
    cut()
    t.join(60)
    err = outcome.get("error")
    assert isinstance(err, CardapClientError), outcome
    rows = [r for r in journal_rows(stack) if r["card_id"] == card_id]
    assert rows
    assert rows[-1]["needs_reconcile"], rows
    stack.control.fault(0, clear=True)
    return err, path, card_id, before_space


def _assert_reconciled_to_nothing(stack: LoadStack, path: Path, card_id: str,
                                  before_space: int) -> None:
    wait_reconciled(stack, card_id, timeout=45)
    loaded = assert_all_or_nothing(inspect_card(path), AP_C, before_space)
    assert not loaded, "a load cut in its LOAD blocks cannot have completed"
    audit_failure_and_reconcile(stack, card_id)
    assert_audit_chain(stack)


def test_reader_pulled_during_a_load_is_aborted_then_reconciled(lstack: LoadStack) -> None:
    err, path, card_id, before = _cut_mid_load(lstack, "unplugged", lstack.unplug_reader)
    assert (err.code, err.reason) == (grpc.StatusCode.ABORTED, "READER_REMOVED"), err
    lstack.replug_reader()
    _assert_reconciled_to_nothing(lstack, path, card_id, before)


def test_pcscd_restarted_during_a_load_is_failed_then_reconciled(lstack: LoadStack) -> None:
    err, path, card_id, before = _cut_mid_load(lstack, "restart", lstack.restart_pcscd)
    # pcscd's death reaches the exchange either as the service going away or as the card
    # being reset under the handle; both end the load and leave it to reconciliation.
    assert (err.code, err.reason) in {(grpc.StatusCode.UNAVAILABLE, "PCSC_UNAVAILABLE"),
                                      (grpc.StatusCode.ABORTED, "CARD_REMOVED")}, err
    _assert_reconciled_to_nothing(lstack, path, card_id, before)
    # and the daemon loads again once pcscd is back
    events = load(lstack, AP_C)
    assert any(e.WhichOneof("event") == "result" and e.result.ok for e in events)


# ------------------------------------------------------------------------------ udev


@pytest.fixture
def ustack(tmp_path: Path) -> Iterator[Stack]:
    """An unpluggable stack whose daemon also follows udev (`[pcsc] hotplug = "udev"`)."""
    with running_stack(tmp_path / "stack", unpluggable=True, hotplug="udev") as s:
        yield s


def _no_reader_diagnosis(stack: Stack) -> Any:
    with client(stack, "ops") as ops:
        result = ops.diagnose()
    assert len(result.readers) == 1
    return result.readers[0]


def test_udev_tells_a_plugged_but_unoffered_reader_from_no_reader(ustack: Stack) -> None:
    """udev sees a CCID reader that PC/SC does not offer: the diagnosis says which."""
    try:
        udev_event.broadcast(udev_event.ccid_reader_properties("remove", name="probe"))
    except PermissionError:
        machine_lacks("CAP_NET_ADMIN (root) to broadcast a udev event on the netlink group")
    ustack.unplug_reader()  # PC/SC now offers no reader at all
    wait_until(lambda: _readers(ustack) == {}, 15, "the readers to leave")

    diag = _no_reader_diagnosis(ustack)
    checks = {c.name: c for c in diag.checks}
    assert (checks["usb"].ok, checks["usb"].reason) == (False, "NO_USB_READER")
    assert checks["reader"].reason == "NO_READER"

    udev_event.broadcast(udev_event.ccid_reader_properties("add", serial="CARDAP-7"))
    wait_until(lambda: any(c.reason == "READER_NOT_OFFERED"
                           for c in _no_reader_diagnosis(ustack).checks),
               10, "the daemon to learn of the USB reader from udev")
    diag = _no_reader_diagnosis(ustack)
    checks = {c.name: c for c in diag.checks}
    assert checks["usb"].ok
    assert "ffff:0ccd" in checks["usb"].detail
    assert "CARDAP-7" in checks["usb"].detail
    assert diag.verdict == terminal_pb2.VERDICT_READER_FAULT
    assert "libccid" in diag.next_action

    udev_event.broadcast(udev_event.ccid_reader_properties("remove"))
    wait_until(lambda: any(c.reason == "NO_USB_READER"
                           for c in _no_reader_diagnosis(ustack).checks),
               10, "the daemon to learn the USB reader left")

    # PnP still does its part with udev watched: the vpcd reader comes back as before.
    ustack.replug_reader()
    wait_until(lambda: len(_readers(ustack)) == 2, 15, "the readers to come back")
    log = (ustack.dir / "cardapd.log").read_text()
    assert "reader hotplug: udev" in log
    assert "USB smart-card reader plugged in: ffff:0ccd" in log
