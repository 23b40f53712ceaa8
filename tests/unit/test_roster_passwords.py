"""Password fallback: approval, expiry, lockout after 5 wrong tries, unlock, hashing, secrecy."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardapd.domain import Operator, Right
from cardapd.errors import CardapError, InvalidArgument, NotAuthorized, Unauthenticated
from cardapd.operators.roster import MAX_TRIES, Hasher, PasswordOutcome, Roster, check_policy
from cardapd.operators.roster.model import OperatorRecord, PasswordApproval
from cardapd.operators.roster.passwords import (
    REFUSED_MESSAGE,
    LoginRefused,
    PasswordCheck,
    check_password,
)

NOW = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
FAST = Hasher(time_cost=1, memory_cost_kib=8, parallelism=1)
SECRET = "Correct-Horse-7-Battery"


@pytest.fixture
def roster(tmp_path: Path) -> Iterator[Roster]:
    with Roster(tmp_path / "roster.db", hasher=FAST, clock=lambda: NOW) as r:
        r.add_organisation("city", "Sample City")
        r.bootstrap_administrator("city", "admin1", "Admin", [])
        r.add_operator("city", "op1", "Op One", [Right.LOAD], by=admin(r))
        yield r


def admin(roster: Roster) -> Operator:
    return roster.get("city", "admin1").to_operator()


def refused(check: PasswordCheck, precise: str) -> None:
    """The caller sees LOGIN_REFUSED with one message and no metadata; the precise reason
    stays for the audit row."""
    with pytest.raises(LoginRefused) as err:
        check.raise_for_outcome()
    assert isinstance(err.value, Unauthenticated)
    assert (err.value.reason, err.value.message, err.value.metadata) == (
        "LOGIN_REFUSED", REFUSED_MESSAGE, {})
    assert err.value.precise == check.reason == precise


def grant(roster: Roster, days: int = 30) -> None:
    roster.grant_password_fallback("city", "op1", reason="burn scar on both hands",
                                   expires_at=NOW + timedelta(days=days), password=SECRET,
                                   by=admin(roster))


def test_no_approval_refused(roster: Roster) -> None:
    _, check = roster.check_password("city", "op1", SECRET)
    assert check.outcome is PasswordOutcome.NO_APPROVAL
    refused(check, "PASSWORD_NOT_APPROVED")


def test_grant_records_approval_and_login_works(roster: Roster) -> None:
    grant(roster)
    record = roster.get("city", "op1")
    assert record.password_approval == PasswordApproval(
        "admin1", "burn scar on both hands", NOW, NOW + timedelta(days=30))
    record, check = roster.check_password("city", "op1", SECRET)
    assert check.ok
    assert check.tries_left == MAX_TRIES
    check.raise_for_outcome()
    assert record.to_operator().rights == {Right.LOAD}


def test_grant_validation(roster: Roster) -> None:
    kw = {"reason": "r", "password": SECRET, "by": admin(roster)}
    with pytest.raises(InvalidArgument) as err:
        roster.grant_password_fallback("city", "op1", expires_at=NOW, **kw)  # type: ignore[arg-type]
    assert err.value.reason == "EXPIRY_IN_PAST"
    with pytest.raises(InvalidArgument) as err:
        roster.grant_password_fallback("city", "op1", expires_at=NOW + timedelta(days=400),
                                       **kw)  # type: ignore[arg-type]
    assert err.value.reason == "EXPIRY_TOO_FAR"
    with pytest.raises(InvalidArgument) as err:
        roster.grant_password_fallback("city", "op1", reason=" ", password=SECRET,
                                       expires_at=NOW + timedelta(days=1), by=admin(roster))
    assert err.value.reason == "MISSING_FIELD"
    with pytest.raises(InvalidArgument):
        roster.grant_password_fallback("city", "op1", reason="r", password=SECRET,
                                       expires_at=datetime(2026, 5, 1), by=admin(roster))
    with pytest.raises(NotAuthorized):
        roster.grant_password_fallback("city", "op1", reason="r", password=SECRET,
                                       expires_at=NOW + timedelta(days=1), by=None)
    with pytest.raises(NotAuthorized) as self_err:
        roster.grant_password_fallback("city", "admin1", reason="r", password=SECRET,
                                       expires_at=NOW + timedelta(days=1), by=admin(roster))
    assert self_err.value.reason == "SELF_APPROVAL"


def test_expired_approval_refused(roster: Roster) -> None:
    grant(roster, days=1)
    _, check = roster.check_password("city", "op1", SECRET, now=NOW + timedelta(days=1))
    assert check.outcome is PasswordOutcome.EXPIRED
    refused(check, "PASSWORD_APPROVAL_EXPIRED")


def test_five_wrong_lock_then_unlock(roster: Roster) -> None:
    grant(roster)
    for left in range(MAX_TRIES - 1, 0, -1):
        _, check = roster.check_password("city", "op1", "wrong password!!")
        assert check.outcome is PasswordOutcome.WRONG
        assert check.tries_left == left
        refused(check, "PASSWORD_WRONG")
    record, check = roster.check_password("city", "op1", "wrong password!!")
    assert check.outcome is PasswordOutcome.LOCKED
    assert record.locked
    assert record.failed_password_tries == MAX_TRIES
    _, check = roster.check_password("city", "op1", SECRET)  # right, but locked
    assert check.outcome is PasswordOutcome.LOCKED
    refused(check, "OPERATOR_LOCKED")
    change = roster.unlock("city", "op1", by=admin(roster))
    assert change.detail == {"was_locked": True, "failed_password_tries": MAX_TRIES}
    _, check = roster.check_password("city", "op1", SECRET)
    assert check.ok


def test_success_resets_the_count(roster: Roster) -> None:
    grant(roster)
    for _ in range(MAX_TRIES - 1):
        roster.check_password("city", "op1", "wrong password!!")
    assert roster.check_password("city", "op1", SECRET)[1].ok
    record, check = roster.check_password("city", "op1", "wrong password!!")
    assert check.tries_left == MAX_TRIES - 1
    assert record.failed_password_tries == 1


def test_disabled_operator_refused(roster: Roster) -> None:
    grant(roster)
    roster.set_enabled("city", "op1", False, by=admin(roster))
    _, check = roster.check_password("city", "op1", SECRET)
    assert check.outcome is PasswordOutcome.DISABLED
    refused(check, "OPERATOR_DISABLED")


def test_unknown_and_removed_operators_refused_alike(roster: Roster) -> None:
    record, check = roster.check_password("city", "ghost", SECRET)
    assert record is None
    refused(check, "OPERATOR_NOT_FOUND")
    grant(roster)
    roster.remove_operator("city", "op1", by=admin(roster))
    _, check = roster.check_password("city", "op1", SECRET)
    refused(check, "OPERATOR_REMOVED")


def test_every_attempt_costs_one_verification_and_one_write(
        roster: Roster, tmp_path: Path) -> None:
    """The work does not depend on who exists: one argon2 verification on every path, and
    one durable write (the attempt counter) even for an unknown operator."""
    grant(roster)
    calls: list[str] = []
    real_verify = roster.hasher.verify

    def counting(encoded: str, password: str) -> bool:
        calls.append("verify")
        return real_verify(encoded, password)

    roster.hasher.verify = counting  # type: ignore[method-assign]
    roster.set_enabled("city", "admin1", True, by=admin(roster))
    cases = [("city", "ghost"), ("city", "op1"), ("city", "admin1"), ("nowhere", "x")]
    for org, op in cases:
        before = counter(tmp_path)
        calls.clear()
        roster.check_password(org, op, "wrong password!!")
        assert calls == ["verify"], (org, op)
        assert counter(tmp_path) == before + 1


def counter(tmp_path: Path) -> int:
    conn = sqlite3.connect(tmp_path / "roster.db")
    try:
        return int(conn.execute("SELECT value FROM roster_counters WHERE name = "
                                "'password_attempts'").fetchone()[0])
    finally:
        conn.close()


def test_argon2id_parameters_in_hash() -> None:
    encoded = Hasher().hash(SECRET)
    assert encoded.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert Hasher().verify(encoded, SECRET)
    assert not Hasher().verify(encoded, SECRET + "x")


def test_weak_hash_is_upgraded(tmp_path: Path) -> None:
    with Roster(tmp_path / "r.db", hasher=FAST, clock=lambda: NOW) as r:
        r.add_organisation("city", "City")
        r.bootstrap_administrator("city", "admin1", "A", [])
        r.add_operator("city", "op1", "Op", [], by=admin(r))
        grant(r)
    strong = Hasher(time_cost=2, memory_cost_kib=16, parallelism=1)
    with Roster(tmp_path / "r.db", hasher=strong, clock=lambda: NOW) as r:
        assert r.check_password("city", "op1", SECRET)[1].rehash
        assert not r.check_password("city", "op1", SECRET)[1].rehash


def test_password_never_in_logs_records_or_file(roster: Roster, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    change = roster.grant_password_fallback("city", "op1", reason="injury",
                                            expires_at=NOW + timedelta(days=3),
                                            password=SECRET, by=admin(roster))
    texts = [repr(change), change.entry().detail_json, repr(roster.get("city", "op1"))]
    for attempt in ("nope nope nope", SECRET, "nope nope nope"):
        record, check = roster.check_password("city", "op1", attempt)
        texts += [repr(record), repr(check), str(check.detail())]
        try:
            check.raise_for_outcome()
        except CardapError as exc:
            texts += [exc.message, str(exc.metadata)]
    with pytest.raises(InvalidArgument) as weak:
        roster.grant_password_fallback("city", "op1", reason="x", password="short1",
                                       expires_at=NOW + timedelta(days=3), by=admin(roster))
    texts.append(weak.value.message)
    blob = "\n".join(texts) + caplog.text
    for secret in (SECRET, "nope nope nope", "short1"):
        assert secret not in blob
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("roster.db*"))
    assert SECRET.encode() not in raw


@pytest.mark.parametrize("password", ["short", "aaaaaaaaaaaaaaaa", "123456789012345",
                                      "my-op1-password-x", "abc\x00defghijklmn"])
def test_policy_refuses(password: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        check_policy(password, organisation="city", operator_id="op1")
    assert err.value.reason == "PASSWORD_POLICY"


@settings(max_examples=30, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_check_password_is_total(password: str) -> None:
    approval = PasswordApproval("a", "r", NOW, NOW + timedelta(days=1))
    record = OperatorRecord("city", "op1", "Op", frozenset(), password_approval=approval)
    check = check_password(record, FAST.hash(SECRET), password, NOW, FAST)
    assert check.ok == (password == SECRET)
    assert check.outcome in (PasswordOutcome.OK, PasswordOutcome.WRONG)
