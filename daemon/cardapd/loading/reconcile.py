"""Reconciliation: finish or undo, on the card, a load or delete that was cut short.

When a My Number Card is identified and the journal holds unfinished rows for it, a
reconcile session per row runs in the background (the reader's loading lock held, so a
new load waits for it): the service deletes a half-loaded file or records a completed
install. The row becomes `reconciled`, the step is audited, and the user is told by a
CARD_INSERTED event whose detail starts with "reconciled:".

A card matches the rows of any of its ids (D50). A card that offers no unique datum
(`unconfirmed-…`) matches nothing: the rows of such cards are reconciled only on an
operator's confirmation that the card in the reader is theirs (`Loader.confirm_reconcile`),
and their presence is announced by a CARD_INSERTED event whose detail starts with
"confirm:".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from cardapd.domain import OpContext, system_context
from cardapd.errors import CardapError
from cardapd.loading.journal import Journal, JournalRow
from cardapd.loading.outcome import error_for
from cardapd.loading.ports import (
    CardAccess,
    CardTarget,
    SessionDone,
    SessionOpen,
    SessionOutcome,
)
from cardapd.mynumber import aid_text
from cardapd.readers.model import EventKind, ReaderView
from cardapd.telemetry.recorder import Recorder

log = logging.getLogger(__name__)

_SAID = {"RECONCILED": "{what}: {message}",
         "NOTHING_TO_RECONCILE": "{what}: nothing left on the card ({message})"}

RelaySession = Callable[[CardTarget, SessionOpen], Awaitable[SessionOutcome]]


class Reconciler:
    """Runs and tracks the reconciliations of identified cards."""

    def __init__(self, cards: CardAccess, journal: Journal, recorder: Recorder,
                 lock: Callable[[str], asyncio.Lock], relay: RelaySession) -> None:
        self.cards = cards
        self.journal = journal
        self.recorder = recorder
        self._lock = lock
        self._relay = relay
        self._running: dict[str, asyncio.Task[None]] = {}

    def start(self, view: ReaderView, generation: int) -> None:
        """Schedule the reconciliation of `view`'s card (a no-op when its journal is clean);
        called on identification, before the CARD_INSERTED event goes out."""
        owner = self.cards.owner(view.name)
        if owner is None or view.card is None:
            return
        target = CardTarget(owner, view, generation)
        task = asyncio.ensure_future(self._card(target))
        self._running[view.name] = task

        def done(t: asyncio.Task[None], name: str = view.name) -> None:
            if self._running.get(name) is t:
                del self._running[name]
            if not t.cancelled() and t.exception() is not None:
                log.error("reconciliation of %s failed", target.card_id, exc_info=t.exception())

        task.add_done_callback(done)

    async def wait(self, reader: str, timeout_s: float) -> None:
        """Wait (bounded) for a reconciliation in progress on `reader`."""
        task = self._running.get(reader)
        if task is not None and not task.done():
            await asyncio.wait([task], timeout=timeout_s)

    def running(self) -> list[asyncio.Task[None]]:
        """The reconciliations in progress."""
        return [t for t in self._running.values() if not t.done()]

    def in_progress(self) -> list[str]:
        """One "reconcile" per reconciliation in progress (for a graceful stop)."""
        return ["reconcile" for _ in self.running()]

    def cancel_all(self) -> None:
        """Cut every reconciliation short (the journal keeps its rows)."""
        for task in list(self._running.values()):
            task.cancel()

    async def _card(self, target: CardTarget) -> None:
        """Every unfinished journal row of the card, oldest first (or, for a card that
        cannot be identified, the announcement that an operator must confirm it)."""
        card = target.view.card
        assert card is not None
        if not card.confirmed:
            waiting = await asyncio.to_thread(self.journal.awaiting_confirmation)
            if waiting:
                self.cards.tell(target.owner.name, target.generation, EventKind.CARD_INSERTED,
                                confirm_detail(waiting))
            return
        rows = await asyncio.to_thread(self.journal.unfinished, card.ids)
        if not rows:
            return
        async with self._lock(target.owner.name):
            for row in rows:
                if target.owner.generation != target.generation:
                    return  # the card left again: next time
                await self._row(target, row)

    async def confirmed(self, ctx: OpContext, target: CardTarget, row: JournalRow) -> SessionDone:
        """Reconcile `row` on the card in `target`, which an operator confirmed is its card
        (the caller holds the reader's lock and checked the operator)."""
        done = await self._row(target, row, ctx=ctx)
        assert done is not None  # with an operator's context a failure raises instead
        return done

    async def _row(self, target: CardTarget, row: JournalRow,
                   ctx: OpContext | None = None) -> SessionDone | None:
        """One reconcile session; the row is closed only when the service finished it.
        Returns the service's SessionDone when it ended well (else audited and None)."""
        start = time.perf_counter()
        confirmed_by = ctx.operator if ctx is not None else ""
        if ctx is None:
            ctx = system_context(request_id=row.id,
                                 operator=f"{row.organisation}/{row.operator}")
        what = f"{row.state} {row.action} of {row.ap_id}"
        detail: dict[str, object] = {"journal_id": row.id, "ap_id": row.ap_id,
                                     "aid": aid_text(row.aid), "action": row.action,
                                     "was": row.state}
        if confirmed_by:
            detail.update(confirmed_by=confirmed_by, journal_card_id=row.card_id)
        open_ = SessionOpen(organisation=row.organisation, operator_id=row.operator,
                            action="reconcile", ap_id=row.ap_id, aid=row.aid,
                            card_id=target.card_id, profile=target.profile, journal_id=row.id)
        where = {"reader": target.owner.name, "card_id": target.card_id}
        try:
            outcome = await self._relay(target, open_)
        except CardapError as exc:
            await self.recorder.finish(ctx, "reconcile", start, exc, detail=detail,
                                       durable=True, **where)
            if confirmed_by:
                raise
            return None
        done = outcome.done
        if not done.ok:
            err = error_for(done)
            await self.recorder.finish(ctx, "reconcile", start, err, detail=detail,
                                       durable=True, **where)
            if confirmed_by:
                raise err
            return None
        text = _SAID.get(done.reason, "{what}: {message}").format(what=what,
                                                                    message=done.message)
        await asyncio.to_thread(self.journal.finish, row.id, "reconciled",
                                f"{done.reason}: {done.message}")
        await self.recorder.finish(ctx, "reconcile", start, None,
                                   detail={**detail, "outcome": done.reason}, durable=True,
                                   **where)
        self.cards.tell(target.owner.name, target.generation, EventKind.CARD_INSERTED,
                        f"reconciled: {text}")
        return done


def confirm_detail(rows: list[JournalRow]) -> str:
    """The CARD_INSERTED detail asking an operator to confirm an unidentifiable card."""
    listed = ", ".join(f"{r.id} ({r.state} {r.action} of {r.ap_id})" for r in rows[:8])
    more = f" and {len(rows) - 8} more" if len(rows) > 8 else ""
    return (f"confirm: this card cannot be identified (no unique datum readable); "
            f"{len(rows)} interrupted operation(s) on such a card may be its own: {listed}"
            f"{more}. An operator who knows this is the card reconciles one with "
            "ConfirmReconcile (journal id); nothing is done without that.")
