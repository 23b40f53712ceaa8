"""What loading needs from the rest of the daemon, as narrow ports, and the messages of a
card session in plain dataclasses.

The loading service speaks gRPC; `cardapd.servicelink` adapts it to `LoadingService` and
turns its messages into these. The readers provide `CardAccess`. Neither side sees the
other's insides.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from cardapd.domain import OrganisationRules
from cardapd.errors import CardapError
from cardapd.readers.diagnose import DiagnosisStep
from cardapd.readers.model import EventKind, ReaderView
from cardapd.readers.owner import ReaderOwner

PHASES = {1: "secure_channel", 2: "loading", 3: "installing", 4: "personalising"}
"""The service's phase hints of a batch, as the progress phases shown to the kiosk."""


@dataclass(frozen=True)
class CardTarget:
    """The card an operation works on, fixed at its start (a later insertion in the same
    reader has another generation)."""

    owner: ReaderOwner
    view: ReaderView
    generation: int

    @property
    def card_id(self) -> str:
        """The card's id."""
        return self.view.card.card_id if self.view.card else ""

    @property
    def card_ids(self) -> tuple[str, ...]:
        """Every id of the card (its id, then its aliases: journal rows may use any, D50)."""
        return self.view.card.ids if self.view.card else ()

    @property
    def profile(self) -> str:
        """The card's vendor profile."""
        return self.view.card.profile if self.view.card else ""


@dataclass(frozen=True)
class CatalogueEntry:
    """An AP of the service's catalogue that an organisation may load."""

    ap_id: str
    display_name: str = ""
    type: str = ""  # "A", "C", "D", "custom" ("" when the service did not say)
    instance_aid: str = ""
    image_bytes: Mapping[str, int] = field(default_factory=dict)
    area: str = ""
    load_file_aid: str = ""
    module_aid: str = ""
    pin_required: bool = False


@dataclass(frozen=True)
class SessionOpen:
    """The first message of a card session."""

    organisation: str
    operator_id: str
    action: str  # "load", "delete" or "reconcile"
    ap_id: str = ""
    aid: str = ""
    card_id: str = ""
    profile: str = ""
    journal_id: str = ""
    custom_user_id: str = ""
    delete_reason: str = ""


@dataclass(frozen=True)
class Apdu:
    """One command of a batch, the status words that let the batch go on, and whether
    its data is secret (never logged)."""

    command: bytes
    expect_sw: tuple[int, ...] = (0x9000,)
    sensitive: bool = False


@dataclass(frozen=True)
class ApduBatch:
    """Commands the service wants run on the card, in order."""

    batch_id: int
    apdus: tuple[Apdu, ...]
    phase: int = 0
    percent: int = 0
    step: str = ""


@dataclass(frozen=True)
class BatchResult:
    """The card's answers to a batch (the failing one last) and why it stopped early."""

    batch_id: int
    responses: tuple[bytes, ...]
    complete: bool
    transport_error: str = ""
    # The terminal's own error behind `transport_error` (never sent to the service): the
    # service only learns that the card was lost, the terminal knows why.
    error: CardapError | None = field(default=None, compare=False)


@dataclass(frozen=True)
class SessionDone:
    """How a card session ended."""

    ok: bool
    reason: str
    message: str = ""
    aid: str = ""
    user_id: str = ""
    free_bytes: int = 0
    card_id: str = ""
    next_opening: datetime | None = None
    round_trips: int = 0
    billed: bool = False
    profile: str = ""
    needed_bytes: int = 0


@dataclass(frozen=True)
class SessionOutcome:
    """What a card session ended with, and what it cost."""

    done: SessionDone
    batches: int
    apdus_sent: int


RunBatch = Callable[[ApduBatch], Awaitable[BatchResult]]
OnBatch = Callable[[ApduBatch], None]


class LoadingService(Protocol):
    """The loading service: its catalogue and card sessions."""

    @property
    def configured(self) -> bool:
        """Whether a service is configured at all."""
        ...

    @property
    def timeout_s(self) -> float:
        """How long its answers may take."""
        ...

    async def catalogue(self, organisation: str, *,
                        timeout_s: float | None = None) -> list[CatalogueEntry]:
        """The APs `organisation` may load ("" : every AP this terminal may see)."""
        ...

    async def session(self, open_: SessionOpen, run: RunBatch,
                      on_batch: OnBatch | None = None) -> SessionOutcome:
        """Run one card session to its end; `run` executes each batch on the card."""
        ...

    async def close(self) -> None:
        """Release the connection."""
        ...


class CardAccess(Protocol):
    """What loading needs of the readers."""

    @property
    def tap_aids(self) -> tuple[bytes, ...]:
        """The Type C AIDs read at insertion."""
        ...

    async def settle(self, reader: str) -> None:
        """Wait (bounded) for an identification in progress."""
        ...

    def reader_with_card(self, reader: str) -> tuple[ReaderOwner, ReaderView]:
        """The owner and view of the reader holding a card."""
        ...

    def owner(self, name: str) -> ReaderOwner | None:
        """The owner of reader `name`."""
        ...

    def forget_tap(self, reader: str, generation: int, aid: bytes) -> None:
        """Drop the cached tap read of `aid` (the AP was deleted)."""
        ...

    def tell(self, reader: str, generation: int, kind: EventKind, detail: str,
             data: tuple[tuple[str, str], ...] = ()) -> None:
        """Publish an event about the card still in `reader` (`data`: structured facts)."""
        ...

    def on_identified(self, listener: Callable[[ReaderView, int], None]) -> None:
        """Be told of each identified My Number Card, before its event goes out."""
        ...

    def add_diagnosis_step(self, step: DiagnosisStep) -> None:
        """Add loading's part (the card's story) to every diagnosis."""
        ...


class RulesSource(Protocol):
    """Where an organisation's rules at this terminal come from (the roster)."""

    def rules(self, organisation: str) -> OrganisationRules:
        """What the organisation's administrators allow its operators."""
        ...
