"""The daemon's plain types → protobuf messages (readers, cards, reads, status, metrics)."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from cardap.i18n import tr
from cardap.v1 import cards_pb2, loading_pb2, terminal_pb2
from cardapd.config import ApKind
from cardapd.domain import DaemonStatus, IdStatus, LoadingLinkStatus
from cardapd.myna.userid import raw_from_text
from cardapd.readers.diagnose import VERDICT_TEXTS, ActionCode, CheckCode, Diagnosis, Verdict
from cardapd.readers.model import (
    CardEvent,
    CardKind,
    CardView,
    EventKind,
    ReaderState,
    ReaderView,
)
from cardapd.reads.model import UserIdRead
from cardapd.telemetry.metrics import Sample

READER_STATE = {
    ReaderState.EMPTY: cards_pb2.READER_STATE_EMPTY,
    ReaderState.CARD_PRESENT: cards_pb2.READER_STATE_CARD_PRESENT,
    ReaderState.CARD_MUTE: cards_pb2.READER_STATE_CARD_MUTE,
    ReaderState.UNAVAILABLE: cards_pb2.READER_STATE_UNAVAILABLE,
    ReaderState.CARD_IDENTIFYING: cards_pb2.READER_STATE_CARD_IDENTIFYING,
}
CARD_KIND = {
    CardKind.MY_NUMBER_CARD: cards_pb2.CARD_KIND_MY_NUMBER_CARD,
    CardKind.OTHER: cards_pb2.CARD_KIND_OTHER,
    CardKind.UNKNOWN: cards_pb2.CARD_KIND_UNKNOWN,
}
CARD_IDENTITY = {"cert": cards_pb2.CARD_IDENTITY_CERTIFICATE,
                 "cplc": cards_pb2.CARD_IDENTITY_CPLC,
                 "unconfirmed": cards_pb2.CARD_IDENTITY_UNCONFIRMED}
EVENT_KIND = {k: getattr(cards_pb2, f"CARD_EVENT_KIND_{k.name}") for k in EventKind}
VERDICT = {v: getattr(terminal_pb2, f"VERDICT_{v.name}") for v in Verdict}
CHECK_CODE = {c: getattr(terminal_pb2, f"CHECK_CODE_{c.name}") for c in CheckCode}
ACTION_CODE = {a: getattr(terminal_pb2, f"NEXT_ACTION_CODE_{a.name}") for a in ActionCode}
RECONCILE = {"not_needed": terminal_pb2.RECONCILE_STATE_NOT_NEEDED,
             "pending": terminal_pb2.RECONCILE_STATE_PENDING,
             "awaiting_confirmation": terminal_pb2.RECONCILE_STATE_AWAITING_CONFIRMATION,
             "reconciled": terminal_pb2.RECONCILE_STATE_RECONCILED}
AP_KINDS: dict[int, ApKind] = {
    cards_pb2.AP_TYPE_UNSPECIFIED: "C", cards_pb2.AP_TYPE_C: "C", cards_pb2.AP_TYPE_A: "A",
    cards_pb2.AP_TYPE_D: "D", cards_pb2.AP_TYPE_CUSTOM: "custom"}
ID_STATUS = {
    IdStatus.UNKNOWN: cards_pb2.USER_ID_STATUS_UNKNOWN,
    IdStatus.IN_OPERATION: cards_pb2.USER_ID_STATUS_IN_OPERATION,
    IdStatus.SUSPENDED: cards_pb2.USER_ID_STATUS_SUSPENDED,
    IdStatus.ABOLISHED: cards_pb2.USER_ID_STATUS_ABOLISHED}


def timestamp(dt: datetime) -> Timestamp:
    """A protobuf Timestamp from an aware datetime."""
    ts = Timestamp()
    ts.FromDatetime(dt)
    return ts


HIDDEN_USER_ID = "NO_OPERATOR_SESSION"
"""The TapRead reason where a user ID is left out: nobody is logged in at the kiosk."""


def card(view: CardView, users: bool = True) -> cards_pb2.Card:
    """A Card message (never with the My Number: the daemon never has it; without
    `users`, without the tap-read user IDs either)."""
    return cards_pb2.Card(
        card_id=view.card_id, atr=view.atr.hex().upper(), kind=CARD_KIND[view.kind],
        profile=view.profile, inserted_at=timestamp(view.inserted_at),
        identity=CARD_IDENTITY.get(view.id_source, cards_pb2.CARD_IDENTITY_UNCONFIRMED),
        tap=[cards_pb2.TapRead(aid=t.aid.hex().upper(), user_id=t.user_id, reason=t.reason,
                               user_id_raw=raw_from_text(t.user_id) or b"")
             if users or not t.user_id else
             cards_pb2.TapRead(aid=t.aid.hex().upper(), reason=HIDDEN_USER_ID)
             for t in view.tap])


def reader(view: ReaderView, users: bool = True) -> cards_pb2.Reader:
    """A Reader message."""
    msg = cards_pb2.Reader(name=view.name, state=READER_STATE[view.state])
    if view.card is not None:
        msg.card.CopyFrom(card(view.card, users))
    return msg


def event(ev: CardEvent, users: bool = True) -> cards_pb2.CardEvent:
    """A CardEvent message."""
    msg = cards_pb2.CardEvent(seq=ev.seq, kind=EVENT_KIND[ev.kind], time=timestamp(ev.time),
                              detail=ev.detail)
    if ev.reader is not None:
        msg.reader.CopyFrom(reader(ev.reader, users))
    if ev.kind is EventKind.PRESET_READY:
        data = dict(ev.data)
        msg.preset_ready.CopyFrom(cards_pb2.PresetReady(
            organisation=data.get("organisation", ""), name=data.get("preset", ""),
            ap_ids=[a for a in data.get("ap_ids", "").split(",") if a]))
    return msg


def loading_link(link: LoadingLinkStatus) -> terminal_pb2.LoadingLinkStatus:
    """A LoadingLinkStatus message."""
    if not link.configured:
        state = terminal_pb2.LOADING_LINK_NOT_CONFIGURED
    elif link.up is None:
        state = terminal_pb2.LOADING_LINK_UNKNOWN
    else:
        state = terminal_pb2.LOADING_LINK_UP if link.up else terminal_pb2.LOADING_LINK_DOWN
    msg = terminal_pb2.LoadingLinkStatus(
        state=state, address=link.address,
        last_error="" if state != terminal_pb2.LOADING_LINK_DOWN else link.last_error)
    if link.last_success is not None:
        msg.last_success_at.CopyFrom(timestamp(link.last_success))
    return msg


def status(st: DaemonStatus, role: str) -> terminal_pb2.GetStatusResponse:
    """A GetStatusResponse message."""
    msg = terminal_pb2.GetStatusResponse(
        version=st.version, started_at=timestamp(st.started_at),
        pcsc_available=st.pcsc_available, readers=st.readers, cards=st.cards,
        audit_head_seq=st.audit_head_seq, role=role, capabilities=st.capabilities,
        loading_link=loading_link(st.loading_link),
        warnings=st.warnings,
        revocation_feeds=[terminal_pb2.RevocationFeedStatus(
            organisation=f.organisation, age_s=-1 if f.age_s is None else int(f.age_s),
            stale=f.stale) for f in st.feeds],
        fingerprint_device=st.fingerprint_device)
    if st.loading_cert_not_after is not None:
        msg.loading_cert_not_after.CopyFrom(timestamp(st.loading_cert_not_after))
    msg.loading_service.CopyFrom(service_status(st))
    return msg


def service_status(st: DaemonStatus) -> terminal_pb2.LoadingServiceStatus:
    """The loading service's link and availability."""
    svc = st.service
    if not svc.known:
        availability = terminal_pb2.SERVICE_AVAILABILITY_UNKNOWN
    elif svc.maintenance is not None:
        availability = terminal_pb2.SERVICE_AVAILABILITY_MAINTENANCE
    else:
        availability = (terminal_pb2.SERVICE_AVAILABILITY_OPEN if svc.open
                        else terminal_pb2.SERVICE_AVAILABILITY_CLOSED)
    msg = terminal_pb2.LoadingServiceStatus(link=loading_link(st.loading_link).state,
                                            availability=availability,
                                            clock_offset_s=svc.clock_offset_s)
    if svc.next_opening is not None:
        msg.next_opening.CopyFrom(timestamp(svc.next_opening))
    if svc.next_closing is not None:
        msg.next_closing.CopyFrom(timestamp(svc.next_closing))
    if svc.next_maintenance is not None:
        w = svc.next_maintenance
        msg.next_maintenance.CopyFrom(loading_pb2.ScheduleWindow(
            start=timestamp(w.start), end=timestamp(w.end), description=w.description))
        if w.announced_at is not None:
            msg.next_maintenance.announced_at.CopyFrom(timestamp(w.announced_at))
    if svc.fetched_at:
        msg.schedule_fetched_at.CopyFrom(timestamp(datetime.fromtimestamp(svc.fetched_at,
                                                                           UTC)))
    return msg


