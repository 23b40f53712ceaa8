"""Operator sessions: token secrecy, connection binding, idle and absolute expiry, end."""

from __future__ import annotations

import asyncio
import gc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cardapd.domain import Operator, OperatorSessions, Right
from cardapd.errors import InvalidArgument, NotAuthorized, Unauthenticated
from cardapd.operators.roster import Hasher, Roster, SessionManager, connection_scope
from cardapd.operators.sessions import SessionInUse

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
OP = Operator("city", "op1", frozenset({Right.LOAD}))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


def manager(clock: Clock, **kw: object) -> SessionManager:
    return SessionManager(clock=clock, **kw)  # type: ignore[arg-type]


def reason(excinfo: pytest.ExceptionInfo[Unauthenticated]) -> str:
    return excinfo.value.reason


def test_implements_the_protocol() -> None:
    sessions: OperatorSessions = SessionManager()
    assert sessions is not None


def test_open_validate_end() -> None:
    clock = Clock()
    sm = manager(clock)
    opened = sm.open(OP, "conn-1")
    assert len(opened.token) >= 43  # 256 bits, base64url
    assert opened.expires_at == T0 + timedelta(hours=8)
    assert opened.idle_timeout_s == 300
    assert sm.validate(opened.token, "conn-1") == OP
    assert sm.end(opened.token)
    assert not sm.end(opened.token)
    with pytest.raises(Unauthenticated) as err:
        sm.validate(opened.token, "conn-1")
    assert reason(err) == "SESSION_UNKNOWN"


def test_wrong_connection_refused() -> None:
    sm = manager(Clock())
    token = sm.open(OP, "conn-1").token
    with pytest.raises(Unauthenticated) as err:
        sm.validate(token, "conn-2")
    assert reason(err) == "SESSION_WRONG_CONNECTION"
    with pytest.raises(Unauthenticated):
        sm.validate(token)  # no connection in context: fail closed
    assert sm.validate(token, "conn-1") == OP  # still live for its own connection


async def test_protocol_form_uses_the_connection_scope() -> None:
    sm = manager(Clock())
    token = sm.open(OP, "conn-1").token

    async def call(conn: str) -> Operator:
        with connection_scope(conn):
            await asyncio.sleep(0)
            return sm.validate(token)

    assert await call("conn-1") == OP
    with pytest.raises(Unauthenticated):
        await call("conn-2")
    results = await asyncio.gather(call("conn-1"), call("conn-2"), return_exceptions=True)
    assert results[0] == OP
    assert isinstance(results[1], Unauthenticated)


def test_idle_timeout_slides() -> None:
    clock = Clock()
    sm = manager(clock, idle_timeout=timedelta(minutes=5))
    token = sm.open(OP, "c").token
    for _ in range(10):
        clock.advance(minutes=4, seconds=59)
        sm.validate(token, "c")
    clock.advance(minutes=5)
    with pytest.raises(Unauthenticated) as err:
        sm.validate(token, "c")
    assert reason(err) == "SESSION_IDLE"
    with pytest.raises(Unauthenticated) as err:
        sm.validate(token, "c")
    assert reason(err) == "SESSION_UNKNOWN"  # dropped


def test_absolute_timeout_despite_activity() -> None:
    clock = Clock()
    sm = manager(clock, idle_timeout=timedelta(minutes=5), absolute_timeout=timedelta(hours=1))
    token = sm.open(OP, "c").token
    for _ in range(14):
        clock.advance(minutes=4)
        sm.validate(token, "c")
    clock.advance(minutes=4)  # 60 minutes
    with pytest.raises(Unauthenticated) as err:
        sm.validate(token, "c")
    assert reason(err) == "SESSION_EXPIRED"


def test_token_not_stored_in_clear() -> None:
    sm = manager(Clock())
    token = sm.open(OP, "c").token
    gc.collect()
    assert all(token not in repr(s) for s in sm.sessions())
    assert token.encode() not in repr(vars(sm) if hasattr(sm, "__dict__") else sm).encode()
    assert all(isinstance(k, bytes) and len(k) == 32 for k in sm._sessions)
    assert token not in [str(k) for k in sm._sessions]


