"""Load and delete card APs through the loading service, journalled and audited.

The daemon checks the operator's rights and the organisation's catalogue before it opens
a card session; the service checks again. A journal row is written before the first APDU
and finished after the last; a load cut short (card pulled, service lost, daemon killed)
is reconciled by `engine.reconcile` the next time that card is identified.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cardap.v1 import cards_pb2, loading_pb2
from cardapd.engine.cardaps import Candidate, CardAp, read_card_aps
from cardapd.engine.journal import Journal
from cardapd.engine.model import CardKind, OpContext, ReaderView
from cardapd.engine.owner import ReaderOwner
from cardapd.errors import (
    CardapError,
    CardRemoved,
    InvalidArgument,
    NotAuthorized,
    NotFound,
    NotMyNumberCard,
)
from cardapd.loading.client import LoadingClient, SessionOutcome
from cardapd.loading.operators import Operator, OperatorSessions, Right
from cardapd.loading.outcome import error_for
from cardapd.loading.relay import run_batch

if TYPE_CHECKING:
    from cardapd.engine.engine import Engine

log = logging.getLogger(__name__)
_TYPES = {cards_pb2.AP_TYPE_A: "A", cards_pb2.AP_TYPE_C: "C", cards_pb2.AP_TYPE_D: "D",
          cards_pb2.AP_TYPE_CUSTOM: "custom"}
# After these the reader's connection is dropped (a stale or confused handle would fail the
# next exchange or the next insertion's identification).
_CONNECTION_LOST = frozenset({"CARD_REMOVED", "CARD_UNRESPONSIVE", "PCSC_UNAVAILABLE",
                              "CARD_PROTOCOL_ERROR"})
PHASES = {1: "secure_channel", 2: "loading", 3: "installing", 4: "personalising"}
# A failed session ending with these may have changed the card: reconcile it later.
RECONCILE_AFTER = frozenset({"CARD_REMOVED", "CARD_REJECTED", "PROTOCOL_ERROR", "INTERNAL"})


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


@dataclass(frozen=True)
class DeleteOutcome:
    """The result of a delete: DELETED or ALREADY_ABSENT."""

    outcome: str
    free_bytes: int


@dataclass(frozen=True)
class CardTarget:
    """The card an operation works on, fixed at its start."""

    owner: ReaderOwner
    view: ReaderView
    generation: int

    @property
    def card_id(self) -> str:
        """The card's id."""
        return self.view.card.card_id if self.view.card else ""

    @property
    def profile(self) -> str:
        """The card's vendor profile."""
        return self.view.card.profile if self.view.card else ""


