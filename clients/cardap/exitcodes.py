"""cardapctl's exit codes: the one table, for every command.

Each code has a name and a meaning, and lists the stable error reasons that end a command
with it: each reason's exit code is part of its entry in the reason registry
(`cardap.reasons`), so a reason is registered once and its exit code follows. A reason not
registered (a newer daemon's) falls back on its gRPC code. The operations guide's table
(docs/operations.md, "Exit codes") is checked against this one.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from cardap import reasons
from cardap.i18n import N_


@dataclass(frozen=True)
class Exit:
    """One exit code: its number, a name for scripts, what it means, the reasons."""

    code: int
    name: str
    meaning: str  # a message id: English here and in the guide, `tr` for people
    reasons: tuple[str, ...] = ()


OK, FAIL, USAGE, PRECONDITION, DENIED, UNAVAILABLE = 0, 1, 2, 3, 4, 5
UNIMPLEMENTED, ABORTED, EXISTS, FULL = 6, 7, 8, 9
WARNING, CARD_FAULT, READER_FAULT, NO_CARD, TIMEOUT = 10, 11, 12, 13, 14
AUDIT_BROKEN = WARNING  # `audit verify` / `report`: the chain does not verify
INTERRUPTED, OUTPUT_CLOSED = 130, 141

_CODES: tuple[tuple[int, str, str], ...] = (
    (OK, "OK", N_("success (for `diagnose`: verdict OK)")),
    (FAIL, "FAIL", N_("any other failure (an internal error, a load that failed for a reason "
     "not below)")),
    (USAGE, "USAGE", N_("usage error or invalid argument (also a negative --timeout, an "
     "unknown reader index, a destructive command without --yes when nobody can be asked)")),
    (PRECONDITION, "PRECONDITION", N_("no reader, no card, not a My Number Card, the card "
     "refuses or breaks its layout, AP/operator/preset not found, PIN blocked or too few "
     "tries left")),
    (DENIED, "DENIED", N_("wrong socket for the role, not permitted, no or expired operator "
     "session, login refused, wrong PIN")),
    (UNAVAILABLE, "UNAVAILABLE", N_("the daemon (not running, or not in the socket's group), "
     "pcscd, the card, the reader, the loading service or fprintd is unavailable, or the "
     "daemon is stopping")),
    (UNIMPLEMENTED, "UNIMPLEMENTED", N_("not implemented in this version of the daemon")),
    (ABORTED, "ABORTED", N_("card or reader removed during the operation, the operation or "
     "login cancelled, the card reset by another program")),
    (EXISTS, "EXISTS", N_("already exists (an AP on the card, an operator, a finger)")),
    (FULL, "FULL", N_("card full, or another limit reached")),
    (WARNING, "WARNING", N_("`diagnose`: WARNING (the card works; something needs attention); "
     "`audit verify` / `report`: the audit chain does not verify")),
    (CARD_FAULT, "CARD_FAULT", N_("`diagnose`: CARD_FAULT")),
    (READER_FAULT, "READER_FAULT", N_("`diagnose`: READER_FAULT (also: pcscd down, no reader "
     "at all)")),
    (NO_CARD, "NO_CARD", N_("`diagnose`: NO_CARD")),
    (TIMEOUT, "TIMEOUT", N_("timed out: no finger or password within the wait, or no answer "
     "within --timeout")),
    (INTERRUPTED, "INTERRUPTED", N_("interrupted by Ctrl-C (`watch` and `metrics` end with 0: "
     "that is how they are stopped)")),
    (OUTPUT_CLOSED, "OUTPUT_CLOSED", N_("the output was closed early (`cardapctl audit "
     "export` piped into `head`), as a command killed by SIGPIPE; nothing is printed")),
)

EXITS: tuple[Exit, ...] = tuple(
    Exit(code, name, meaning, tuple(r.code for r in reasons.REASONS if r.exit == name))
    for code, name, meaning in _CODES)
"""The table: each code's reasons are those the registry (`cardap.reasons`) ends with it."""

REASON_EXIT: dict[str, int] = {reason: e.code for e in EXITS for reason in e.reasons}
"""Every known reason → its exit code."""

CODE_EXIT: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: USAGE,
    grpc.StatusCode.OUT_OF_RANGE: USAGE,
    grpc.StatusCode.FAILED_PRECONDITION: PRECONDITION,
    grpc.StatusCode.NOT_FOUND: PRECONDITION,
    grpc.StatusCode.DATA_LOSS: PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED: DENIED,
    grpc.StatusCode.UNAUTHENTICATED: DENIED,
    grpc.StatusCode.UNAVAILABLE: UNAVAILABLE,
    grpc.StatusCode.UNIMPLEMENTED: UNIMPLEMENTED,
    grpc.StatusCode.ABORTED: ABORTED,
    grpc.StatusCode.CANCELLED: ABORTED,
    grpc.StatusCode.ALREADY_EXISTS: EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED: FULL,
    grpc.StatusCode.DEADLINE_EXCEEDED: TIMEOUT,
}
"""A reason this client does not know falls back on its gRPC code."""


def for_reason(reason: str, code: grpc.StatusCode | None = None) -> int:
    """The exit code of a failure: by its reason, else by its gRPC code, else FAIL."""
    if reason in REASON_EXIT:
        return REASON_EXIT[reason]
    return CODE_EXIT.get(code, FAIL) if code is not None else FAIL


def markdown() -> str:
    """The table as the operations guide shows it (a test keeps the guide equal to it)."""
    rows = ["| code | name | meaning | the daemon's reasons that end with it |",
            "| --- | --- | --- | --- |"]
    rows += [f"| {e.code} | {e.name} | {e.meaning} | "
             f"{', '.join(f'`{r}`' for r in e.reasons) or '-'} |" for e in EXITS]
    return "\n".join(rows) + "\n"