def test_another_operator_replaces_a_live_session_only_when_asked() -> None:
    sm = manager(Clock())
    first = sm.open(OP, "c").token
    op2 = Operator("city", "op2", frozenset())
    with pytest.raises(SessionInUse) as err:
        sm.open(op2, "c")
    assert (err.value.reason, err.value.holder) == ("SESSION_IN_USE", OP)
    assert "op1" not in err.value.message  # the caller is not told who holds it
    with pytest.raises(SessionInUse):
        sm.check_replace(op2, "c", replace=False)
    sm.check_replace(op2, "c", replace=True)
    sm.check_replace(OP, "c", replace=False)  # one's own session: always replaceable
    assert sm.validate(first, "c") == OP  # the refusal changed nothing
    second = sm.open(op2, "c", replace=True)
    assert second.replaced == OP
    with pytest.raises(Unauthenticated):
        sm.validate(first, "c")
    assert sm.validate(second.token, "c").operator_id == "op2"
    other = sm.open(OP, "d").token
    assert sm.end_connection("c") == 1
    assert sm.validate(other, "d") == OP


def test_the_same_operator_replaces_their_own_session() -> None:
    sm = manager(Clock())
    first = sm.open(OP, "c")
    again = sm.open(OP, "c")  # the kiosk UI crashed and the operator logs in again
    assert first.replaced is None
    assert again.replaced == OP
    with pytest.raises(Unauthenticated):
        sm.validate(first.token, "c")
    assert sm.holder("c") == OP


def test_an_idle_session_blocks_nobody() -> None:
    clock = Clock()
    sm = manager(clock)
    sm.open(OP, "c")
    clock.advance(minutes=6)
    assert sm.holder("c") is None
    assert sm.open(Operator("city", "op2", frozenset()), "c").replaced is None


def test_current_rereads_the_roster() -> None:
    disabled: set[str] = set()

    def current(op: Operator) -> Operator:
        if op.operator_id in disabled:
            raise NotAuthorized("disabled", reason="OPERATOR_DISABLED")
        return Operator(op.organisation, op.operator_id, frozenset({Right.DIAGNOSE}))

    sm = manager(Clock(), current=current)
    token = sm.open(OP, "c").token
    assert sm.validate(token, "c").rights == {Right.DIAGNOSE}
    disabled.add("op1")
    with pytest.raises(NotAuthorized):
        sm.validate(token, "c")
    with pytest.raises(Unauthenticated):  # the session was ended
        sm.validate(token, "c")


def test_bad_configuration_and_sweep() -> None:
    with pytest.raises(InvalidArgument):
        SessionManager(idle_timeout=timedelta(hours=9))
    with pytest.raises(InvalidArgument):
        SessionManager().open(OP, "")
    clock = Clock()
    sm = manager(clock)
    sm.open(OP, "a")
    sm.open(OP, "b")
    clock.advance(minutes=6)
    assert sm.sweep() == 0


@given(st.text(max_size=64))
def test_random_tokens_never_validate(guess: str) -> None:
    sm = SessionManager(clock=lambda: T0)
    sm.open(OP, "c")
    with pytest.raises(Unauthenticated):
        sm.validate(guess, "c")


def test_with_the_roster(tmp_path: Path) -> None:
    fast = Hasher(time_cost=1, memory_cost_kib=8, parallelism=1)
    with Roster(tmp_path / "roster.db", hasher=fast, clock=lambda: T0) as roster:
        roster.add_organisation("city", "City")
        roster.bootstrap_administrator("city", "boss", "Boss", [])
        boss = roster.get("city", "boss").to_operator()
        roster.add_operator("city", "op1", "Op", [Right.LOAD], by=boss)
        sm = SessionManager(clock=lambda: T0, current=roster.current)
        token = sm.open(roster.get("city", "op1").to_operator(), "k1").token
        assert sm.validate(token, "k1").rights == {Right.LOAD}
        roster.set_enabled("city", "op1", False, by=boss)
        with pytest.raises(NotAuthorized) as err:
            sm.validate(token, "k1")
        assert err.value.reason == "OPERATOR_DISABLED"
        assert roster.check_password("city", "ghost", "whatever whatever")[0] is None