def text_values(values: dict[str, str | int]) -> dict[str, str]:
    """The values filled into a text, as the proto's map<string, string>."""
    return {k: str(v) for k, v in values.items()}


def verdict_text(verdict: Verdict, lang: str) -> str:
    """A verdict in plain words, in `lang`."""
    return tr(lang, VERDICT_TEXTS[verdict])


def diagnosis(d: Diagnosis, lang: str = "en") -> terminal_pb2.ReaderDiagnosis:
    """A ReaderDiagnosis message, its texts in `lang`."""
    return terminal_pb2.ReaderDiagnosis(
        reader=reader(d.reader),
        checks=[terminal_pb2.Check(name=c.name, ok=c.ok, detail=c.text(lang), reason=c.reason,
                                   code=CHECK_CODE[c.code], title=c.title(lang),
                                   values=text_values(c.values))
                for c in d.checks],
        jpki_auth_pin_tries=-1 if d.auth_pin_tries is None else d.auth_pin_tries,
        jpki_sign_pin_tries=-1 if d.sign_pin_tries is None else d.sign_pin_tries,
        aps=[terminal_pb2.ApProbe(name=a.name, aid=a.aid.hex().upper(), present=a.present,
                                  sw=a.sw) for a in d.aps],
        verdict=VERDICT[d.verdict], next_action=d.next_action_text(lang),
        next_action_code=ACTION_CODE[d.action], next_action_values=text_values(d.action_values),
        verdict_text=verdict_text(d.verdict, lang),
        operations=[terminal_pb2.CardOperation(
            journal_id=o.journal_id, action=o.action, ap_id=o.ap_id, aid=o.aid, state=o.state,
            reconcile=RECONCILE[o.reconcile], outcome=o.outcome, started_at=o.started_at,
            finished_at=o.finished_at or "", organisation=o.organisation,
            operator_id=o.operator) for o in d.operations],
        free_bytes=d.free_bytes, catalogue_organisation=d.catalogue_organisation,
        catalogue_aps=[terminal_pb2.CatalogueApPresence(
            ap_id=c.ap_id, display_name=c.display_name, aid=c.aid.hex().upper(), area=c.area,
            present=c.present) for c in d.catalogue])


def samples(items: list[Sample]) -> list[terminal_pb2.MetricSample]:
    """MetricSample messages."""
    return [terminal_pb2.MetricSample(name=s.name, labels=s.labels, value=s.value)
            for s in items]


def user_id_read(r: UserIdRead) -> terminal_pb2.ReadUserIdResponse:
    """A ReadUserIdResponse message."""
    return terminal_pb2.ReadUserIdResponse(
        user_id=r.user_id, info=list(r.info), card_id=r.card_id, reader=r.reader,
        cached=r.cached, status=ID_STATUS[r.status], feed_age_s=r.feed_age_s,
        aid=r.aid.hex().upper(), feed_stale=r.feed_stale, warning=r.warning,
        user_id_raw=raw_from_text(r.user_id) or b"")
