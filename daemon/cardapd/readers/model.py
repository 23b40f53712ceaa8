"""Readers, cards and card events as the daemon publishes them; free of gRPC and PC/SC."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class CardKind(enum.Enum):
    """What a card is, decided by SELECT (never by ATR)."""

    MY_NUMBER_CARD = "my_number_card"
    OTHER = "other"
    UNKNOWN = "unknown"


class ReaderState(enum.Enum):
    """What is in a reader."""

    EMPTY = "empty"
    CARD_PRESENT = "card_present"
    CARD_MUTE = "card_mute"
    UNAVAILABLE = "unavailable"
    CARD_IDENTIFYING = "card_identifying"


@dataclass(frozen=True)
class TapResult:
    """A Type C AP read at insertion (tap-to-ID); `reason` is set when it failed."""

    aid: bytes
    user_id: str = ""
    info: tuple[bytes, ...] = ()
    reason: str = ""


@dataclass(frozen=True)
class CardView:
    """A card as identified at insertion. Never holds the My Number.

    `card_id` is a keyed hash of data unique to the card (`id_source` "cert" or "cplc"),
    or, for a card that offers none, `unconfirmed-…`, valid for this insertion only
    (`id_source` "unconfirmed"); `aliases` are the card's other ids (D50)."""

    card_id: str
    atr: bytes
    kind: CardKind
    profile: str
    inserted_at: datetime
    tap: tuple[TapResult, ...] = ()
    detail: str = ""
    id_source: str = "unconfirmed"
    aliases: tuple[str, ...] = ()

    @property
    def confirmed(self) -> bool:
        """Whether the card id names this card on every insertion (not `unconfirmed-…`)."""
        return self.id_source != "unconfirmed"

    @property
    def ids(self) -> tuple[str, ...]:
        """Every id of this card: `card_id`, then the aliases."""
        return (self.card_id, *self.aliases)

    def tap_for(self, aid: bytes) -> TapResult | None:
        """The insertion's read of `aid`, if it was configured for tap-to-ID."""
        return next((t for t in self.tap if t.aid == aid), None)


@dataclass(frozen=True)
class ReaderView:
    """One reader and its card, as published to clients."""

    name: str
    state: ReaderState
    card: CardView | None = None


class EventKind(enum.Enum):
    """Kinds of card event, mirroring cardap.v1.CardEventKind."""

    SNAPSHOT = "snapshot"
    SNAPSHOT_END = "snapshot_end"
    READER_ADDED = "reader_added"
    READER_REMOVED = "reader_removed"
    CARD_INSERTED = "card_inserted"
    CARD_REMOVED = "card_removed"
    DEGRADED = "degraded"
    RECOVERED = "recovered"
    CARD_MUTE = "card_mute"
    CARD_DETECTED = "card_detected"
    PRESET_READY = "preset_ready"


@dataclass(frozen=True)
class CardEvent:
    """One event of the card event stream."""

    seq: int
    kind: EventKind
    time: datetime
    reader: ReaderView | None = None
    detail: str = ""
    data: tuple[tuple[str, str], ...] = ()  # structured facts (PRESET_READY: the preset)
