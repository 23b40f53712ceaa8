"""Card event stream through real pcscd + vpcd: snapshot, insert, remove, profiles, and
identification through a contactless presentation (one synthesised ATR for every card)."""

from __future__ import annotations

import grpc
import pytest

from cardap.client import CardapClientError
from cardap.v1 import cards_pb2, terminal_pb2, terminal_pb2_grpc
from cardap_sim.stack import Stack, demo_user_id
from cardap_sim.vcard.card import CONTACTLESS_ATR

from .conftest import (
    client,
    expected_card_id,
    insert_and_wait,
    metric,
    reader_name,
    remove_and_wait,
    wait_event,
)

K = cards_pb2


def test_snapshot_lists_both_vpcd_slots_empty(stack: Stack) -> None:
    with client(stack) as gate:
        events = gate.watch(timeout=10)
        snap = [next(events), next(events)]
        end = next(events)
    assert [e.kind for e in snap] == [cards_pb2.CARD_EVENT_KIND_SNAPSHOT] * 2
    assert end.kind == cards_pb2.CARD_EVENT_KIND_SNAPSHOT_END
    assert sorted(e.reader.name for e in snap) == [reader_name(stack, 0), reader_name(stack, 1)]
    assert all(e.reader.state == cards_pb2.READER_STATE_EMPTY for e in snap)


def test_insert_identifies_my_number_card_and_taps_user_id(stack: Stack) -> None:
    path = stack.demo_card()
    reader = insert_and_wait(stack, 0, path)
    assert reader.name == reader_name(stack, 0)
    assert reader.state == cards_pb2.READER_STATE_CARD_PRESENT
    card = reader.card
    assert card.kind == cards_pb2.CARD_KIND_MY_NUMBER_CARD
    assert card.profile == "vendor-a"
    assert card.card_id == expected_card_id(stack, path)
    assert card.identity == cards_pb2.CARD_IDENTITY_CERTIFICATE
    assert card.atr == "3BC5FF8131FB458073C6010000"
    assert [(t.aid, t.user_id, t.reason) for t in card.tap] == [
        ("D392F00043010001", demo_user_id(), "")]


def test_vendor_b_profile_and_removal(stack: Stack) -> None:
    card = stack.new_card("b", profile="vendor-b", serial=0x01020304)
    reader = insert_and_wait(stack, 1, card)
    assert reader.card.profile == "vendor-b"
    assert reader.card.card_id == expected_card_id(stack, card)
    assert "01020304" not in reader.card.card_id  # never a chip serial in clear
    assert [t.reason for t in reader.card.tap] == ["AP_NOT_FOUND"]  # no Type C AP on it
    with client(stack) as gate:
        events = gate.watch(timeout=10)
        snap = [next(events) for _ in range(3)]
        present = [e for e in snap if e.reader.state == cards_pb2.READER_STATE_CARD_PRESENT]
        assert [e.reader.name for e in present] == [reader_name(stack, 1)]
        stack.control.remove(1)
        ev = wait_event(events, cards_pb2.CARD_EVENT_KIND_CARD_REMOVED)
    assert ev.reader.name == reader_name(stack, 1)
    assert ev.reader.state == cards_pb2.READER_STATE_EMPTY
    with client(stack, "ops") as ops:
        assert ops.status().cards == 0


def test_reader_filter_only_delivers_that_reader(stack: Stack) -> None:
    with client(stack) as gate:
        events = gate.watch([reader_name(stack, 1)], timeout=10)
        first = next(events)
        assert first.reader.name == reader_name(stack, 1)
        assert next(events).kind == cards_pb2.CARD_EVENT_KIND_SNAPSHOT_END
        stack.control.insert(0, stack.demo_card())
        stack.control.insert(1, stack.demo_card("other"))
        ev = wait_event(events, cards_pb2.CARD_EVENT_KIND_CARD_INSERTED)
    assert ev.reader.name == reader_name(stack, 1)


def test_reinsert_is_seen_again(stack: Stack) -> None:
    card = stack.demo_card()
    first = insert_and_wait(stack, 0, card)
    remove_and_wait(stack, 0)
    second = insert_and_wait(stack, 0, card)
    assert first.card.card_id == second.card.card_id
    assert second.card.inserted_at.ToDatetime() >= first.card.inserted_at.ToDatetime()


def test_contactless_identifies_each_card_and_taps_its_user_id(stack: Stack) -> None:
    one, two = stack.demo_card("one"), stack.demo_card("two", profile="vendor-b")
    contact = insert_and_wait(stack, 0, one).card
    remove_and_wait(stack, 0)
    a = insert_and_wait(stack, 0, one, contactless=True).card
    b = insert_and_wait(stack, 1, two, contactless=True).card
    assert a.atr == b.atr == CONTACTLESS_ATR.hex().upper()  # the reader's, not the cards'
    assert a.card_id == contact.card_id == expected_card_id(stack, one)  # either interface
    assert b.card_id == expected_card_id(stack, two) != a.card_id
    assert a.identity == b.identity == cards_pb2.CARD_IDENTITY_CERTIFICATE
    assert a.profile == "unknown"  # no CPLC: the vendor is the loading service's to find
    for card in (a, b):
        assert card.kind == cards_pb2.CARD_KIND_MY_NUMBER_CARD
        assert [(t.user_id, t.reason) for t in card.tap] == [(demo_user_id(), "")]
    with client(stack) as gate:
        for slot, card in ((0, a), (1, b)):
            read = gate.read_user_id(reader_name(stack, slot), fresh=True)
            assert (read.user_id, read.card_id) == (demo_user_id(), card.card_id)


