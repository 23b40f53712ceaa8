"""Errors that say what happened, and a card put right while it stays in the reader
(issue 15, points 3 and 4): garbage or a truncated answer during a load is the card's
protocol error (not UNSUPPORTED_CARD, not CARD_REMOVED), pcscd killed mid-load is
PCSC_UNAVAILABLE (not CARD_AUTH_FAILED), a half-loaded file is reconciled at once without
reinsertion, and a delete whose answer was damaged reports what the card holds.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import grpc
import pytest

from cardap.client import CardapClientError
from cardap.v1 import cards_pb2

from .conftest import client, insert_and_wait, wait_event, wait_until
from .test_load_faults import (
    AIDS,
    AP_C,
    LOAD_FILES,
    LoadStack,
    apdu_count,
    delete,
    expect_load_error,
    inspect_card,
    load,
    load_stack,
    result_of,
    slot_status,
    wait_reconciled,
)

pytestmark = pytest.mark.reliability
R0 = "Virtual PCD 00 00"


@pytest.fixture
def lstack(tmp_path: Path) -> Any:
    with load_stack(tmp_path / "stack") as s:
        yield s


def reconciled_in_place(stack: LoadStack, events: Any) -> None:
    ev = wait_event(events, cards_pb2.CARD_EVENT_KIND_CARD_INSERTED, 30)
    assert ev.detail.startswith("reconciled:"), ev.detail


@pytest.mark.parametrize("fault", ["garbage", "truncate"])
def test_a_bad_answer_mid_load_is_a_protocol_error_reconciled_in_place(
        lstack: LoadStack, fault: str) -> None:
    card = lstack.demo_card()
    card_id = insert_and_wait(lstack, 0, card).card.card_id
    before = inspect_card(card).ext_used()
    # The 11th command from now (inside the load batch) gets the bad answer.
    lstack.control.fault(0, after=10, **{fault: 1})
    failure: dict[str, Any] = {}

    def run() -> None:
        try:
            load(lstack, AP_C, reader=R0)
        except CardapClientError as exc:
            failure["error"] = exc

    with client(lstack) as gate:
        events = gate.watch(timeout=120)
        wait_event(events, cards_pb2.CARD_EVENT_KIND_SNAPSHOT_END)
        thread = threading.Thread(target=run)
        thread.start()
        thread.join(60)
        err = failure["error"]
        assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION,
                                          "CARD_PROTOCOL_ERROR"), (err.reason, err.message)
        assert "now" in err.message, err.message
        reconciled_in_place(lstack, events)  # no reinsertion
    wait_reconciled(lstack, card_id)
    view = inspect_card(card)
    assert not view.has_load_file(LOAD_FILES[AP_C]), "orphan load file"
    assert view.ext_used() == before, "free space is back before the next operation"
    lstack.control.fault(0, clear=True)
    result_of(load(lstack, AP_C, reader=R0))


def test_garbage_to_the_first_command_is_not_an_unsupported_card(lstack: LoadStack) -> None:
    insert_and_wait(lstack, 0, lstack.demo_card())
    lstack.control.fault(0, garbage=1)
    err = expect_load_error(lstack, AP_C, grpc.StatusCode.FAILED_PRECONDITION, reader=R0)
    assert err.reason == "CARD_PROTOCOL_ERROR", err.reason


def test_pcscd_killed_mid_load_is_pcsc_unavailable(lstack: LoadStack) -> None:
    insert_and_wait(lstack, 0, lstack.demo_card())
    # The load stalls at its 11th command (the card goes mute, as one in the middle of a
    # long command): pcscd dies with that command in flight.
    lstack.control.fault(0, after=10, mute=True)
    failure: dict[str, Any] = {}

    def run() -> None:
        try:
            load(lstack, AP_C, reader=R0)
        except CardapClientError as exc:
            failure["error"] = exc

    start = apdu_count(lstack, 0)
    thread = threading.Thread(target=run)
    thread.start()
    wait_until(lambda: apdu_count(lstack, 0) >= start + 10, 30, "the load batch")
    wait_until(lambda: slot_status(lstack, 0)["faults"]["mute"], 30, "the card to stall")
    lstack.kill_pcscd()
    thread.join(60)
    lstack.control.fault(0, clear=True)
    lstack.start_pcscd()
    err = failure["error"]
    assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "PCSC_UNAVAILABLE"), \
        (err.reason, err.message)


def test_a_delete_whose_answers_were_tampered_reports_the_cards_state(
        lstack: LoadStack) -> None:
    card = lstack.demo_card()
    insert_and_wait(lstack, 0, card)
    result_of(load(lstack, AP_C, reader=R0))
    lstack.control.fault(0, tamper=-1, tamper_ins=0xE4)  # every DELETE answer flipped
    resp = delete(lstack, AIDS[AP_C], R0)
    assert resp.outcome == "DELETED", resp
    lstack.control.fault(0, clear=True)
    view = inspect_card(card)
    assert not view.has_app(AIDS[AP_C]), "the card no longer holds the AP"


def test_a_delete_refused_by_the_card_is_reported_failed(lstack: LoadStack) -> None:
    """The read-back does not invent a success: the AP is still there."""
    card = lstack.demo_card()
    insert_and_wait(lstack, 0, card)
    result_of(load(lstack, AP_C, reader=R0))
    lstack.control.fault(0, garbage=-1)
    with pytest.raises(CardapClientError) as info:
        delete(lstack, AIDS[AP_C], R0)
    assert info.value.reason == "CARD_PROTOCOL_ERROR", info.value.reason
    lstack.control.fault(0, clear=True)
    assert inspect_card(card).has_app(AIDS[AP_C])
