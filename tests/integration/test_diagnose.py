"""Diagnose (card fault isolation) through the real stack: verdicts, probes, roles, cardapctl."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest

from cardap.v1 import terminal_pb2
from cardap_sim.stack import DEMO_TYPE_C_AID, Stack

from .conftest import (
    INPUT_ASSIST_AID,
    cardapctl,
    client,
    daemon_alive,
    expect_error,
    insert_and_wait,
    reader_name,
    wait_until,
)

ISD = "A000000151000000"
JPKI = "D392F000260100000001"
CARD_FACE = "D3921000310001010402"
JUKI = "D3921000310001010401"


def _both_empty(stack: Stack) -> bool:
    with client(stack, "ops") as ops:
        return ops.status().cards == 0 and all(
            v.state == 1 for v in ops.readers().readers)  # READER_STATE_EMPTY


@pytest.fixture
def st(shared_stack: Stack) -> Iterator[Stack]:
    """The module's stack; every slot is emptied (and seen empty by the daemon) afterwards."""
    yield shared_stack
    for entry in shared_stack.control.status()["slots"]:
        if entry["state"] != "empty":
            shared_stack.control.remove(entry["slot"])
    wait_until(lambda: _both_empty(shared_stack), 15, "both readers empty again")


def diagnose(stack: Stack, slot: int = 0, role: str = "ops") -> terminal_pb2.ReaderDiagnosis:
    with client(stack, role) as c:
        resp = c.diagnose(reader_name(stack, slot))
    assert len(resp.readers) == 1
    assert resp.verdict == resp.readers[0].verdict
    return resp.readers[0]


def check(diag: terminal_pb2.ReaderDiagnosis, name: str) -> terminal_pb2.Check:
    found = [c for c in diag.checks if c.name == name]
    assert found, f"no check {name!r} in {[c.name for c in diag.checks]}"
    return found[0]


def test_ok_card_verdict_tries_and_probes(st: Stack) -> None:
    reader = insert_and_wait(st, 0, st.demo_card("ok"))
    diag = diagnose(st)
    assert diag.verdict == terminal_pb2.VERDICT_OK, diag
    assert diag.reader.name == reader_name(st, 0)
    assert diag.reader.card.card_id == reader.card.card_id
    assert (diag.jpki_auth_pin_tries, diag.jpki_sign_pin_tries) == (3, 5)
    probes = {p.aid: p for p in diag.aps}
    for aid in (ISD, JPKI, CARD_FACE, JUKI, DEMO_TYPE_C_AID.hex().upper()):
        assert aid in probes, f"{aid} not probed: {list(probes)}"
        assert probes[aid].present, probes[aid]
    assert {p.name for p in diag.aps} >= {"ISD", "JPKI", "card face AP", "住基AP", "Type C AP"}
    assert INPUT_ASSIST_AID.hex().upper() not in probes
    assert all(c.ok for c in diag.checks), [c for c in diag.checks if not c.ok]
    assert diag.next_action
    assert INPUT_ASSIST_AID not in st.control.selects(0)


def test_diagnosis_spends_no_pin_try(st: Stack) -> None:
    insert_and_wait(st, 0, st.demo_card("nospend"))
    for _ in range(5):
        diag = diagnose(st)
        assert diag.verdict == terminal_pb2.VERDICT_OK
    assert (diag.jpki_auth_pin_tries, diag.jpki_sign_pin_tries) == (3, 5)
    assert "none spent" in check(diag, "jpki.auth_pin_tries").detail
    card = json.loads((st.dir / "cards" / "nospend.json").read_text())
    assert (card["jpki"]["auth_pin"]["tries"], card["jpki"]["sign_pin"]["tries"]) == (3, 5)
    assert INPUT_ASSIST_AID not in st.control.selects(0)


def test_blocked_auth_pin_is_a_warning(st: Stack) -> None:
    insert_and_wait(st, 0, st.demo_card("blocked"))
    st.control.block_pin(0, "auth")
    diag = diagnose(st)
    assert diag.verdict == terminal_pb2.VERDICT_WARNING, diag
    assert diag.jpki_auth_pin_tries == 0
    assert diag.jpki_sign_pin_tries == 5
    pin = check(diag, "jpki.auth_pin_tries")
    assert (pin.ok, pin.reason) == (False, "PIN_BLOCKED")
    assert "municipality" in diag.next_action


