"""Load and delete card APs through the loading service, journalled and audited.

The operator's organisation decides (a counter may serve several, 共同利用): the
terminal acts only for the organisations its configuration names, and the service only
for those it lets this terminal act for. Before it opens a card session the daemon checks
the operator's right (LOAD, DELETE), the organisation's catalogue (the service's outer
limit) and the organisation's rules on the roster (the APs its administrators let its
operators load or delete, its presets); the service checks again and bills the
organisation. A journal row is written before the first APDU and finished after the last;
a load cut short (card pulled, service lost, daemon killed) is reconciled
(`loading.reconcile`) the next time that card is identified.

A preset (named, or the organisation's default when the load names no AP) loads in order;
an AP already on the card is reported (`already_present`) and skipped, any other failure
stops the set (D15). With `[presets] ready_event`, a My Number Card inserted while an
operator is logged in at the kiosk gets a PRESET_READY event naming the default preset's
APs missing from it: the kiosk confirms with one LoadAP call; nothing is written without it.

Every card write (load, preset, delete) is tracked for a graceful stop (D20): once the
daemon is stopping, new writes are refused with UNAVAILABLE `SHUTTING_DOWN`; the stop waits
(bounded) for the writes in progress, then cuts the rest short, leaving them to the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cardapd.domain import (
    KIOSK_CONNECTION,
    CounterSessions,
    OpContext,
    Operator,
    OrganisationRules,
    Right,
)
from cardapd.errors import (
    AlreadyExists,
    CardapError,
    CardRemoved,
    FailedPrecondition,
    InvalidArgument,
    NotAuthorized,
    NotFound,
    NotMyNumberCard,
    ServiceUnavailable,
)
from cardapd.loading.card_aps import Candidate, CardAp, present_aps, read_card_aps
from cardapd.loading.journal import Journal
from cardapd.loading.outcome import (
    NOT_NOW,
    error_for,
    may_have_touched_the_card,
    reads_back,
    terminal_error,
)
from cardapd.loading.ports import (
    ApduBatch,
    BatchResult,
    CardAccess,
    CardTarget,
    CatalogueEntry,
    LoadingService,
    OnBatch,
    RulesSource,
    SessionOpen,
    SessionOutcome,
)
from cardapd.loading.progress import BlockProgress
from cardapd.loading.reconcile import Reconciler
from cardapd.loading.relay import run_batch
from cardapd.loading.story import CardStory
from cardapd.myna.cardid import is_unconfirmed
from cardapd.mynumber import WITHHELD, aid_text, withheld
from cardapd.readers.model import CardKind, EventKind, ReaderView
from cardapd.telemetry.recorder import Recorder

log = logging.getLogger(__name__)


class ShuttingDown(ServiceUnavailable):
    """The daemon is stopping: no card write starts, or one was cut short (UNAVAILABLE)."""

    reason = "SHUTTING_DOWN"


@dataclass
class _Write:
    """A card write in progress, as a graceful stop sees it."""

    operation: str
    cancel: threading.Event
    settling: bool = False  # its card session is over: only journal and audit are left


@dataclass(frozen=True)
class Progress:
    """One progress step of one AP: phase name, percent, and the load file data blocks
    the card has acknowledged out of those the image is sent in."""

    ap_id: str
    phase: str
    percent: int
    blocks_done: int = 0
    blocks_total: int = 0


@dataclass(frozen=True)
class LoadOutcome:
    """The result of one AP of a load (`already_present`: a preset found it on the card
    and skipped it)."""

    ap_id: str
    aid: str
    user_id: str
    free_bytes: int
    ok: bool
    reason: str = ""
    message: str = ""
    already_present: bool = False


@dataclass(frozen=True)
class Loadable:
    """What an operator may load: catalogue entries, preset sets, the default preset."""

    entries: list[CatalogueEntry]
    presets: dict[str, list[str]]
    default_preset: str = ""


ALREADY_PRESENT = "ALREADY_PRESENT"


DELETE_REASONS = ("holder_request", "card_renewal", "other")
"""Why an AP is deleted (002: at the holder's request at any time; at card renewal)."""


@dataclass(frozen=True)
class ReconcileOutcome:
    """The result of a confirmed reconciliation: RECONCILED or NOTHING_TO_RECONCILE."""

    outcome: str
    message: str
    free_bytes: int


@dataclass(frozen=True)
class DeleteOutcome:
    """The result of a delete: DELETED or ALREADY_ABSENT, and what it was about."""

    outcome: str
    free_bytes: int
    aid: str = ""
    ap_id: str = ""
    reader: str = ""
    card_id: str = ""


class Loader:
    """Load, delete and list card APs; reconcile what was cut short."""

    def __init__(self, cards: CardAccess, service: LoadingService, journal: Journal,
                 sessions: CounterSessions, recorder: Recorder, rules: RulesSource, *,
                 organisations: frozenset[str] = frozenset(),
                 ready_event: bool = False) -> None:
        self.cards = cards
        self.service = service
        self.journal = journal
        self.sessions = sessions
        self.recorder = recorder
        self.rules_source = rules
        self.organisations = organisations  # [operators.organisations]: who we act for
        self.ready_event = ready_event  # [presets] ready_event
        self._announcing: set[asyncio.Task[None]] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._writes: dict[asyncio.Task[Any], _Write] = {}
        self._stopping = False  # new card writes are refused
        self._aborting = False  # the grace period ended: writes in progress are cut short
        self._retired: list[LoadingService] = []  # replaced by a reload, closed when idle
        self._closing: set[asyncio.Task[None]] = set()
        self.reconciler = Reconciler(cards, journal, recorder, self.lock, self.relay_session)
        cards.on_identified(self.reconciler.start)  # before the CARD_INSERTED event
        cards.on_identified(self._announce_preset)
        cards.add_diagnosis_step(CardStory(journal, lambda: self.service, self.lock))

    # ------------------------------------------------------------------ operators

    def operator(self, token: str) -> Operator:
        """The operator of a session token (UNAUTHENTICATED without a valid one)."""
        return self.sessions.validate(token)

    def _acting_for(self, operator: Operator) -> None:
        """PERMISSION_DENIED unless the terminal's configuration names the operator's
        organisation (the service checks that it may act for it, too)."""
        if operator.organisation not in self.organisations:
            raise NotAuthorized(
                f"this terminal does not act for organisation {operator.organisation} (it is "
                "not in [operators.organisations])", reason="ORGANISATION_NOT_CONFIGURED",
                metadata={"organisation": operator.organisation})

    async def rules(self, organisation: str) -> OrganisationRules:
        """The organisation's rules on the roster."""
        return await asyncio.to_thread(self.rules_source.rules, organisation)

    async def list_loadable(self, operator: Operator) -> Loadable:
        """What the operator may load: the organisation's catalogue under its rules (nothing
        without the LOAD right), and the presets it can load completely."""
        self._acting_for(operator)
        rules = await self.rules(operator.organisation)
        catalogue = await self.service.catalogue(operator.organisation)
        if Right.LOAD not in operator.rights:
            return Loadable([], {}, "")
        entries = [e for e in catalogue if rules.may_load(e.ap_id)]
        ids = {e.ap_id for e in entries}
        presets = {n: list(aps) for n, aps in rules.presets.items() if set(aps) <= ids}
        default = rules.default_preset if rules.default_preset in presets else ""
        return Loadable(entries, presets, default)

    # ------------------------------------------------------------------ load

    async def load(self, ctx: OpContext, operator: Operator, *, reader: str, ap_id: str,
                   preset: str, custom_user_id: str, progress: Callable[[Progress], None],
                   result: Callable[[LoadOutcome], None], default_preset: bool = False
                   ) -> None:
        """Load one AP, a preset, or (`default_preset`) the organisation's default preset,
        in order; a failure is reported, then raised. Setting `ctx.cancel` stops the card
        work before its next APDU."""
        ctx = dataclasses.replace(ctx, operator=operator.actor)
        cancel = ctx.cancel
        detail: dict[str, object] = {"ap_id": ap_id, "preset": preset,
                                     "organisation": operator.organisation}
        if default_preset:
            detail["default_preset"] = True
        async with self._write(ctx, "load", detail, cancel):
            await self._load(ctx, operator, reader=reader, ap_id=ap_id, preset=preset,
                             default_preset=default_preset, custom_user_id=custom_user_id,
                             progress=progress, result=result, cancel=cancel)

    def _preset(self, rules: OrganisationRules, preset: str, default: bool) -> str:
        """The preset to load (the default one when asked), or PRESET_NOT_FOUND."""
        if default:
            if not rules.default_preset:
                raise NotFound(f"organisation {rules.organisation} has no default preset",
                               reason="PRESET_NOT_FOUND", metadata={"preset": ""})
            return rules.default_preset
        if preset not in rules.presets:
            raise NotFound(f"organisation {rules.organisation} has no preset named "
                           f"{preset!r}", reason="PRESET_NOT_FOUND",
                           metadata={"preset": preset})
        return preset

    async def _load(self, ctx: OpContext, operator: Operator, *, reader: str, ap_id: str,
                    preset: str, default_preset: bool, custom_user_id: str,
                    progress: Callable[[Progress], None],
                    result: Callable[[LoadOutcome], None], cancel: threading.Event) -> None:
        start = time.perf_counter()
        target: CardTarget | None = None
        is_set = bool(preset) or default_preset
        try:
            operator.require(Right.LOAD)
            self._acting_for(operator)
            rules = await self.rules(operator.organisation)
            if is_set:
                preset = self._preset(rules, preset, default_preset)
                ap_ids = list(rules.presets[preset])
            else:
                ap_ids = [ap_id]
            target = await self._target(reader)
            entries = await self._permitted(operator, rules, ap_ids)
            for one in ap_ids:
                _check_custom(entries[one], custom_user_id)
        except CardapError as exc:
            await self.audit_end(ctx, "load", start, exc, target, {
                "ap_id": ap_id, "preset": preset, "organisation": operator.organisation})
            raise
        assert target is not None
        async with self.lock(target.owner.name):
            # Which APs already answer SELECT: a preset skips them; a single AP already
            # there is ALREADY_EXISTS before any progress (the service would say so only
            # after its first batch).
            aids = [bytes.fromhex(entries[a].instance_aid) for a in ap_ids]
            try:  # only SELECTs: nothing is written and no journal row exists yet
                await self._check_present(target)
                present = await target.owner.run(lambda proto: present_aps(proto, aids,
                                                                           cancel))
            except CardapError as exc:  # the card pulled or mute during the probe
                await self.audit_end(ctx, "load", start, exc, target, {
                    "ap_id": ap_id, "preset": preset, "organisation": operator.organisation,
                    "step": "presence_probe"})
                raise
            if not is_set and present:
                entry = entries[ap_ids[0]]
                there = AlreadyExists(
                    f"{entry.ap_id} (instance {entry.instance_aid.upper()}) is already on the "
                    f"card in {target.owner.name!r}", reason="ALREADY_EXISTS",
                    metadata={"ap_id": entry.ap_id, "aid": entry.instance_aid.upper(),
                              "reader": target.owner.name})
                await self.audit_end(ctx, "load", start, there, target, {
                    "ap_id": entry.ap_id, "aid": aid_text(entry.instance_aid),
                    "organisation": operator.organisation})
                raise there
            for one in ap_ids:
                entry = entries[one]
                if bytes.fromhex(entry.instance_aid) in present:
                    result(await self._skip(ctx, operator, target, entry, preset))
                    continue
                try:
                    outcome = await self._load_one(ctx, operator, target, entry,
                                                   custom_user_id, progress, cancel, preset)
                except CardapError as exc:
                    if is_set and exc.reason == "ALREADY_EXISTS":
                        result(await self._skip(ctx, operator, target, entry, preset))
                        continue
                    if is_set:
                        result(LoadOutcome(one, entry.instance_aid, "", 0, False,
                                           exc.reason, exc.message))
                    raise
                result(outcome)

    async def _skip(self, ctx: OpContext, operator: Operator, target: CardTarget,
                    entry: CatalogueEntry, preset: str) -> LoadOutcome:
        """An AP of a preset already on the card: reported and audited (never billed)."""
        await self.recorder.finish(
            ctx, "load", time.perf_counter(), None, reader=target.owner.name,
            card_id=target.card_id, durable=True,
            detail={"ap_id": entry.ap_id, "aid": aid_text(entry.instance_aid), "preset": preset,
                    "organisation": operator.organisation, "skipped": ALREADY_PRESENT,
                    "billed": False})
        return LoadOutcome(entry.ap_id, entry.instance_aid, "", 0, True, ALREADY_PRESENT,
                           "already on the card: skipped", already_present=True)

    async def _load_one(self, ctx: OpContext, operator: Operator, target: CardTarget,
                        entry: CatalogueEntry, custom_user_id: str,
                        progress: Callable[[Progress], None],
                        cancel: threading.Event | None, preset: str = "") -> LoadOutcome:
        """One AP: journal, audit, session, journal, audit."""
        start = time.perf_counter()
        ap_id = entry.ap_id
        detail: dict[str, object] = {"ap_id": ap_id, "aid": aid_text(entry.instance_aid),
                                     "organisation": operator.organisation}
        if preset:
            detail["preset"] = preset
        if self._aborting:  # the next AP of a preset, after the grace period ended
            stopped = self._interrupted("load")
            await self.audit_end(ctx, "load", start, stopped, target, detail)
            raise stopped
        self._settling(False)
        progress(Progress(ap_id, "connecting", 0))
        await self._check_present(target)
        jid = await asyncio.to_thread(
            self.journal.start, card_id=target.card_id, action="load", ap_id=ap_id,
            aid=entry.instance_aid, organisation=operator.organisation,
            operator=operator.operator_id)
        detail["journal_id"] = jid
        open_ = SessionOpen(
            organisation=operator.organisation, operator_id=operator.operator_id,
            action="load", ap_id=ap_id, card_id=target.card_id, profile=target.profile,
            journal_id=jid, custom_user_id=custom_user_id)

        blocks = BlockProgress(ap_id, lambda *step: progress(Progress(*step)))
        outcome = await self._journaled_session(ctx, "load", start, target, detail, jid,
                                                open_, cancel, blocks.batch_done,
                                                blocks.command_done)
        done = outcome.done
        detail.update(round_trips=done.round_trips, billed=done.billed)
        if not done.ok:
            err = error_for(done)
            await self.audit_end(ctx, "load", start, err, target, detail)
            raise err
        await self.audit_end(ctx, "load", start, None, target, {**detail,
                                                             "free_bytes": done.free_bytes})
        progress(Progress(ap_id, "done", 100, blocks.blocks_done, blocks.blocks_total))
        return LoadOutcome(ap_id, done.aid or entry.instance_aid, done.user_id,
                           done.free_bytes, True, done.reason, done.message)

    # ------------------------------------------------------------------ delete

    async def delete(self, ctx: OpContext, operator: Operator, *, reader: str,
                     aid: bytes, reason: str, reason_detail: str = "") -> DeleteOutcome:
        """Delete the AP with instance `aid` for `reason` (one of DELETE_REASONS, kept in
        every audit row of the deletion); ALREADY_ABSENT is a success."""
        if reason not in DELETE_REASONS:
            raise ValueError(f"unknown delete reason {reason!r}")
        ctx = dataclasses.replace(ctx, operator=operator.actor)
        cancel = ctx.cancel
        why = {"delete_reason": reason, **({"reason_detail": reason_detail}
                                           if reason_detail else {})}
        # the client's AID is text the My Number guard checks until the catalogue names it;
        # one shaped like a My Number is withheld from the rows (and refused, D59)
        typed = withheld(aid.hex().upper())
        async with self._write(ctx, "delete", {"aid": typed,
                                               "organisation": operator.organisation, **why},
                               cancel):
            return await self._delete(ctx, operator, reader=reader, aid=aid, typed=typed,
                                      why=why, cancel=cancel)

    async def _delete(self, ctx: OpContext, operator: Operator, *, reader: str,
                      aid: bytes, typed: str, why: Mapping[str, str],
                      cancel: threading.Event) -> DeleteOutcome:
        """`typed`: the AID as the rows may hold it before the catalogue names it."""
        start = time.perf_counter()
        aid_hex = aid.hex().upper()
        detail: dict[str, object] = {"aid": typed, "organisation": operator.organisation,
                                     **why}
        target: CardTarget | None = None
        try:
            operator.require(Right.DELETE)
            self._acting_for(operator)
            rules = await self.rules(operator.organisation)
            target = await self._target(reader)
            catalogue = await self.service.catalogue(operator.organisation)
            entry = next((e for e in catalogue if e.instance_aid.upper() == aid_hex), None)
            if entry is None and typed == WITHHELD:
                raise InvalidArgument("aid: holds what looks like a My Number and names no "
                                      "AP of the catalogue; the terminal never stores one",
                                      reason="MY_NUMBER_REFUSED", metadata={"field": "aid"})
            if entry is None:
                raise NotAuthorized(f"organisation {operator.organisation} may not delete "
                                    f"the AP {aid_hex}: it is not an AP of its catalogue",
                                    reason="NOT_PERMITTED", metadata={"aid": aid_hex})
            if not rules.may_delete(entry.ap_id):
                raise NotAuthorized(f"the administrators of {operator.organisation} do not let "
                                    f"its operators delete {entry.ap_id}",
                                    reason="NOT_PERMITTED",
                                    metadata={"aid": aid_hex, "ap_id": entry.ap_id})
        except CardapError as exc:
            await self.audit_end(ctx, "delete", start, exc, target, detail)
            raise
        assert target is not None
        detail.update(ap_id=entry.ap_id, aid=aid_text(entry.instance_aid))
        async with self.lock(target.owner.name):
            await self._check_present(target)
            jid = await asyncio.to_thread(
                self.journal.start, card_id=target.card_id, action="delete",
                ap_id=entry.ap_id, aid=aid_hex, organisation=operator.organisation,
                operator=operator.operator_id)
            detail["journal_id"] = jid
            open_ = SessionOpen(
                organisation=operator.organisation, operator_id=operator.operator_id,
                action="delete", ap_id=entry.ap_id, aid=aid_hex, card_id=target.card_id,
                profile=target.profile, journal_id=jid, delete_reason=why["delete_reason"])
            try:
                outcome = await self._journaled_session(ctx, "delete", start, target, detail,
                                                        jid, open_, cancel, None)
            except CardapError as exc:
                if not reads_back(exc.reason):
                    raise
                return await self._read_back(ctx, start, target, detail, entry, aid, exc)
            done = outcome.done
            if not done.ok and reads_back(done.reason):
                return await self._read_back(ctx, start, target, detail, entry, aid,
                                             error_for(done))
        if not done.ok:
            err = error_for(done)
            await self.audit_end(ctx, "delete", start, err, target, detail)
            raise err
        self.cards.forget_tap(target.owner.name, target.generation, aid)
        await self.audit_end(ctx, "delete", start, None, target,
                          {**detail, "outcome": done.reason})
        return DeleteOutcome(done.reason, done.free_bytes, aid_hex, entry.ap_id,
                             target.owner.name, target.card_id)

    async def _read_back(self, ctx: OpContext, start: float, target: CardTarget,
                         detail: Mapping[str, object], entry: CatalogueEntry, aid: bytes,
                         err: CardapError) -> DeleteOutcome:
        """A delete whose answers were lost or damaged with the card still in place: its
        outcome is what the card says now (does the instance still answer SELECT?), not
        the damaged answer. The journal row is reconciled right after either way."""
        try:
            await self._check_present(target)
            found, free = await target.owner.run(lambda proto: read_card_aps(
                proto, [Candidate(aid, entry.type, entry.area)]))
        except CardapError as exc:
            await self.audit_end(ctx, "delete", start, err, target,
                                 {**detail, "read_back": f"failed: {exc.reason}"})
            raise err from None
        if found:
            await self.audit_end(ctx, "delete", start, err, target,
                                 {**detail, "read_back": "present"})
            raise err
        log.info("delete of %s: the session failed (%s) but the card no longer holds the "
                 "AP; reported deleted", entry.ap_id, err.reason)
        self.cards.forget_tap(target.owner.name, target.generation, aid)
        await self.audit_end(ctx, "delete", start, None, target,
                             {**detail, "outcome": "DELETED", "read_back": "absent",
                              "session_error": err.reason})
        return DeleteOutcome("DELETED", free.get(entry.area, 0))

    # ------------------------------------------------------------------ confirmed reconcile

    async def confirm_reconcile(self, ctx: OpContext, operator: Operator, *, reader: str,
                                journal_id: str) -> ReconcileOutcome:
        """Reconcile the interrupted operation `journal_id` of a card that could not be
        identified, on the card in `reader`, which the operator confirms is that card (D50).
        The operator needs the right of the operation (load or delete) in its organisation."""
        ctx = dataclasses.replace(ctx, operator=operator.actor)
        start = time.perf_counter()
        target: CardTarget | None = None
        detail: dict[str, object] = {"journal_id": journal_id}
        try:
            row = await asyncio.to_thread(self.journal.get, journal_id)
            if row is None:
                raise NotFound(f"no journal row {journal_id!r}", reason="JOURNAL_ROW_NOT_FOUND",
                               metadata={"journal_id": journal_id})
            if not row.needs_reconcile or not is_unconfirmed(row.card_id):
                raise FailedPrecondition(
                    f"journal row {journal_id} does not await a confirmation (state "
                    f"{row.state}; only interrupted operations of cards that could not be "
                    "identified do)", reason="NOT_AWAITING_CONFIRMATION",
                    metadata={"journal_id": journal_id})
            operator.require(Right.LOAD if row.action == "load" else Right.DELETE)
            if row.organisation != operator.organisation:
                raise NotAuthorized(f"journal row {journal_id} belongs to organisation "
                                    f"{row.organisation}", reason="NOT_PERMITTED",
                                    metadata={"journal_id": journal_id})
            target = await self._target(reader)
        except CardapError as exc:
            await self.audit_end(ctx, "reconcile", start, exc, target, detail)
            raise
        async with self._write(ctx, "reconcile", detail, ctx.cancel), \
                self.lock(target.owner.name):
            await self._check_present(target)
            done = await self.reconciler.confirmed(ctx, target, row)
        return ReconcileOutcome(done.reason, done.message, done.free_bytes)

    # ------------------------------------------------------------------ list

    async def list_card_aps(self, ctx: OpContext, *, reader: str,
                            organisation: str | None = None
                            ) -> tuple[list[CardAp], dict[str, int]]:
        """The candidate APs that answer SELECT, and the free bytes per area (candidates:
        the catalogue of `organisation`, or of every organisation the terminal acts for)."""
        start = time.perf_counter()
        target: CardTarget | None = None
        orgs = [organisation] if organisation is not None else sorted(self.organisations)
        try:
            target = await self._target(reader)
            candidates = await self._candidates(target, orgs)
            async with self.lock(target.owner.name):
                await self._check_present(target)
                found, free = await target.owner.run(
                    lambda proto: read_card_aps(proto, candidates, ctx.cancel))
        except CardapError as exc:
            await self.audit_end(ctx, "list_card_aps", start, exc, target, {})
            raise
        await self.audit_end(ctx, "list_card_aps", start, None, target,
                             {"aps": [aid_text(a.aid) for a in found]})
        return found, free

    async def _candidates(self, target: CardTarget, organisations: list[str]
                          ) -> list[Candidate]:
        """The organisations' catalogues (when reachable), the card's journal, the tap
        AIDs."""
        out: list[Candidate] = []
        for organisation in organisations or [""]:
            try:
                for e in await self.service.catalogue(organisation):
                    out.append(Candidate(bytes.fromhex(e.instance_aid), e.type, e.area))
            except CardapError as exc:
                log.info("catalogue of %s unavailable for ListCardAPs: %s",
                         organisation or "this terminal", exc.reason)
        for row in await asyncio.to_thread(self.journal.for_card, target.card_ids):
            out.append(Candidate(bytes.fromhex(row.aid)))
        out += [Candidate(aid, "C") for aid in self.cards.tap_aids]
        return out

    # ------------------------------------------------------------------ reload and stop

    def reconfigure(self, service: LoadingService, *, organisations: frozenset[str],
                    ready_event: bool) -> None:
        """A reloaded configuration (D19): the organisations and the preset-ready event at
        once, `service` from the next call on. A session in progress finishes on the old
        link, closed once no write is left."""
        self.organisations = organisations
        self.ready_event = ready_event
        if service is not self.service:
            self._retired.append(self.service)
            self.service = service
            if not self._writes:
                self._close_retired()

    def begin_stop(self) -> None:
        """Refuse every new card write from now on (UNAVAILABLE `SHUTTING_DOWN`)."""
        self._stopping = True

    def in_progress(self) -> list[str]:
        """The card writes and reconciliations running now, by operation name."""
        return [w.operation for w in self._writes.values()] + self.reconciler.in_progress()

    async def drain(self, timeout_s: float, hurry: asyncio.Event | None = None) -> bool:
        """Refuse new writes and wait (at most `timeout_s`, less once `hurry` is set) for
        those in progress; True when none is left."""
        self.begin_stop()
        await self._until_quiet(timeout_s, hurry)
        return not self.in_progress()

    async def abort(self, wait_s: float = 3.0) -> None:
        """The grace period ended: cut the writes in progress short (their card sessions are
        cancelled, journal rows stay marked for reconciliation) and wait for their
        bookkeeping (at most `wait_s`). A write whose card session is over is not cut."""
        self.begin_stop()
        self._aborting = True
        for task, write in list(self._writes.items()):
            write.cancel.set()  # the reader thread stops before its next APDU
            if not write.settling:
                task.cancel()
        self.reconciler.cancel_all()
        await self._until_quiet(wait_s)

    async def _until_quiet(self, timeout_s: float, hurry: asyncio.Event | None = None) -> None:
        """Wait until no write or reconciliation runs: at most `timeout_s`, or `hurry`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        hurried = asyncio.ensure_future(hurry.wait()) if hurry is not None else None
        try:
            while self.in_progress() and (left := deadline - loop.time()) > 0:
                if hurried is not None and hurried.done():
                    break
                tasks: set[asyncio.Future[Any]] = {*self._writes, *self.reconciler.running()}
                if hurried is not None:
                    tasks.add(hurried)
                await asyncio.wait(tasks, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if hurried is not None:
                hurried.cancel()

    @contextlib.asynccontextmanager
    async def _write(self, ctx: OpContext, operation: str, detail: Mapping[str, object],
                     cancel: threading.Event) -> AsyncIterator[None]:
        """Track one card write for a graceful stop; refused (and audited) once stopping."""
        start = time.perf_counter()
        task = asyncio.current_task()
        assert task is not None
        if self._stopping:
            err = ShuttingDown(f"the daemon is stopping: no new {operation} starts now; "
                               "try again once it is back", metadata={"operation": operation})
            await self.audit_end(ctx, operation, start, err, None, detail)
            raise err
        self._writes[task] = _Write(operation, cancel)
        try:
            yield
        except asyncio.CancelledError:
            if not self._aborting:
                raise
            task.uncancel()  # cut short before its card session: nothing to reconcile
            err = self._interrupted(operation)
            await self.audit_end(ctx, operation, start, err, None, detail)
            raise err from None
        finally:
            del self._writes[task]
            if not self._writes:
                self._close_retired()

    def _settling(self, settled: bool) -> None:
        """Mark the current write's card session as over (or starting again: presets)."""
        task = asyncio.current_task()
        write = self._writes.get(task) if task is not None else None
        if write is not None:
            write.settling = settled

    def _interrupted(self, operation: str) -> ShuttingDown:
        return ShuttingDown(f"the daemon stopped before this {operation} finished (its "
                            "shutdown grace period ended); the card is checked again "
                            "(reconciled) the next time it is seen",
                            metadata={"operation": operation, "interrupted": "true"})

    def _as_stop(self, exc: BaseException, operation: str) -> BaseException:
        """A cancellation by `abort` becomes ShuttingDown (the task is un-cancelled);
        anything else is returned as it is."""
        if not (isinstance(exc, asyncio.CancelledError) and self._aborting):
            return exc
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return self._interrupted(operation)

    def _close_retired(self) -> None:
        """Close the service clients a reload replaced (in the background)."""
        while self._retired:
            task = asyncio.ensure_future(self._retired.pop().close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    # ------------------------------------------------------------------ helpers

    def lock(self, reader: str) -> asyncio.Lock:
        """The reader's loading lock (loads, deletes and reconciliations take turns)."""
        return self._locks.setdefault(reader, asyncio.Lock())

    async def _target(self, reader: str) -> CardTarget:
        """The reader's identified My Number Card, after any reconciliation in progress."""
        await self.cards.settle(reader)
        owner, view = self.cards.reader_with_card(reader)
        await self.reconciler.wait(owner.name, self.service.timeout_s)
        if view.card is None or view.card.kind is not CardKind.MY_NUMBER_CARD:
            raise NotMyNumberCard(f"the card in {owner.name!r} is not a My Number Card",
                                  metadata={"reader": owner.name})
        return CardTarget(owner, view, owner.generation)

    async def _permitted(self, operator: Operator, rules: OrganisationRules,
                         ap_ids: list[str]) -> dict[str, CatalogueEntry]:
        """Catalogue entries of `ap_ids`: NOT_FOUND `UNKNOWN_AP` for one not in the
        organisation's catalogue (the service's outer limit: what ListLoadableAPs can
        show), PERMISSION_DENIED `NOT_PERMITTED` for one its administrators do not allow
        (the roster)."""
        catalogue = {e.ap_id: e for e in await self.service.catalogue(operator.organisation)}
        for ap_id in ap_ids:
            if ap_id not in catalogue:
                raise NotFound(f"no AP {ap_id!r} in the catalogue of organisation "
                               f"{operator.organisation} at the loading service (or refused "
                               "by this terminal: see its log)", reason="UNKNOWN_AP",
                               metadata={"ap_id": ap_id})
            if not rules.may_load(ap_id):
                raise NotAuthorized(f"the administrators of {operator.organisation} do not let "
                                    f"its operators load {ap_id!r}", reason="NOT_PERMITTED",
                                    metadata={"ap_id": ap_id})
        return catalogue

    async def _check_present(self, target: CardTarget) -> None:
        """ABORTED when the card left (or was swapped) since the operation started."""
        if target.owner.generation != target.generation:
            raise CardRemoved(f"the card left {target.owner.name!r}",
                              metadata={"reader": target.owner.name})

    async def _journaled_session(
            self, ctx: OpContext, operation: str, start: float, target: CardTarget,
            detail: Mapping[str, object], jid: str, open_: SessionOpen,
            cancel: threading.Event | None, on_batch: OnBatch | None,
            on_command: Callable[[ApduBatch, int], None] | None = None) -> SessionOutcome:
        """Audit the start and relay the card session; the journal row is finished with
        its outcome, or on any failure for reconciliation (the end audited, then raised)."""
        try:
            await self._audit_step(ctx, f"{operation}_started", target, detail)
            outcome = await self.relay_session(target, open_, cancel, on_batch, on_command)
            self._settling(True)
        except BaseException as exc:
            cause = self._as_stop(exc, operation)
            await self._end_journal(jid, None, cause)
            if isinstance(cause, CardapError):
                self._reconcile_soon(target, cause.reason)
                if not (operation == "delete" and reads_back(cause.reason)):
                    await self.audit_end(ctx, operation, start, cause, target, detail)
            if cause is exc:
                raise
            raise cause from None
        await self._end_journal(jid, outcome, None)
        if not outcome.done.ok and may_have_touched_the_card(outcome.done.reason):
            self._reconcile_soon(target, outcome.done.reason)
        return outcome

    def _reconcile_soon(self, target: CardTarget, reason: str) -> None:
        """A write failed with the card still in the reader and answering: reconcile it
        as soon as this write releases the reader (no reinsertion needed). A card that
        left, a reader or pcscd gone, or a card that stopped answering is reconciled when
        it is identified again (reinserted, pcscd back, or answering again)."""
        if reason in NOT_NOW or self._stopping:
            return
        if target.owner.generation != target.generation or target.owner.unresponsive:
            return
        self.reconciler.start(target.view, target.generation)

    async def relay_session(self, target: CardTarget, open_: SessionOpen,
                            cancel: threading.Event | None = None,
                            on_batch: OnBatch | None = None,
                            on_command: Callable[[ApduBatch, int], None] | None = None,
                            ) -> SessionOutcome:
        """Relay one card session: its batches run on the reader's thread, all inside one
        PC/SC transaction (no other program's command lands between them) and before the
        write deadline ([card] write_timeout_s). When the terminal lost the card its own
        error is raised, not the service's guess ("the terminal lost the card").
        `on_command(batch, n)` is called on the event loop as the card acknowledges each
        command (the per-block progress of a load)."""
        if self._stopping and open_.action == "reconcile":
            raise ShuttingDown("the daemon is stopping: the reconciliation is left for the "
                               "next time the card is seen")
        owner = target.owner
        lost: list[CardapError] = []
        loop = asyncio.get_running_loop()
        async with owner.transaction(write=True) as tx:

            async def run(batch: ApduBatch) -> BatchResult:
                if owner.generation != target.generation:
                    err = CardRemoved(f"the card left {owner.name!r}",
                                      metadata={"reader": owner.name})
                    lost.append(err)
                    return BatchResult(batch.batch_id, (), complete=False,
                                       transport_error=err.reason, error=err)
                acknowledged: Callable[[int], None] | None = None
                if on_command is not None:
                    hook = on_command

                    def acknowledged(n: int) -> None:
                        loop.call_soon_threadsafe(hook, batch, n)
                try:
                    result = await tx.run(lambda proto: run_batch(proto, batch, cancel,
                                                                  acknowledged))
                except CardapError as exc:  # a deadline, the reader busy, pcscd gone
                    result = BatchResult(batch.batch_id, (), complete=False,
                                         transport_error=exc.reason, error=exc)
                if result.transport_error:
                    tx.reset_at_end = True  # no half-done card state outlives the session
                    lost.append(result.error or CardapError(result.transport_error,
                                                            reason=result.transport_error))
                return result

            outcome = await self.service.session(open_, run, on_batch)
        if lost and not outcome.done.ok:
            raise terminal_error(lost[-1], owner.name, outcome.done.reason)
        return outcome

    async def _end_journal(self, jid: str, outcome: SessionOutcome | None,
                           exc: BaseException | None) -> None:
        """Finish the journal row; keep it for reconciliation when the card may be changed."""
        if outcome is not None:
            done = outcome.done
            state = "done" if done.ok else "failed"
            again = not done.ok and may_have_touched_the_card(done.reason)
            text = f"{done.reason}: {done.message}"
        else:
            state, again = "failed", True
            text = (f"{exc.reason}: {exc.message}" if isinstance(exc, CardapError)
                    else f"interrupted: {type(exc).__name__}")
        await asyncio.shield(asyncio.to_thread(self.journal.finish, jid, state, text,
                                               reconcile=again))

    async def _audit_step(self, ctx: OpContext | None, operation: str,
                          target: CardTarget | None, detail: Mapping[str, object]) -> None:
        """A durable audit row for a step (the operation is refused if it cannot be written)."""
        await self.recorder.record(
            ctx, operation, result="ok", reader=target.owner.name if target else "",
            card_id=target.card_id if target else "", detail=detail, durable=True)

    async def audit_end(self, ctx: OpContext | None, operation: str, start: float,
                     exc: CardapError | None, target: CardTarget | None,
                     detail: Mapping[str, object]) -> None:
        """Durably audit, then count, the end of an operation."""
        await self.recorder.finish(ctx, operation, start, exc,
                                   reader=target.owner.name if target else "",
                                   card_id=target.card_id if target else "", detail=detail,
                                   durable=True)

    # ------------------------------------------------------------------ preset ready

    def _announce_preset(self, view: ReaderView, generation: int) -> None:
        """On identification: with `[presets] ready_event`, tell the kiosk which APs of the
        logged-in operator's default preset the card lacks (in the background)."""
        if not self.ready_event or self._stopping:
            return
        operator = self.sessions.holder(KIOSK_CONNECTION)
        owner = self.cards.owner(view.name)
        if operator is None or owner is None or view.card is None:
            return
        target = CardTarget(owner, view, generation)
        task = asyncio.ensure_future(self._preset_ready(target, operator))
        self._announcing.add(task)
        task.add_done_callback(self._announcing.discard)

    async def _preset_ready(self, target: CardTarget, operator: Operator) -> None:
        """The PRESET_READY event (a failure only logged: it is a hint, the load checks)."""
        try:
            if (Right.LOAD not in operator.rights
                    or operator.organisation not in self.organisations):
                return
            loadable = await self.list_loadable(operator)
            if not loadable.default_preset:
                return
            await self.reconciler.wait(target.owner.name, self.service.timeout_s)
            entries = {e.ap_id: e for e in loadable.entries}
            ap_ids = loadable.presets[loadable.default_preset]
            async with self.lock(target.owner.name):
                await self._check_present(target)
                aids = [bytes.fromhex(entries[a].instance_aid) for a in ap_ids]
                present = await target.owner.run(lambda proto: present_aps(proto, aids))
            missing = [a for a in ap_ids if bytes.fromhex(entries[a].instance_aid)
                       not in present]
            if missing:
                self.cards.tell(
                    target.owner.name, target.generation, EventKind.PRESET_READY,
                    f"preset {loadable.default_preset} of {operator.organisation} is ready "
                    f"to load: {', '.join(missing)} (LoadAP default_preset confirms)",
                    data=(("organisation", operator.organisation),
                          ("preset", loadable.default_preset),
                          ("ap_ids", ",".join(missing))))
        except CardapError as exc:
            log.info("no preset-ready event for %s: %s", target.card_id, exc.reason)

    async def close(self) -> None:
        """Stop reconciliations and close the service link and the journal."""
        for task in list(self._announcing):
            task.cancel()
        self.reconciler.cancel_all()
        self._close_retired()
        await asyncio.gather(*self._closing, return_exceptions=True)
        await self.service.close()
        await asyncio.to_thread(self.journal.close)


def _check_custom(entry: CatalogueEntry, custom_user_id: str) -> None:
    """custom_user_id: required (and well formed) for custom APs, refused otherwise."""
    custom = entry.type == "custom"
    if custom and not custom_user_id:
        raise InvalidArgument(f"{entry.ap_id} is a custom AP: custom_user_id is required",
                              metadata={"field": "custom_user_id"})
    if not custom and custom_user_id:
        raise InvalidArgument(f"{entry.ap_id} is not a custom AP: send no custom_user_id",
                              metadata={"field": "custom_user_id"})
    if custom and not (len(custom_user_id) == 13 and custom_user_id.isascii()
                       and custom_user_id.isprintable()):
        raise InvalidArgument("custom_user_id: 13 printable ASCII characters (the "
                              "organisation's own user ID)", metadata={"field": "custom_user_id"})

