"""Identification at insertion, on the reader's thread: who the card is, and tap-to-ID."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from cardapd.errors import ApNotFound, CardDataInvalid
from cardapd.myna.cardid import UNCONFIRMED, CardIdKey, unconfirmed_id
from cardapd.myna.identify import CardKind as MynaKind
from cardapd.myna.identify import identify
from cardapd.myna.typec import TypeCSession
from cardapd.myna.userid import DEFAULT_RULE, UserIdRule
from cardapd.readers.model import CardKind, CardView, TapResult
from cardlib.errors import StatusWordError
from cardlib.protocol import ApduProtocol


def identify_card(proto: ApduProtocol, atr: bytes, type_c_aids: Sequence[bytes],
                  inserted_at: datetime, key: CardIdKey,
                  rule: Callable[[bytes], UserIdRule] = lambda aid: DEFAULT_RULE) -> CardView:
    """Identify the card; on a My Number Card read each configured Type C AP's user ID."""
    card_atr = proto.atr or atr
    try:
        ident = identify(proto, card_atr, key)
    except StatusWordError as exc:
        # An answer the model does not allow at this step: some other kind of card.
        return CardView(unconfirmed_id(), card_atr, CardKind.OTHER, "unknown",
                        inserted_at, detail=f"not a My Number Card ({exc.message})")
    if ident.kind is not MynaKind.MY_NUMBER_CARD:
        return CardView(ident.card_id, card_atr, CardKind.OTHER, ident.profile, inserted_at,
                        detail="not a My Number Card (no JPKI AP token)",
                        id_source=ident.id_source, aliases=ident.aliases)
    taps: list[TapResult] = []
    session = TypeCSession(proto)
    for aid in type_c_aids:
        try:
            record = session.read(aid, rule=rule(aid))
        except (ApNotFound, CardDataInvalid, StatusWordError) as exc:
            taps.append(TapResult(aid, reason=exc.reason))
            continue
        taps.append(TapResult(aid, record.user_id, tuple(record.info)))
    detail = "" if ident.id_source != UNCONFIRMED else (
        "no unique datum could be read (no authentication certificate, no CPLC): this card "
        "cannot be told from another; interrupted operations need the operator to confirm "
        "the card")
    return CardView(ident.card_id, card_atr, CardKind.MY_NUMBER_CARD, ident.profile,
                    inserted_at, tuple(taps), detail=detail, id_source=ident.id_source,
                    aliases=ident.aliases)