def test_empty_reader_is_no_card(st: Stack) -> None:
    diag = diagnose(st, 1)
    assert diag.verdict == terminal_pb2.VERDICT_NO_CARD
    assert check(diag, "card").reason == "NO_CARD"
    assert not diag.aps
    with client(st, "ops") as kiosk:  # the kiosk socket needs an operator (issue 16)
        every = kiosk.diagnose()
    assert sorted(d.reader.name for d in every.readers) == [reader_name(st, 0),
                                                              reader_name(st, 1)]
    assert every.verdict == terminal_pb2.VERDICT_NO_CARD


def test_garbage_card_is_a_card_fault(st: Stack) -> None:
    insert_and_wait(st, 0, st.demo_card("garbage"))
    st.control.fault(0, garbage=-1)
    diag = diagnose(st)
    assert diag.verdict == terminal_pb2.VERDICT_CARD_FAULT, diag
    failed = [c for c in diag.checks if not c.ok]
    assert failed, diag
    assert failed[-1].reason, failed
    assert "card" in diag.next_action.lower()


def test_card_pulled_during_diagnosis(st: Stack) -> None:
    insert_and_wait(st, 0, st.demo_card("torn"))
    st.control.fault(0, tear_after=3)  # gone in the middle of the checks
    diag = diagnose(st)
    assert diag.verdict == terminal_pb2.VERDICT_NO_CARD, diag
    assert check(diag, "card_present").reason == "CARD_REMOVED"
    assert "removed" in diag.next_action
    # the daemon carries on serving
    with client(st, "ops") as ops:
        assert ops.status().pcsc_available
    assert daemon_alive(st)
    assert diagnose(st, 1).verdict == terminal_pb2.VERDICT_NO_CARD


def test_unknown_reader(st: Stack) -> None:
    with client(st, "ops") as kiosk:
        expect_error(lambda: kiosk.diagnose("No Such Reader 00 00"),
                     grpc.StatusCode.FAILED_PRECONDITION, "NO_READER")


def test_roles(st: Stack) -> None:
    with client(st, "gate") as gate:
        err = expect_error(gate.diagnose, grpc.StatusCode.PERMISSION_DENIED, "WRONG_ROLE")
    assert err.metadata["method"] == "Diagnose"
    assert diagnose(st, 1, role="ops").verdict == terminal_pb2.VERDICT_NO_CARD


def test_cardapctl_diagnose_exit_codes(st: Stack) -> None:
    name = reader_name(st, 0)
    empty = cardapctl(st.socket_dir, "--json", "diagnose", "--reader", name)
    assert empty.returncode == 13, empty.stderr
    assert json.loads(empty.stdout)["verdict"] == "VERDICT_NO_CARD"
    insert_and_wait(st, 0, st.demo_card("cli"))
    ok = cardapctl(st.socket_dir, "--json", "diagnose", "--reader", name)
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert out["verdict"] == "VERDICT_OK"
    assert out["readers"][0]["jpki_auth_pin_tries"] == 3
    st.control.fault(0, garbage=-1)
    bad = cardapctl(st.socket_dir, "--json", "diagnose", "--reader", name)
    assert bad.returncode == 11, bad.stdout + bad.stderr
    assert json.loads(bad.stdout)["verdict"] == "VERDICT_CARD_FAULT"


def test_overall_verdict_never_asks_to_insert_while_a_card_is_in(st: Stack) -> None:
    insert_and_wait(st, 0, st.demo_card("healthy"))
    with client(st, "ops") as kiosk:  # the ops socket diagnoses without a session
        every = kiosk.diagnose()
    by_reader = {d.reader.name: d for d in every.readers}
    assert by_reader[reader_name(st, 0)].verdict == terminal_pb2.VERDICT_OK
    assert by_reader[reader_name(st, 1)].verdict == terminal_pb2.VERDICT_NO_CARD
    assert every.verdict == terminal_pb2.VERDICT_OK
    assert "Insert" not in every.next_action
    story = by_reader[reader_name(st, 0)]
    assert story.free_bytes["extended"] == 32768
    assert not story.operations
    assert check(story, "catalogue_aps").detail.startswith("no loading service")
    out = cardapctl(st.socket_dir, "diagnose")
    assert out.returncode == 0, out.stdout + out.stderr
