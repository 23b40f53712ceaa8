"""Databases written by the code before "One storage layer" (tests/fixtures/stores/v1, see
its README) open with today's code, are brought to the current version, and every row is
still there."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cardap.auditfiles import verify_segments
from cardapd.audit import AuditLog, verify
from cardapd.audit.archive import export_segment
from cardapd.audit.export import AuditFilter, query
from cardapd.audit.schema import AUDIT_SCHEMA
from cardapd.audit.verify import Mode
from cardapd.domain import Operator, Right
from cardapd.errors import AlreadyExists
from cardapd.loading.journal import JOURNAL_SCHEMA, Journal
from cardapd.myna.cardid import CardIdKey
from cardapd.operators.roster.passwords import Hasher
from cardapd.operators.roster.schema import ROSTER_SCHEMA
from cardapd.operators.roster.store import Roster
from cardapd.reads.revocation_store import REVOCATION_SCHEMA, IdStatus, RevocationStore
from cardapd.storage import Schema

V1 = Path(__file__).resolve().parents[1] / "fixtures" / "stores" / "v1"
APPROVED_AT = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)


@pytest.fixture
def stores(tmp_path: Path) -> Path:
    """A copy of the version-1 files (the originals stay untouched)."""
    for name in ("audit.db", "audit.head", "roster.db", "journal.db", "revocation.db"):
        shutil.copy2(V1 / name, tmp_path / name)
    return tmp_path


def _version_and_history(path: Path) -> tuple[int, list[int]]:
    """The file's version and the versions its history lists (opened immutable: no -wal or
    -shm file is made beside it)."""
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_version'").fetchone():
            history = [r[0] for r in conn.execute("SELECT version FROM schema_version "
                                                  "ORDER BY version")]
        else:
            history = []
    finally:
        conn.close()
    return version, history


def _upgraded(path: Path, schema: Schema) -> None:
    version, history = _version_and_history(path)
    assert version == schema.latest
    assert history == list(range(1, schema.latest + 1))


def test_audit_log(stores: Path) -> None:
    path = stores / "audit.db"
    with AuditLog(path) as log:
        assert log.last_seq == 6  # no anchor reset: the head file agreed
    _upgraded(path, AUDIT_SCHEMA)
    result = verify(path)
    assert (result.ok, result.rows_checked) == (True, 6)
    rows = list(query(path, AuditFilter()))
    assert [(r.operation, r.result, r.reason) for r in rows] == [
        ("daemon_started", "ok", None), ("card_inserted", "ok", None),
        ("read_user_id", "ok", None), ("load", "ok", None), ("load", "error", "CARD_FULL"),
        ("daemon_stopped", "ok", None)]
    assert rows[2].actor == "gate"
    assert rows[2].request_id == "0a1b2c3d-4e5f6a7b"
    assert rows[3].detail == {"ap_id": "org-a-staff-c", "aid": "D392F0004C0A0001",
                              "billed": True}
    assert rows[4].card_id == "4790-C4486216"
    # Version 2 (segments): the old rows are sealed into segment 1, verified, exported and
    # the export verifies offline; the marks index exists.
    with AuditLog(path) as log:
        assert log.reset is None
        seal = log.seal()
        assert seal is not None
        assert (seal.segment, seal.first_seq, seal.last_seq) == (1, 1, 7)
        log.mark_verified([1], 1)
        file, digest = export_segment(path, log.segments()[0], stores / "export", "v1-terminal")
        log.mark_exported(1, str(file), digest, 2)
    result = verify(path, mode=Mode.INCREMENTAL)
    assert (result.ok, result.segments_sealed) == (True, 1)
    offline = verify_segments(stores / "export")
    assert (offline.ok, offline.rows, offline.terminal_id) == (True, 7, "v1-terminal")
    conn = sqlite3.connect(path)
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()
    assert {"audit_segments", "audit_marks", "audit_segments_last"} <= names


def test_roster(stores: Path) -> None:
    path = stores / "roster.db"
    with Roster(path, hasher=Hasher(time_cost=1, memory_cost_kib=1024),
                clock=lambda: APPROVED_AT) as roster:
        assert [(o.organisation, o.display_name) for o in roster.organisations()] == [
            ("org-a", "Organisation A"), ("org-b", "Organisation B")]
        ops = {(r.organisation, r.operator_id): r for r in roster.list_operators()}
        assert sorted(ops) == [("org-a", "admin-1"), ("org-a", "op-1"), ("org-a", "op-2"),
                               ("org-b", "b-op")]
        admin = ops[("org-a", "admin-1")]
        assert (admin.administrator, admin.enabled, admin.enrolled_fingers) == (
            True, True, ("right-index-finger",))
        assert ops[("org-a", "op-1")].enabled is False
        assert ops[("org-a", "op-1")].rights == frozenset({Right.LOAD, Right.DELETE,
                                                           Right.DIAGNOSE})
        approval = ops[("org-a", "op-2")].password_approval
        assert approval is not None
        assert (approval.approved_by, approval.reason) == ("admin-1", "no usable fingerprint")
        _, check = roster.check_password("org-a", "op-2", "correct horse battery")
        assert check.ok
        # version 3: the APs org-a's administrator permitted become what its operators
        # may load and delete; org-b never set any: its whole catalogue
        rules = roster.rules("org-a")
        assert rules.restricted
        assert rules.loadable == rules.deletable == {"org-a-records-d", "org-a-staff-c"}
        assert rules.presets == {"new-staff": ("org-a-staff-c", "org-a-records-d")}
        assert rules.default_preset == ""
        assert not roster.rules("org-b").restricted
        assert roster.presets("org-a") == {"new-staff": ["org-a-staff-c", "org-a-records-d"]}
        # version 2: nobody was removed before; removal keeps the row and the id
        assert not any(r.removed for r in ops.values())
        admin = admin_of(roster)
        roster.remove_operator("org-a", "op-1", by=admin)
        assert roster.get("org-a", "op-1").removed
        with pytest.raises(AlreadyExists) as used:
            roster.add_operator("org-a", "op-1", "Someone else", [Right.LOAD], by=admin)
        assert used.value.reason == "OPERATOR_ID_USED"
        assert roster.check_password("org-a", "nobody", "correct horse battery")[0] is None
    _upgraded(path, ROSTER_SCHEMA)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT value FROM roster_counters WHERE name = "
                            "'password_attempts'").fetchone()[0] == 2
        with pytest.raises(sqlite3.DatabaseError, match="never deleted"):
            conn.execute("DELETE FROM operators WHERE operator_id = 'b-op'")
    finally:
        conn.close()


def admin_of(roster: Roster) -> Operator:
    """org-a's administrator as a session would carry it."""
    return roster.get("org-a", "admin-1").to_operator()


