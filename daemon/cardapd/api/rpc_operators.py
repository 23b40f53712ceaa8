"""Operators: the login stream, logout, roster administration and enrolment.

The role check, request id and error mapping are the `unary`/`stream` wrappers'. Sessions
are bound to the socket role (D18).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from cardap.i18n import N_, tr
from cardap.v1 import operators_pb2, terminal_pb2
from cardapd.api import validate
from cardapd.api.base import RpcBase
from cardapd.api.convert import timestamp
from cardapd.api.rpc import Ctx, session_token, stream, unary
from cardapd.domain import OpContext, Operator, OrganisationRules, Right
from cardapd.errors import Cancelled, InvalidArgument, Unauthenticated
from cardapd.operators.admin import RosterAdmin
from cardapd.operators.login import (
    LoginStart,
    OperatorService,
    PasswordPrompt,
    login_cancelled,
    relay,
)
from cardapd.operators.prompts import Prompt, PromptCode
from cardapd.operators.roster import OpenedSession, OperatorRecord

RIGHT_TO = {Right.LOAD: operators_pb2.RIGHT_LOAD, Right.DELETE: operators_pb2.RIGHT_DELETE,
            Right.DIAGNOSE: operators_pb2.RIGHT_DIAGNOSE,
            Right.ADMINISTER: operators_pb2.RIGHT_ADMINISTER}
RIGHT_FROM = {v: k for k, v in RIGHT_TO.items()}
MESSAGES = {
    PromptCode.PLACE_FINGER: N_("Place your finger on the sensor"),
    PromptCode.RETRY_SCAN: N_("Scan not usable; place the finger again"),
    PromptCode.REMOVE_FINGER: N_("Lift the finger and place it again"),
    PromptCode.ENROLL_STAGE: N_("Good; place the same finger again"),
    PromptCode.ENROLL_COMPLETED: N_("Finger enrolled"),
    PromptCode.MATCHED: N_("Finger recognised"),
    PromptCode.NOT_MATCHED: N_("Finger not recognised"),
}
"""The prompts' texts (English message ids, translated per call)."""
ENTER_PASSWORD = N_("Enter your password")


def operator(record: OperatorRecord) -> operators_pb2.Operator:
    """A roster record as cardap.v1.Operator (never a password or hash)."""
    msg = operators_pb2.Operator(
        organisation=record.organisation, operator_id=record.operator_id,
        display_name=record.display_name,
        rights=sorted(RIGHT_TO[r] for r in record.effective_rights),
        enabled=record.enabled, administrator=record.administrator,
        enrolled_fingers=list(record.enrolled_fingers), locked=record.locked,
        removed=record.removed, removed_by=record.removed_by)
    if record.removed_at is not None:
        msg.removed_at.CopyFrom(timestamp(record.removed_at))
    if record.password_approval is not None:
        a = record.password_approval
        msg.password_approval.CopyFrom(operators_pb2.PasswordApproval(
            approved_by=a.approved_by, reason=a.reason, approved_at=timestamp(a.approved_at),
            expires_at=timestamp(a.expires_at)))
    return msg


def prompt(p: Prompt | PasswordPrompt, lang: str = "en") -> terminal_pb2.Prompt:
    """A prompt for the kiosk, its text in `lang` (the code and figures beside it)."""
    if isinstance(p, PasswordPrompt):
        return terminal_pb2.Prompt(code=p.code, message=tr(lang, ENTER_PASSWORD))
    text = tr(lang, MESSAGES[p.code]) if p.code in MESSAGES else p.code.value
    if p.code is PromptCode.ENROLL_STAGE and p.stages:
        text = f"{text} ({p.stage}/{p.stages})"
    scan = ""
    if p.reason and p.code in (PromptCode.RETRY_SCAN, PromptCode.REMOVE_FINGER):
        scan = p.reason  # fprintd's result: a code, shown as it is
        text = f"{text} ({scan})"
    return terminal_pb2.Prompt(code=p.code.value, message=text, stage=p.stage,
                               stages=p.stages, scan_result=scan)


