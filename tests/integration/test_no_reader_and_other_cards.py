"""A daemon that sees no reader, and cards that are not My Number Cards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cardap.v1 import cards_pb2, terminal_pb2
from cardap_sim.stack import Stack

from .conftest import (
    cardapctl,
    client,
    expect_error,
    expected_card_id,
    insert_and_wait,
    reader_name,
    wait_event,
)

FOREIGN = "foreign"  # the simulator's profile of a card that is not a My Number Card


@pytest.fixture
def no_reader_stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack whose daemon only accepts readers named like `No Such Reader*`."""
    s = Stack(tmp_path / "stack")
    try:
        s.start(daemon=False)
        s.write_config()
        text = s.config_path.read_text()
        assert "[pcsc]\n" in text
        s.config_path.write_text(
            text.replace("[pcsc]\n", '[pcsc]\nreaders_include = ["No Such Reader*"]\n', 1))
        s.start_daemon()
        yield s
    finally:
        s.stop()


def test_no_reader(no_reader_stack: Stack) -> None:
    stack = no_reader_stack
    stack.control.insert(0, stack.demo_card())  # the card is there, its reader is filtered out
    with client(stack, "ops") as ops:
        status = ops.status()
        assert (status.pcsc_available, status.readers, status.cards) == (True, 0, 0)
        assert list(ops.readers().readers) == []
    with client(stack) as gate:
        events = gate.watch(timeout=10)
        assert next(events).kind == cards_pb2.CARD_EVENT_KIND_SNAPSHOT_END
        expect_error(gate.read_user_id, grpc.StatusCode.FAILED_PRECONDITION, "NO_READER")
        expect_error(lambda: gate.read_user_id(reader_name(stack, 0)),
                     grpc.StatusCode.FAILED_PRECONDITION, "NO_READER")
    with client(stack, "ops") as kiosk:
        diag = kiosk.diagnose()
        expect_error(lambda: kiosk.diagnose(reader_name(stack, 0)),
                     grpc.StatusCode.FAILED_PRECONDITION, "NO_READER")
    assert diag.verdict == terminal_pb2.VERDICT_READER_FAULT
    assert diag.pcsc_available
    (only,) = diag.readers
    assert [(c.name, c.ok, c.reason) for c in only.checks] == [
        ("pcsc", True, ""), ("reader", False, "NO_READER")]
    assert "reader" in diag.next_action
    proc = cardapctl(stack.socket_dir, "diagnose")
    assert proc.returncode == 12, proc.stdout + proc.stderr
    assert stack.control.selects(0) == []  # the daemon never touched the filtered reader


@pytest.fixture
def st(shared_stack: Stack) -> Iterator[Stack]:
    yield shared_stack
    for entry in shared_stack.control.status()["slots"]:
        if entry["state"] != "empty":
            shared_stack.control.remove(entry["slot"])


def test_other_card_is_told_apart(st: Stack) -> None:
    card = st.new_card("foreign", profile=FOREIGN, serial=0x0A0B0C0D)
    with client(st) as gate:
        events = gate.watch(timeout=20)
        wait_event(events, cards_pb2.CARD_EVENT_KIND_SNAPSHOT_END)
        st.control.insert(0, card)
        ev = wait_event(events, cards_pb2.CARD_EVENT_KIND_CARD_INSERTED)
        assert ev.reader.name == reader_name(st, 0)
        assert ev.reader.state == cards_pb2.READER_STATE_CARD_PRESENT
        assert ev.reader.card.kind == cards_pb2.CARD_KIND_OTHER
        assert ev.reader.card.card_id == expected_card_id(st, card, "cplc")
        assert list(ev.reader.card.tap) == []  # no tap read on a card that is not an MNC
        expect_error(gate.read_user_id, grpc.StatusCode.FAILED_PRECONDITION,
                     "NOT_MY_NUMBER_CARD")
        expect_error(lambda: gate.read_user_id(reader_name(st, 0), fresh=True),
                     grpc.StatusCode.FAILED_PRECONDITION, "NOT_MY_NUMBER_CARD")
    with client(st, "ops") as kiosk:
        diag = kiosk.diagnose(reader_name(st, 0)).readers[0]
    assert diag.verdict == terminal_pb2.VERDICT_CARD_FAULT
    identify = [c for c in diag.checks if c.name == "identify"]
    assert identify
    assert identify[0].reason == "NOT_MY_NUMBER_CARD"
    assert "not a My Number Card" in diag.next_action
    proc = cardapctl(st.socket_dir, "diagnose", "--reader", reader_name(st, 0))
    assert proc.returncode == 11, proc.stdout + proc.stderr
    # an MNC beside it still reads
    insert_and_wait(st, 1, st.demo_card("mnc-beside"))
    with client(st) as gate:
        assert gate.read_user_id(reader_name(st, 1)).user_id


def test_other_card_never_sees_the_input_assist_aid(st: Stack) -> None:
    card = st.new_card("foreign2", profile=FOREIGN)
    reader = insert_and_wait(st, 1, card)
    assert reader.card.kind == cards_pb2.CARD_KIND_OTHER
    assert bytes.fromhex("D3921000310001010408") not in st.control.selects(1)
