"""A card that never answers, a reader that gives up, a program that talks to the card
mid-load: every operation ends with the right error before the client's deadline, the
other readers keep working, SIGTERM stops the daemon whatever the card does, a write cut
short is reconciled as soon as the card answers again, and no other process's command
lands between a load's commands (issue 15, points 1, 3 and 5).

The stack is the real one: private pcscd + vpcd (+ the reader shim where a CCID reader's
timeout is modelled) + the simulator + the daemon + the reference loading service.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cardap.client import CardapClient, CardapClientError
from cardap.v1 import cards_pb2, terminal_pb2
from cardap_sim.stack import demo_user_id

from .conftest import expect_error, insert_and_wait, wait_event, wait_until
from .test_load_faults import (
    AIDS,
    AP_C,
    SESSION_MD,
    LoadStack,
    apdu_count,
    audit_rows,
    delete,
    inspect_card,
    journal_rows,
    list_card_aps,
    load,
    load_stack,
    result_of,
    slot_status,
    wait_reconciled,
)

pytestmark = pytest.mark.reliability

# Short deadlines so that the tests do not wait the production ones (30 s per command).
CARD = "[card]\napdu_timeout_s = 2\nread_timeout_s = 3\nwrite_timeout_s = 20\n"
CLIENT_TIMEOUT = 30.0  # far above the deadlines: DEADLINE_EXCEEDED would mean a hang
R0, R1 = "Virtual PCD 00 00", "Virtual PCD 00 01"


@pytest.fixture
def lstack(tmp_path: Path) -> Iterator[LoadStack]:
    with load_stack(tmp_path / "stack", extra_config=CARD, reader_shim=True) as s:
        yield s


def gate(stack: LoadStack) -> CardapClient:
    return CardapClient(stack.socket("gate"), timeout=CLIENT_TIMEOUT)


def kiosk(stack: LoadStack) -> CardapClient:
    """The kiosk socket with the test operator's session (card actions there need one)."""
    return CardapClient(stack.socket("kiosk"), timeout=CLIENT_TIMEOUT,
                        session=SESSION_MD[0][1] + ":load,delete,diagnose")


def answers_again(stack: LoadStack, events: Iterator[cards_pb2.CardEvent]) -> None:
    """The next CARD_INSERTED of slot 0 says the card answers again (no reinsertion)."""
    ev = wait_event(events, cards_pb2.CARD_EVENT_KIND_CARD_INSERTED, 20)
    assert ev.reader.name == R0
    assert "answers again" in ev.detail, ev.detail


def mute_mid_load(stack: LoadStack, slot: int = 0, after: int = 8) -> Callable[[], None]:
    """Arm the card to go mute once `after` more commands were answered (inside the load's
    batch, counted by the card, not raced from outside); returns a wait for that moment.
    Call it before the load starts."""
    start = apdu_count(stack, slot)
    stack.control.fault(slot, after=after, mute=True)

    def muted() -> None:
        wait_until(lambda: apdu_count(stack, slot) >= start + after, 30, "the load to start")
        wait_until(lambda: slot_status(stack, slot)["faults"]["mute"], 30,
                   "the card to go mute")
    return muted


