"""Load and delete card APs through the loading service, journalled and audited.

The daemon checks the operator's rights and the organisation's catalogue before it opens
a card session; the service checks again. A journal row is written before the first APDU
and finished after the last; a load cut short (card pulled, service lost, daemon killed)
is reconciled (`loading.reconcile`) the next time that card is identified.

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

from cardapd.domain import OpContext, Operator, OperatorSessions, Right
from cardapd.errors import (
    CardapError,
    CardRemoved,
    FailedPrecondition,
    InvalidArgument,
    NotAuthorized,
    NotFound,
    NotMyNumberCard,
    ReaderRemoved,
    ServiceUnavailable,
)
from cardapd.loading.card_aps import Candidate, CardAp, read_card_aps
from cardapd.loading.journal import Journal
from cardapd.loading.outcome import CONNECTION_LOST, error_for, may_have_touched_the_card
from cardapd.loading.ports import (
    PHASES,
    ApduBatch,
    BatchResult,
    CardAccess,
    CardTarget,
    CatalogueEntry,
    LoadingService,
    OnBatch,
    SessionOpen,
    SessionOutcome,
)
from cardapd.loading.reconcile import Reconciler
from cardapd.loading.relay import run_batch
from cardapd.loading.story import CardStory
from cardapd.myna.cardid import is_unconfirmed
from cardapd.readers.model import CardKind
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
    """One progress step of one AP: phase name and percent."""

    ap_id: str
    phase: str
    percent: int


@dataclass(frozen=True)
class LoadOutcome:
    """The result of one AP of a load."""

    ap_id: str
    aid: str
    user_id: str
    free_bytes: int
    ok: bool
    reason: str = ""
    message: str = ""


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
    """The result of a delete: DELETED or ALREADY_ABSENT."""

    outcome: str
    free_bytes: int


class Loader:
    """Load, delete and list card APs; reconcile what was cut short."""

    def __init__(self, cards: CardAccess, service: LoadingService, journal: Journal,
                 sessions: OperatorSessions, recorder: Recorder,
                 presets: tuple[tuple[str, tuple[str, ...]], ...] = ()) -> None:
        self.cards = cards
        self.service = service
        self.journal = journal
        self.sessions = sessions
        self.recorder = recorder
        self.presets = dict(presets)
        self._locks: dict[str, asyncio.Lock] = {}
        self._writes: dict[asyncio.Task[Any], _Write] = {}
        self._stopping = False  # new card writes are refused
        self._aborting = False  # the grace period ended: writes in progress are cut short
        self._retired: list[LoadingService] = []  # replaced by a reload, closed when idle
        self._closing: set[asyncio.Task[None]] = set()
        self.reconciler = Reconciler(cards, journal, recorder, self.lock, self.relay_session)
        cards.on_identified(self.reconciler.start)  # before the CARD_INSERTED event
        cards.add_diagnosis_step(CardStory(journal, lambda: self.service, self.lock))

    # ------------------------------------------------------------------ operators

    def operator(self, token: str) -> Operator:
        """The operator of a session token (UNAUTHENTICATED without a valid one)."""
        return self.sessions.validate(token)

    async def list_loadable(self, operator: Operator
                            ) -> tuple[list[CatalogueEntry], dict[str, list[str]]]:
        """The organisation's catalogue and the presets it can load completely."""
        entries = await self.service.catalogue(operator.organisation)
        ids = {e.ap_id for e in entries}
        presets = {n: list(aps) for n, aps in self.presets.items() if set(aps) <= ids}
        return entries, presets

    # ------------------------------------------------------------------ load

    async def load(self, ctx: OpContext, operator: Operator, *, reader: str, ap_id: str,
                   preset: str, custom_user_id: str, progress: Callable[[Progress], None],
                   result: Callable[[LoadOutcome], None]) -> None:
        """Load one AP or a preset in order; a failure is reported, then raised. Setting
        `ctx.cancel` stops the card work before its next APDU."""
        ctx = dataclasses.replace(ctx, operator=operator.actor)
        cancel = ctx.cancel
        async with self._write(ctx, "load", {"ap_id": ap_id, "preset": preset}, cancel):
            await self._load(ctx, operator, reader=reader, ap_id=ap_id, preset=preset,
                             custom_user_id=custom_user_id, progress=progress, result=result,
                             cancel=cancel)

    async def _load(self, ctx: OpContext, operator: Operator, *, reader: str, ap_id: str,
                    preset: str, custom_user_id: str, progress: Callable[[Progress], None],
                    result: Callable[[LoadOutcome], None], cancel: threading.Event) -> None:
        start = time.perf_counter()
        target: CardTarget | None = None
        try:
            operator.require(Right.LOAD)
            if preset:
                if preset not in self.presets:
                    raise NotFound(f"no preset named {preset!r} is configured",
                                   reason="PRESET_NOT_FOUND", metadata={"preset": preset})
                ap_ids = list(self.presets[preset])
            else:
                ap_ids = [ap_id]
            target = await self._target(reader)
            entries = await self._permitted(operator, ap_ids)
            for one in ap_ids:
                _check_custom(entries[one], custom_user_id)
        except CardapError as exc:
            await self.audit_end(ctx, "load", start, exc, target, {"ap_id": ap_id,
                                                                "preset": preset})
            raise
        assert target is not None
        async with self.lock(target.owner.name):
            for one in ap_ids:
                try:
                    outcome = await self._load_one(ctx, operator, target, entries[one],
                                                   custom_user_id, progress, cancel)
                except CardapError as exc:
                    if preset:
                        result(LoadOutcome(one, entries[one].instance_aid, "", 0, False,
                                           exc.reason, exc.message))
                    raise
                result(outcome)

    async def _load_one(self, ctx: OpContext, operator: Operator, target: CardTarget,
                        entry: CatalogueEntry, custom_user_id: str,
                        progress: Callable[[Progress], None],
                        cancel: threading.Event | None) -> LoadOutcome:
        """One AP: journal, audit, session, journal, audit."""
        start = time.perf_counter()
        ap_id = entry.ap_id
        detail: dict[str, object] = {"ap_id": ap_id, "aid": entry.instance_aid}
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

        def on_batch(batch: ApduBatch) -> None:
            progress(Progress(ap_id, PHASES.get(batch.phase, "loading"),
                              min(int(batch.percent), 99)))

        outcome = await self._journaled_session(ctx, "load", start, target, detail, jid,
                                                open_, cancel, on_batch)
        done = outcome.done
        detail.update(round_trips=done.round_trips, billed=done.billed)
        if not done.ok:
            err = error_for(done)
            await self.audit_end(ctx, "load", start, err, target, detail)
            raise err
        await self.audit_end(ctx, "load", start, None, target, {**detail,
                                                             "free_bytes": done.free_bytes})
        progress(Progress(ap_id, "done", 100))
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
        async with self._write(ctx, "delete", {"aid": aid.hex().upper(), **why}, cancel):
            return await self._delete(ctx, operator, reader=reader, aid=aid, why=why,
                                      cancel=cancel)

    async def _delete(self, ctx: OpContext, operator: Operator, *, reader: str,
                      aid: bytes, why: Mapping[str, str],
                      cancel: threading.Event) -> DeleteOutcome:
        start = time.perf_counter()
        aid_hex = aid.hex().upper()
        detail: dict[str, object] = {"aid": aid_hex, **why}
        target: CardTarget | None = None
        try:
            operator.require(Right.DELETE)
            target = await self._target(reader)
            catalogue = await self.service.catalogue(operator.organisation)
            entry = next((e for e in catalogue if e.instance_aid.upper() == aid_hex), None)
            if entry is None:
                raise NotAuthorized(f"organisation {operator.organisation} may not delete "
                                    f"the AP {aid_hex}", reason="NOT_PERMITTED",
                                    metadata={"aid": aid_hex})
        except CardapError as exc:
            await self.audit_end(ctx, "delete", start, exc, target, detail)
            raise
        assert target is not None
        detail["ap_id"] = entry.ap_id
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
            outcome = await self._journaled_session(ctx, "delete", start, target, detail, jid,
                                                    open_, cancel, None)
        done = outcome.done
        if not done.ok:
            err = error_for(done)
            await self.audit_end(ctx, "delete", start, err, target, detail)
            raise err
        self.cards.forget_tap(target.owner.name, target.generation, aid)
        await self.audit_end(ctx, "delete", start, None, target,
                          {**detail, "outcome": done.reason})
        return DeleteOutcome(done.reason, done.free_bytes)

    # ------------------------------------------------------------------ confirmed reconcile

    async def confirm_reconcile(self, ctx: OpContext, operator: Operator, *, reader: str,
                                journal_id: str) -> ReconcileOutcome:
        """Reconcile the interrupted operation `journal_id` of a card that could not be
        identified, on the card in `reader`, which the operator confirms is that card (D29).
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

    async def list_card_aps(self, ctx: OpContext, *, reader: str
                            ) -> tuple[list[CardAp], dict[str, int]]:
        """The candidate APs that answer SELECT, and the free bytes per area."""
        start = time.perf_counter()
        target: CardTarget | None = None
        try:
            target = await self._target(reader)
            candidates = await self._candidates(target)
            async with self.lock(target.owner.name):
                await self._check_present(target)
                found, free = await target.owner.run(
                    lambda proto: read_card_aps(proto, candidates, ctx.cancel))
        except CardapError as exc:
            await self.audit_end(ctx, "list_card_aps", start, exc, target, {})
            raise
        await self.audit_end(ctx, "list_card_aps", start, None, target,
                             {"aps": [a.aid.hex().upper() for a in found]})
        return found, free

    async def _candidates(self, target: CardTarget) -> list[Candidate]:
        """The terminal's catalogue (when reachable), the card's journal, the tap AIDs."""
        out: list[Candidate] = []
        try:
            for e in await self.service.catalogue(""):
                out.append(Candidate(bytes.fromhex(e.instance_aid), e.type, e.area))
        except CardapError as exc:
            log.info("catalogue unavailable for ListCardAPs: %s", exc.reason)
        for row in await asyncio.to_thread(self.journal.for_card, target.card_id):
            out.append(Candidate(bytes.fromhex(row.aid)))
        out += [Candidate(aid, "C") for aid in self.cards.tap_aids]
        return out

    # ------------------------------------------------------------------ reload and stop

    def reconfigure(self, service: LoadingService,
                    presets: tuple[tuple[str, tuple[str, ...]], ...]) -> None:
        """A reloaded configuration (D19): presets at once, `service` from the next call
        on. A session in progress finishes on the old link, closed once no write is left."""
        self.presets = dict(presets)
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

    async def _permitted(self, operator: Operator, ap_ids: list[str]
                         ) -> dict[str, CatalogueEntry]:
        """Catalogue entries of `ap_ids`; PERMISSION_DENIED for one the org may not load."""
        catalogue = {e.ap_id: e for e in await self.service.catalogue(operator.organisation)}
        for ap_id in ap_ids:
            if ap_id not in catalogue:
                raise NotAuthorized(f"organisation {operator.organisation} may not load "
                                    f"{ap_id!r}", reason="NOT_PERMITTED",
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
            cancel: threading.Event | None, on_batch: OnBatch | None) -> SessionOutcome:
        """Audit the start and relay the card session; the journal row is finished with
        its outcome, or on any failure for reconciliation (the end audited, then raised)."""
        try:
            await self._audit_step(ctx, f"{operation}_started", target, detail)
            outcome = await self.relay_session(target, open_, cancel, on_batch)
            self._settling(True)
        except BaseException as exc:
            cause = self._as_stop(exc, operation)
            await self._end_journal(jid, None, cause)
            if isinstance(cause, CardapError):
                await self.audit_end(ctx, operation, start, cause, target, detail)
            if cause is exc:
                raise
            raise cause from None
        await self._end_journal(jid, outcome, None)
        return outcome

    async def relay_session(self, target: CardTarget, open_: SessionOpen,
                            cancel: threading.Event | None = None,
                            on_batch: OnBatch | None = None) -> SessionOutcome:
        """Relay one card session; batches run on the reader's thread."""
        if self._stopping and open_.action == "reconcile":
            raise ShuttingDown("the daemon is stopping: the reconciliation is left for the "
                               "next time the card is seen")
        owner = target.owner
        lost: list[str] = []

        async def run(batch: ApduBatch) -> BatchResult:
            if owner.generation != target.generation:
                return BatchResult(batch.batch_id, (), complete=False,
                                   transport_error="CARD_REMOVED")
            result = await owner.run(lambda proto: run_batch(proto, batch, cancel))
            if result.transport_error:
                lost.append(result.transport_error)
            if result.transport_error in CONNECTION_LOST:
                await owner.card_gone()  # a stale connection would fail the next insertion
            return result

        outcome = await self.service.session(open_, run, on_batch)
        if lost and lost[-1] == ReaderRemoved.reason and not outcome.done.ok:
            # The service only knows the terminal lost the card; the terminal knows why.
            raise ReaderRemoved(
                f"the reader {owner.name!r} was unplugged during the operation; the card is "
                "checked again (reconciled) when it is next seen",
                metadata={"reader": owner.name, "service_reason": outcome.done.reason})
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

    async def close(self) -> None:
        """Stop reconciliations and close the service link and the journal."""
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

