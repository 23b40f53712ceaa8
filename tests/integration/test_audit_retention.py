# ruff: noqa: S608
"""Segments and retention through the real stack, with days and a year passing.

The daemon runs through the TEST-ONLY entry point with its audit clock set ahead by a file
(`cardapd_testing.clock`), its maintenance every second and `[retention] audit_days = 1`.
Rows written on 31 December are sealed into a segment on a later day, verified, exported
to `[audit] export_dir`; retention keeps them while the yearly report of their year was
not made after the year ended, and drops them once it was — the chain kept on the terminal
then starts from the dropped segment's last hash, verifies in full, and the export verifies
offline. The journal and the revocation store drop what their retention allows at start.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cardap.client import CardapClient
from cardap_sim.stack import Stack
from cardapd.audit.report import JST
from cardapd.domain import IdStatus
from cardapd.loading.journal import Journal
from cardapd.reads.revocation_store import FeedEntry, RevocationStore
from cardapd_testing.clock import CLOCK_ENV, set_offset

from .conftest import cardapctl, insert_and_wait

DAY_S = 86400.0
NEW_YEARS_EVE = datetime(2026, 12, 31, 22, 0, tzinfo=JST)


@pytest.fixture
def rstack(tmp_path: Path) -> Iterator[tuple[Stack, Path]]:
    clock = tmp_path / "clock"
    set_offset(clock, NEW_YEARS_EVE.timestamp() - time.time())
    s = Stack(tmp_path / "stack", test_sessions=True, audit_config="verify_interval_s = 1",
              extra_config="[retention]\naudit_days = 1\njournal_days = 90\n"
                           "revocation_days = 30\n")
    try:
        s.start(daemon=False)
        _old_store_rows(s.dir / "state")
        s.start_daemon(extra_env={CLOCK_ENV: str(clock)})
        yield s, clock
    finally:
        s.stop()


def _old_store_rows(state: Path) -> None:
    """A journal and a revocation store with rows retention may and may not drop."""
    state.mkdir(parents=True, exist_ok=True)
    journal = Journal(state / "journal.db")
    try:
        for jid, finished in (("j-00000001-old", True), ("j-00000002-new", True),
                              ("j-00000003-open", False)):
            journal.start(card_id="4790-C4486216", action="load", ap_id="org-a-staff-c",
                          aid="D392F000430A0001", organisation="org-a", operator="op-1",
                          journal_id=jid)
            if finished:
                journal.finish(jid, "done", "LOADED")
    finally:
        journal.close()
    conn = sqlite3.connect(state / "journal.db")
    with conn:
        conn.execute("UPDATE operations SET finished_at = '2020-01-01T00:00:00.000+00:00', "
                     "started_at = '2020-01-01T00:00:00.000+00:00' WHERE id = 'j-00000001-old'")
        conn.execute("UPDATE operations SET started_at = '2020-01-01T00:00:00.000+00:00' "
                     "WHERE id = 'j-00000003-open'")  # unfinished: kept whatever its age
    conn.close()
    store = RevocationStore(state / "revocation.db")
    old = datetime(2020, 1, 1, tzinfo=UTC).isoformat()
    recent = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    aid = "D392F000440A0003"
    try:
        store.apply("org-a", 5, [
            FeedEntry(aid, "RESUMEDLONGAGO", IdStatus.IN_OPERATION, 1, old),
            FeedEntry(aid, "SUSPENDEDLONG1", IdStatus.SUSPENDED, 2, old),
            FeedEntry(aid, "ABOLISHEDLONG1", IdStatus.ABOLISHED, 3, old),
            FeedEntry(aid, "RESUMEDRECENT", IdStatus.IN_OPERATION, 4, recent),
        ], generated_at=recent, replace=True)
    finally:
        store.close()


def rows_of(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [tuple(r) for r in conn.execute(sql)]
    finally:
        conn.close()


def wait_for(what: str, predicate: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def segments(stack: Stack) -> list[tuple[object, ...]]:
    return rows_of(stack.dir / "state" / "audit.db",
                   "SELECT segment, first_seq, last_seq, verified_us IS NOT NULL, export_file, "
                   "dropped_us IS NOT NULL FROM audit_segments ORDER BY segment")


def verify(stack: Stack, *args: str) -> tuple[int, dict[str, object]]:
    proc = cardapctl(stack.socket_dir, "--json", "audit", "verify", *args)
    assert proc.returncode in (0, 10), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_segments_are_sealed_exported_and_dropped_only_after_the_yearly_report(
        rstack: tuple[Stack, Path], tmp_path: Path) -> None:
    stack, clock = rstack
    state = stack.dir / "state"
    # The journal and the revocation store: only what retention allows went at start.
    wait_for("journal retention", lambda: len(rows_of(state / "journal.db",
                                                      "SELECT id FROM operations")) == 2)
    assert sorted(r[0] for r in rows_of(state / "journal.db", "SELECT id FROM operations")) == [
        "j-00000002-new", "j-00000003-open"]
    kept = ["ABOLISHEDLONG1", "RESUMEDRECENT", "SUSPENDEDLONG1"]
    # The stores are pruned one after the other: wait for the revocation store's turn too.
    wait_for("revocation retention", lambda: sorted(r[0] for r in rows_of(
        state / "revocation.db", "SELECT user_id FROM entries")) == kept)

    insert_and_wait(stack, 0, stack.demo_card())
    with CardapClient(stack.socket("gate")) as gate:
        for _ in range(10):
            gate.read_user_id()
    _, before = verify(stack)
    checkpoint = {"terminal_id": before["terminal_id"], "seq": int(before["head_seq"]),
                  "hash": before["head_hash"]}
    (tmp_path / "kept-elsewhere.jsonl").write_text(json.dumps(checkpoint) + "\n")

    # Three days later: the 31 December segment is sealed, verified and exported...
    set_offset(clock, NEW_YEARS_EVE.timestamp() + 3 * DAY_S - time.time())
    wait_for("segment 1 exported", lambda: [s[4] is not None for s in segments(stack)] == [True])
    ((number, first, last, verified, export, dropped),) = segments(stack)
    assert (number, first, verified, dropped) == (1, 1, True, False)
    assert first <= checkpoint["seq"] < last  # type: ignore[operator]
    export_dir = Path(str(export)).parent
    assert export_dir == state / "audit-export"

    # ...ten days later it is old enough, but 2026's report was never made: kept.
    set_offset(clock, NEW_YEARS_EVE.timestamp() + 10 * DAY_S - time.time())
    wait_for("retention to wait for the report", lambda: "waits for the yearly report of 2026"
             in (stack.dir / "cardapd.log").read_text())
    assert [s[5] for s in segments(stack)] == [False]
    assert rows_of(state / "audit.db", f"SELECT count(*) FROM audit WHERE seq <= {last}"
                   )[0][0] == last

    report = cardapctl(stack.socket_dir, "report", "--year", "2026")
    assert report.returncode == 0, report.stderr
    wait_for("segment 1 dropped", lambda: [s[5] for s in segments(stack)] == [True])
    assert rows_of(state / "audit.db", "SELECT min(seq) FROM audit")[0][0] == last + 1  # type: ignore[operator]

    code, v = verify(stack, "--full", "--checkpoints", str(tmp_path / "kept-elsewhere.jsonl"))
    assert code == 0, v
    assert (v["first_seq"], v["segments_sealed"], v["segments_dropped"]) == (
        last + 1, 1, 1)  # type: ignore[operator]
    assert v["checkpoints_before_kept"] == 1  # dropped: it is the export that answers for it
    code, offline = verify(stack, "--segments", str(export_dir), "--checkpoints",
                           str(tmp_path / "kept-elsewhere.jsonl"))
    assert code == 0, offline
    assert (offline["files"], offline["rows"], offline["checkpoints_matched"]) == (1, last, 1)
