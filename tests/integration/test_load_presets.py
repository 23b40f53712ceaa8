"""Preset sets through the real stack: each organisation's, on the roster, with a default;
loaded in order, a result per AP, APs already on the card skipped, stop at a failure."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cardap.client import CardapClient, CardapClientError
from cardap.v1 import terminal_pb2
from cardap_sim.stack import Stack
from cardap_sim.vcard.identity import validate_user_id
from cardapd.audit import query

from .conftest import expect_error, insert_and_wait

SESSION = "test:org-a:op-1"
PRESETS = {
    "staff": ["org-a-staff-c", "org-a-records-d"],
    "again": ["org-a-cert-a", "org-a-staff-c", "org-a-records-d"],
}
AIDS = {"org-a-staff-c": "D392F000430A0001", "org-a-records-d": "D392F000440A0003",
        "org-a-cert-a": "D392F000410A0002"}


def set_presets(stack: Stack, presets: dict[str, list[str]], default: str = "") -> None:
    """org-a's presets, set by its administrator (appointed by the local act)."""
    token = stack.bootstrap_admin("admin-1", "org-a")
    with CardapClient(stack.socket("ops"), session=token) as ops:
        for name, aps in presets.items():
            ops.set_preset("org-a", name, aps, make_default=name == default)
        ops.end_session(token)


@pytest.fixture
def pstack(tmp_path: Path) -> Iterator[Stack]:
    """A loading stack whose org-a has two preset sets, `staff` the default."""
    s = Stack(tmp_path / "stack", loading=True, test_sessions=True)
    try:
        s.start()
        set_presets(s, PRESETS, default="staff")
        insert_and_wait(s, 0, s.demo_card())
        yield s
    finally:
        s.stop()


def results(events: list[terminal_pb2.LoadApEvent]) -> list[terminal_pb2.LoadResult]:
    """The per-AP results of a LoadAp stream, in order."""
    return [e.result for e in events if e.WhichOneof("event") == "result"]


def test_preset_is_offered_and_loads_in_order(pstack: Stack) -> None:
    with CardapClient(pstack.socket("kiosk"), session=SESSION, timeout=60) as kiosk:
        loadable = kiosk.loadable_aps()
        offered = {p.name: list(p.ap_ids) for p in loadable.presets}
        assert offered == PRESETS
        assert loadable.default_preset == "staff"
        done = results(list(kiosk.load_ap(preset="staff")))
        assert [(r.ap_id, r.ok, r.already_present) for r in done] == [
            (a, True, False) for a in PRESETS["staff"]]
        assert [r.aid.upper() for r in done] == [AIDS[a] for a in PRESETS["staff"]]
        assert all(validate_user_id(r.user_id) for r in done)
        assert done[0].free_bytes > done[1].free_bytes  # space taken in load order
        on_card = {a.aid.upper() for a in kiosk.card_aps().aps}
    assert {AIDS[a] for a in PRESETS["staff"]} <= on_card


def test_the_default_preset_is_one_call_that_names_no_ap(pstack: Stack) -> None:
    """APs already on the card are reported and skipped (not billed); the rest loads."""
    with CardapClient(pstack.socket("kiosk"), session=SESSION, timeout=60) as kiosk:
        first = results(list(kiosk.load_ap(ap_id="org-a-staff-c")))
        assert first[0].ok
        done = results(list(kiosk.load_ap(default_preset=True)))
        assert [(r.ap_id, r.ok, r.already_present, r.reason) for r in done] == [
            ("org-a-staff-c", True, True, "ALREADY_PRESENT"),
            ("org-a-records-d", True, False, "LOADED")]
        again = results(list(kiosk.load_ap(default_preset=True)))
        assert [(r.ap_id, r.already_present) for r in again] == [
            ("org-a-staff-c", True), ("org-a-records-d", True)]
    loads = [r for r in query(pstack.dir / "state" / "audit.db") if r.operation == "load"
             and r.result == "ok"]
    skipped = [r for r in loads if r.detail.get("skipped") == "ALREADY_PRESENT"]
    assert len(skipped) == 3
    assert all(r.detail["billed"] is False and r.detail["preset"] == "staff" for r in skipped)
    assert all(r.actor == "kiosk:org-a/op-1" for r in loads)


def test_preset_stops_at_the_first_failure(pstack: Stack) -> None:
    with CardapClient(pstack.socket("kiosk"), session=SESSION, timeout=60) as kiosk:
        first = results(list(kiosk.load_ap(preset="again")))[0]  # cert-a, then the rest
        assert first.ok
        kiosk.delete_ap(AIDS["org-a-staff-c"], reason="holder_request")
        kiosk.delete_ap(AIDS["org-a-records-d"], reason="holder_request")
        pstack.control.fault(0, full_extended_area=True)
        events: list[terminal_pb2.LoadApEvent] = []
        with pytest.raises(CardapClientError) as info:
            events.extend(kiosk.load_ap(preset="again"))
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        done = results(events)
        # the first AP is there already (skipped), the second fails with its reason, the
        # third never starts
        assert [(r.ap_id, r.ok, r.already_present) for r in done] == [
            ("org-a-cert-a", True, True), ("org-a-staff-c", False, False)]
        assert done[1].reason == "CARD_FULL"
        assert done[1].message
        progressed = {e.progress.ap_id for e in events if e.WhichOneof("event") == "progress"}
        assert "org-a-records-d" not in progressed
        pstack.control.fault(0, clear=True)


def test_unknown_preset_and_no_default_are_not_found(tmp_path: Path) -> None:
    s = Stack(tmp_path / "stack", loading=True, test_sessions=True)
    try:
        s.start()
        insert_and_wait(s, 0, s.demo_card())
        with CardapClient(s.socket("kiosk"), session=SESSION, timeout=60) as kiosk:
            expect_error(lambda: list(kiosk.load_ap(preset="nope")), grpc.StatusCode.NOT_FOUND,
                         "PRESET_NOT_FOUND")
            expect_error(lambda: list(kiosk.load_ap(default_preset=True)),
                         grpc.StatusCode.NOT_FOUND, "PRESET_NOT_FOUND")
            assert kiosk.loadable_aps().default_preset == ""
    finally:
        s.stop()