def _start(msg: Any) -> LoginStart:
    """The Start message, checked."""
    if not isinstance(msg, terminal_pb2.AuthenticateRequest) or msg.WhichOneof("step") != "start":
        raise InvalidArgument("start: the first message must be Start{organisation, "
                              "operator_id, method}", reason="START_REQUIRED",
                              metadata={"field": "start"})
    s = msg.start
    methods = {operators_pb2.AUTH_METHOD_UNSPECIFIED: "fingerprint",
               operators_pb2.AUTH_METHOD_FINGERPRINT: "fingerprint",
               operators_pb2.AUTH_METHOD_PASSWORD: "password"}
    method = methods.get(s.method)
    if method is None:
        raise InvalidArgument(f"method: unknown method {s.method}", metadata={"field": "method"})
    if s.timeout_s > 300:
        raise InvalidArgument("timeout_s: at most 300", metadata={"field": "timeout_s"})
    return LoginStart(s.organisation, s.operator_id,
                      "password" if method == "password" else "fingerprint",
                      float(s.timeout_s), s.replace_session)


class _Requests:
    """Reads the client's messages in the background: passwords queue; Cancel{true} or a
    broken stream sets the cancel event (a fingerprint login ends at once) and ends the
    queue (a password login ends LOGIN_CANCELLED). A half-close alone ends only the queue:
    a fingerprint client may send its Start and close its side."""

    def __init__(self, requests: AsyncIterator[Any]) -> None:
        self.cancel = asyncio.Event()
        self.passwords: asyncio.Queue[str | None] = asyncio.Queue()
        self._it = requests
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self._it:
                step = msg.WhichOneof("step") if isinstance(
                    msg, terminal_pb2.AuthenticateRequest) else None
                if step == "cancel" and msg.cancel:
                    self.cancel.set()
                    return
                if step == "password":
                    self.passwords.put_nowait(msg.password)
        except Exception:  # a broken stream is a cancel
            self.cancel.set()
        finally:
            self.passwords.put_nowait(None)

    async def password(self, timeout_s: float) -> str:
        """The next password message, or Cancelled on cancel / end / timeout."""
        try:
            value = await asyncio.wait_for(self.passwords.get(), timeout_s)
        except TimeoutError:
            raise Cancelled(f"no password within {timeout_s:g} s",
                            reason="PASSWORD_TIMEOUT") from None
        if value is None:
            raise login_cancelled()
        return value


async def authenticate(ops: OperatorService, requests: AsyncIterator[Any], ctx: OpContext,
                       connection: str, lang: str = "en"
                       ) -> AsyncIterator[terminal_pb2.AuthenticateEvent]:
    """AuthenticateOperator: Start, then prompts, then the session."""
    try:
        first = await anext(aiter(requests))
    except StopAsyncIteration:
        raise InvalidArgument("start: no Start message", reason="START_REQUIRED",
                              metadata={"field": "start"}) from None
    start = _start(first)
    reader = _Requests(requests)
    try:
        async for event in ops.login(ctx, connection, start, reader.password, reader.cancel):
            if isinstance(event, OpenedSession):
                yield terminal_pb2.AuthenticateEvent(session=session(ops, event))
            else:
                yield terminal_pb2.AuthenticateEvent(prompt=prompt(event, lang))
    finally:
        reader.task.cancel()
        with contextlib.suppress(BaseException):
            await reader.task


def session(ops: OperatorService, opened: OpenedSession) -> terminal_pb2.OperatorSession:
    """The OperatorSession message (with the operator's roster record)."""
    record = ops.roster.get(opened.operator.organisation, opened.operator.operator_id)
    return terminal_pb2.OperatorSession(
        token=opened.token, operator=operator(record), expires_at=timestamp(opened.expires_at),
        idle_timeout_s=opened.idle_timeout_s)


async def enroll(admin: RosterAdmin, request: terminal_pb2.EnrollFingerRequest, ctx: OpContext,
                 token: str, connection: str, lang: str = "en"
                 ) -> AsyncIterator[terminal_pb2.EnrollEvent]:
    """EnrollFinger: prompts per stage, then completed=true."""
    by = admin.acting(token, connection)
    queue: asyncio.Queue[Prompt] = asyncio.Queue()
    cancel = asyncio.Event()
    task = asyncio.ensure_future(admin.enroll(ctx, by, request.organisation,
                                              request.operator_id, request.finger, cancel,
                                              queue.put_nowait))
    try:
        async for p in relay(task, queue):
            yield terminal_pb2.EnrollEvent(prompt=prompt(p, lang))
    finally:
        if not task.done():
            cancel.set()
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    yield terminal_pb2.EnrollEvent(completed=True)


