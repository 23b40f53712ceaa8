"""What happened to this card here: the loading capability's part of a diagnosis.

For a My Number Card in the reader: the journal's loads and deletes on it that did not
simply succeed, with their reconciliation state; the free space per area (GET DATA FF21, in
plain); and which APs of the operator's organisation's catalogue are on it (SELECT), all
with a verdict and a next action the operator can follow. Registered with the readers as a
`DiagnosisStep` (docs/decisions.md D52).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from cardap.i18n import N_
from cardapd.domain import OpContext
from cardapd.errors import CardapError
from cardapd.loading.card_aps import Candidate, read_card_aps
from cardapd.loading.journal import Journal, JournalRow
from cardapd.loading.ports import CatalogueEntry, LoadingService
from cardapd.myna.cardid import is_unconfirmed
from cardapd.readers.diagnose import (
    ActionCode,
    CardOperation,
    CatalogueApOnCard,
    Check,
    CheckCode,
    Diagnosis,
    Verdict,
)
from cardapd.readers.model import ReaderView
from cardapd.readers.owner import ReaderOwner
from cardlib.errors import CardLibError

MAX_OPERATIONS = 20

def reconcile_state(row: JournalRow) -> str:
    """The row's reconciliation state, as Diagnose reports it."""
    if row.state == "reconciled":
        return "reconciled"
    if row.needs_reconcile:
        return "awaiting_confirmation" if is_unconfirmed(row.card_id) else "pending"
    return "not_needed"


def operation(row: JournalRow) -> CardOperation:
    """A journal row as a CardOperation."""
    return CardOperation(row.id, row.action, row.ap_id, row.aid, row.state,
                         reconcile_state(row), row.outcome, row.started_at, row.finished_at,
                         row.organisation, row.operator)


class CardStory:
    """The DiagnosisStep of loading: busy while the reader's loading lock is held."""

    def __init__(self, journal: Journal, service: Callable[[], LoadingService],
                 lock: Callable[[str], asyncio.Lock]) -> None:
        self.journal = journal
        self._service = service
        self._lock = lock

    def busy(self, reader: str) -> str:
        """"a load, delete or reconciliation" while one holds the reader's lock."""
        return N_("a load, delete or reconciliation") if self._lock(reader).locked() else ""

    async def story(self, ctx: OpContext, owner: ReaderOwner, view: ReaderView,
                    diag: Diagnosis, organisation: str) -> None:
        """Journal, free space and catalogue APs of the card in `view`."""
        card = view.card
        if card is None:
            return
        rows = await asyncio.to_thread(self.journal.for_card, card.ids)
        if not card.confirmed:
            rows += await asyncio.to_thread(self.journal.awaiting_confirmation)
        shown = [r for r in rows if r.state != "done"][-MAX_OPERATIONS:]
        diag.operations = [operation(r) for r in shown]
        self._journal_verdict(diag)
        entries = await self._catalogue(diag, organisation)
        candidates = [Candidate(bytes.fromhex(e.instance_aid), e.type, e.area)
                      for e in entries]
        async with self._lock(owner.name):
            try:
                found, free = await owner.run(
                    lambda proto: read_card_aps(proto, candidates, ctx.cancel))
            except (CardapError, CardLibError) as exc:
                reason = getattr(exc, "reason", "CARD_PROTOCOL_ERROR")
                diag.checks.append(Check(CheckCode.FREE_SPACE, False,
                                         N_("could not read the areas: {error}"), reason,
                                         values={"error": str(exc)}))
                diag.conclude(Verdict.WARNING, ActionCode.CHECK_SERVICE_LINK)
                return
        diag.free_bytes = dict(free)
        diag.checks.append(Check(CheckCode.FREE_SPACE, True, N_("bytes free per area: {free}"),
                                 values={"free": ", ".join(f"{area} {n}" for area, n
                                                           in sorted(free.items()))}))
        present = {a.aid for a in found}
        diag.catalogue = [CatalogueApOnCard(e.ap_id, e.display_name,
                                            bytes.fromhex(e.instance_aid), e.area,
                                            bytes.fromhex(e.instance_aid) in present)
                          for e in entries]
        if entries:
            on = [c.ap_id for c in diag.catalogue if c.present]
            diag.checks.append(Check(CheckCode.CATALOGUE_APS, True, N_(
                "{on} of {total} APs of {organisation}'s catalogue on the card: {aps}"),
                values={"on": len(on), "total": len(entries),
                        "organisation": diag.catalogue_organisation,
                        "aps": ", ".join(on) or "-"}))

    def _journal_verdict(self, diag: Diagnosis) -> None:
        ops = diag.operations
        pending = [o for o in ops if o.reconcile == "pending"]
        waiting = [o for o in ops if o.reconcile == "awaiting_confirmation"]
        if not ops:
            diag.checks.append(Check(CheckCode.JOURNAL, True, N_(
                "no interrupted or failed load or delete of this card on this terminal")))
        for group, reason, action in ((pending, "RECONCILE_PENDING",
                                       ActionCode.LEAVE_CARD_FOR_REPAIR),
                                      (waiting, "RECONCILE_NEEDS_CONFIRMATION",
                                       ActionCode.CONFIRM_RECONCILE)):
            if group:
                what = ", ".join(f"{o.journal_id}: {o.state} {o.action} of {o.ap_id}"
                                 for o in group[:4])
                diag.checks.append(Check(CheckCode.JOURNAL, False,
                                         N_("{n} interrupted operation(s): {what}"), reason,
                                         values={"n": len(group), "what": what}))
                diag.conclude(Verdict.WARNING, action, n=len(group), what=what)
        done = [o for o in ops if o.reconcile in ("reconciled", "not_needed")]
        if done:
            diag.checks.append(Check(CheckCode.JOURNAL_HISTORY, True, N_(
                "{n} earlier failed or repaired operation(s), nothing left to do"),
                values={"n": len(done)}))

    async def _catalogue(self, diag: Diagnosis, organisation: str) -> list[CatalogueEntry]:
        """The catalogue of the operator's organisation (or, without an operator, the
        terminal certificate's); [] when no service is configured or it does not answer."""
        service = self._service()
        if not service.configured:
            diag.checks.append(Check(CheckCode.CATALOGUE_APS, True, N_(
                "no loading service is configured: no catalogue to compare with")))
            return []
        try:
            entries = await service.catalogue(organisation)
        except CardapError as exc:
            diag.checks.append(Check(CheckCode.CATALOGUE_APS, False,
                                     N_("the catalogue could not be read: {error}"), exc.reason,
                                     values={"error": exc.message}))
            diag.conclude(Verdict.WARNING, ActionCode.CHECK_SERVICE_LINK)
            return []
        diag.catalogue_organisation = organisation or "(this terminal's organisation)"
        return entries

