"""Card identification: CPLC while the ISD is selected, then the JPKI AP, its token and (on a
My Number Card) its authentication certificate's head for the card id (D50)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum

from cardapd.errors import NotMyNumberCard
from cardapd.myna.aids import JPKI_AID, select_aid
from cardapd.myna.cardid import (
    SOURCE_CERT,
    SOURCE_CPLC,
    UNCONFIRMED,
    CardIdKey,
    read_auth_cert_identity,
    unconfirmed_id,
)
from cardapd.myna.cplc import Cplc, read_cplc
from cardapd.myna.jpki import MY_NUMBER_CARD_TOKEN, JpkiSession
from cardapd.myna.profiles import profile_for
from cardlib.protocol import ApduProtocol


class CardKind(StrEnum):
    """What the card in the reader is."""

    MY_NUMBER_CARD = "MY_NUMBER_CARD"
    OTHER_CARD = "OTHER_CARD"


@dataclass(frozen=True)
class CardIdentity:
    """Who the card is (never the My Number): kind, stable id and where it came from
    ("cert", "cplc", or "unconfirmed" when the card offers no unique datum), the card's other
    ids (a card with both a certificate and a CPLC), vendor profile, CPLC, token."""

    kind: CardKind
    card_id: str
    profile: str
    cplc: Cplc | None
    token: str | None
    id_source: str = UNCONFIRMED
    aliases: tuple[str, ...] = ()

    @property
    def is_my_number_card(self) -> bool:
        """True for a My Number Card."""
        return self.kind is CardKind.MY_NUMBER_CARD


def identify(proto: ApduProtocol, atr: bytes, key: CardIdKey,
             cancel: threading.Event | None = None) -> CardIdentity:
    """Identify the card as docs/card-model.md says; garbage answers raise CardProtocolError.
    The ATR only picks a vendor profile as fallback evidence, never the id."""
    with proto.sensitive():  # person-linked: never in the traffic log (D50)
        cplc = read_cplc(proto, cancel=cancel)
    profile = profile_for(cplc, atr).name
    token: str | None = None
    cert: bytes | None = None
    if select_aid(proto, JPKI_AID, "SELECT JPKI AP", cancel=cancel):
        try:
            token = JpkiSession(proto).read_token(cancel=cancel)
        except NotMyNumberCard:
            token = None
    is_mnc = token is not None and token.startswith(MY_NUMBER_CARD_TOKEN)
    if is_mnc:
        with proto.sensitive():
            cert = read_auth_cert_identity(proto, cancel=cancel)
    ids: list[tuple[str, str]] = []
    if cert is not None:
        ids.append((SOURCE_CERT, key.cert_id(cert)))
    if cplc is not None:
        ids.append((SOURCE_CPLC, key.cplc_id(cplc.ic_fabricator, cplc.ic_serial_number)))
    kind = CardKind.MY_NUMBER_CARD if is_mnc else CardKind.OTHER_CARD
    if not ids:
        return CardIdentity(kind, unconfirmed_id(), profile, cplc, token)
    return CardIdentity(kind, ids[0][1], profile, cplc, token, ids[0][0],
                        tuple(i for _, i in ids[1:]))
