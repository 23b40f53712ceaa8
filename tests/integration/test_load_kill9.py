"""kill -9 of the daemon in the middle of a load, then a restart: journal, card and audit."""

from __future__ import annotations

import signal
import threading

import pytest

from .conftest import restart_daemon, wait_until
from .test_load_faults import (
    AP_D,
    LoadStack,
    apdu_count,
    assert_all_or_nothing,
    assert_audit_chain,
    fresh_card,
    inspect_card,
    journal_rows,
    load,
    lstack,  # noqa: F401 - fixture
    slot0,  # noqa: F401 - fixture
    wait_reconciled,
)


@pytest.mark.reliability
@pytest.mark.timeout(180)
def test_kill_9_mid_load_then_restart_reconciles(slot0: LoadStack) -> None:  # noqa: F811
    path, card_id = fresh_card(slot0, "kill9")
    base = inspect_card(path).ext_used()
    start = apdu_count(slot0, 0)
    slot0.control.fault(0, slow_ms=60)  # ~45 APDUs × 60 ms: a window of seconds
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(load(slot0, AP_D, timeout=60))
        except Exception as exc:  # the daemon dies under the call
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    wait_until(lambda: apdu_count(slot0, 0) - start >= 15, 30, "the load to reach LOAD blocks")
    rows = [r for r in journal_rows(slot0) if r["card_id"] == card_id]
    assert rows, "the journal row is written before the first APDU"
    assert rows[-1]["state"] == "started", rows
    slot0.stop_daemon(signal.SIGKILL)
    worker.join(30)
    assert outcome, "the call did not return after the kill"
    assert isinstance(outcome[0], Exception), "the load cannot finish without cardapd"
    slot0.control.fault(0, slow_ms=0)
    mid = inspect_card(path)
    assert mid.has_load_file("D392F0004C0A0003"), "killed in the LOAD blocks: a half file"
    restart_daemon(slot0)  # the card stays in the reader
    rows = wait_reconciled(slot0, card_id, timeout=40)
    assert rows[-1]["state"] in ("reconciled", "failed", "done"), rows
    loaded = assert_all_or_nothing(inspect_card(path), AP_D, base)
    assert not loaded, "a load killed in its LOAD blocks cannot have completed"
    assert_audit_chain(slot0)