def test_every_operation_on_a_mute_card_ends_unresponsive(lstack: LoadStack) -> None:
    card = lstack.demo_card()
    insert_and_wait(lstack, 0, card)
    calls: dict[str, Any] = {
        "ReadUserID": lambda: gate(lstack).read_user_id(R0, fresh=True),
        "Diagnose": lambda: kiosk(lstack).diagnose(R0),
        "ListCardAPs": lambda: list_card_aps(lstack, R0),
        "LoadAP": lambda: load(lstack, AP_C, reader=R0, timeout=CLIENT_TIMEOUT),
        "DeleteAP": lambda: delete(lstack, AIDS[AP_C], R0),
    }
    with gate(lstack) as g:
        events = g.watch(timeout=300)
        wait_event(events, cards_pb2.CARD_EVENT_KIND_SNAPSHOT_END)
        for name, call in calls.items():
            lstack.control.fault(0, mute=True)
            if name == "Diagnose":  # a diagnosis reports the mute card in its verdict
                diag = call()
                assert diag.verdict == terminal_pb2.VERDICT_CARD_FAULT, (name, diag)
            else:
                err = expect_error(call, grpc.StatusCode.UNAVAILABLE, "CARD_UNRESPONSIVE")
                assert R0 in err.message, err.message
            mute = wait_event(events, cards_pb2.CARD_EVENT_KIND_CARD_MUTE, 20)
            assert mute.reader.card.card_id, "the mute card keeps its identity"
            # While the command hangs the reader fails fast instead of queueing.
            expect_error(lambda: gate(lstack).read_user_id(R0, fresh=True),
                         grpc.StatusCode.UNAVAILABLE, "CARD_UNRESPONSIVE")
            lstack.control.fault(0, clear=True)
            answers_again(lstack, events)
            assert gate(lstack).read_user_id(R0, fresh=True).user_id == demo_user_id(), name
    assert lstack.daemon is not None
    assert lstack.daemon.poll() is None


def test_the_other_slot_is_served_while_one_card_hangs(lstack: LoadStack) -> None:
    insert_and_wait(lstack, 0, lstack.demo_card("c0"))
    insert_and_wait(lstack, 1, lstack.demo_card("c1"))
    lstack.control.fault(0, mute=True)
    outcome: dict[str, Any] = {}

    def hung() -> None:
        try:
            gate(lstack).read_user_id(R0, fresh=True)
        except CardapClientError as exc:
            outcome["slot0"] = exc.reason

    thread = threading.Thread(target=hung)
    thread.start()
    wait_until(lambda: lstack.control.status()["slots"][0]["apdu_count"] > 0, 10,
               "slot 0's read to reach the card")
    for _ in range(5):  # answered while slot 0's command hangs
        assert gate(lstack).read_user_id(R1, fresh=True).user_id == demo_user_id()
        assert "slot0" not in outcome
    thread.join(20)
    assert outcome == {"slot0": "CARD_UNRESPONSIVE"}


def test_a_reader_that_gives_up_like_ccid_then_the_card_answers(lstack: LoadStack) -> None:
    insert_and_wait(lstack, 0, lstack.demo_card())
    lstack.control.fault(0, mute=True, reader_timeout_ms=300)
    with gate(lstack) as g:
        events = g.watch(timeout=120)
        wait_event(events, cards_pb2.CARD_EVENT_KIND_SNAPSHOT_END)
        err = expect_error(lambda: g.read_user_id(R0, fresh=True),
                           grpc.StatusCode.UNAVAILABLE, "CARD_UNRESPONSIVE")
        assert "deadline" not in err.metadata, "the reader's own error, not our deadline"
        wait_event(events, cards_pb2.CARD_EVENT_KIND_CARD_MUTE, 10)
        # Still mute: the reader gives up again each time; nothing hangs.
        expect_error(lambda: g.read_user_id(R0, fresh=True), grpc.StatusCode.UNAVAILABLE,
                     "CARD_UNRESPONSIVE")
        lstack.control.fault(0, clear=True)
        # The next operation is served once the card answers, without reinsertion.
        assert g.read_user_id(R0, fresh=True).user_id == demo_user_id()
        answers_again(lstack, events)
    assert lstack.control.status()["slots"][0]["state"] == "inserted"


