"""Operator login (fingerprint through fprintd, or approved password) and sessions.

`OperatorService.login` is an async generator: it yields `Prompt`s for the kiosk and
finally an `OpenedSession`; every attempt, successful or not, is one durable audit row
(`operator_login`) with the precise outcome. Sessions are bound to the socket role the
login came in on (gRPC over a Unix socket gives no per-connection identity; see
docs/decisions.md, D18), one per socket: a login that would end another operator's live
session there is refused unless it asks to replace it.

Nothing a login answers tells who is on the roster. A failed password login is
`LOGIN_REFUSED` whatever the cause, after the same work (`Roster.check_password`). A
fingerprint login of an operator who cannot log in by finger (not on the roster, removed,
disabled, no finger enrolled) looks like one whose finger never comes: PLACE_FINGER, then
BIOMETRIC_TIMEOUT after the same wait (or CANCELLED when the kiosk cancels); a finger
that does not match is `LOGIN_REFUSED`. Device failures keep their own reasons: they say
nothing about an operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from cardapd.domain import AuditSink, OpContext, Operator, system_context
from cardapd.errors import (
    Cancelled,
    CardapError,
    NotFound,
    ServiceUnavailable,
)
from cardapd.operators.biometric import ANY_FINGER, BiometricBackend, authenticate
from cardapd.operators.fprintd import timed_out
from cardapd.operators.prompts import Prompt, PromptCode
from cardapd.operators.roster import OpenedSession, OperatorRecord, Roster, SessionManager
from cardapd.operators.roster.model import check_id
from cardapd.operators.roster.passwords import LoginRefused
from cardapd.operators.sessions import SessionInUse
from cardapd.telemetry.metrics import Metrics

log = logging.getLogger(__name__)
Method = Literal["fingerprint", "password"]
ENTER_PASSWORD = "ENTER_PASSWORD"  # noqa: S105 - a prompt code
MAX_TIMEOUT_S = 300.0
DEVICE_CHECK_S = 300.0  # device ok: check it is still there this often (never claimed)
DEVICE_RETRY_S = 60.0  # device missing or fprintd unreachable: check again this often


@dataclass(frozen=True, slots=True)
class LoginStart:
    """The kiosk's first message: who logs in, how, how long to wait for a finger, and
    whether to end another operator's live session on this socket."""

    organisation: str
    operator_id: str
    method: Method
    timeout_s: float = 0.0
    replace: bool = False


IDENTITY_REFUSALS = frozenset({"FINGER_NOT_MATCHED", "NO_ENROLLED_FINGER",
                               "OPERATOR_NOT_FOUND", "OPERATOR_DISABLED", "OPERATOR_REMOVED"})
"""Failures that concern who the operator is: the caller sees LOGIN_REFUSED."""


class Masked(Cancelled):
    """What a login for an operator who cannot log in by finger ends with: exactly what a
    finger that never came ends with (`shown`), the precise reason kept for the audit."""

    def __init__(self, shown: Cancelled, precise: str) -> None:
        super().__init__(shown.message, reason=shown.reason, metadata=shown.metadata)
        self.precise = precise


