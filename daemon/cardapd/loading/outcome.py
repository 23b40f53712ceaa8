"""How a card session ended, in the daemon's terms: the service's reasons as domain errors
(one table), and the one rule for when a card may have been touched and must be
reconciled (docs/decisions.md D27).
"""

from __future__ import annotations

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

CONNECTION_LOST = frozenset({"CARD_REMOVED", "CARD_UNRESPONSIVE", "PCSC_UNAVAILABLE",
                             "CARD_PROTOCOL_ERROR", "READER_REMOVED"})
"""After these transport errors the reader's connection is dropped (a stale or confused
handle would fail the next exchange or the next insertion's identification)."""


def may_have_touched_the_card(reason: str) -> bool:
    """Whether a session that failed with the service's `reason` needs reconciling."""
    return reason in TOUCHED_CARD

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
