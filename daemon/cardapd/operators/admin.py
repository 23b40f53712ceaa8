"""Roster administration on the ops socket: each change by an administrator session of
the organisation (the first administrator by the local bootstrap act only, see
`cardapd.operators.bootstrap`), each one audited durably, refusals included.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from cardapd.domain import OpContext, Operator, OrganisationRules, Right
from cardapd.errors import CardapError, InvalidArgument, NotAuthorized
from cardapd.operators.biometric import check_finger
from cardapd.operators.bootstrap import consume_secret
from cardapd.operators.login import OperatorService, fprint_user
from cardapd.operators.prompts import Prompt
from cardapd.operators.roster import OpenedSession, OperatorRecord, RosterChange
from cardapd.operators.roster.model import check_id, check_rights, check_text
from cardapd.operators.sessions import SessionInUse

log = logging.getLogger(__name__)

BOOTSTRAP_SESSION = timedelta(minutes=15)
"""The longest session a bootstrap opens: enough to enrol the administrator's finger and
set up the organisation, after which they log in by finger like everyone."""


class RosterAdmin:
    """The administration operations, over an `OperatorService`."""

    def __init__(self, service: OperatorService, state_dir: Path) -> None:
        self.service = service
        self.roster = service.roster
        self.state_dir = Path(state_dir)  # where `cardapd bootstrap-admin` puts its secret

    def acting(self, token: str, connection: str) -> Operator | None:
        """The administrator session's operator; None without a token (then every change
        is refused: ADMINISTRATOR_REQUIRED)."""
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

    async def set_rights(self, ctx: OpContext, by: Operator | None, organisation: str,
                         operator_id: str, rights: frozenset[Right]) -> OperatorRecord | None:
        """Replace an operator's rights (load, delete, diagnose)."""
        return await self._change(
            ctx, "roster_set_rights", by, _target(organisation, operator_id),
            lambda: self.roster.set_rights(organisation, operator_id, rights, by=by))

    async def rules(self, organisation: str) -> OrganisationRules:
        """What the organisation allows its operators at this terminal."""
        check_id("organisation", organisation)
        return await asyncio.to_thread(self.roster.rules, organisation)

    async def _organisation_change(self, ctx: OpContext, operation: str,
                                   by: Operator | None, organisation: str,
                                   fn: Callable[[], RosterChange]) -> OrganisationRules:
        """An organisation-wide change (audited like the others); the rules after it."""
        await self._change(ctx, operation, by, {"organisation": _safe("organisation",
                                                                      organisation)}, fn)
        return await asyncio.to_thread(self.roster.rules, organisation)

    async def set_organisation_aps(self, ctx: OpContext, by: Operator | None,
                                   organisation: str, load: list[str], delete: list[str],
                                   unrestricted: bool) -> OrganisationRules:
        """The APs the organisation's operators may load and delete (or every AP of the
        catalogue when `unrestricted`)."""
        if unrestricted and (load or delete):
            raise InvalidArgument("unrestricted: name no APs (every AP of the catalogue)",
                                  reason="INVALID_ARGUMENT",
                                  metadata={"field": "unrestricted"})
        return await self._organisation_change(
            ctx, "roster_set_organisation_aps", by, organisation,
            (lambda: self.roster.unrestrict_organisation_aps(organisation, by=by))
            if unrestricted else
            (lambda: self.roster.set_organisation_aps(organisation, load, delete, by=by)))

    async def set_preset(self, ctx: OpContext, by: Operator | None, organisation: str,
                         name: str, ap_ids: list[str], make_default: bool
                         ) -> OrganisationRules:
        """Create, replace or (no APs) delete a preset set; maybe make it the default."""
        return await self._organisation_change(
            ctx, "roster_set_preset", by, organisation,
            lambda: self.roster.set_preset(organisation, name, ap_ids, by=by,
                                           make_default=make_default))

    async def set_default_preset(self, ctx: OpContext, by: Operator | None,
                                 organisation: str, name: str) -> OrganisationRules:
        """The preset loaded when a load names no AP ("" : none)."""
        return await self._organisation_change(
            ctx, "roster_set_default_preset", by, organisation,
            lambda: self.roster.set_default_preset(organisation, name, by=by))

    async def _may_enrol(self, by: Operator | None, organisation: str,
                         operator_id: str) -> OperatorRecord:
        """The target operator (not removed), if `by` administers its organisation."""
        if by is None:
            raise NotAuthorized("enrolment needs an administrator session of "
                                f"{organisation}", reason="ADMINISTRATOR_REQUIRED")
        record = await asyncio.to_thread(self.roster.get, organisation, operator_id)
        admins = [r for r in await asyncio.to_thread(self.roster.list_operators, organisation)
                  if r.administrator and r.enabled and not r.removed]
        if by.organisation != organisation or by.actor not in {a.actor for a in admins}:
            raise NotAuthorized(f"{by.actor} is not an enabled administrator of "
                                f"{organisation}", reason="NOT_ADMINISTRATOR")
        if record.removed:
            raise NotAuthorized(f"operator {record.actor} was removed from the roster",
                                reason="OPERATOR_REMOVED")
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
            await asyncio.to_thread(self.roster.set_enrolled_fingers, organisation,
                                    operator_id, fingers, by=by)
        except CardapError as exc:
            await self.service.record(actor_ctx, "roster_enroll_finger", exc, detail)
            raise
        await self.service.record(actor_ctx, "roster_enroll_finger", None, detail)


    async def bootstrap(self, ctx: OpContext, connection: str, *, secret: str,
                        organisation: str, operator_id: str, display_name: str,
                        rights: frozenset[Right], replace_session: bool) -> OpenedSession:
        """The local bootstrap act: with the one-time secret `cardapd bootstrap-admin`
        wrote, appoint the administrator of an organisation that has none and open their
        session (at most `BOOTSTRAP_SESSION`) on this socket. Audited, refusals too."""
        detail: dict[str, object] = _target(organisation, operator_id)
        try:
            check_id("organisation", organisation)
            check_id("operator_id", operator_id)
            check_text("display name", display_name, required=False)
            check_rights(rights)
            await asyncio.to_thread(consume_secret, self.state_dir, secret)
            claimed = Operator(organisation, operator_id, frozenset())
            self.service.sessions.check_replace(claimed, connection, replace=replace_session)
            change = await asyncio.to_thread(
                self.roster.bootstrap_administrator, organisation, operator_id,
                display_name, rights)
            assert change.operator is not None
            opened = self.service.sessions.open(change.operator.to_operator(), connection,
                                                replace=replace_session,
                                                absolute=BOOTSTRAP_SESSION)
        except CardapError as exc:
            if isinstance(exc, SessionInUse):
                detail["live_session_of"] = exc.holder.actor
            await self.service.record(ctx, "roster_bootstrap_administrator", exc, detail)
            raise
        entry = change.entry(role=ctx.role, request_id=ctx.request_id)
        done = {**entry.detail, "session_expires_at": opened.expires_at.isoformat()}
        if opened.replaced is not None:
            done["replaced_session_of"] = opened.replaced.actor
        try:
            await self.service.audit.record(replace(ctx, operator=change.operator.actor),
                                            entry.operation, result="ok", detail=done,
                                            durable=True)
        except BaseException:
            self.service.sessions.end(opened.token)
            raise
        return opened

    async def remove(self, ctx: OpContext, by: Operator | None, organisation: str,
                     operator_id: str) -> OperatorRecord | None:
        """Remove an operator: marked removed on the roster (never deleted, the id never
        used again), their session ends at its next use, and their prints are deleted
        from fprintd (retried in the background when fprintd cannot be reached now)."""
        target = _target(organisation, operator_id)
        actor_ctx = replace(ctx, operator=by.actor) if by is not None else ctx
        try:
            change = await asyncio.to_thread(self.roster.remove_operator, organisation,
                                             operator_id, by=by)
        except CardapError as exc:
            await self.service.record(actor_ctx, "roster_remove_operator", exc, target)
            raise
        entry = change.entry(role=ctx.role, request_id=ctx.request_id)
        detail = {**entry.detail, "prints_deleted": await self.service.delete_prints(
            organisation, operator_id)}
        done_ctx = replace(ctx, operator=change.actor) if change.actor else ctx
        await self.service.audit.record(done_ctx, entry.operation, result="ok",
                                        detail=detail, durable=True)
        return await asyncio.to_thread(self.roster.get, organisation, operator_id)


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
