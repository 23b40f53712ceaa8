"""The loading service's wire messages (cardap.v1 loading.proto) ↔ the daemon's plain types.

The only place besides `cardapd.api` where protobuf is known: what the loading and the
revocation capabilities see are the dataclasses of `cardapd.loading.ports` and
`cardapd.reads.revocation`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from cardap.v1 import audit_pb2, cards_pb2, loading_pb2
from cardapd.audit.checkpoints import Checkpoint
from cardapd.domain import IdStatus, ScheduleWindow
from cardapd.errors import CardapError, ServiceUnavailable
from cardapd.loading.ports import (
    Apdu,
    ApduBatch,
    BatchResult,
    CatalogueEntry,
    SessionDone,
    SessionOpen,
)
from cardapd.loading.schedule import ServiceSchedule
from cardapd.myna.aids import check_aid
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


def entry_problem(e: loading_pb2.CatalogueEntry) -> str | None:
    """Why this terminal refuses a catalogue entry (its AIDs through the one AID check:
    never the input assist AP; the instance and load file never a built-in AP), or None."""
    where = f"catalogue entry {e.ap_id[:64]!r}"
    for field, value, card_ap in (("instance_aid", e.instance_aid, True),
                                  ("load_file_aid", e.load_file_aid, True),
                                  ("module_aid", e.module_aid, False)):
        if not value and field != "instance_aid":
            continue
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            return f"{where}: {field} is not hex"
        if not 5 <= len(raw) <= 16:
            return f"{where}: {field} is not an AID of 5 to 16 bytes"
        try:
            check_aid(raw, f"{where}.{field}", card_ap=card_ap)
        except CardapError as exc:
            return exc.message
    return None


def catalogue(aps: Iterable[loading_pb2.CatalogueEntry]
              ) -> tuple[list[CatalogueEntry], list[str]]:
    """The catalogue entries this terminal accepts, and why it refused the others."""
    accepted: list[CatalogueEntry] = []
    refused: list[str] = []
    for e in aps:
        problem = entry_problem(e)
        if problem is None:
            accepted.append(catalogue_entry(e))
        else:
            refused.append(problem)
    return accepted, refused


def session_open(o: SessionOpen, cp: Checkpoint | None = None) -> loading_pb2.SessionOpen:
    """The first message of a card session (with the audit checkpoint, when there is one)."""
    msg = loading_pb2.SessionOpen(
        organisation=o.organisation, operator_id=o.operator_id, action=o.action,
        ap_id=o.ap_id, aid=o.aid, card_id=o.card_id, profile=o.profile,
        journal_id=o.journal_id, custom_user_id=o.custom_user_id,
        delete_reason=o.delete_reason)
    if cp is not None:
        msg.checkpoint.CopyFrom(checkpoint(cp))
    return msg


def checkpoint(cp: Checkpoint) -> audit_pb2.AuditCheckpoint:
    """An audit checkpoint as the wire has it."""
    msg = audit_pb2.AuditCheckpoint(terminal_id=cp.terminal_id, seq=cp.seq, hash=cp.hash,
                                    kind=cp.kind, segment=cp.segment,
                                    unacknowledged_resets=cp.unacknowledged_resets)
    msg.row_time.FromMicroseconds(cp.row_ts_us)
    return msg


def checkpoint_from(msg: audit_pb2.AuditCheckpoint) -> Checkpoint:
    """An audit checkpoint from the wire."""
    return Checkpoint(msg.terminal_id, msg.seq, msg.hash.lower(),
                      msg.row_time.ToMicroseconds(), msg.kind, msg.segment,
                      msg.unacknowledged_resets)


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
        next_opening=_time(d.next_opening, "next_opening") if d.HasField("next_opening")
        else None,
        round_trips=d.round_trips, billed=d.billed, profile=d.profile,
        needed_bytes=d.needed_bytes)


def revocation_feed(organisation: str, f: loading_pb2.RevocationFeed) -> PulledFeed:
    """One pull of a revocation feed (entries of an unknown status are left out)."""
    return PulledFeed(
        organisation=f.organisation or organisation, version=f.version,
        generated_at=_time(f.generated_at, "generated_at"),
        entries=tuple(FeedEntry(e.aid, e.user_id, ID_STATUS[e.status], e.version,
                                _time(e.changed_at, "changed_at").isoformat())
                      for e in f.entries if e.status in ID_STATUS))


def _time(value: Timestamp, field: str) -> datetime:
    """A Timestamp from the service; one out of the Timestamp range is the service's
    protocol error, never a crash of the daemon."""
    if not (0 <= value.nanos <= 999_999_999 and -62135596800 <= value.seconds <= 253402300799):
        raise ServiceUnavailable(f"the loading service sent an invalid time in {field} "
                                 f"({value.seconds} s, {value.nanos} ns)",
                                 reason="LOADING_SERVICE_PROTOCOL", metadata={"field": field})
    return value.ToDatetime(UTC)


def _window(w: loading_pb2.ScheduleWindow, field: str) -> ScheduleWindow:
    return ScheduleWindow(_time(w.start, f"{field}.start"), _time(w.end, f"{field}.end"),
                          w.description,
                          _time(w.announced_at, f"{field}.announced_at")
                          if w.HasField("announced_at") else None)


def service_schedule(s: loading_pb2.ServiceSchedule) -> ServiceSchedule:
    """The service's hours, closures and announced maintenance."""
    return ServiceSchedule(
        service_time=_time(s.service_time, "service_time"),
        utc_offset_minutes=s.utc_offset_minutes,
        opens_at_minute=s.opens_at_minute, closes_at_minute=s.closes_at_minute,
        closures=tuple(_window(w, "closures") for w in s.closures),
        maintenance=tuple(_window(w, "maintenance") for w in s.maintenance))