def rights(values: Any) -> frozenset[Right]:
    """Rights from the request (unknown values are InvalidArgument)."""
    out = set()
    for v in values:
        if v not in RIGHT_FROM:
            raise InvalidArgument(f"rights: unknown right {v}", reason="INVALID_RIGHT",
                                  metadata={"field": "rights"})
        out.add(RIGHT_FROM[v])
    return frozenset(out)


def expiry(request: terminal_pb2.GrantPasswordFallbackRequest) -> Any:
    """The approval's expiry as an aware datetime (required)."""
    if not request.HasField("expires_at"):
        raise InvalidArgument("expires_at is required", reason="MISSING_FIELD",
                              metadata={"field": "expires_at"})
    return validate.timestamp(request.expires_at, "expires_at")


class OperatorsRpc(RpcBase):
    """AuthenticateOperator, EndOperatorSession, the roster methods, EnrollFinger."""

    @stream
    async def AuthenticateOperator(self, request_iterator: Any, context: Ctx,
                                   ctx: OpContext
                                   ) -> AsyncIterator[terminal_pb2.AuthenticateEvent]:
        async for event in authenticate(self.services.operators, request_iterator, ctx,
                                        self.connection, self.language(context)):
            yield event

    @unary
    async def EndOperatorSession(self, request: terminal_pb2.EndOperatorSessionRequest,
                                 context: Ctx, ctx: OpContext
                                 ) -> terminal_pb2.EndOperatorSessionResponse:
        token = request.token or session_token(context)
        if not token:
            raise Unauthenticated("no session token (field token or metadata cardap-session)",
                                  reason="NO_OPERATOR_SESSION")
        await self.services.operators.logout(ctx, token, self.connection)
        return terminal_pb2.EndOperatorSessionResponse()

    def _acting(self, context: Ctx) -> Operator | None:
        return self.services.admin.acting(session_token(context), self.connection)

    @staticmethod
    def _answer(record: OperatorRecord | None) -> operators_pb2.Operator:
        return operator(record) if record is not None else operators_pb2.Operator()

    @unary
    async def ListOperators(self, request: terminal_pb2.ListOperatorsRequest, context: Ctx,
                            ctx: OpContext) -> terminal_pb2.ListOperatorsResponse:
        self._acting(context)  # a token, when sent, must be live
        records = await self.services.admin.list_operators(request.organisation)
        return terminal_pb2.ListOperatorsResponse(operators=[operator(r) for r in records])

    @unary
    async def AddOperator(self, request: terminal_pb2.AddOperatorRequest, context: Ctx,
                          ctx: OpContext) -> operators_pb2.Operator:
        by = self._acting(context)
        return self._answer(await self.services.admin.add(
            ctx, by, request.organisation, request.operator_id, request.display_name,
            rights(request.rights)))

    @unary
    async def SetOperatorEnabled(self, request: terminal_pb2.SetOperatorEnabledRequest,
                                 context: Ctx, ctx: OpContext) -> operators_pb2.Operator:
        by = self._acting(context)
        return self._answer(await self.services.admin.set_enabled(
            ctx, by, request.organisation, request.operator_id, request.enabled))

    @unary
    async def AppointAdministrator(self, request: terminal_pb2.AppointAdministratorRequest,
                                   context: Ctx, ctx: OpContext) -> operators_pb2.Operator:
        by = self._acting(context)
        return self._answer(await self.services.admin.appoint(
            ctx, by, request.organisation, request.operator_id))

    @unary
    async def GrantPasswordFallback(self, request: terminal_pb2.GrantPasswordFallbackRequest,
                                    context: Ctx, ctx: OpContext) -> operators_pb2.Operator:
        expires_at = expiry(request)  # a malformed request is refused before anything
        by = self._acting(context)
        return self._answer(await self.services.admin.grant_password(
            ctx, by, request.organisation, request.operator_id, request.reason,
            expires_at, request.password))

    @unary
    async def UnlockOperator(self, request: terminal_pb2.UnlockOperatorRequest, context: Ctx,
                             ctx: OpContext) -> operators_pb2.Operator:
        by = self._acting(context)
        return self._answer(await self.services.admin.unlock(
            ctx, by, request.organisation, request.operator_id))

    @stream
    async def EnrollFinger(self, request: terminal_pb2.EnrollFingerRequest, context: Ctx,
                           ctx: OpContext) -> AsyncIterator[terminal_pb2.EnrollEvent]:
        async for event in enroll(self.services.admin, request, ctx, session_token(context),
                                  self.connection, self.language(context)):
            yield event


