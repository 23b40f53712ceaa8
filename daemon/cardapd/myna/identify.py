"""Card identification: CPLC while the ISD is selected, then the JPKI AP and its token."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from enum import StrEnum

from cardapd.errors import NotMyNumberCard
from cardapd.myna.aids import JPKI_AID, select_aid
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
    """Who the card is (never the My Number): kind, stable id, vendor profile, CPLC, token."""

    kind: CardKind
    card_id: str
    profile: str
    cplc: Cplc | None
    token: str | None

    @property
    def is_my_number_card(self) -> bool:
        """True for a My Number Card."""
        return self.kind is CardKind.MY_NUMBER_CARD


def atr_card_id(atr: bytes) -> str:
    """The id of a card without CPLC: `atr-` + the first 8 bytes of SHA-256(ATR), upper-case hex."""
    return "atr-" + hashlib.sha256(atr).digest()[:8].hex().upper()


def identify(proto: ApduProtocol, atr: bytes,
             cancel: threading.Event | None = None) -> CardIdentity:
    """Identify the card as docs/card-model.md says; garbage answers raise CardProtocolError."""
    cplc = read_cplc(proto, cancel=cancel)
    card_id = cplc.card_id if cplc is not None else atr_card_id(atr)
    profile = profile_for(cplc, atr).name
    token: str | None = None
    if select_aid(proto, JPKI_AID, "SELECT JPKI AP", cancel=cancel):
        try:
            token = JpkiSession(proto).read_token(cancel=cancel)
        except NotMyNumberCard:
            token = None
    is_mnc = token is not None and token.startswith(MY_NUMBER_CARD_TOKEN)
    kind = CardKind.MY_NUMBER_CARD if is_mnc else CardKind.OTHER_CARD
    return CardIdentity(kind, card_id, profile, cplc, token)
