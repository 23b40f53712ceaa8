"""Operator login (fingerprint through fprintd, or approved password) and sessions.

`OperatorService.login` is an async generator: it yields `Prompt`s for the kiosk and
finally an `OpenedSession`; every attempt, successful or not, is one durable audit row
(`operator_login`). Sessions are bound to the socket role the login came in on (gRPC
over a Unix socket gives no per-connection identity; see docs/decisions.md, D18).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from cardapd.domain import AuditSink, OpContext, Operator
from cardapd.errors import (
    Cancelled,
    CardapError,
    NotAuthorized,
    ServiceUnavailable,
)
from cardapd.operators.biometric import ANY_FINGER, BiometricBackend, authenticate
from cardapd.operators.prompts import Prompt
from cardapd.operators.roster import OpenedSession, OperatorRecord, Roster, SessionManager
from cardapd.operators.roster.model import check_id
from cardapd.telemetry.metrics import Metrics

Method = Literal["fingerprint", "password"]
ENTER_PASSWORD = "ENTER_PASSWORD"  # noqa: S105 - a prompt code
MAX_TIMEOUT_S = 300.0
DEVICE_CHECK_S = 300.0  # device ok: check it is still there this often (never claimed)
DEVICE_RETRY_S = 60.0  # device missing or fprintd unreachable: check again this often


@dataclass(frozen=True, slots=True)
class LoginStart:
    """The kiosk's first message: who logs in, how, and how long to wait for a finger."""

    organisation: str
    operator_id: str
    method: Method
    timeout_s: float = 0.0


@dataclass(frozen=True, slots=True)
class PasswordPrompt:
    """Ask the kiosk for the password (the next client message must carry it)."""

    code: str = ENTER_PASSWORD


LoginEvent = Prompt | PasswordPrompt | OpenedSession
NextStep = Callable[[float], Awaitable[str]]
"""Waits at most the given seconds for the client's password ("" never: errors instead)."""


def fprint_user(organisation: str, operator_id: str) -> str:
    """The fprintd user of an operator: a fixed-length hash, injective and path-safe."""
    digest = hashlib.sha256(f"{organisation}/{operator_id}".encode()).hexdigest()
    return f"cardap-{digest[:40]}"


def unavailable_backend() -> ServiceUnavailable:
    """The error when no fingerprint service is configured."""
    return ServiceUnavailable("no fingerprint service is configured ([operators] biometric)",
                              reason="BIOMETRIC_UNAVAILABLE", metadata={"cause": "not_configured"})


