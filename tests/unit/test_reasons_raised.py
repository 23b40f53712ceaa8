"""Reasons raised by the daemon's parts driven directly, with real stores: each test makes
the part refuse and checks the reason and the gRPC code a client would get
(`cardapd.api.status.code_for`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from smartcard import scard

from cardapd.api.status import code_for
from cardapd.audit import AuditEntry, AuditLog, Durability
from cardapd.audit.report import period
from cardapd.domain import Operator, Right
from cardapd.errors import CardapError
from cardapd.myna.typec import parse_type_c
from cardapd.operators.biometric import check_finger, check_user
from cardapd.operators.bootstrap import write_secret
from cardapd.operators.roster import Hasher, Roster, SessionManager
from cardapd.transport.pcsc import error_for

NOW = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
FAST = Hasher(time_cost=1, memory_cost_kib=8, parallelism=1)


def refused(exc: pytest.ExceptionInfo[CardapError]) -> tuple[str, grpc.StatusCode]:
    """What a client sees: the reason and the gRPC code."""
    return exc.value.reason, code_for(exc.value)


BAD_ARG = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def roster(tmp_path: Path) -> Iterator[Roster]:
    with Roster(tmp_path / "roster.db", hasher=FAST, clock=lambda: NOW) as r:
        r.add_organisation("city", "Sample City")
        r.bootstrap_administrator("city", "admin1", "Admin One", [Right.LOAD])
        yield r


def admin(roster: Roster) -> Operator:
    return roster.get("city", "admin1").to_operator()


# -- the roster ---------------------------------------------------------------------------


@pytest.mark.parametrize("operator_id", ["", "a/b", "org:op", "x" * 65, "123456789018"])
def test_roster_refuses_a_bad_identifier(roster: Roster, operator_id: str) -> None:
    with pytest.raises(CardapError) as err:
        roster.add_operator("city", operator_id, "Op", [], by=admin(roster))
    assert refused(err) == ("INVALID_IDENTIFIER", BAD_ARG)
    assert err.value.metadata == {"field": "operator_id"}
    assert [o.operator_id for o in roster.list_operators("city")] == ["admin1"]


@pytest.mark.parametrize("name", ["x" * 257, "tab\there", "my number 123456789018"])
def test_roster_refuses_a_bad_text(roster: Roster, name: str) -> None:
    with pytest.raises(CardapError) as err:
        roster.add_operator("city", "op1", name, [], by=admin(roster))
    assert refused(err) == ("INVALID_TEXT", BAD_ARG)
    assert err.value.metadata == {"field": "display name"}


def test_roster_refuses_a_naive_time(roster: Roster) -> None:
    with pytest.raises(CardapError) as err:
        roster.add_operator("city", "op1", "Op", [], by=admin(roster),
                            now=datetime(2026, 4, 1, 9, 0))  # naive: the point
    assert refused(err) == ("INVALID_TIME", BAD_ARG)
    assert err.value.metadata == {"field": "now"}


def test_roster_refuses_the_administer_right_and_unknown_rights(roster: Roster) -> None:
    with pytest.raises(CardapError) as err:
        roster.add_operator("city", "op1", "Op", [Right.ADMINISTER], by=admin(roster))
    assert refused(err) == ("INVALID_RIGHT", BAD_ARG)
    assert err.value.metadata == {"right": "administer"}
    with pytest.raises(CardapError) as unknown:
        roster.add_operator("city", "op1", "Op", ["load"], by=admin(roster))  # type: ignore[list-item]
    assert refused(unknown) == ("INVALID_RIGHT", BAD_ARG)


def test_roster_existing_and_missing(roster: Roster) -> None:
    with pytest.raises(CardapError) as op:
        roster.add_operator("city", "admin1", "Again", [], by=admin(roster))
    assert refused(op) == ("OPERATOR_EXISTS", grpc.StatusCode.ALREADY_EXISTS)
    with pytest.raises(CardapError) as org:
        roster.add_organisation("city", "Again")
    assert refused(org) == ("ORGANISATION_EXISTS", grpc.StatusCode.ALREADY_EXISTS)
    with pytest.raises(CardapError) as nowhere:
        roster.add_operator("nowhere", "x", "X", [], by=admin(roster))
    assert refused(nowhere) == ("ORGANISATION_NOT_FOUND", grpc.StatusCode.NOT_FOUND)
    assert nowhere.value.metadata == {"organisation": "nowhere"}
    assert [o.organisation for o in roster.organisations()] == ["city"]


def test_roster_refuses_unknown_fingers(roster: Roster) -> None:
    with pytest.raises(CardapError) as err:
        roster.set_enrolled_fingers("city", "admin1", ["right-index-finger", "tail"],
                                    by=admin(roster))
    assert refused(err) == ("INVALID_FINGER", BAD_ARG)
    assert err.value.metadata == {"fingers": "tail"}
    assert roster.get("city", "admin1").enrolled_fingers == ()


def test_preset_names_each_ap_once_and_an_empty_one_is_no_default(roster: Roster) -> None:
    with pytest.raises(CardapError) as twice:
        roster.set_preset("city", "staff", ["staff-id", "staff-id"], by=admin(roster))
    assert refused(twice) == ("PRESET_DUPLICATE", BAD_ARG)
    with pytest.raises(CardapError) as empty:
        roster.set_preset("city", "staff", [], by=admin(roster), make_default=True)
    assert refused(empty) == ("PRESET_EMPTY", BAD_ARG)
    assert roster.rules("city").presets == {}


# -- operator sessions and fingerprint names ----------------------------------------------


def test_session_manager_refusals() -> None:
    with pytest.raises(CardapError) as timeouts:
        SessionManager(idle_timeout=timedelta(hours=9), absolute_timeout=timedelta(hours=8))
    assert refused(timeouts) == ("INVALID_TIMEOUTS", BAD_ARG)
    sm = SessionManager(clock=lambda: NOW, max_sessions=2)
    op = Operator("city", "op1", frozenset({Right.LOAD}))
    with pytest.raises(CardapError) as nowhere:
        sm.open(op, "")
    assert refused(nowhere) == ("NO_CONNECTION", BAD_ARG)
    with pytest.raises(CardapError) as naive:
        sm.open(op, "c1", datetime(2026, 4, 1, 9, 0))  # naive: the point
    assert refused(naive) == ("INVALID_TIME", BAD_ARG)
    sm.open(op, "c1")
    sm.open(Operator("city", "op2", frozenset()), "c2")
    with pytest.raises(CardapError) as full:
        sm.open(Operator("city", "op3", frozenset()), "c3")
    assert refused(full) == ("TOO_MANY_SESSIONS", grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert len(sm.sessions()) == 2


@pytest.mark.parametrize("user", ["../etc", "Op 1", "", "a" * 65])
def test_unsafe_fprintd_user_is_invalid_operator(user: str) -> None:
    with pytest.raises(CardapError) as err:
        check_user(user)
    assert refused(err) == ("INVALID_OPERATOR", BAD_ARG)


def test_unknown_finger_is_invalid_finger() -> None:
    with pytest.raises(CardapError) as err:
        check_finger("left-toe")
    assert refused(err) == ("INVALID_FINGER", BAD_ARG)
    assert err.value.metadata == {"finger": "left-toe"}
    with pytest.raises(CardapError):
        check_finger("any")  # only where any finger is allowed
    assert check_finger("any", allow_any=True) == "any"


# -- the first administrator, the yearly report, the audit log ---------------------------


def test_a_second_bootstrap_while_the_first_runs(tmp_path: Path) -> None:
    path, _ = write_secret(tmp_path, now=1000.0)
    with pytest.raises(CardapError) as err:
        write_secret(tmp_path, now=1060.0)
    assert refused(err) == ("BOOTSTRAP_IN_PROGRESS", grpc.StatusCode.FAILED_PRECONDITION)
    assert path.exists()


@pytest.mark.parametrize("year", [1999, 9999, -1])
def test_report_year_out_of_range(year: int) -> None:
    with pytest.raises(CardapError) as err:
        period(year)
    assert refused(err) == ("INVALID_YEAR", BAD_ARG)


def test_a_cut_audit_log_records_an_anchor_mismatch(tmp_path: Path) -> None:
    """Rows cut off the end behind the daemon's back: at the next open the log records
    an anchor reset, a failed row whose reason is AUDIT_ANCHOR_MISMATCH."""
    db = tmp_path / "audit.db"
    with AuditLog(db) as log:
        for i in range(5):
            log.append(AuditEntry("read_user_id", "ok", actor=f"op{i}"), Durability.POWER)
    raw = sqlite3.connect(db, isolation_level=None)
    raw.execute("DROP TRIGGER audit_no_delete")
    raw.execute("DELETE FROM audit WHERE seq > 3")
    raw.close()
    with AuditLog(db) as log:
        assert log.reset is not None
    rows = sqlite3.connect(db).execute(
        "SELECT seq, result, reason, actor FROM audit ORDER BY seq").fetchall()
    assert rows[-1][1:] == ("failed", "AUDIT_ANCHOR_MISMATCH", "system")
    assert len(rows) == 4


# -- cards and PC/SC ----------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\x00" * 40, bytes(range(60))])
def test_type_c_data_off_its_layout_is_card_data_invalid(data: bytes) -> None:
    with pytest.raises(CardapError) as err:
        parse_type_c(data)
    assert refused(err) == ("CARD_DATA_INVALID", grpc.StatusCode.FAILED_PRECONDITION)


def test_pcsc_codes_the_daemon_names() -> None:
    """PC/SC's own return codes (pyscard's constants, as pcscd returns them)."""
    reset = error_for(scard.SCARD_W_RESET_CARD, "transmit")
    assert (reset.reason, code_for(reset)) == ("CARD_RESET", grpc.StatusCode.ABORTED)
    other = error_for(scard.SCARD_E_NO_MEMORY, "connect")
    assert (other.reason, code_for(other)) == ("READER_UNAVAILABLE",
                                               grpc.StatusCode.UNAVAILABLE)
    assert "connect" in other.message