class AccountsRpc(RpcBase):
    """BootstrapAdministrator (the local act) and RemoveOperator."""

    @unary
    async def BootstrapAdministrator(self, request: terminal_pb2.BootstrapAdministratorRequest,
                                     context: Ctx, ctx: OpContext
                                     ) -> terminal_pb2.OperatorSession:
        if len(request.secret) > 256:
            raise InvalidArgument("secret: at most 256 characters",
                                  metadata={"field": "secret"})
        opened = await self.services.admin.bootstrap(
            ctx, self.connection, secret=request.secret, organisation=request.organisation,
            operator_id=request.operator_id, display_name=request.display_name,
            rights=rights(request.rights), replace_session=request.replace_session)
        return session(self.services.operators, opened)

    @unary
    async def RemoveOperator(self, request: terminal_pb2.RemoveOperatorRequest, context: Ctx,
                             ctx: OpContext) -> operators_pb2.Operator:
        by = self.services.admin.acting(session_token(context), self.connection)
        record = await self.services.admin.remove(ctx, by, request.organisation,
                                                  request.operator_id)
        return operator(record) if record is not None else operators_pb2.Operator()


MAX_IDS = 256
"""At most this many AP ids in one rights or preset request."""


def ap_ids(values: Any, field: str) -> list[str]:
    """AP ids of a request (each checked by the roster; here only their number)."""
    out = [str(v) for v in values]
    if len(out) > MAX_IDS:
        raise InvalidArgument(f"{field}: at most {MAX_IDS} AP ids", metadata={"field": field})
    return out


def organisation_rights(rules: OrganisationRules) -> terminal_pb2.OrganisationRights:
    """An OrganisationRights message."""
    return terminal_pb2.OrganisationRights(
        organisation=rules.organisation, restricted=rules.restricted,
        load_ap_ids=sorted(rules.loadable) if rules.restricted else [],
        delete_ap_ids=sorted(rules.deletable) if rules.restricted else [],
        presets=[terminal_pb2.PresetSet(name=n, ap_ids=list(ids))
                 for n, ids in sorted(rules.presets.items())],
        default_preset=rules.default_preset)


class RightsRpc(RpcBase):
    """The roster as the one source of rights: operators' rights, each organisation's APs,
    presets and default preset (administrator sessions; reading needs none)."""

    def _by(self, context: Ctx) -> Operator | None:
        return self.services.admin.acting(session_token(context), self.connection)

    @unary
    async def SetOperatorRights(self, request: terminal_pb2.SetOperatorRightsRequest,
                                context: Ctx, ctx: OpContext) -> operators_pb2.Operator:
        record = await self.services.admin.set_rights(
            ctx, self._by(context), request.organisation, request.operator_id,
            rights(request.rights))
        return operator(record) if record is not None else operators_pb2.Operator()

    @unary
    async def GetOrganisationRights(self, request: terminal_pb2.GetOrganisationRightsRequest,
                                    context: Ctx, ctx: OpContext
                                    ) -> terminal_pb2.OrganisationRights:
        self._by(context)  # a token, when sent, must be live
        return organisation_rights(await self.services.admin.rules(request.organisation))

    @unary
    async def SetOrganisationAps(self, request: terminal_pb2.SetOrganisationApsRequest,
                                 context: Ctx, ctx: OpContext
                                 ) -> terminal_pb2.OrganisationRights:
        return organisation_rights(await self.services.admin.set_organisation_aps(
            ctx, self._by(context), request.organisation,
            ap_ids(request.load_ap_ids, "load_ap_ids"),
            ap_ids(request.delete_ap_ids, "delete_ap_ids"), request.unrestricted))

    @unary
    async def SetPreset(self, request: terminal_pb2.SetPresetRequest, context: Ctx,
                        ctx: OpContext) -> terminal_pb2.OrganisationRights:
        return organisation_rights(await self.services.admin.set_preset(
            ctx, self._by(context), request.organisation, request.name,
            ap_ids(request.ap_ids, "ap_ids"), request.make_default))

    @unary
    async def SetDefaultPreset(self, request: terminal_pb2.SetDefaultPresetRequest,
                               context: Ctx, ctx: OpContext) -> terminal_pb2.OrganisationRights:
        return organisation_rights(await self.services.admin.set_default_preset(
            ctx, self._by(context), request.organisation, request.name))
