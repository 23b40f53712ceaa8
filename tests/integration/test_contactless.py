"""Loads, tears and reconciliation on a contactless presentation (issue 17 point 2, D50).

Through a contactless reader every My Number Card has the same synthesised ATR and (in the
model) no CPLC. The card id comes from the JPKI authentication certificate, so a load torn
on one holder's card is reconciled on that card and never on the next holder's; a card that
offers no unique datum is reconciled only when an operator confirms it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cardap.client import CardapClientError
from cardap.v1 import cards_pb2, terminal_pb2
from cardap_sim.stack import Stack

from .conftest import client, insert_and_wait, wait_event
from .test_load_faults import (
    AIDS,
    AP_C,
    AP_D,
    SESSION_MD,
    LoadStack,
    _stub,
    assert_all_or_nothing,
    audit_rows,
    inspect_card,
    journal_rows,
    load,
    lstack,  # noqa: F401 - fixture
    result_of,
    slot0,  # noqa: F401 - fixture
    wait_reconciled,
)

TEAR_AT = 20  # a Type D load is ~45 APDUs: this tears it inside LOAD (a half-loaded file)


def insert_cl(stack: Stack, path: Path, slot: int = 0) -> cards_pb2.Reader:
    return insert_and_wait(stack, slot, path, timeout=20, contactless=True)


def torn_load(stack: LoadStack, ap_id: str = AP_D) -> None:
    """A load cut by a tear after TEAR_AT APDUs (the card leaves the reader)."""
    stack.control.fault(0, tear_after=TEAR_AT)
    with pytest.raises(CardapClientError) as info:
        result_of(load(stack, ap_id))
    assert info.value.code == grpc.StatusCode.ABORTED, info.value


def confirm(stack: Stack, journal_id: str) -> terminal_pb2.ConfirmReconcileResponse:
    ch, stub = _stub(stack)
    try:
        resp: terminal_pb2.ConfirmReconcileResponse = stub.ConfirmReconcile(
            terminal_pb2.ConfirmReconcileRequest(journal_id=journal_id),
            metadata=SESSION_MD, timeout=60)
        return resp
    except grpc.RpcError as exc:
        raise CardapClientError.from_rpc_error(exc) from None
    finally:
        ch.close()


@pytest.fixture
def both_slots(slot0: LoadStack) -> Iterator[LoadStack]:  # noqa: F811
    yield slot0
    if slot0.control.status()["slots"][1]["state"] != "empty":
        slot0.control.remove(1)


@pytest.mark.parametrize("profile", ["vendor-a", "vendor-b"])
def test_load_on_a_contactless_card(slot0: LoadStack, profile: str) -> None:  # noqa: F811
    path = slot0.new_card(f"cl-{profile}", profile=profile)
    reader = insert_cl(slot0, path)
    assert reader.card.profile == "unknown"  # no CPLC: the service finds the vendor itself
    base = inspect_card(path).ext_used()
    res = result_of(load(slot0, AP_C))
    assert res.aid == AIDS[AP_C]
    assert assert_all_or_nothing(inspect_card(path), AP_C, base)
    [row] = [r for r in journal_rows(slot0) if r["ap_id"] == AP_C
             and r["card_id"] == reader.card.card_id]
    assert row["state"] == "done"


def test_tear_is_reconciled_on_that_card_never_on_the_next(both_slots: LoadStack) -> None:
    stack = both_slots
    mine, theirs = stack.new_card("holder-1"), stack.new_card("holder-2")
    card_id = insert_cl(stack, mine).card.card_id
    base = inspect_card(mine).ext_used()
    torn_load(stack)
    assert inspect_card(mine).ext_used() > base, "the tear must leave a half-loaded file"
    [row] = [r for r in journal_rows(stack) if r["card_id"] == card_id]
    assert row["needs_reconcile"] == 1

    # The next holder taps: same synthesised ATR, no CPLC, another card: nothing happens.
    other = insert_cl(stack, theirs, slot=1)
    assert other.card.card_id != card_id
    theirs_before = inspect_card(theirs)
    with client(stack, "ops") as ops:
        touched = [r.card_id for r in ops.export_audit(operations=["reconcile"])]
    assert other.card.card_id not in touched, "nothing is reconciled on another holder's card"
    assert [r["needs_reconcile"] for r in journal_rows(stack) if r["card_id"] == card_id] == [1]
    assert inspect_card(theirs).ext_used() == theirs_before.ext_used()
    stack.control.remove(1)

    # The first holder comes back: reconciled on their card, cleanly.
    insert_cl(stack, mine)
    wait_reconciled(stack, card_id, timeout=45)
    assert not assert_all_or_nothing(inspect_card(mine), AP_D, base)
    rows = [r for r in audit_rows(stack) if r.operation == "reconcile"]
    assert [(r.card_id, r.result) for r in rows if r.card_id in (card_id, other.card.card_id)
            ] == [(card_id, "ok")]


def test_card_without_a_unique_datum_waits_for_the_operator(slot0: LoadStack) -> None:  # noqa: F811
    path = slot0.new_card("bare", certificates=False)
    first = insert_cl(slot0, path).card
    assert first.identity == cards_pb2.CARD_IDENTITY_UNCONFIRMED
    base = inspect_card(path).ext_used()
    torn_load(slot0)
    [row] = [r for r in journal_rows(slot0) if r["card_id"] == first.card_id]
    half = inspect_card(path).ext_used()
    assert half > base

    with client(slot0) as gate:
        events = gate.watch(timeout=30)
        wait_event(events, cards_pb2.CARD_EVENT_KIND_SNAPSHOT_END)
        slot0.control.insert(0, path, contactless=True)
        inserted = wait_event(events, cards_pb2.CARD_EVENT_KIND_CARD_INSERTED, 20)
        asked = wait_event(events, cards_pb2.CARD_EVENT_KIND_CARD_INSERTED, 20)
    assert inserted.reader.card.card_id != first.card_id  # one insertion, one id
    assert asked.detail.startswith("confirm:")
    assert row["id"] in asked.detail
    # Nothing was done without the operator: the half-loaded file is still there.
    assert inspect_card(path).ext_used() == half
    assert [r["needs_reconcile"] for r in journal_rows(slot0) if r["id"] == row["id"]] == [1]

    done = confirm(slot0, row["id"])
    assert done.outcome == "RECONCILED"
    assert inspect_card(path).ext_used() == base
    [after] = [r for r in journal_rows(slot0) if r["id"] == row["id"]]
    assert (after["state"], after["needs_reconcile"]) == ("reconciled", 0)
    [audited] = [r for r in audit_rows(slot0) if r.operation == "reconcile"
                 and json.loads(r.detail_json).get("journal_id") == row["id"]]
    detail = json.loads(audited.detail_json)
    assert (audited.result, detail["confirmed_by"], detail["journal_card_id"]) == (
        "ok", "org-a/op-1", first.card_id)
    # Once done, or for a card that was identified, there is nothing to confirm.
    with pytest.raises(CardapClientError) as info:
        confirm(slot0, row["id"])
    assert (info.value.code, info.value.reason) == (grpc.StatusCode.FAILED_PRECONDITION,
                                                    "NOT_AWAITING_CONFIRMATION")
    with pytest.raises(CardapClientError) as unknown:
        confirm(slot0, "no-such-journal-row")
    assert (unknown.value.code, unknown.value.reason) == (grpc.StatusCode.NOT_FOUND,
                                                          "JOURNAL_ROW_NOT_FOUND")
    assert unknown.value.metadata["journal_id"] == "no-such-journal-row"
