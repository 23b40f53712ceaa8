"""The daemon's typed error hierarchy.

Every layer raises these; only the API layer turns them into gRPC status codes
(see `cardapd.api.status`). Each class carries a stable machine-readable `reason`
(UPPER_SNAKE, never changed once published) and a human message. Nothing in a
message may contain a PIN, a key or the My Number.
"""

from __future__ import annotations

from collections.abc import Mapping

from cardlib import errors as card


class CardapError(Exception):
    """Base class: a failure the daemon understands and can explain to a client."""

    reason: str = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None,
                 metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.reason


class InvalidArgument(CardapError):
    """The request itself is wrong (a field missing, malformed or too long)."""

    reason = "INVALID_ARGUMENT"


class NotFound(CardapError):
    """A named thing (reader, AP, operator) does not exist."""

    reason = "NOT_FOUND"


class FailedPrecondition(CardapError):
    """The request is well formed but the system is not in the state it needs (an operator
    removed, another operator's session open, an administrator already there)."""

    reason = "FAILED_PRECONDITION"


class NotAuthorized(CardapError):
    """The caller may not do this (wrong socket role, no session, no right)."""

    reason = "PERMISSION_DENIED"


class ReaderError(CardapError):
    """The reader or the PC/SC service failed or is absent."""

    reason = "READER_UNAVAILABLE"


class NoReader(ReaderError):
    """No reader is connected (or the named one is gone)."""

    reason = "NO_READER"


class ReaderRemoved(ReaderError):
    """The reader went away (unplugged, or its driver lost the device) during the operation."""

    reason = "READER_REMOVED"


class PcscUnavailable(ReaderError):
    """pcscd is not running or its context was lost; the daemon is reconnecting."""

    reason = "PCSC_UNAVAILABLE"


class CardError(CardapError):
    """The card answered, but not as the model says it must."""

    reason = "CARD_ERROR"


class NoCard(CardError):
    """The reader is empty."""

    reason = "NO_CARD"


class CardRemoved(CardError):
    """The card left the reader (or was reset) during the operation."""

    reason = "CARD_REMOVED"


class CardReset(CardError):
    """Another program reset the card during the operation (it is still in the reader)."""

    reason = "CARD_RESET"


class CardUnresponsive(CardError):
    """The card does not answer (mute, powered off, or a transmission error)."""

    reason = "CARD_UNRESPONSIVE"


class CardProtocolError(CardError):
    """The card's answer is malformed: garbage, truncated, or an impossible length."""

    reason = "CARD_PROTOCOL_ERROR"


class NotMyNumberCard(CardError):
    """The card in the reader is not a My Number Card."""

    reason = "NOT_MY_NUMBER_CARD"


class ApNotFound(CardError):
    """The card AP asked for is not on this card."""

    reason = "AP_NOT_FOUND"


class CardDataInvalid(CardError):
    """The AP answered with data that does not follow its layout (never guessed at)."""

    reason = "CARD_DATA_INVALID"


class IntegrityError(CardError):
    """A secure-messaging response failed its check (MAC, data objects); its content is dropped."""

    reason = "SM_INTEGRITY_ERROR"


class StatusWordError(CardError):
    """A status word the operation did not expect."""

    reason = "UNEXPECTED_STATUS_WORD"

    def __init__(self, sw: int, context: str) -> None:
        super().__init__(f"{context}: card answered {sw:04X}", metadata={"sw": f"{sw:04X}"})
        self.sw = sw


def tries_left(n: int) -> str:
    """`1 try left`, `2 tries left`: how many PIN or password tries remain, in words."""
    return f"{n} {'try' if n == 1 else 'tries'} left"


class PinError(CardError):
    """A PIN check failed or was refused; carries the tries left when known."""

    reason = "PIN_ERROR"

    def __init__(self, message: str, tries_left: int | None, *,
                 reason: str | None = None) -> None:
        meta = {} if tries_left is None else {"tries_left": str(tries_left)}
        super().__init__(message, reason=reason, metadata=meta)
        self.tries_left = tries_left


class InvalidPinError(PinError):
    """The PIN was wrong; `tries_left` tries remain."""

    reason = "PIN_WRONG"


class PinBlocked(PinError):
    """The PIN is blocked; the holder must have it reset at the municipality."""

    reason = "PIN_BLOCKED"


class PinGuardRefused(PinError):
    """The PIN guard refused to send VERIFY: too few tries left to risk one."""

    reason = "PIN_TRIES_TOO_FEW"


class ServiceUnavailable(CardapError):
    """A dependency (loading service, fprintd, the store) cannot be reached now."""

    reason = "SERVICE_UNAVAILABLE"


class ResourceExhausted(CardapError):
    """A capacity ran out (the card's area is full); metadata says how much is free."""

    reason = "RESOURCE_EXHAUSTED"


class AlreadyExists(CardapError):
    """The thing to create is already there (an AP already on the card)."""

    reason = "ALREADY_EXISTS"


class Unauthenticated(CardapError):
    """The call needs an operator session and has none (or an invalid one)."""

    reason = "UNAUTHENTICATED"


class Cancelled(CardapError):
    """The caller cancelled the operation (or disconnected)."""

    reason = "CANCELLED"


class Busy(CardapError):
    """The reader is in use by another operation that cannot be shared."""

    reason = "READER_BUSY"


class StoreError(CardapError):
    """The audit log or another store could not be written; the operation is refused."""

    reason = "STORE_ERROR"


class ConfigError(CardapError):
    """The configuration is invalid; the message names the file, key and the problem."""

    reason = "CONFIG_INVALID"


def from_card(exc: card.CardLibError) -> CardapError:
    """The daemon's error for a card library error (same reason, message and metadata).

    Card work runs on a reader's thread (`readers.owner.ReaderOwner.run`), which turns
    what the card library raises into these, so nothing above it sees a foreign error.
    """
    made: CardapError
    if isinstance(exc, card.Cancelled):
        made = Cancelled(exc.message)
    elif isinstance(exc, card.StatusWordError):
        made = StatusWordError(exc.sw, exc.context)
    elif isinstance(exc, card.CardProtocolError):
        made = CardProtocolError(exc.message, reason=exc.reason)
    else:
        made = CardError(exc.message, reason=exc.reason)
    made.metadata.update(exc.metadata)
    return made
