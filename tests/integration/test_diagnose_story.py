"""Diagnose tells the card's story (issue 17 point 3, D52), through the real stack.

For the card in the reader: the journal's interrupted and failed operations on it with
their reconciliation state, the free space per area, and which APs of the operator's
organisation's catalogue are on it; a verdict and next action per reader; and an overall
verdict that never asks to insert a card while a card is in another reader.
"""

from __future__ import annotations

import json

import grpc
import pytest

from cardap.client import CardapClientError
from cardap.v1 import terminal_pb2

from .conftest import cardapctl, insert_and_wait, reader_name, wait_until
from .test_load_faults import (
    AIDS,
    AP_A,
    AP_C,
    AP_D,
    EXT,
    SESSION_MD,
    LoadStack,
    _catalogue_ok,
    _stub,
    inspect_card,
    journal_rows,
    load,
    lstack,  # noqa: F401 - fixture
    result_of,
    slot0,  # noqa: F401 - fixture
    wait_reconciled,
)

T = terminal_pb2
# The test operator with the diagnose right (the kiosk socket's diagnoses need it).
DIAGNOSE_MD = (("cardap-session", SESSION_MD[0][1] + ":load,delete,diagnose"),)


def diagnose(stack: LoadStack, reader: str = "") -> T.DiagnoseResponse:
    ch, stub = _stub(stack)
    try:
        resp: T.DiagnoseResponse = stub.Diagnose(T.DiagnoseRequest(reader=reader),
                                                 metadata=DIAGNOSE_MD, timeout=60)
        return resp
    except grpc.RpcError as exc:
        raise CardapClientError.from_rpc_error(exc) from None
    finally:
        ch.close()


def test_the_story_of_a_torn_load(slot0: LoadStack) -> None:  # noqa: F811
    r0 = reader_name(slot0, 0)
    path = slot0.new_card("story")
    card_id = insert_and_wait(slot0, 0, path).card.card_id
    result_of(load(slot0, AP_C))
    slot0.control.fault(0, tear_after=20)  # a Type D load torn inside LOAD
    with pytest.raises(CardapClientError):
        result_of(load(slot0, AP_D))
    [torn] = [r for r in journal_rows(slot0) if r["card_id"] == card_id and r["ap_id"] == AP_D]

    # The service is down when the card comes back: the repair cannot run yet.
    slot0.stop_loadsvc()
    insert_and_wait(slot0, 0, path, timeout=20)
    slot0.start_loadsvc()
    wait_until(lambda: _catalogue_ok(slot0), 30, "the daemon to reach the service again",
               interval=0.5)

    resp = diagnose(slot0)  # every reader: slot 0 holds the card, slot 1 is empty
    by_reader = {d.reader.name: d for d in resp.readers}
    diag, empty = by_reader[r0], by_reader[reader_name(slot0, 1)]
    assert empty.verdict == T.VERDICT_NO_CARD
    assert diag.verdict == T.VERDICT_WARNING
    assert resp.verdict == T.VERDICT_WARNING, "an empty reader never outweighs a card"
    assert "Insert" not in resp.next_action
    [op] = list(diag.operations)
    assert (op.journal_id, op.action, op.ap_id, op.state, op.reconcile) == (
        torn["id"], "load", AP_D, "failed", T.RECONCILE_STATE_PENDING)
    assert op.outcome.startswith("CARD_REMOVED")
    assert (op.organisation, op.operator_id) == ("org-a", "op-1")
    assert torn["id"] in diag.next_action
    assert "leave it in place" in diag.next_action
    view = inspect_card(path)
    cap, used = view.free[EXT]
    assert diag.free_bytes["extended"] == cap - used
    assert diag.free_bytes["regional"] > 0
    assert diag.catalogue_organisation == "org-a"
    present = {c.ap_id: c.present for c in diag.catalogue_aps}
    assert present[AP_C] is True
    assert present[AP_D] is False  # a half-loaded file is not an installed AP
    assert present[AP_A] is False
    assert {c.aid for c in diag.catalogue_aps} >= {AIDS[AP_C], AIDS[AP_D]}

    # Seen again with the service up: repaired, and the story says so.
    slot0.control.remove(0)
    insert_and_wait(slot0, 0, path, timeout=20)
    wait_reconciled(slot0, card_id, timeout=45)
    resp = diagnose(slot0)
    diag = next(d for d in resp.readers if d.reader.name == r0)
    assert [(o.journal_id, o.state, o.reconcile) for o in diag.operations] == [
        (torn["id"], "reconciled", T.RECONCILE_STATE_RECONCILED)]
    assert diag.verdict == T.VERDICT_OK, diag.next_action
    assert resp.verdict == T.VERDICT_OK  # slot 1 still empty: not "insert the card"
    assert diag.free_bytes["extended"] == cap - inspect_card(path).ext_used() > cap - used

    # cardapctl: the overall exit code follows (0, not 13 for the empty reader).
    out = cardapctl(slot0.socket_dir, "--json", "diagnose")
    assert out.returncode == 0, out.stdout + out.stderr
    parsed = json.loads(out.stdout)
    assert parsed["verdict"] == "VERDICT_OK"
    story = next(d for d in parsed["readers"] if d["reader"]["name"] == r0)
    assert story["operations"][0]["reconcile"] == "RECONCILE_STATE_RECONCILED"
    assert "extended" in story["free_bytes"]