def test_card_without_a_unique_datum_is_unconfirmed(stack: Stack) -> None:
    path = stack.new_card("bare", certificates=False)
    first = insert_and_wait(stack, 0, path, contactless=True).card
    remove_and_wait(stack, 0)
    second = insert_and_wait(stack, 0, path, contactless=True).card
    for card in (first, second):
        assert card.kind == cards_pb2.CARD_KIND_MY_NUMBER_CARD
        assert card.identity == cards_pb2.CARD_IDENTITY_UNCONFIRMED
        assert card.card_id.startswith("unconfirmed-")
    assert first.card_id != second.card_id, "never one id for every card of a kind"
    # in a contact reader the same card answers its CPLC: identified again
    remove_and_wait(stack, 0)
    contact = insert_and_wait(stack, 0, path).card
    assert contact.identity == cards_pb2.CARD_IDENTITY_CPLC
    assert contact.card_id == expected_card_id(stack, path, "cplc")


# A client that reads its stream slowly (or not at all): gRPC's flow control first holds
# what the client's receive window takes (with default channel options, BDP probing grows
# it to megabytes: ~20,000 small messages), then the daemon's per-client queue of 256
# events fills and the client is dropped. This client keeps its window small (1 KiB, no
# BDP probing), as a constrained client may, so a few hundred real card events reach it.
SMALL_WINDOW = [("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)]
QUEUE = 256  # the daemon's per-client event queue (cardapd.readers.settings)


def overflow_logged(stack: Stack) -> bool:
    log = (stack.dir / "cardapd.log").read_text(errors="replace")
    return "EVENT_QUEUE_OVERFLOW" in log and "fell more than 256 events behind" in log


@pytest.mark.timeout(300)
def test_a_client_that_stops_reading_is_dropped_with_event_queue_overflow(stack: Stack) -> None:
    """A gate client stops reading while cards come and go in both readers: the daemon drops
    it (and says so in its log) once it is more than 256 events behind, while a client that
    reads gets every event; the stalled client, reading again, gets what was queued and then
    UNAVAILABLE EVENT_QUEUE_OVERFLOW, and a new stream starts with a fresh snapshot."""
    slow_channel = grpc.insecure_channel(f"unix:{stack.socket('gate')}", options=SMALL_WINDOW)
    slow = terminal_pb2_grpc.TerminalStub(slow_channel).WatchCardEvents(
        terminal_pb2.WatchCardEventsRequest(), timeout=280)
    first = [next(slow) for _ in range(3)]
    assert [e.kind for e in first] == [K.CARD_EVENT_KIND_SNAPSHOT] * 2 + [
        K.CARD_EVENT_KIND_SNAPSHOT_END]
    cards = [stack.new_card(f"foreign-flood-{slot}", profile="foreign")  # no reads
             for slot in (0, 1)]
    with client(stack, timeout=280) as gate:
        events = gate.watch(timeout=280)
        wait_event(events, K.CARD_EVENT_KIND_SNAPSHOT_END)
        seen: list[cards_pb2.CardEvent] = []

        def until(kind: int, n: int) -> None:
            got = 0
            while got < n:
                ev = next(events)
                seen.append(ev)
                got += ev.kind == kind

        rounds = 0
        while not overflow_logged(stack):
            assert rounds < 120, f"no overflow after {len(seen)} events"
            for slot in (0, 1):
                stack.control.insert(slot, cards[slot])
            until(K.CARD_EVENT_KIND_CARD_INSERTED, 2)
            for slot in (0, 1):
                stack.control.remove(slot)
            until(K.CARD_EVENT_KIND_CARD_REMOVED, 2)
            rounds += 1
        # The reading client missed nothing: its sequence numbers run without a gap.
        seqs = [e.seq for e in seen]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "the reading client lost events"
        assert len(seen) > QUEUE
        # Dropped at once, not when it reads again: only the reading client is counted.
        assert metric(stack, "cardapd_event_subscribers") == 1

    late: list[cards_pb2.CardEvent] = []
    with pytest.raises(grpc.RpcError) as raised:
        late.extend(slow)
    slow_channel.close()
    err = CardapClientError.from_rpc_error(raised.value)
    assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "EVENT_QUEUE_OVERFLOW"), err
    assert "reconnect" in err.message
    # What was queued (all 256) and what the transport held, in order and without a gap,
    # then nothing more.
    assert QUEUE <= len(late) < len(seen), (len(late), len(seen))
    assert [e.seq for e in late] == [e.seq for e in seen[:len(late)]]
    with client(stack) as gate:  # a new stream: a fresh snapshot
        again = gate.watch(timeout=10)
        assert [next(again).kind for _ in range(3)][-1] == K.CARD_EVENT_KIND_SNAPSHOT_END
