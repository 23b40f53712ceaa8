"""Operator sessions: bearer tokens bound to the kiosk connection, with idle and absolute expiry.

`SessionManager` implements `cardapd.loading.operators.OperatorSessions`. A token is 256
random bits (`secrets.token_urlsafe(32)`), handed to the kiosk once; only its SHA-256 is
kept, so a memory dump of the table cannot be replayed. A token is valid only on the
connection it was opened on: `validate(token, connection_id)` compares the two, and the
protocol's one-argument `validate(token)` takes the connection from `current_connection`,
a context variable the API layer sets per call (`with connection_scope(conn_id): ...`);
with no connection known the token is refused (fail closed). A session ends on the
idle timeout (each successful validation restarts it), the absolute timeout, `end`,
`end_connection` (the kiosk disconnected) or a new login on the same connection: one
session per connection. A login of the operator who holds the connection's live session
replaces it (a crashed kiosk UI must not lock the counter out); a login of **another**
operator fails with FAILED_PRECONDITION `SESSION_IN_USE` unless it asks to replace (the
request's `replace_session`), and then says whose session it ended. When given
`current`, each validation re-reads the operator from the roster, so a disabled or removed
operator's session stops at once and rights changes apply to the next call.
The clock is wall time (UTC) and injectable; expiry is inclusive of the limit.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from cardapd.domain import Operator
from cardapd.errors import (
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    Unauthenticated,
)

DEFAULT_IDLE = timedelta(minutes=5)
DEFAULT_ABSOLUTE = timedelta(hours=8)
MAX_SESSIONS = 1024

current_connection: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "cardapd_current_connection", default=None)
"""The kiosk connection of the call being served (set by the API layer)."""


@contextlib.contextmanager
def connection_scope(connection_id: str) -> Iterator[None]:
    """Run the body with `current_connection` set to `connection_id`."""
    token = current_connection.set(connection_id)
    try:
        yield
    finally:
        current_connection.reset(token)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class Session:
    """One live session (no token inside: only its hash is the key)."""

    operator: Operator
    connection_id: str
    opened_at: datetime
    last_used: datetime
    expires_at: datetime
    idle_timeout: timedelta

    @property
    def idle_deadline(self) -> datetime:
        """When the session ends unless used before."""
        return min(self.last_used + self.idle_timeout, self.expires_at)


@dataclass(frozen=True, slots=True)
class OpenedSession:
    """What `open` hands the kiosk (cardap.v1.OperatorSession): the token, once; and the
    operator whose live session on the connection it replaced (None: there was none)."""

    token: str
    operator: Operator
    expires_at: datetime
    idle_timeout_s: int
    replaced: Operator | None = None


class SessionInUse(FailedPrecondition):
    """Another operator's session is live on this connection and the login did not ask to
    replace it; `holder` is that operator (for the audit row, never for the caller)."""

    reason = "SESSION_IN_USE"

    def __init__(self, holder: Operator) -> None:
        super().__init__("another operator's session is open on this socket: they log out "
                         "first, or the login asks to replace it (replace_session)")
        self.holder = holder


def _same(a: Operator, b: Operator) -> bool:
    return (a.organisation, a.operator_id) == (b.organisation, b.operator_id)


class SessionManager:
    """In-memory session table keyed by token hash; thread-safe."""

    def __init__(self, *, idle_timeout: timedelta = DEFAULT_IDLE,
                 absolute_timeout: timedelta = DEFAULT_ABSOLUTE,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 current: Callable[[Operator], Operator] | None = None,
                 max_sessions: int = MAX_SESSIONS) -> None:
        if idle_timeout <= timedelta(0) or absolute_timeout < idle_timeout:
            raise InvalidArgument("session timeouts: 0 < idle <= absolute",
                                  reason="INVALID_TIMEOUTS")
        self.idle_timeout = idle_timeout
        self.absolute_timeout = absolute_timeout
        self._clock = clock
        self._current = current
        self._max = max_sessions
        self._lock = threading.Lock()
        self._sessions: dict[bytes, Session] = {}

    def reconfigure(self, *, idle_timeout: timedelta, absolute_timeout: timedelta) -> None:
        """A reloaded configuration (D19): new sessions get these; open ones keep theirs."""
        self.idle_timeout = idle_timeout
        self.absolute_timeout = absolute_timeout

    def _now(self, now: datetime | None) -> datetime:
        when = now if now is not None else self._clock()
        if when.tzinfo is None:  # (the roster's check_time; sessions stand on their own)
            raise InvalidArgument("now must be a timezone-aware time", reason="INVALID_TIME",
                                  metadata={"field": "now"})
        return when.astimezone(UTC)

    def holder(self, connection_id: str, now: datetime | None = None) -> Operator | None:
        """The operator of the live session on `connection_id`, or None (no refresh)."""
        when = self._now(now)
        with self._lock:
            self._sweep(when)
            return next((s.operator for s in self._sessions.values()
                         if s.connection_id == connection_id and when < s.expires_at), None)

    def check_replace(self, operator: Operator, connection_id: str, *, replace: bool,
                      now: datetime | None = None) -> None:
        """SessionInUse when a login of `operator` would end another operator's live
        session on `connection_id` without `replace` (asked before the finger or password,
        so that nobody scans a finger for a refusal; `open` checks again)."""
        holder = self.holder(connection_id, now)
        if holder is not None and not replace and not _same(holder, operator):
            raise SessionInUse(holder)

    def open(self, operator: Operator, connection_id: str, now: datetime | None = None, *,
             replace: bool = False, absolute: timedelta | None = None) -> OpenedSession:
        """Start a session for an authenticated operator on `connection_id`, ending the live
        one there: the operator's own, or another's when `replace` (SessionInUse
        otherwise). `absolute` shortens the session's maximum length."""
        if not connection_id:
            raise InvalidArgument("a session needs the kiosk connection id",
                                  reason="NO_CONNECTION")
        when = self._now(now)
        token = secrets.token_urlsafe(32)
        longest = self.absolute_timeout if absolute is None else min(absolute,
                                                                      self.absolute_timeout)
        session = Session(operator, connection_id, when, when, when + longest,
                          self.idle_timeout)
        replaced: Operator | None = None
        with self._lock:
            self._sweep(when)
            mine = [k for k, s in self._sessions.items()
                    if s.connection_id == connection_id and when < s.expires_at]
            for key in mine:
                holder = self._sessions[key].operator
                if not replace and not _same(holder, operator):
                    raise SessionInUse(holder)
                replaced = holder
            for key in [k for k, s in self._sessions.items()
                        if s.connection_id == connection_id]:
                del self._sessions[key]  # one operator per connection
            if len(self._sessions) >= self._max:
                raise ResourceExhausted("too many operator sessions",
                                        reason="TOO_MANY_SESSIONS")
            self._sessions[_digest(token)] = session
        return OpenedSession(token, operator, session.expires_at,
                             int(self.idle_timeout.total_seconds()), replaced)

    def validate(self, token: str, connection_id: str | None = None,
                 now: datetime | None = None) -> Operator:
        """The token's operator; Unauthenticated unless live and on this connection."""
        conn = connection_id if connection_id is not None else current_connection.get()
        when = self._now(now)
        key = _digest(token) if token else b""
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                raise Unauthenticated("no such operator session; log in again",
                                      reason="SESSION_UNKNOWN")
            if conn is None or not hmac.compare_digest(conn.encode(),
                                                       session.connection_id.encode()):
                raise Unauthenticated("the session belongs to another kiosk connection",
                                      reason="SESSION_WRONG_CONNECTION")
            if when >= session.expires_at:
                del self._sessions[key]
                raise Unauthenticated("the operator session has ended (maximum length); "
                                      "log in again", reason="SESSION_EXPIRED")
            if when >= session.idle_deadline:
                del self._sessions[key]
                raise Unauthenticated("the operator session ended after inactivity; "
                                      "log in again", reason="SESSION_IDLE")
        operator = session.operator
        if self._current is not None:
            try:
                operator = self._current(operator)
            except Exception:
                self.end(token)
                raise
        with self._lock:
            if key in self._sessions:
                self._sessions[key] = replace(session, last_used=max(when, session.last_used),
                                              operator=operator)
        return operator

    def end(self, token: str) -> bool:
        """End the session; True when there was one."""
        with self._lock:
            return self._sessions.pop(_digest(token), None) is not None

    def end_connection(self, connection_id: str) -> int:
        """End every session of a closed connection; returns how many."""
        with self._lock:
            keys = [k for k, s in self._sessions.items() if s.connection_id == connection_id]
            for key in keys:
                del self._sessions[key]
        return len(keys)

    def _sweep(self, now: datetime) -> None:
        """Drop expired sessions (caller holds the lock)."""
        for key in [k for k, s in self._sessions.items() if now >= s.idle_deadline]:
            del self._sessions[key]

    def sweep(self, now: datetime | None = None) -> int:
        """Drop expired sessions; returns how many are left."""
        with self._lock:
            self._sweep(self._now(now))
            return len(self._sessions)

    def sessions(self) -> list[Session]:
        """A snapshot of the live sessions (for status pages; no tokens)."""
        with self._lock:
            return list(self._sessions.values())
