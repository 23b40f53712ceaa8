"""pcscd crashes and comes back: the daemon degrades, recovers, re-snapshots, keeps streaming."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from cardap.v1 import cards_pb2, terminal_pb2
from cardap_sim.stack import Stack, demo_user_id

from .conftest import (
    client,
    daemon_alive,
    expect_error,
    insert_and_wait,
    reader_name,
    wait_event,
    wait_until,
)

pytestmark = pytest.mark.reliability

K = cards_pb2


def next_kinds(events: Iterator[cards_pb2.CardEvent], n: int) -> list[cards_pb2.CardEvent]:
    return [next(events) for _ in range(n)]


def pcsc_available(stack: Stack) -> bool:
    with client(stack, "ops") as ops:
        return ops.status().pcsc_available


def test_degraded_recovered_snapshot_then_live(stack: Stack) -> None:
    with client(stack) as gate:
        events = gate.watch(timeout=40)
        wait_event(events, K.CARD_EVENT_KIND_SNAPSHOT_END)

        stack.kill_pcscd()
        degraded = wait_event(events, K.CARD_EVENT_KIND_DEGRADED, 15)
        assert degraded.detail
        assert daemon_alive(stack)
        with client(stack, "ops") as ops:
            status = ops.status()
            assert not status.pcsc_available
            assert not ops.readers().pcsc_available
        expect_error(gate.read_user_id, grpc.StatusCode.UNAVAILABLE, "PCSC_UNAVAILABLE")
        expect_error(lambda: gate.read_user_id(reader_name(stack, 0), fresh=True),
                     grpc.StatusCode.UNAVAILABLE, "PCSC_UNAVAILABLE")
        with client(stack, "ops") as kiosk:
            diag = kiosk.diagnose()
        assert not diag.pcsc_available
        assert diag.verdict == terminal_pb2.VERDICT_READER_FAULT
        assert "pcscd" in diag.next_action

        stack.start_pcscd()
        recovered = wait_event(events, K.CARD_EVENT_KIND_RECOVERED, 20)
        assert recovered.seq > degraded.seq
        snap = next_kinds(events, 3)
        assert [e.kind for e in snap] == [K.CARD_EVENT_KIND_SNAPSHOT] * 2 + [
            K.CARD_EVENT_KIND_SNAPSHOT_END], snap
        assert sorted(e.reader.name for e in snap[:2]) == [reader_name(stack, 0),
                                                           reader_name(stack, 1)]
        assert all(e.reader.state == K.READER_STATE_EMPTY for e in snap[:2])
        assert [e.seq for e in snap] == sorted(e.seq for e in snap)

        # the same stream carries live events again
        stack.control.insert(1, stack.demo_card())
        inserted = wait_event(events, K.CARD_EVENT_KIND_CARD_INSERTED, 15)
    assert inserted.reader.name == reader_name(stack, 1)
    assert inserted.reader.card.kind == K.CARD_KIND_MY_NUMBER_CARD
    assert pcsc_available(stack)
    with client(stack) as gate:
        assert gate.read_user_id(fresh=True).user_id == demo_user_id()
    with client(stack, "ops") as ops:
        status = ops.status()
    assert (status.pcsc_available, status.readers, status.cards) == (True, 2, 1)
    assert daemon_alive(stack)


def test_card_in_reader_across_restart(stack: Stack) -> None:
    before = insert_and_wait(stack, 0, stack.demo_card())
    with client(stack) as gate:
        events = gate.watch(timeout=40)
        wait_event(events, K.CARD_EVENT_KIND_SNAPSHOT_END)
        stack.restart_pcscd()  # SIGKILL, then start again at once
        wait_event(events, K.CARD_EVENT_KIND_RECOVERED, 20)
        again = wait_event(events, K.CARD_EVENT_KIND_CARD_INSERTED, 20)
        assert again.reader.name == reader_name(stack, 0)
        assert again.reader.card.card_id == before.card.card_id
        read = gate.read_user_id()
    assert (read.user_id, read.card_id) == (demo_user_id(), before.card.card_id)
    assert daemon_alive(stack)


def test_repeated_crashes(stack: Stack) -> None:
    for _ in range(3):
        stack.kill_pcscd()
        wait_until(lambda: not pcsc_available(stack), 15, "the daemon to notice pcscd is gone")
        stack.start_pcscd()
        wait_until(lambda: pcsc_available(stack), 20, "the daemon to reconnect to pcscd")
        assert daemon_alive(stack)
    insert_and_wait(stack, 0, stack.demo_card())
    with client(stack) as gate:
        assert gate.read_user_id(fresh=True).user_id == demo_user_id()