class Loader:
    """Load, delete and list card APs; owned by the Engine (`engine.loading`)."""

    def __init__(self, engine: Engine, client: LoadingClient, journal: Journal,
                 sessions: OperatorSessions,
                 presets: tuple[tuple[str, tuple[str, ...]], ...] = ()) -> None:
        self.engine = engine
        self.client = client
        self.journal = journal
        self.sessions = sessions
        self.presets = dict(presets)
        self._locks: dict[str, asyncio.Lock] = {}
        self.reconciling: dict[str, asyncio.Task[None]] = {}

    # ------------------------------------------------------------------ operators

    def operator(self, token: str) -> Operator:
        """The operator of a session token (UNAUTHENTICATED without a valid one)."""
        return self.sessions.validate(token)

    async def list_loadable(self, operator: Operator
                            ) -> tuple[list[loading_pb2.CatalogueEntry], dict[str, list[str]]]:
        """The organisation's catalogue and the presets it can load completely."""
        entries = await self.client.catalogue(operator.organisation)
        ids = {e.ap_id for e in entries}
        presets = {n: list(aps) for n, aps in self.presets.items() if set(aps) <= ids}
        return entries, presets

    # ------------------------------------------------------------------ load

    async def load(self, ctx: OpContext, operator: Operator, *, reader: str, ap_id: str,
                   preset: str, custom_user_id: str, progress: Callable[[Progress], None],
                   result: Callable[[LoadOutcome], None],
                   cancel: threading.Event | None = None) -> None:
        """Load one AP or a preset in order; a failure is reported, then raised."""
        ctx = dataclasses.replace(ctx, operator=operator.actor)
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
                        entry: loading_pb2.CatalogueEntry, custom_user_id: str,
                        progress: Callable[[Progress], None],
                        cancel: threading.Event | None) -> LoadOutcome:
        """One AP: journal, audit, session, journal, audit."""
        start = time.perf_counter()
        ap_id = entry.ap_id
        detail: dict[str, object] = {"ap_id": ap_id, "aid": entry.instance_aid}
        progress(Progress(ap_id, "connecting", 0))
        await self._check_present(target)
        jid = await asyncio.to_thread(
            self.journal.start, card_id=target.card_id, action="load", ap_id=ap_id,
            aid=entry.instance_aid, organisation=operator.organisation,
            operator=operator.operator_id)
        detail["journal_id"] = jid
        open_ = loading_pb2.SessionOpen(
            organisation=operator.organisation, operator_id=operator.operator_id,
            action="load", ap_id=ap_id, card_id=target.card_id, profile=target.profile,
            journal_id=jid, custom_user_id=custom_user_id)

        def on_batch(batch: loading_pb2.ApduBatch) -> None:
            progress(Progress(ap_id, PHASES.get(batch.phase, "loading"),
                              min(int(batch.percent), 99)))

        try:
            await self._audit_step(ctx, "load_started", target, detail)
            outcome = await self.relay_session(target, open_, cancel, on_batch)
        except BaseException as exc:
            await self._end_journal(jid, None, exc)
            err = exc if isinstance(exc, CardapError) else None
            if err is not None:
                await self.audit_end(ctx, "load", start, err, target, detail)
            raise
        done = outcome.done
        await self._end_journal(jid, outcome, None)
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
                     aid: bytes, cancel: threading.Event | None = None) -> DeleteOutcome:
        """Delete the AP with instance `aid`; ALREADY_ABSENT is a success."""
        ctx = dataclasses.replace(ctx, operator=operator.actor)
        start = time.perf_counter()
        aid_hex = aid.hex().upper()
        detail: dict[str, object] = {"aid": aid_hex}
        target: CardTarget | None = None
        try:
            operator.require(Right.DELETE)
            target = await self._target(reader)
            catalogue = await self.client.catalogue(operator.organisation)
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
            open_ = loading_pb2.SessionOpen(
                organisation=operator.organisation, operator_id=operator.operator_id,
                action="delete", ap_id=entry.ap_id, aid=aid_hex, card_id=target.card_id,
                profile=target.profile, journal_id=jid)
            try:
                await self._audit_step(ctx, "delete_started", target, detail)
                outcome = await self.relay_session(target, open_, cancel, None)
            except BaseException as exc:
                await self._end_journal(jid, None, exc)
                if isinstance(exc, CardapError):
                    await self.audit_end(ctx, "delete", start, exc, target, detail)
                raise
            await self._end_journal(jid, outcome, None)
        done = outcome.done
        if not done.ok:
            err = error_for(done)
            await self.audit_end(ctx, "delete", start, err, target, detail)
            raise err
        self.engine.forget_tap(target.owner.name, target.generation, aid)
        await self.audit_end(ctx, "delete", start, None, target,
                          {**detail, "outcome": done.reason})
        return DeleteOutcome(done.reason, done.free_bytes)

    # ------------------------------------------------------------------ list

    async def list_card_aps(self, ctx: OpContext, *, reader: str,
                            cancel: threading.Event | None = None
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
                    lambda proto: read_card_aps(proto, candidates, cancel))
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
            for e in await self.client.catalogue(""):
                out.append(Candidate(bytes.fromhex(e.instance_aid), _TYPES.get(e.type, ""),
                                     e.area))
        except CardapError as exc:
            log.info("catalogue unavailable for ListCardAPs: %s", exc.reason)
        for row in await asyncio.to_thread(self.journal.for_card, target.card_id):
            out.append(Candidate(bytes.fromhex(row.aid)))
        out += [Candidate(aid, "C") for aid in self.engine.settings.type_c_aids]
        return out

    # ------------------------------------------------------------------ helpers

    def lock(self, reader: str) -> asyncio.Lock:
        """The reader's loading lock (loads, deletes and reconciliations take turns)."""
        return self._locks.setdefault(reader, asyncio.Lock())

    async def _target(self, reader: str) -> CardTarget:
        """The reader's identified My Number Card, after any reconciliation in progress."""
        await self.engine.settle(reader)
        owner, view = self.engine.reader_with_card(reader)
        pending = self.reconciling.get(owner.name)
        if pending is not None and not pending.done():
            await asyncio.wait([pending], timeout=self.client.cfg.timeout_s)
        if view.card is None or view.card.kind is not CardKind.MY_NUMBER_CARD:
            raise NotMyNumberCard(f"the card in {owner.name!r} is not a My Number Card",
                                  metadata={"reader": owner.name})
        return CardTarget(owner, view, owner.generation)

    async def _permitted(self, operator: Operator, ap_ids: list[str]
                         ) -> dict[str, loading_pb2.CatalogueEntry]:
        """Catalogue entries of `ap_ids`; PERMISSION_DENIED for one the org may not load."""
        catalogue = {e.ap_id: e for e in await self.client.catalogue(operator.organisation)}
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

    async def relay_session(self, target: CardTarget, open_: loading_pb2.SessionOpen,
                       cancel: threading.Event | None,
                       on_batch: Callable[[loading_pb2.ApduBatch], None] | None
                       ) -> SessionOutcome:
        """Relay one card session; batches run on the reader's thread."""
        owner = target.owner

        async def run(batch: loading_pb2.ApduBatch) -> loading_pb2.BatchResult:
            if owner.generation != target.generation:
                return loading_pb2.BatchResult(batch_id=batch.batch_id, complete=False,
                                               transport_error="CARD_REMOVED")
            result = await owner.run(lambda proto: run_batch(proto, batch, cancel))
            if result.transport_error in _CONNECTION_LOST:
                await owner.card_gone()  # a stale connection would fail the next insertion
            return result

        return await self.client.session(open_, run, on_batch)

    async def _end_journal(self, jid: str, outcome: SessionOutcome | None,
                           exc: BaseException | None) -> None:
        """Finish the journal row; keep it for reconciliation when the card may be changed."""
        if outcome is not None:
            done = outcome.done
            state = "done" if done.ok else "failed"
            again = not done.ok and done.reason in RECONCILE_AFTER
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
        await self.engine.audit.record(
            ctx, operation, result="ok", reader=target.owner.name if target else "",
            card_id=target.card_id if target else "", detail=detail, durable=True)

    async def audit_end(self, ctx: OpContext | None, operation: str, start: float,
                     exc: CardapError | None, target: CardTarget | None,
                     detail: Mapping[str, object]) -> None:
        """Durably audit, then count, the end of an operation."""
        await self.engine.finish(ctx, operation, start, exc,
                                 reader=target.owner.name if target else "",
                                 card_id=target.card_id if target else "", detail=detail,
                                 durable=True)

    async def close(self) -> None:
        """Stop reconciliations and close the service channel."""
        for task in list(self.reconciling.values()):
            task.cancel()
        await self.client.close()
        await asyncio.to_thread(self.journal.close)


def _check_custom(entry: loading_pb2.CatalogueEntry, custom_user_id: str) -> None:
    """custom_user_id: required (and well formed) for custom APs, refused otherwise."""
    custom = entry.type == cards_pb2.AP_TYPE_CUSTOM
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

