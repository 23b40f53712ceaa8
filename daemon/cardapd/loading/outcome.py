"""How a card session ended, in the daemon's terms: the service's reasons as domain errors
(one table), and the one rule for when a card may have been touched and must be
reconciled (docs/decisions.md D27).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC

from cardapd.errors import (
    AlreadyExists,
    CardapError,
    CardError,
    CardRemoved,
    InvalidArgument,
    NotAuthorized,
    NotFound,
    ResourceExhausted,
    ServiceUnavailable,
)
from cardapd.loading.ports import SessionDone

TOUCHED_CARD = frozenset({"CARD_REMOVED", "CARD_REJECTED", "PROTOCOL_ERROR", "INTERNAL",
                          "CARD_FULL", "ALREADY_EXISTS", "CARD_AUTH_FAILED"})
"""A session that failed with one of these may have changed the card (a file half loaded,
an instance half personalised): its journal row stays for reconciliation, which reads the
card back and is idempotent. Every other failure (refusals before the first card command:
not permitted, outside service hours, unknown AP, …) left the card as it was."""

NOT_NOW = frozenset({"CARD_REMOVED", "READER_REMOVED", "PCSC_UNAVAILABLE",
                     "CARD_UNRESPONSIVE", "CARD_RESET", "SHUTTING_DOWN", "CARD_IN_USE",
                     "READER_BUSY"})
"""After these the card cannot be reconciled right away (it left, pcscd or the reader is
gone, it does not answer, another program holds it, the daemon stops): the journal keeps
the row and the reconciliation runs when the card is identified again."""

READ_BACK = (TOUCHED_CARD - {"CARD_REMOVED"}) | {"CARD_PROTOCOL_ERROR",
                                                 "RESPONSE_INTEGRITY_FAILED"}
"""A delete that failed with one of these while the card stayed in the reader may have
deleted the AP all the same (its answer lost or damaged): its outcome is read back from
the card (does the instance still answer SELECT?)."""


def may_have_touched_the_card(reason: str) -> bool:
    """Whether a session that failed with the service's `reason` needs reconciling."""
    return reason in TOUCHED_CARD


def reads_back(reason: str) -> bool:
    """Whether a delete that failed with `reason` is settled by reading the card back."""
    return reason in READ_BACK


AFTER = {"CARD_UNRESPONSIVE": "as soon as it answers again",
         "CARD_PROTOCOL_ERROR": "now, while it is in the reader",
         "CARD_RESET": "now, while it is in the reader"}


def terminal_error(err: CardapError, reader: str, service_reason: str) -> CardapError:
    """The terminal's own error for a card session it lost (the service only heard that
    the card was lost), saying when the card is checked again."""
    when = AFTER.get(err.reason, "when it is next seen")
    made = copy.copy(err)
    made.args = (f"{err.message}; the card is checked again (reconciled) {when}",)
    made.metadata = {**err.metadata, "reader": reader, "service_reason": service_reason}
    return made

_ERRORS: dict[str, Callable[[str, dict[str, str]], CardapError]] = {
    "CARD_FULL": lambda m, md: ResourceExhausted(m, reason="CARD_FULL", metadata=md),
    "ALREADY_EXISTS": lambda m, md: AlreadyExists(m, reason="ALREADY_EXISTS", metadata=md),
    "NOT_PERMITTED": lambda m, md: NotAuthorized(m, reason="NOT_PERMITTED", metadata=md),
    "OUTSIDE_SERVICE_HOURS": lambda m, md: ServiceUnavailable(
        m, reason="OUTSIDE_SERVICE_HOURS", metadata=md),
    "CARD_AUTH_FAILED": lambda m, md: CardError(m, reason="CARD_AUTH_FAILED", metadata=md),
    "CARD_MISMATCH": lambda m, md: CardError(m, reason="CARD_MISMATCH", metadata=md),
    "UNSUPPORTED_CARD": lambda m, md: CardError(m, reason="UNSUPPORTED_CARD", metadata=md),
    "CARD_REJECTED": lambda m, md: CardError(m, reason="CARD_REJECTED", metadata=md),
    "CARD_REMOVED": lambda m, md: CardRemoved(m, metadata=md),
    "UNKNOWN_AP": lambda m, md: NotFound(m, reason="UNKNOWN_AP", metadata=md),
    "INVALID_ARGUMENT": lambda m, md: InvalidArgument(m, metadata=md),
    "PROTOCOL_ERROR": lambda m, md: ServiceUnavailable(
        m, reason="PROTOCOL_ERROR", metadata=md),
}


def metadata_of(done: SessionDone) -> dict[str, str]:
    """The facts of a SessionDone worth passing to the client."""
    md: dict[str, str] = {"service_reason": done.reason}
    if done.aid:
        md["aid"] = done.aid
    if done.reason == "CARD_FULL":
        md["free_bytes"] = str(done.free_bytes)
        md["needed_bytes"] = str(done.needed_bytes)
    if done.next_opening is not None:
        md["next_opening"] = done.next_opening.astimezone(UTC).isoformat().replace(
            "+00:00", "Z")
    return md


def error_for(done: SessionDone) -> CardapError:
    """The domain error of a failed SessionDone (ServiceUnavailable for the unknown)."""
    make = _ERRORS.get(done.reason)
    message = done.message or f"the loading service answered {done.reason}"
    md = metadata_of(done)
    if make is None:
        return ServiceUnavailable(f"loading service: {message}",
                                  reason="LOADING_SERVICE_ERROR", metadata=md)
    return make(message, md)