def audit_reason(exc: CardapError) -> str:
    """The reason the audit row keeps: the precise one behind a refusal."""
    precise = getattr(exc, "precise", "")
    return precise if isinstance(precise, str) and precise else exc.reason


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
        with the device there, the prints of removed operators that are still in fprintd
        are deleted. The seconds until the next check (None: no fingerprint service)."""
        if self.biometric is None:
            return None
        state = await self.biometric.device_state()
        if state == "ok":
            await self.purge_removed_prints()
        return DEVICE_CHECK_S if state == "ok" else DEVICE_RETRY_S

    async def delete_prints(self, organisation: str, operator_id: str) -> str:
        """Delete a removed operator's prints from fprintd: "yes", "no_service" (no
        fingerprint service configured) or the reason it failed (retried later)."""
        if self.biometric is None:
            return "no_service"
        try:
            await self.biometric.delete_enrolled(fprint_user(organisation, operator_id))
        except CardapError as exc:
            log.warning("could not delete the prints of removed operator %s/%s (%s); "
                        "retried while the fingerprint device is checked", organisation,
                        operator_id, exc.reason)
            return exc.reason
        await asyncio.to_thread(self.roster.prints_deleted, organisation, operator_id)
        return "yes"

    async def purge_removed_prints(self) -> int:
        """Delete the prints fprintd still holds for removed operators; how many went."""
        done = 0
        for record in await asyncio.to_thread(self.roster.removed_with_prints):
            outcome = await self.delete_prints(record.organisation, record.operator_id)
            if outcome != "yes":
                break
            done += 1
            with contextlib.suppress(CardapError):
                await self.record(system_context(), "roster_prints_deleted", None,
                                  {"organisation": record.organisation,
                                   "operator_id": record.operator_id})
        return done

    def backend(self) -> BiometricBackend:
        """The fingerprint service, or ServiceUnavailable."""
        if self.biometric is None:
            raise unavailable_backend()
        return self.biometric

    async def record(self, ctx: OpContext, operation: str, error: CardapError | None,
                     detail: dict[str, object]) -> None:
        """One durable audit row for `operation` (error: its precise reason)."""
        await self.audit.record(ctx, operation, result="error" if error else "ok",
                                reason=audit_reason(error) if error else "", detail=detail,
                                durable=True)

    async def _by_finger_record(self, start: LoginStart) -> OperatorRecord | str:
        """The operator named by `start` if they may log in by finger, else why not."""
        try:
            record = await asyncio.to_thread(self.roster.get, start.organisation,
                                             start.operator_id)
        except NotFound:
            return "OPERATOR_NOT_FOUND"
        if record.removed:
            return "OPERATOR_REMOVED"
        if not record.enabled:
            return "OPERATOR_DISABLED"
        if not record.enrolled_fingers:
            return "NO_ENROLLED_FINGER"
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
            claimed = Operator(start.organisation, start.operator_id, frozenset())
            self.sessions.check_replace(claimed, connection, replace=start.replace)
            if start.method == "password":
                yield PasswordPrompt()
                password = await next_password(self._timeout(start))
                opened_for = await self.check_password(start, password, detail)
            else:
                found = await self._by_finger_record(start)
                if isinstance(found, str):
                    yield Prompt(PromptCode.PLACE_FINGER)
                    await self._no_finger(start, cancel, found)
                    raise AssertionError("unreachable")  # _no_finger always raises
                async for prompt in self._by_finger(start, cancel):
                    yield prompt
                opened_for = found
            opened = self.sessions.open(opened_for.to_operator(), connection,
                                        replace=start.replace)
            audit_ctx = replace(ctx, operator=opened_for.actor)
            detail["expires_at"] = opened.expires_at.isoformat()
            if opened.replaced is not None:
                same = opened.replaced.actor == opened_for.actor
                detail["replaced_session_of"] = opened.replaced.actor
                detail["replaced_own_session"] = same
            try:
                await self.record(audit_ctx, "operator_login", None, detail)
            except BaseException:
                self.sessions.end(opened.token)
                raise
            yield opened
        except CardapError as exc:
            error = exc
            if isinstance(exc, SessionInUse):
                detail["live_session_of"] = exc.holder.actor
            detail.setdefault("outcome", audit_reason(exc))
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

    async def _no_finger(self, start: LoginStart, cancel: asyncio.Event, why: str) -> None:
        """Wait as a login waits for a finger that never comes, then end like it (the
        device is not claimed: no finger can match an operator who has none)."""
        timeout = self._timeout(start)
        try:
            await asyncio.wait_for(cancel.wait(), timeout)
        except TimeoutError:
            raise Masked(timed_out(timeout), why) from None
        raise Masked(login_cancelled(), why)

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
        except CardapError as exc:
            if exc.reason in IDENTITY_REFUSALS:
                raise LoginRefused(exc.reason) from None
            if isinstance(exc, Cancelled) and cancel.is_set():
                raise login_cancelled() from None  # as a password login's Cancel ends
            raise
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    async def check_password(self, start: LoginStart, password: str,
                             detail: dict[str, object]) -> OperatorRecord:
        """One password attempt (argon2 in a thread); `detail` gets the outcome; raises
        `LoginRefused` (the precise reason inside) on any failure."""
        record, check = await asyncio.to_thread(self.roster.check_password,
                                                start.organisation, start.operator_id, password)
        detail.update(check.detail())
        check.raise_for_outcome()
        assert record is not None  # a successful check has an operator
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


def login_cancelled() -> Cancelled:
    """How a login the client cancelled ends, by finger or by password: one reason."""
    return Cancelled("the login was cancelled", reason="LOGIN_CANCELLED")


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
