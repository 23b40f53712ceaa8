"""Loading's plain types → cardap.v1 messages (for the servicer)."""

from __future__ import annotations

from cardap.v1 import cards_pb2, loading_pb2, terminal_pb2
from cardapd.loading.card_aps import CardAp
from cardapd.loading.loader import LoadOutcome, Progress
from cardapd.loading.ports import CatalogueEntry

PHASE = {"connecting": terminal_pb2.LOAD_PHASE_CONNECTING,
         "secure_channel": terminal_pb2.LOAD_PHASE_SECURE_CHANNEL,
         "loading": terminal_pb2.LOAD_PHASE_LOADING,
         "installing": terminal_pb2.LOAD_PHASE_INSTALLING,
         "personalising": terminal_pb2.LOAD_PHASE_PERSONALISING,
         "done": terminal_pb2.LOAD_PHASE_DONE}
AP_TYPE = {"A": cards_pb2.AP_TYPE_A, "C": cards_pb2.AP_TYPE_C, "D": cards_pb2.AP_TYPE_D,
           "custom": cards_pb2.AP_TYPE_CUSTOM}


def event(item: Progress | LoadOutcome) -> terminal_pb2.LoadApEvent:
    """A LoadApEvent: progress or one AP's result."""
    if isinstance(item, Progress):
        return terminal_pb2.LoadApEvent(progress=terminal_pb2.LoadProgress(
            ap_id=item.ap_id, phase=PHASE.get(item.phase, terminal_pb2.LOAD_PHASE_UNSPECIFIED),
            percent=item.percent, blocks_done=item.blocks_done,
            blocks_total=item.blocks_total))
    return terminal_pb2.LoadApEvent(result=terminal_pb2.LoadResult(
        ap_id=item.ap_id, aid=item.aid, user_id=item.user_id, free_bytes=item.free_bytes,
        ok=item.ok, reason=item.reason, message=item.message,
        already_present=item.already_present))


def card_ap(ap: CardAp) -> terminal_pb2.CardAp:
    """A CardAp message."""
    return terminal_pb2.CardAp(aid=ap.aid.hex().upper(),
                               type=AP_TYPE.get(ap.type, cards_pb2.AP_TYPE_UNSPECIFIED),
                               area=ap.area, lifecycle=ap.lifecycle)


def catalogue_entry(e: CatalogueEntry) -> loading_pb2.CatalogueEntry:
    """A CatalogueEntry message."""
    return loading_pb2.CatalogueEntry(
        ap_id=e.ap_id, display_name=e.display_name,
        type=AP_TYPE.get(e.type, cards_pb2.AP_TYPE_UNSPECIFIED), instance_aid=e.instance_aid,
        image_bytes=dict(e.image_bytes), area=e.area, load_file_aid=e.load_file_aid,
        module_aid=e.module_aid, pin_required=e.pin_required)