def test_mute_mid_load_is_journalled_and_reconciled_once_the_card_answers(
        lstack: LoadStack) -> None:
    card = lstack.demo_card()
    reader = insert_and_wait(lstack, 0, card)
    card_id = reader.card.card_id
    before = inspect_card(card).ext_used()
    failure: dict[str, Any] = {}

    def run() -> None:
        try:
            load(lstack, AP_C, reader=R0, timeout=CLIENT_TIMEOUT)
        except CardapClientError as exc:
            failure["error"] = exc

    with gate(lstack) as g:
        events = g.watch(timeout=120)
        wait_event(events, cards_pb2.CARD_EVENT_KIND_SNAPSHOT_END)
        muted = mute_mid_load(lstack)
        thread = threading.Thread(target=run)
        thread.start()
        muted()
        thread.join(CLIENT_TIMEOUT)
        err = failure["error"]
        assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "CARD_UNRESPONSIVE"), err
        row = next(r for r in journal_rows(lstack) if r["card_id"] == card_id)
        assert (row["state"], row["needs_reconcile"]) == ("failed", 1), row
        assert row["outcome"].startswith("CARD_UNRESPONSIVE"), row["outcome"]
        lstack.control.fault(0, clear=True)
        answers_again(lstack, events)
        reconciled = wait_event(events, cards_pb2.CARD_EVENT_KIND_CARD_INSERTED, 30)
        assert reconciled.detail.startswith("reconciled:"), reconciled.detail
    wait_reconciled(lstack, card_id)
    view = inspect_card(card)
    assert not view.has_load_file("D392F0004C0A0001"), "a half-loaded file stayed"
    assert view.ext_used() == before, "free space is back"
    result_of(load(lstack, AP_C, reader=R0))


def test_sigterm_during_a_hung_load_stops_in_time_with_the_stop_record(
        tmp_path: Path) -> None:
    # A command deadline longer than the stop's grace: only the stop can end this load.
    slow = "[card]\napdu_timeout_s = 120\nwrite_timeout_s = 300\n"
    with load_stack(tmp_path / "stack", extra_config=slow) as stack:
        card = stack.demo_card()
        card_id = insert_and_wait(stack, 0, card).card.card_id
        muted = mute_mid_load(stack)
        thread = threading.Thread(target=lambda: _load_quietly(stack))
        thread.start()
        muted()
        wait_until(lambda: any(r["state"] == "started" for r in journal_rows(stack)), 10,
                   "the load's journal row")
        assert stack.daemon is not None
        proc = stack.daemon
        proc.send_signal(signal.SIGTERM)
        # TimeoutStopSec=30 in the unit: systemd would SIGKILL after that.
        assert proc.wait(30) == 0
        stack.daemon = None
        thread.join(10)
        stopped = [r for r in audit_rows(stack) if r.operation == "daemon_stopped"]
        assert stopped, "the stop record"
        assert stopped[-1].detail.get("writes_interrupted") == 1, stopped
        row = next(r for r in journal_rows(stack) if r["card_id"] == card_id)
        assert row["needs_reconcile"] == 1, row
        assert row["state"] in ("failed", "interrupted"), row


def _load_quietly(stack: LoadStack) -> None:
    with contextlib.suppress(CardapClientError):
        load(stack, AP_C, reader=R0, timeout=CLIENT_TIMEOUT)


FOREIGN = """
import sys, time
from smartcard import scard
hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
hr, card, proto = scard.SCardConnect(ctx, sys.argv[1], scard.SCARD_SHARE_SHARED, 3)
assert hr == 0, hex(hr & 0xFFFFFFFF)
print("ready", flush=True)
while True:
    hr, resp = scard.SCardTransmit(card, proto, [0x00, 0xCA, 0x01, 0xFE, 0x00])
    if hr == scard.SCARD_W_RESET_CARD & 0xFFFFFFFF or hr == scard.SCARD_W_RESET_CARD:
        scard.SCardReconnect(card, scard.SCARD_SHARE_SHARED, 3, scard.SCARD_LEAVE_CARD)
    time.sleep(0.002)
"""
FOREIGN_HEADER = bytes.fromhex("00CA01FE")


