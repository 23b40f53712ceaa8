"""Preset sets through the real stack: loaded in order, a result per AP, stop at a failure."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cardap.client import CardapClient, CardapClientError
from cardap.v1 import terminal_pb2
from cardap_sim.stack import Stack
from cardap_sim.vcard.identity import validate_user_id

from .conftest import insert_and_wait

SESSION = "test:org-a:op-1"
PRESETS = {
    "staff": ["org-a-staff-c", "org-a-records-d"],
    # the second AP is already there after `staff`: the set must stop at it
    "again": ["org-a-cert-a", "org-a-staff-c", "org-a-records-d"],
}
AIDS = {"org-a-staff-c": "D392F000430A0001", "org-a-records-d": "D392F000440A0003",
        "org-a-cert-a": "D392F000410A0002"}


@pytest.fixture
def pstack(tmp_path: Path) -> Iterator[Stack]:
    """A loading stack with two preset sets configured."""
    s = Stack(tmp_path / "stack", loading=True, test_sessions=True, presets=PRESETS)
    try:
        s.start()
        insert_and_wait(s, 0, s.demo_card())
        yield s
    finally:
        s.stop()


def results(events: list[terminal_pb2.LoadAPEvent]) -> list[terminal_pb2.LoadResult]:
    """The per-AP results of a LoadAP stream, in order."""
    return [e.result for e in events if e.WhichOneof("event") == "result"]


def test_preset_is_offered_and_loads_in_order(pstack: Stack) -> None:
    with CardapClient(pstack.socket("kiosk"), session=SESSION, timeout=60) as kiosk:
        offered = {p.name: list(p.ap_ids) for p in kiosk.loadable_aps().presets}
        assert offered["staff"] == PRESETS["staff"]
        done = results(list(kiosk.load_ap(preset="staff")))
        assert [(r.ap_id, r.ok) for r in done] == [(a, True) for a in PRESETS["staff"]]
        assert [r.aid.upper() for r in done] == [AIDS[a] for a in PRESETS["staff"]]
        assert all(validate_user_id(r.user_id) for r in done)
        assert done[0].free_bytes > done[1].free_bytes  # space taken in load order
        on_card = {a.aid.upper() for a in kiosk.card_aps().aps}
    assert {AIDS[a] for a in PRESETS["staff"]} <= on_card


def test_preset_stops_at_the_first_failure(pstack: Stack) -> None:
    with CardapClient(pstack.socket("kiosk"), session=SESSION, timeout=60) as kiosk:
        list(kiosk.load_ap(preset="staff"))
        events: list[terminal_pb2.LoadAPEvent] = []
        with pytest.raises(CardapClientError) as info:
            events.extend(kiosk.load_ap(preset="again"))
        assert info.value.code == grpc.StatusCode.ALREADY_EXISTS
        done = results(events)
        # the first AP loaded, the second failed with its reason, the third never started
        assert [(r.ap_id, r.ok) for r in done] == [("org-a-cert-a", True),
                                                   ("org-a-staff-c", False)]
        assert done[1].reason == "ALREADY_EXISTS"
        assert done[1].message
        progressed = {e.progress.ap_id for e in events if e.WhichOneof("event") == "progress"}
        assert "org-a-records-d" not in progressed
        on_card = {a.aid.upper() for a in kiosk.card_aps().aps}
    assert AIDS["org-a-cert-a"] in on_card


def test_unknown_preset_is_not_found(pstack: Stack) -> None:
    with (CardapClient(pstack.socket("kiosk"), session=SESSION, timeout=60) as kiosk,
          pytest.raises(CardapClientError) as info):
        list(kiosk.load_ap(preset="nope"))
    assert (info.value.code, info.value.reason) == (grpc.StatusCode.NOT_FOUND,
                                                    "PRESET_NOT_FOUND")