class OperatorService:
    """Logins, logouts and session lookups over the roster, sessions and fprintd."""

    def __init__(self, roster: Roster, sessions: SessionManager,
                 biometric: BiometricBackend | None, audit: AuditSink, *,
                 verify_timeout_s: float = 30.0, enroll_timeout_s: float = 120.0,
                 metrics: Metrics | None = None) -> None:
        self.roster = roster
        self.sessions = sessions
        self.biometric = biometric
        self.audit = audit
        self.verify_timeout_s = verify_timeout_s
        self.enroll_timeout_s = enroll_timeout_s
        self.metrics = metrics
        if metrics is not None:
            if biometric is None:
                metrics.set_biometric_state("not_configured")
            else:  # every enrol, login, listing and check updates the device state
                biometric.observe(metrics.set_biometric_state)

    def reconfigure(self, *, verify_timeout_s: float, enroll_timeout_s: float) -> None:
        """A reloaded configuration (D19): the next login or enrolment uses these."""
        self.verify_timeout_s = verify_timeout_s
        self.enroll_timeout_s = enroll_timeout_s

    async def check_device(self) -> float | None:
        """A background device check (see `Metrics.watch`): GetDefaultDevice, no claim;
        the seconds until the next one (None: no fingerprint service configured)."""
        if self.biometric is None:
            return None
        state = await self.biometric.device_state()
        return DEVICE_CHECK_S if state == "ok" else DEVICE_RETRY_S

    def backend(self) -> BiometricBackend:
        """The fingerprint service, or ServiceUnavailable."""
        if self.biometric is None:
            raise unavailable_backend()
        return self.biometric

    async def record(self, ctx: OpContext, operation: str, error: CardapError | None,
                     detail: dict[str, object]) -> None:
        """One durable audit row for `operation` (error: its reason)."""
        await self.audit.record(ctx, operation, result="error" if error else "ok",
                                reason=error.reason if error else "", detail=detail,
                                durable=True)

    async def _get(self, start: LoginStart) -> OperatorRecord:
        """The enabled operator named by `start` (NotFound / NotAuthorized otherwise)."""
        record = await asyncio.to_thread(self.roster.get, start.organisation, start.operator_id)
        if not record.enabled:
            raise NotAuthorized(f"operator {record.actor} is disabled",
                                reason="OPERATOR_DISABLED")
        return record

    async def login(self, ctx: OpContext, connection: str, start: LoginStart,
                    next_password: NextStep, cancel: asyncio.Event
                    ) -> AsyncIterator[LoginEvent]:
        """Authenticate; yield prompts then the session. Audited whatever happens."""
        detail: dict[str, object] = {"method": start.method}
        audit_ctx = ctx
        error: CardapError | None = None
        try:
            check_id("organisation", start.organisation)
            check_id("operator_id", start.operator_id)
            detail.update(organisation=start.organisation, operator_id=start.operator_id)
            if start.method == "password":
                yield PasswordPrompt()
                password = await next_password(self._timeout(start))
                opened_for = await self.check_password(start, password, detail)
            else:
                opened_for = await self._get(start)
                async for prompt in self._by_finger(start, cancel):
                    yield prompt
            opened = self.sessions.open(opened_for.to_operator(), connection)
            audit_ctx = replace(ctx, operator=opened_for.actor)
            detail["expires_at"] = opened.expires_at.isoformat()
            try:
                await self.record(audit_ctx, "operator_login", None, detail)
            except BaseException:
                self.sessions.end(opened.token)
                raise
            yield opened
        except CardapError as exc:
            error = exc
            detail.setdefault("outcome", exc.reason)
            await self.record(audit_ctx, "operator_login", exc, detail)
            raise
        except (asyncio.CancelledError, GeneratorExit):
            if error is None:
                detail["outcome"] = "CLIENT_GONE"
                with contextlib.suppress(CardapError):
                    await asyncio.shield(self.record(audit_ctx, "operator_login",
                                                     Cancelled("client gone",
                                                               reason="CLIENT_GONE"), detail))
            raise

    def _timeout(self, start: LoginStart) -> float:
        """Seconds to wait for the finger or the password."""
        return min(start.timeout_s or self.verify_timeout_s, MAX_TIMEOUT_S)

    async def _by_finger(self, start: LoginStart, cancel: asyncio.Event
                         ) -> AsyncIterator[Prompt]:
        """Verify through fprintd, relaying its prompts as they come."""
        backend = self.backend()
        queue: asyncio.Queue[Prompt] = asyncio.Queue()
        timeout = self._timeout(start)
        task = asyncio.ensure_future(authenticate(
            backend, fprint_user(start.organisation, start.operator_id), finger=ANY_FINGER,
            timeout_s=timeout, cancel=cancel, on_prompt=queue.put_nowait))
        try:
            async for prompt in relay(task, queue):
                yield prompt
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    async def check_password(self, start: LoginStart, password: str,
                             detail: dict[str, object]) -> OperatorRecord:
        """One password attempt (argon2 in a thread); `detail` gets the outcome; raises."""
        record, check = await asyncio.to_thread(self.roster.check_password,
                                                start.organisation, start.operator_id, password)
        detail.update(check.detail())
        check.raise_for_outcome()
        return record

    def validate(self, token: str, connection: str) -> Operator:
        """The operator of a live session on `connection` (Unauthenticated otherwise)."""
        return self.sessions.validate(token, connection)

    async def logout(self, ctx: OpContext, token: str, connection: str) -> None:
        """End the session of `token` on this connection; audited."""
        operator = self.sessions.validate(token, connection)
        self.sessions.end(token)
        await self.record(replace(ctx, operator=operator.actor), "operator_logout", None,
                          {"organisation": operator.organisation,
                           "operator_id": operator.operator_id})


async def relay(task: asyncio.Future[None], queue: asyncio.Queue[Prompt]
                ) -> AsyncIterator[Prompt]:
    """Yield the queue's prompts until `task` ends, then its result (or error)."""
    while not (task.done() and queue.empty()):
        getter = asyncio.ensure_future(queue.get())
        waiters: list[asyncio.Future[Any]] = [getter, task]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            yield getter.result()
        else:
            getter.cancel()
    task.result()