def test_no_other_process_command_lands_between_a_loads_commands(lstack: LoadStack) -> None:
    card = lstack.demo_card()
    insert_and_wait(lstack, 0, card)
    lstack.control.fault(0, slow_ms=3)  # a load long enough to be interleaved with
    other = subprocess.Popen([sys.executable, "-c", FOREIGN, R0], env=lstack.env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert other.stdout is not None
        assert other.stdout.readline().strip() == b"ready"
        lstack.control.clear_apdus(0)
        wait_until(lambda: FOREIGN_HEADER in lstack.control.apdus(0), 10,
                   "the other program's commands to reach the card")
        result_of(load(lstack, AP_C, reader=R0))
        seen = len(lstack.control.apdus(0))
        wait_until(lambda: lstack.control.apdus(0)[seen:].count(FOREIGN_HEADER) >= 3, 10,
                   "the other program to go on after the load")
    finally:
        other.kill()
        other.wait(5)
    headers = lstack.control.apdus(0)
    ours = [i for i, h in enumerate(headers) if h != FOREIGN_HEADER]
    assert len(ours) > 20, "the load's commands"
    between = [i for i in range(ours[0], ours[-1]) if headers[i] == FOREIGN_HEADER]
    assert not between, (f"{len(between)} commands of another program landed between the "
                         f"load's {len(ours)} commands")


HOLDER = """
import sys, time
from smartcard import scard
hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
hr, card, proto = scard.SCardConnect(ctx, sys.argv[1], scard.SCARD_SHARE_SHARED, 3)
assert scard.SCardBeginTransaction(card) == 0
print("holding", flush=True)
time.sleep(600)
"""


def test_a_program_holding_the_card_is_named_not_the_card(lstack: LoadStack) -> None:
    insert_and_wait(lstack, 0, lstack.demo_card())
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, R0], env=lstack.env,
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"holding"
        expect_error(lambda: gate(lstack).read_user_id(R0, fresh=True),
                     grpc.StatusCode.UNAVAILABLE, "CARD_IN_USE")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(5)
    # pcscd ends the dead program's transaction; the reader is ours again.
    wait_until(lambda: _reads(lstack), 20, "the reader to be usable again")


def _reads(stack: LoadStack) -> bool:
    try:
        return gate(stack).read_user_id(R0, fresh=True).user_id == demo_user_id()
    except CardapClientError:
        return False


def test_a_read_behind_a_long_load_is_busy_at_its_deadline(lstack: LoadStack) -> None:
    """The load holds the card; a read waits for it up to its own deadline (3 s here), then
    says the reader is busy (in the caller's language too), and the load goes on."""
    insert_and_wait(lstack, 0, lstack.demo_card())
    lstack.control.fault(0, slow_ms=500)  # every command 0.5 s: a load of ~10 s
    outcome: list[object] = []
    start = apdu_count(lstack, 0)
    worker = threading.Thread(target=lambda: outcome.append(_load_or_error(lstack)),
                              daemon=True)
    worker.start()
    try:
        wait_until(lambda: apdu_count(lstack, 0) - start >= 3, 30, "the load's card session")
        with CardapClient(lstack.socket("gate"), timeout=CLIENT_TIMEOUT,
                          language="ja") as gate_ja:
            err = expect_error(lambda: gate_ja.read_user_id(R0, fresh=True),
                               grpc.StatusCode.UNAVAILABLE, "READER_BUSY")
        assert err.metadata["reader"] == R0
        assert err.locale == "ja"
        assert err.localized.startswith("カードリーダーは別の処理に使用中です。"), err.localized
        assert worker.is_alive(), "the load ended before the read gave up: slow the card more"
    finally:
        worker.join(120)
        lstack.control.fault(0, clear=True)
    assert not isinstance(outcome[0], Exception), outcome
    result_of(outcome[0])  # type: ignore[arg-type]


def _load_or_error(stack: LoadStack) -> object:
    try:
        return load(stack, AP_C, reader=R0, timeout=120)
    except CardapClientError as exc:
        return exc
