"""ReadUserID (Type C) through the daemon: cached, fresh, and every way it can fail."""

from __future__ import annotations

from pathlib import Path

import grpc

from cardap.client import CardapClient
from cardap.v1 import cards_pb2
from cardap_sim.stack import Stack, demo_user_id

from .conftest import client, expect_error, insert_and_wait, reader_name, wait_event


def test_cached_then_fresh_read(stack: Stack) -> None:
    reader = insert_and_wait(stack, 0, stack.demo_card())
    with client(stack) as gate:
        cached = gate.read_user_id()
        fresh = gate.read_user_id(fresh=True)
        named = gate.read_user_id(reader_name(stack, 0), "D392F00043010001")
    assert (cached.cached, cached.user_id) == (True, demo_user_id())
    assert (fresh.cached, fresh.user_id) == (False, demo_user_id())
    assert named.cached
    assert cached.card_id == reader.card.card_id
    assert list(cached.info) == [b"\x00\x00\x00\x01", b"\x20\x26\x11\x23", b"\xca\xfe\x00\x00"]
    assert cached.status == cards_pb2.USER_ID_STATUS_UNKNOWN
    # the fresh read selected the AP again: the card saw one more SELECT of it
    selects = stack.control.selects(0)
    assert selects.count(bytes.fromhex("D392F00043010001")) == 2


def test_no_card(stack: Stack) -> None:
    with client(stack) as gate:
        expect_error(gate.read_user_id, grpc.StatusCode.FAILED_PRECONDITION, "NO_CARD")
        expect_error(lambda: gate.read_user_id(reader_name(stack, 1)),
                     grpc.StatusCode.FAILED_PRECONDITION, "NO_CARD")


def test_unknown_reader(stack: Stack) -> None:
    with client(stack) as gate:
        err = expect_error(lambda: gate.read_user_id("No Such Reader 00 00"),
                           grpc.StatusCode.FAILED_PRECONDITION, "NO_READER")
    assert err.metadata["reader"] == "No Such Reader 00 00"


def test_ap_not_on_card(stack: Stack) -> None:
    insert_and_wait(stack, 0, stack.demo_card())
    with client(stack) as gate:
        expect_error(lambda: gate.read_user_id(aid="D392F000430100FF"),
                     grpc.StatusCode.NOT_FOUND, "AP_NOT_FOUND")


def test_two_cards_need_a_reader_name(stack: Stack) -> None:
    insert_and_wait(stack, 0, stack.demo_card())
    insert_and_wait(stack, 1, stack.demo_card("two"))
    with client(stack) as gate:
        err = expect_error(gate.read_user_id, grpc.StatusCode.FAILED_PRECONDITION,
                           "READER_AMBIGUOUS")
        both = {reader_name(stack, 0), reader_name(stack, 1)}
        assert set(err.metadata["readers"].split(", ")) == both, err.metadata
        assert all(name in err.message for name in both), err.message
    with CardapClient(stack.socket("gate"), language="ja") as gate_ja:
        ja = expect_error(gate_ja.read_user_id, grpc.StatusCode.FAILED_PRECONDITION,
                          "READER_AMBIGUOUS")
        assert ja.locale == "ja"
        assert ja.localized.startswith("複数のカードリーダーにカードがあります"), ja.localized
        assert all(name in ja.localized for name in both), ja.localized
        assert gate_ja.read_user_id(reader_name(stack, 1)).user_id == demo_user_id()


def test_garbage_answers(stack: Stack) -> None:
    insert_and_wait(stack, 0, stack.demo_card())
    stack.control.fault(0, garbage=-1)
    with client(stack) as gate:
        err = expect_error(lambda: gate.read_user_id(fresh=True),
                           grpc.StatusCode.FAILED_PRECONDITION, "CARD_PROTOCOL_ERROR")
    assert "card" in err.message.lower()


def test_truncated_answers(stack: Stack) -> None:
    insert_and_wait(stack, 0, stack.demo_card())
    stack.control.fault(0, truncate=-1)
    with client(stack) as gate:
        expect_error(lambda: gate.read_user_id(fresh=True),
                     grpc.StatusCode.FAILED_PRECONDITION, "CARD_PROTOCOL_ERROR")


def test_card_pulled_mid_read(stack: Stack) -> None:
    insert_and_wait(stack, 0, stack.demo_card())
    stack.control.fault(0, tear_after=1)  # SELECT answered, then the card is gone
    with client(stack) as gate:
        expect_error(lambda: gate.read_user_id(fresh=True), grpc.StatusCode.ABORTED,
                     "CARD_REMOVED")
        # the daemon carries on: the reader is empty now, and says so
        expect_error(gate.read_user_id, grpc.StatusCode.FAILED_PRECONDITION, "NO_CARD")


def test_slow_card_still_reads(stack: Stack) -> None:
    insert_and_wait(stack, 0, stack.demo_card())
    stack.control.fault(0, slow_ms=150)
    with client(stack) as gate:
        assert gate.read_user_id(fresh=True).user_id == demo_user_id()


SLOW_CARD = "[card]\napdu_timeout_s = 10\nread_timeout_s = 30\n"
"""Deadlines far above a card slowed to 3 s a command: its identification (8 commands,
24 s) outlasts the two reads that wait 5 s each for it by far, and ends well."""


def test_a_read_while_the_card_is_still_being_identified(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "s", extra_config=SLOW_CARD)
    try:
        stack.start()
        with client(stack, timeout=60) as gate:
            events = gate.watch(timeout=90)
            wait_event(events, cards_pb2.CARD_EVENT_KIND_SNAPSHOT_END)
            stack.control.insert(0, stack.demo_card(), faults={"slow_ms": 3000})
            detected = wait_event(events, cards_pb2.CARD_EVENT_KIND_CARD_DETECTED)
            assert detected.reader.state == cards_pb2.READER_STATE_CARD_IDENTIFYING
            for reader in (reader_name(stack, 0), ""):  # named, or the only card there is
                err = expect_error(lambda r=reader: gate.read_user_id(r),  # type: ignore[misc]
                                   grpc.StatusCode.UNAVAILABLE, "CARD_IDENTIFYING")
                assert "still being identified" in err.message
            stack.control.fault(0, clear=True)  # the rest of the identification at speed
            wait_event(events, cards_pb2.CARD_EVENT_KIND_CARD_INSERTED, 60)
            assert gate.read_user_id().user_id == demo_user_id()
    finally:
        stack.stop()
