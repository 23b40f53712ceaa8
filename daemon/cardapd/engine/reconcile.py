"""Reconciliation: finish or undo, on the card, a load or delete that was cut short.

When a My Number Card is identified and the journal holds unfinished rows for it, a
reconcile session per row runs in the background (the reader's loading lock held, so a
new load waits for it): the service deletes a half-loaded file or records a completed
install. The row becomes `reconciled`, the step is audited, and the user is told by a
CARD_INSERTED event whose detail starts with "reconciled:".
"""

from __future__ import annotations

import asyncio
import logging
import time

from cardap.v1 import loading_pb2
from cardapd.engine.journal import JournalRow
from cardapd.engine.loading import CardTarget, Loader
from cardapd.engine.model import EventKind, OpContext, ReaderView
from cardapd.errors import CardapError
from cardapd.loading.outcome import error_for

log = logging.getLogger(__name__)

_SAID = {"RECONCILED": "{what}: {message}",
         "NOTHING_TO_RECONCILE": "{what}: nothing left on the card ({message})"}


def start_reconcile(loader: Loader, view: ReaderView, generation: int) -> None:
    """Schedule the reconciliation of `view`'s card (a no-op when the journal is clean)."""
    owner = loader.engine.owner(view.name)
    if owner is None or view.card is None:
        return
    target = CardTarget(owner, view, generation)
    task = asyncio.ensure_future(_reconcile_card(loader, target))
    loader.reconciling[view.name] = task

    def done(t: asyncio.Task[None], name: str = view.name) -> None:
        if loader.reconciling.get(name) is t:
            del loader.reconciling[name]
        if not t.cancelled() and t.exception() is not None:
            log.error("reconciliation of %s failed", target.card_id, exc_info=t.exception())

    task.add_done_callback(done)


async def _reconcile_card(loader: Loader, target: CardTarget) -> None:
    """Every unfinished journal row of the card, oldest first."""
    rows = await asyncio.to_thread(loader.journal.unfinished, target.card_id)
    if not rows:
        return
    async with loader.lock(target.owner.name):
        for row in rows:
            if target.owner.generation != target.generation:
                return  # the card left again: next time
            await _reconcile_row(loader, target, row)


async def _reconcile_row(loader: Loader, target: CardTarget, row: JournalRow) -> None:
    """One reconcile session; the row is closed only when the service finished it."""
    start = time.perf_counter()
    ctx = OpContext(role="system", request_id=row.id, operator=f"{row.organisation}/"
                    f"{row.operator}")
    what = f"{row.state} {row.action} of {row.ap_id}"
    detail: dict[str, object] = {"journal_id": row.id, "ap_id": row.ap_id, "aid": row.aid,
                                 "action": row.action, "was": row.state}
    open_ = loading_pb2.SessionOpen(
        organisation=row.organisation, operator_id=row.operator, action="reconcile",
        ap_id=row.ap_id, aid=row.aid, card_id=target.card_id, profile=target.profile,
        journal_id=row.id)
    try:
        outcome = await loader.relay_session(target, open_, None, None)
    except CardapError as exc:
        await loader.audit_end(ctx, "reconcile", start, exc, target, detail)
        return
    done = outcome.done
    if not done.ok:
        await loader.audit_end(ctx, "reconcile", start, error_for(done), target, detail)
        return
    text = _SAID.get(done.reason, "{what}: {message}").format(what=what, message=done.message)
    await asyncio.to_thread(loader.journal.finish, row.id, "reconciled",
                            f"{done.reason}: {done.message}")
    await loader.audit_end(ctx, "reconcile", start, None, target,
                        {**detail, "outcome": done.reason})
    loader.engine.tell(target.owner.name, target.generation, EventKind.CARD_INSERTED,
                       f"reconciled: {text}")
