"""Roster administration on the ops socket: each change by an administrator session
(or the roster's bootstrap rule), each one audited durably, refusals included.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from cardapd.domain import OpContext, Operator, Right
from cardapd.errors import CardapError, NotAuthorized
from cardapd.operators.biometric import check_finger
from cardapd.operators.login import OperatorService, fprint_user
from cardapd.operators.prompts import Prompt
from cardapd.operators.roster import OperatorRecord, RosterChange
from cardapd.operators.roster.model import check_id


class RosterAdmin:
    """The administration operations, over an `OperatorService`."""

    def __init__(self, service: OperatorService) -> None:
        self.service = service
        self.roster = service.roster

    def acting(self, token: str, connection: str) -> Operator | None:
        """The administrator session's operator; None without a token (bootstrap)."""
        return self.service.validate(token, connection) if token else None

    async def _change(self, ctx: OpContext, operation: str, by: Operator | None,
                      target: dict[str, object], fn: Callable[[], RosterChange]
                      ) -> OperatorRecord | None:
        """Run one roster change in a thread and audit it (or its refusal) durably."""
        actor_ctx = replace(ctx, operator=by.actor) if by is not None else ctx
        try:
            change = await asyncio.to_thread(fn)
        except CardapError as exc:
            await self.service.record(actor_ctx, operation, exc, target)
            raise
        entry = change.entry(role=ctx.role, request_id=ctx.request_id)
        done_ctx = replace(ctx, operator=change.actor) if change.actor else ctx
        await self.service.audit.record(done_ctx, entry.operation, result="ok",
                                        detail=entry.detail, durable=True)
        return change.operator

    async def list_operators(self, organisation: str) -> list[OperatorRecord]:
        """Operators of one organisation ("" for all)."""
        if organisation:
            check_id("organisation", organisation)
        return await asyncio.to_thread(self.roster.list_operators, organisation)

    async def add(self, ctx: OpContext, by: Operator | None, organisation: str,
                  operator_id: str, display_name: str, rights: frozenset[Right]
                  ) -> OperatorRecord | None:
        """Add an operator."""
        return await self._change(
            ctx, "roster_add_operator", by, _target(organisation, operator_id),
            lambda: self.roster.add_operator(organisation, operator_id, display_name, rights,
                                             by=by))

    async def set_enabled(self, ctx: OpContext, by: Operator | None, organisation: str,
                          operator_id: str, enabled: bool) -> OperatorRecord | None:
        """Enable or disable an operator (their sessions then stop at the next call)."""
        return await self._change(
            ctx, "roster_set_enabled", by, _target(organisation, operator_id),
            lambda: self.roster.set_enabled(organisation, operator_id, enabled, by=by))

    async def appoint(self, ctx: OpContext, by: Operator | None, organisation: str,
                      operator_id: str) -> OperatorRecord | None:
        """Appoint an administrator."""
        return await self._change(
            ctx, "roster_appoint_administrator", by, _target(organisation, operator_id),
            lambda: self.roster.appoint_administrator(organisation, operator_id, by=by))

    async def grant_password(self, ctx: OpContext, by: Operator | None, organisation: str,
                             operator_id: str, reason: str, expires_at: datetime,
                             password: str) -> OperatorRecord | None:
        """Approve password login (the password is hashed at once, never audited)."""
        return await self._change(
            ctx, "roster_grant_password_fallback", by, _target(organisation, operator_id),
            lambda: self.roster.grant_password_fallback(
                organisation, operator_id, reason=reason, expires_at=expires_at,
                password=password, by=by))

    async def unlock(self, ctx: OpContext, by: Operator | None, organisation: str,
                     operator_id: str) -> OperatorRecord | None:
        """Clear a password lock."""
        return await self._change(
            ctx, "roster_unlock", by, _target(organisation, operator_id),
            lambda: self.roster.unlock(organisation, operator_id, by=by))

    async def _may_enrol(self, by: Operator | None, organisation: str,
                         operator_id: str) -> OperatorRecord:
        """The target operator, if `by` administers its organisation (or bootstrap)."""
        record = await asyncio.to_thread(self.roster.get, organisation, operator_id)
        admins = [r for r in await asyncio.to_thread(self.roster.list_operators, organisation)
                  if r.administrator and r.enabled]
        if by is None:
            if admins:
                raise NotAuthorized("enrolment needs an administrator session of "
                                    f"{organisation}", reason="ADMINISTRATOR_REQUIRED")
            return record
        if by.organisation != organisation or by.actor not in {a.actor for a in admins}:
            raise NotAuthorized(f"{by.actor} is not an enabled administrator of "
                                f"{organisation}", reason="NOT_ADMINISTRATOR")
        return record

    async def enroll(self, ctx: OpContext, by: Operator | None, organisation: str,
                     operator_id: str, finger: str, cancel: asyncio.Event,
                     on_prompt: Callable[[Prompt], None]) -> None:
        """Enrol one finger through fprintd; record it on the roster; audited."""
        actor_ctx = replace(ctx, operator=by.actor) if by is not None else ctx
        detail: dict[str, object] = {**_target(organisation, operator_id), "finger": finger}
        try:
            check_id("organisation", organisation)
            check_id("operator_id", operator_id)
            check_finger(finger)
            record = await self._may_enrol(by, organisation, operator_id)
            backend = self.service.backend()
            user = fprint_user(organisation, operator_id)
            await backend.enroll(user, finger, cancel=cancel, on_prompt=on_prompt,
                                 timeout_s=self.service.enroll_timeout_s)
            fingers = set(record.enrolled_fingers) | {finger}
            # by=None is the bootstrap: the first administrator is enrolled before appointment
            await asyncio.to_thread(self.roster.set_enrolled_fingers, organisation,
                                    operator_id, fingers, by=by)
        except CardapError as exc:
            await self.service.record(actor_ctx, "roster_enroll_finger", exc, detail)
            raise
        await self.service.record(actor_ctx, "roster_enroll_finger", None, detail)


def _safe(kind: str, value: str) -> str:
    """`value` if a valid identifier (never My-Number-shaped), else a placeholder."""
    try:
        return check_id(kind, value)
    except CardapError:
        return "(invalid)"


def _target(organisation: str, operator_id: str) -> dict[str, object]:
    """Audit detail naming the operator changed (only valid identifiers)."""
    return {"organisation": _safe("organisation", organisation),
            "operator_id": _safe("operator_id", operator_id)}