def test_journal(stores: Path) -> None:
    path = stores / "journal.db"
    assert _version_and_history(path)[0] == 0  # written before the journal had versions
    journal = Journal(path)
    try:
        assert journal.mark_interrupted() == 0  # nothing was left `started`
        rows = {r.id: r for r in journal.for_card("4790-C4486216")}
        assert {jid: (r.action, r.state, r.needs_reconcile) for jid, r in rows.items()} == {
            "j-00000001-aaaaaaaa": ("load", "done", False),
            "j-00000002-bbbbbbbb": ("load", "failed", True),
            "j-00000003-cccccccc": ("delete", "interrupted", True)}
        assert rows["j-00000002-bbbbbbbb"].outcome == "CARD_REMOVED: the card left"
        other = journal.unfinished("5110-0A0B0C0D")
        assert [(r.id, r.ap_id, r.operator) for r in other] == [
            ("j-00000004-dddddddd", "org-a-cert-a", "op-2")]
        # D50: unfinished rows of CPLC ids in clear become the card's keyed cplc- id.
        key = CardIdKey(bytes(32))
        assert journal.adopt_legacy_ids(key) == 3
        mine = key.cplc_id(bytes.fromhex("4790"), bytes.fromhex("C4486216"))
        assert {r.id for r in journal.unfinished(mine)} == {"j-00000002-bbbbbbbb",
                                                            "j-00000003-cccccccc"}
        assert journal.unfinished("4790-C4486216") == []
        assert journal.get("j-00000001-aaaaaaaa").card_id == "4790-C4486216"  # finished: kept
        assert journal.adopt_legacy_ids(key) == 0
        # Version 2: retention drops only finished rows with nothing to reconcile.
        assert journal.prune(datetime(2100, 1, 1, tzinfo=UTC)) == 1
        assert sorted(r.id for r in journal.for_card(mine)) == [
            "j-00000002-bbbbbbbb", "j-00000003-cccccccc"]
    finally:
        journal.close()
    _upgraded(path, JOURNAL_SCHEMA)


def test_revocation_store(stores: Path) -> None:
    path = stores / "revocation.db"
    assert _version_and_history(path)[0] == 0  # written before the store had versions
    store = RevocationStore(path, clock=lambda: 1795000060.0)
    try:
        feed = store.feed("org-a")
        assert feed is not None
        assert (feed.version, feed.pulled_at, feed.generated_at) == (
            3, 1795000000.0, "2026-11-20T00:00:00+09:00")
        aid = "D392F000440A0003"
        assert store.lookup("org-a", aid, "A1B2C3D4E5F6M").status is IdStatus.SUSPENDED
        assert store.lookup("org-a", aid, "Z9Y8X7W6V5U4T").status is IdStatus.ABOLISHED
        local = store.lookup("org-a", aid, "K7Q2M9X4B1C8P")
        assert (local.status, local.locally_suspended) == (IdStatus.SUSPENDED, True)
        assert store.lookup("org-a", aid, "UNLISTEDUSER1").status is IdStatus.IN_OPERATION
        assert store.lookup("org-a", aid, "A1B2C3D4E5F6M").feed_age_s == 60.0
        # Version 2: retention never drops a suspension or an abolition.
        store.prune(datetime(2100, 1, 1, tzinfo=UTC))
        assert store.lookup("org-a", aid, "A1B2C3D4E5F6M").status is IdStatus.SUSPENDED
        assert store.lookup("org-a", aid, "Z9Y8X7W6V5U4T").status is IdStatus.ABOLISHED
        assert store.lookup("org-a", aid, "K7Q2M9X4B1C8P").locally_suspended
    finally:
        store.close()
    _upgraded(path, REVOCATION_SCHEMA)


def test_the_fixtures_stay_version_1() -> None:
    """Nothing in the suite may upgrade the committed files in place."""
    assert {p.name: _version_and_history(p)[0] for p in sorted(V1.glob("*.db"))} == {
        "audit.db": 1, "journal.db": 0, "revocation.db": 0, "roster.db": 1}
