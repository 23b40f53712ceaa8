"""The loading service's wire messages (cardap.v1 loading.proto) ↔ the daemon's plain types.

The only place besides `cardapd.api` where protobuf is known: what the loading and the
revocation capabilities see are the dataclasses of `cardapd.loading.ports` and
`cardapd.reads.revocation`.
"""

from __future__ import annotations

from datetime import UTC

from cardap.v1 import cards_pb2, loading_pb2
from cardapd.domain import IdStatus, ScheduleWindow
from cardapd.loading.ports import (
    Apdu,
    ApduBatch,
    BatchResult,
    CatalogueEntry,
    SessionDone,
    SessionOpen,
)
from cardapd.loading.schedule import ServiceSchedule
from cardapd.reads.revocation import PulledFeed
from cardapd.reads.revocation_store import FeedEntry

AP_TYPES = {cards_pb2.AP_TYPE_A: "A", cards_pb2.AP_TYPE_C: "C", cards_pb2.AP_TYPE_D: "D",
            cards_pb2.AP_TYPE_CUSTOM: "custom"}
ID_STATUS = {cards_pb2.USER_ID_STATUS_IN_OPERATION: IdStatus.IN_OPERATION,
             cards_pb2.USER_ID_STATUS_SUSPENDED: IdStatus.SUSPENDED,
             cards_pb2.USER_ID_STATUS_ABOLISHED: IdStatus.ABOLISHED}


def catalogue_entry(e: loading_pb2.CatalogueEntry) -> CatalogueEntry:
    """One catalogue entry."""
    return CatalogueEntry(ap_id=e.ap_id, display_name=e.display_name,
                          type=AP_TYPES.get(e.type, ""), instance_aid=e.instance_aid,
                          image_bytes=dict(e.image_bytes), area=e.area,
                          load_file_aid=e.load_file_aid, module_aid=e.module_aid,
                          pin_required=e.pin_required)


def session_open(o: SessionOpen) -> loading_pb2.SessionOpen:
    """The first message of a card session."""
    return loading_pb2.SessionOpen(
        organisation=o.organisation, operator_id=o.operator_id, action=o.action,
        ap_id=o.ap_id, aid=o.aid, card_id=o.card_id, profile=o.profile,
        journal_id=o.journal_id, custom_user_id=o.custom_user_id,
        delete_reason=o.delete_reason)


def batch(b: loading_pb2.ApduBatch) -> ApduBatch:
    """A batch of commands to run on the card."""
    return ApduBatch(batch_id=b.batch_id,
                     apdus=tuple(Apdu(bytes(a.command), tuple(a.expect_sw), a.sensitive)
                                 for a in b.apdus),
                     phase=int(b.phase), percent=b.percent, step=b.step)


def batch_result(r: BatchResult) -> loading_pb2.BatchResult:
    """The card's answers to a batch."""
    return loading_pb2.BatchResult(batch_id=r.batch_id, responses=list(r.responses),
                                   complete=r.complete, transport_error=r.transport_error)


def session_done(d: loading_pb2.SessionDone) -> SessionDone:
    """How a card session ended."""
    return SessionDone(
        ok=d.ok, reason=d.reason, message=d.message, aid=d.aid, user_id=d.user_id,
        free_bytes=d.free_bytes, card_id=d.card_id,
        next_opening=d.next_opening.ToDatetime(UTC) if d.HasField("next_opening") else None,
        round_trips=d.round_trips, billed=d.billed, profile=d.profile,
        needed_bytes=d.needed_bytes)


def revocation_feed(organisation: str, f: loading_pb2.RevocationFeed) -> PulledFeed:
    """One pull of a revocation feed (entries of an unknown status are left out)."""
    return PulledFeed(
        organisation=f.organisation or organisation, version=f.version,
        generated_at=f.generated_at.ToDatetime(UTC),
        entries=tuple(FeedEntry(e.aid, e.user_id, ID_STATUS[e.status], e.version,
                                e.changed_at.ToDatetime(UTC).isoformat())
                      for e in f.entries if e.status in ID_STATUS))


def _window(w: loading_pb2.ScheduleWindow) -> ScheduleWindow:
    return ScheduleWindow(w.start.ToDatetime(UTC), w.end.ToDatetime(UTC), w.description,
                          w.announced_at.ToDatetime(UTC) if w.HasField("announced_at")
                          else None)


def service_schedule(s: loading_pb2.ServiceSchedule) -> ServiceSchedule:
    """The service's hours, closures and announced maintenance."""
    return ServiceSchedule(
        service_time=s.service_time.ToDatetime(UTC), utc_offset_minutes=s.utc_offset_minutes,
        opens_at_minute=s.opens_at_minute, closes_at_minute=s.closes_at_minute,
        closures=tuple(_window(w) for w in s.closures),
        maintenance=tuple(_window(w) for w in s.maintenance))
