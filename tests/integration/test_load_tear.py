"""Tear test: a Type D load pulled after every one of its APDUs, then re-inserted.

One stack, one card reused. First one clean load counts the APDUs a Type D load sends
(the simulator's apdu_count, so APDUs the daemon adds around the relay count too) and is
deleted again. Then for every index i in 1..N: `fault(slot, tear_after=i)`, LoadAP, re-insert,
wait until the journal says the card is reconciled, and check on a copy of the card file
with the card keys: the AP is either complete (instance in GET STATUS, load file LOADED,
personalised with the user ID) or gone without trace (no orphan load file), the extended
area's used bytes (GET DATA FF21, parsed by hand) back where they were, and the audit log
has the failed load and a later reconciliation. A loaded AP is deleted before the next
index. The dev Type D image is 6 KiB (about 45 APDUs): every index is torn when N <= 60,
otherwise the first and last 5 plus 50 evenly spaced ones (reported in the test output).
"""

from __future__ import annotations

import grpc
import pytest

from cardap.client import CardapClientError

from .conftest import insert_and_wait
from .test_load_faults import (
    AIDS,
    AP_D,
    LoadStack,
    apdu_count,
    applet_user_id,
    assert_all_or_nothing,
    assert_audit_chain,
    audit_failure_and_reconcile,
    delete,
    fresh_card,
    inspect_card,
    load,
    lstack,  # noqa: F401 - fixture
    result_of,
    slot0,  # noqa: F401 - fixture
    wait_reconciled,
)

MAX_EVERY = 60


def indices(n: int) -> list[int]:
    """Every index 1..n, or a bounded sample when the load is long."""
    if n <= MAX_EVERY:
        return list(range(1, n + 1))
    step = (n - 10) / 50
    middle = {6 + round(k * step) for k in range(50)}
    return sorted({*range(1, 6), *range(n - 4, n + 1), *middle})


@pytest.mark.reliability
@pytest.mark.timeout(300)
def test_type_d_load_torn_after_every_apdu(slot0: LoadStack) -> None:  # noqa: F811
    path, card_id = fresh_card(slot0, "tear")
    base = inspect_card(path).ext_used()
    start = apdu_count(slot0, 0)
    result_of(load(slot0, AP_D))
    n = apdu_count(slot0, 0) - start
    assert 10 < n < 400, n
    delete(slot0, AIDS[AP_D])
    assert inspect_card(path).ext_used() == base
    chosen = indices(n)
    print(f"Type D load = {n} APDUs; tearing after {len(chosen)} indices"
          f"{'' if len(chosen) == n else ' (sampled)'}")
    outcomes: dict[str, int] = {}
    for i in chosen:
        slot0.control.fault(0, tear_after=i)
        ok, code = False, None
        try:
            ok = result_of(load(slot0, AP_D)).ok
        except CardapClientError as err:
            code = err.code
        assert ok or code == grpc.StatusCode.ABORTED, f"i={i}: {code}"
        print(f"i={i}: load {'ok' if ok else code}", flush=True)
        insert_and_wait(slot0, 0, path, timeout=20)
        wait_reconciled(slot0, card_id)
        view = inspect_card(path)
        loaded = assert_all_or_nothing(view, AP_D, base)
        if ok:
            assert loaded, f"i={i}: LoadAP said ok but the AP is not on the card"
        else:
            audit_failure_and_reconcile(slot0, card_id)
        outcomes["loaded" if loaded else "gone"] = outcomes.get("loaded" if loaded else "gone",
                                                                0) + 1
        if loaded:
            applet = view.card.applets[bytes.fromhex(AIDS[AP_D])]
            assert len(applet_user_id(applet) or "") == 13, f"i={i}"
            assert delete(slot0, AIDS[AP_D]).outcome == "DELETED"
            assert inspect_card(path).ext_used() == base, f"i={i}: space after delete"
    print(f"outcomes over {len(chosen)} tears: {outcomes}")
    assert outcomes.get("gone"), "no tear left the card without the AP: test is not biting"
    assert_audit_chain(slot0)
