"""The roster: organisations, operators, administrators, permitted APs, presets, migrations."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cardapd.domain import Operator, Right
from cardapd.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotAuthorized,
    NotFound,
    StoreError,
)
from cardapd.operators.roster import Hasher, Roster
from cardapd.operators.roster.model import check_id
from cardapd.operators.roster.schema import ROSTER_SCHEMA

NOW = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
FAST = Hasher(time_cost=1, memory_cost_kib=8, parallelism=1)


@pytest.fixture
def roster(tmp_path: Path) -> Iterator[Roster]:
    with Roster(tmp_path / "roster.db", hasher=FAST, clock=lambda: NOW) as r:
        r.add_organisation("city", "Sample City")
        r.add_organisation("bank", "Sample Bank")
        r.bootstrap_administrator("city", "admin1", "Admin One", [Right.LOAD])
        yield r


def admin(roster: Roster, org: str = "city", op: str = "admin1") -> Operator:
    return roster.get(org, op).to_operator()


def test_administrator_required(roster: Roster) -> None:
    with pytest.raises(NotAuthorized) as err:
        roster.add_operator("city", "op1", "Op", [Right.LOAD], by=None)
    assert err.value.reason == "ADMINISTRATOR_REQUIRED"
    change = roster.add_operator("city", "op1", "Op One", [Right.LOAD, Right.DELETE],
                                 by=admin(roster))
    assert change.actor == "city/admin1"
    assert change.operation == "roster_add_operator"
    assert change.operator is not None
    assert change.operator.enabled
    entry = change.entry(role="ops", request_id="r1")
    assert entry.actor == "ops:city/admin1"
    assert entry.detail["operator_id"] == "op1"
    assert entry.detail["rights"] == ["delete", "load"]


def test_administrator_has_administer_right(roster: Roster) -> None:
    record = roster.get("city", "admin1")
    assert record.administrator
    assert Right.ADMINISTER in record.to_operator().rights
    assert Right.ADMINISTER not in record.rights


def test_non_administrator_cannot_add_or_grant(roster: Roster) -> None:
    roster.add_operator("city", "op1", "Op", [Right.LOAD], by=admin(roster))
    roster.add_operator("city", "op2", "Op", [Right.LOAD], by=admin(roster))
    plain = roster.get("city", "op1").to_operator()
    with pytest.raises(NotAuthorized) as err:
        roster.add_operator("city", "op3", "Op", [Right.LOAD], by=plain)
    assert err.value.reason == "NOT_ADMINISTRATOR"
    with pytest.raises(NotAuthorized):
        roster.grant_password_fallback("city", "op2", reason="injured hand",
                                       expires_at=NOW + timedelta(days=30),
                                       password="correct horse battery", by=plain)
    # A forged session claiming ADMINISTER does not help: the roster is re-read.
    forged = Operator("city", "op1", frozenset(Right))
    with pytest.raises(NotAuthorized):
        roster.unlock("city", "op2", by=forged)


def test_cross_organisation_refused(roster: Roster) -> None:
    roster.bootstrap_administrator("bank", "boss", "Boss", [])
    roster.add_operator("city", "op1", "Op", [Right.LOAD], by=admin(roster))
    bank_admin = admin(roster, "bank", "boss")
    calls: list[Callable[[], object]] = [
        lambda: roster.add_operator("city", "x", "X", [], by=bank_admin),
        lambda: roster.set_enabled("city", "op1", False, by=bank_admin),
        lambda: roster.appoint_administrator("city", "op1", by=bank_admin),
        lambda: roster.unlock("city", "op1", by=bank_admin),
        lambda: roster.grant_password_fallback(
            "city", "op1", reason="r", expires_at=NOW + timedelta(days=1),
            password="correct horse battery", by=bank_admin),
    ]
    for call in calls:
        with pytest.raises(NotAuthorized) as err:
            call()
        assert err.value.reason == "OTHER_ORGANISATION"


def test_disable_enable_and_self_disable(roster: Roster) -> None:
    roster.add_operator("city", "op1", "Op", [Right.LOAD], by=admin(roster))
    change = roster.set_enabled("city", "op1", False, by=admin(roster))
    assert change.detail == {"enabled": False, "was": True}
    assert not roster.get("city", "op1").enabled
    with pytest.raises(NotAuthorized) as err:
        roster.current(Operator("city", "op1", frozenset()))
    assert err.value.reason == "OPERATOR_DISABLED"
    roster.set_enabled("city", "op1", True, by=admin(roster))
    assert roster.current(Operator("city", "op1", frozenset())).rights == {Right.LOAD}
    with pytest.raises(InvalidArgument) as bad:
        roster.set_enabled("city", "admin1", False, by=admin(roster))
    assert bad.value.reason == "SELF_DISABLE"


def test_disabled_administrator_loses_power(roster: Roster) -> None:
    roster.add_operator("city", "a2", "Second", [], by=admin(roster))
    roster.appoint_administrator("city", "a2", by=admin(roster))
    second = admin(roster, "city", "a2")
    roster.set_enabled("city", "admin1", False, by=second)
    with pytest.raises(NotAuthorized):
        roster.add_operator("city", "x", "X", [], by=Operator("city", "admin1", frozenset()))


def test_errors_for_unknown_and_duplicate(roster: Roster) -> None:
    with pytest.raises(NotFound) as err:
        roster.get("city", "ghost")
    assert err.value.reason == "OPERATOR_NOT_FOUND"
    with pytest.raises(NotFound):
        roster.add_operator("nowhere", "x", "X", [], by=admin(roster))
    with pytest.raises(AlreadyExists):
        roster.add_operator("city", "admin1", "Again", [], by=admin(roster))
    with pytest.raises(AlreadyExists):
        roster.add_organisation("city", "Again")
    with pytest.raises(InvalidArgument):
        roster.add_operator("city", "x", "X", [Right.ADMINISTER], by=admin(roster))
    with pytest.raises(InvalidArgument):
        roster.add_operator("city", "x", "", [], by=admin(roster))


def test_list_operators_per_organisation(roster: Roster) -> None:
    roster.add_operator("city", "op1", "Op", [Right.LOAD], by=admin(roster))
    roster.bootstrap_administrator("bank", "b1", "B", [])
    assert [o.operator_id for o in roster.list_operators("city")] == ["admin1", "op1"]
    assert [o.actor for o in roster.list_operators()] == ["bank/b1", "city/admin1",
                                                          "city/op1"]
    assert [o.organisation for o in roster.organisations()] == ["bank", "city"]


def test_fingers(roster: Roster) -> None:
    roster.add_operator("city", "op1", "Op", [Right.LOAD], by=admin(roster))
    roster.set_enrolled_fingers("city", "op1", ["right-index-finger", "left-thumb"],
                                by=admin(roster))
    assert roster.get("city", "op1").enrolled_fingers == ("left-thumb", "right-index-finger")
    with pytest.raises(InvalidArgument):
        roster.set_enrolled_fingers("city", "op1", ["tail"], by=admin(roster))


def test_organisation_aps_presets_and_the_default(roster: Roster) -> None:
    rules = roster.rules("city")
    assert (rules.restricted, rules.may_load("anything"), rules.presets) == (False, True, {})
    change = roster.set_organisation_aps("city", ["staff-id", "library"],
                                         ["staff-id", "old-door"], by=admin(roster))
    assert change.detail == {"restricted": True, "load": ["library", "staff-id"],
                             "delete": ["old-door", "staff-id"]}
    rules = roster.rules("city")
    assert rules.loadable == {"library", "staff-id"}
    assert rules.deletable == {"old-door", "staff-id"}
    assert rules.may_delete("old-door")
    assert not rules.may_load("old-door")  # retired: deletable, no longer loadable
    roster.set_preset("city", "new-staff", ["staff-id", "library"], by=admin(roster),
                      make_default=True)
    roster.set_preset("city", "library", ["library"], by=admin(roster))
    rules = roster.rules("city")
    assert rules.presets == {"new-staff": ("staff-id", "library"), "library": ("library",)}
    assert rules.default_preset == "new-staff"
    with pytest.raises(InvalidArgument) as err:
        roster.set_preset("city", "bad", ["gym"], by=admin(roster))
    assert err.value.reason == "PRESET_USES_AP"
    with pytest.raises(InvalidArgument) as uses:
        roster.set_organisation_aps("city", ["staff-id"], [], by=admin(roster))
    assert uses.value.reason == "PRESET_USES_AP"
    assert roster.rules("city").loadable == {"library", "staff-id"}  # rolled back
    with pytest.raises(NotFound):
        roster.set_default_preset("city", "nope", by=admin(roster))
    roster.set_default_preset("city", "library", by=admin(roster))
    assert roster.rules("city").default_preset == "library"
    roster.set_preset("city", "library", [], by=admin(roster))  # deleting clears the default
    assert roster.rules("city").default_preset == ""
    roster.unrestrict_organisation_aps("city", by=admin(roster))
    assert not roster.rules("city").restricted
    roster.set_preset("city", "any", ["gym"], by=admin(roster))  # the catalogue decides
    with pytest.raises(NotAuthorized):
        roster.set_preset("city", "x", ["gym"], by=None)
    bank = roster.bootstrap_administrator("bank", "boss", "Boss", []).operator
    assert bank is not None
    with pytest.raises(NotAuthorized) as other:
        roster.set_organisation_aps("city", [], [], by=bank.to_operator())
    assert other.value.reason == "OTHER_ORGANISATION"


def test_rights_are_changed_by_an_administrator(roster: Roster) -> None:
    roster.add_operator("city", "op1", "Op", [Right.LOAD], by=admin(roster))
    change = roster.set_rights("city", "op1", [Right.DELETE, Right.DIAGNOSE], by=admin(roster))
    assert change.detail == {"rights": ["delete", "diagnose"], "was": ["load"]}
    assert roster.current(Operator("city", "op1", frozenset())).rights == {Right.DELETE,
                                                                          Right.DIAGNOSE}
    with pytest.raises(InvalidArgument):
        roster.set_rights("city", "op1", [Right.ADMINISTER], by=admin(roster))
    with pytest.raises(NotAuthorized):
        roster.set_rights("city", "op1", [], by=roster.get("city", "op1").to_operator())


def test_no_client_can_appoint_the_first_administrator(roster: Roster) -> None:
    """Without an administrator an organisation is closed to everyone but the bootstrap."""
    for call in (lambda: roster.add_operator("bank", "x", "X", [], by=None),
                 lambda: roster.appoint_administrator("bank", "x", by=None),
                 lambda: roster.set_enrolled_fingers("bank", "x", ["left-thumb"], by=None),
                 lambda: roster.set_organisation_aps("bank", ["a"], [], by=None)):
        with pytest.raises(NotAuthorized) as err:
            call()
        assert err.value.reason == "ADMINISTRATOR_REQUIRED"
    change = roster.bootstrap_administrator("bank", "boss", "Boss", [Right.LOAD])
    assert change.operation == "roster_bootstrap_administrator"
    assert change.detail["added"] is True
    with pytest.raises(FailedPrecondition) as err:
        roster.bootstrap_administrator("bank", "other", "Other", [])
    assert err.value.reason == "ADMINISTRATOR_EXISTS"


def test_bootstrap_appoints_an_existing_operator_once_no_administrator_is_left(
        roster: Roster) -> None:
    roster.add_operator("city", "op1", "Op", [Right.DELETE], by=admin(roster))
    with pytest.raises(FailedPrecondition):
        roster.bootstrap_administrator("city", "op1", "Op", [Right.LOAD])
    roster.add_operator("city", "a2", "A2", [], by=admin(roster))
    roster.appoint_administrator("city", "a2", by=admin(roster))
    roster.remove_operator("city", "admin1", by=admin(roster, "city", "a2"))
    roster.set_enabled("city", "op1", False, by=admin(roster, "city", "a2"))
    with pytest.raises(FailedPrecondition):  # a2 is still there
        roster.bootstrap_administrator("city", "op1", "Op", [Right.LOAD])
def test_removed_operator_stays_and_its_id_is_never_reused(roster: Roster) -> None:
    roster.add_operator("city", "op1", "Op One", [Right.LOAD], by=admin(roster))
    roster.set_enrolled_fingers("city", "op1", ["left-thumb"], by=admin(roster))
    change = roster.remove_operator("city", "op1", by=admin(roster))
    assert change.operation == "roster_remove_operator"
    record = roster.get("city", "op1")
    assert record.removed
    assert record.removed_at == NOW
    assert record.removed_by == "admin1"
    assert (record.enabled, record.rights, record.display_name) == (False, frozenset(), "Op One")
    assert record.enrolled_fingers == ("left-thumb",)  # until fprintd confirms
    assert [r.operator_id for r in roster.removed_with_prints()] == ["op1"]
    roster.prints_deleted("city", "op1")
    assert roster.get("city", "op1").enrolled_fingers == ()
    assert roster.removed_with_prints() == []
    assert [o.operator_id for o in roster.list_operators("city")] == ["admin1", "op1"]
    with pytest.raises(AlreadyExists) as used:
        roster.add_operator("city", "op1", "Someone Else", [Right.LOAD], by=admin(roster))
    assert used.value.reason == "OPERATOR_ID_USED"
    for call in (lambda: roster.set_enabled("city", "op1", True, by=admin(roster)),
                 lambda: roster.appoint_administrator("city", "op1", by=admin(roster)),
                 lambda: roster.unlock("city", "op1", by=admin(roster)),
                 lambda: roster.remove_operator("city", "op1", by=admin(roster))):
        with pytest.raises(FailedPrecondition) as err:
            call()
        assert err.value.reason == "OPERATOR_REMOVED"
    with pytest.raises(NotAuthorized) as gone:
        roster.current(Operator("city", "op1", frozenset({Right.LOAD})))
    assert gone.value.reason == "OPERATOR_REMOVED"
    with pytest.raises(InvalidArgument) as self_remove:
        roster.remove_operator("city", "admin1", by=admin(roster))
    assert self_remove.value.reason == "SELF_REMOVE"


def test_operators_are_never_deleted(roster: Roster, tmp_path: Path) -> None:
    roster.add_operator("city", "op1", "Op", [], by=admin(roster))
    conn = sqlite3.connect(tmp_path / "roster.db")
    try:
        with pytest.raises(sqlite3.DatabaseError, match="never deleted"):
            conn.execute("DELETE FROM operators WHERE operator_id = 'op1'")
    finally:
        conn.close()


def test_migrations_and_newer_schema_refused(tmp_path: Path) -> None:
    path = tmp_path / "roster.db"
    Roster(path, hasher=FAST).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == ROSTER_SCHEMA.latest
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute(f"PRAGMA user_version = {ROSTER_SCHEMA.latest + 1}")
    conn.close()
    with pytest.raises(StoreError):
        Roster(path, hasher=FAST)


def test_reopen_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "roster.db"
    with Roster(path, hasher=FAST) as r:
        r.add_organisation("city", "City")
        r.bootstrap_administrator("city", "op1", "Op", [Right.DIAGNOSE])
    with Roster(path, hasher=FAST) as r:
        assert r.get("city", "op1").rights == {Right.DIAGNOSE}
        assert r.get("city", "op1").administrator


@given(st.text(max_size=80))
def test_identifiers_never_carry_separators(text: str) -> None:
    try:
        check_id("operator_id", text)
    except InvalidArgument:
        return
    assert "/" not in text
    assert ":" not in text
    assert 1 <= len(text) <= 64


def test_my_number_shaped_id_refused() -> None:
    with pytest.raises(InvalidArgument):
        check_id("operator_id", "123456789018")
