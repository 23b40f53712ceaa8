"""SessionDone → the daemon's domain errors (the service's reasons, one table)."""

from __future__ import annotations

from collections.abc import Callable

from cardap.v1 import loading_pb2
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

OK_REASONS = frozenset({"LOADED", "DELETED", "ALREADY_ABSENT", "RECONCILED",
                        "NOTHING_TO_RECONCILE"})
# A load that ended with these may have left something on the card: reconcile it.
TOUCHED_CARD = frozenset({"CARD_REMOVED", "CARD_REJECTED", "PROTOCOL_ERROR", "INTERNAL",
                          "CARD_FULL", "ALREADY_EXISTS", "CARD_AUTH_FAILED"})

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


def metadata_of(done: loading_pb2.SessionDone) -> dict[str, str]:
    """The facts of a SessionDone worth passing to the client."""
    md: dict[str, str] = {"service_reason": done.reason}
    if done.aid:
        md["aid"] = done.aid
    if done.reason == "CARD_FULL":
        md["free_bytes"] = str(done.free_bytes)
        md["needed_bytes"] = str(done.needed_bytes)
    if done.HasField("next_opening"):
        md["next_opening"] = done.next_opening.ToJsonString()
    return md


def error_for(done: loading_pb2.SessionDone) -> CardapError:
    """The domain error of a failed SessionDone (ServiceUnavailable for the unknown)."""
    make = _ERRORS.get(done.reason)
    message = done.message or f"the loading service answered {done.reason}"
    md = metadata_of(done)
    if make is None:
        return ServiceUnavailable(f"loading service: {message}",
                                  reason="LOADING_SERVICE_ERROR", metadata=md)
    return make(message, md)
