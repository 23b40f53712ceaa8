"""cardapctl's exit codes: the one table, for every command.

Each code has a name and a meaning, and lists the daemon's stable error reasons that end
a command with it. A reason not listed (a newer daemon's) falls back on its gRPC code. The
operations guide's table (docs/operations.md, "Exit codes") is checked against this one,
and a test checks that every reason the daemon can send is listed here.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class Exit:
    """One exit code: its number, a name for scripts, what it means, the reasons."""

    code: int
    name: str
    meaning: str
    reasons: tuple[str, ...] = ()


OK, FAIL, USAGE, PRECONDITION, DENIED, UNAVAILABLE = 0, 1, 2, 3, 4, 5
UNIMPLEMENTED, ABORTED, EXISTS, FULL = 6, 7, 8, 9
WARNING, CARD_FAULT, READER_FAULT, NO_CARD, TIMEOUT = 10, 11, 12, 13, 14
AUDIT_BROKEN = WARNING  # `audit verify` / `report`: the chain does not verify
INTERRUPTED, OUTPUT_CLOSED = 130, 141

EXITS: tuple[Exit, ...] = (
    Exit(OK, "OK", "success (for `diagnose`: verdict OK)"),
    Exit(FAIL, "FAIL", "any other failure (an internal error, a load that failed for a "
         "reason not below)", ("INTERNAL", "ENROLL_FAILED", "CONFIG_INVALID",
                               "AUDIT_ANCHOR_MISMATCH", "RELOAD_FAILED", "LOGIN_INCOMPLETE",
                               "CLIENT_ERROR")),
    Exit(USAGE, "USAGE", "usage error or invalid argument (also a negative --timeout, an "
         "unknown reader index, a destructive command without --yes when nobody can be "
         "asked)",
         ("INVALID_ARGUMENT", "MALFORMED_REQUEST", "MISSING_FIELD", "AID_REQUIRED",
          "READER_AMBIGUOUS", "INVALID_FINGER", "INVALID_IDENTIFIER", "INVALID_OPERATOR",
          "INVALID_RIGHT", "INVALID_TEXT", "INVALID_TIME", "INVALID_TIMEOUTS", "INVALID_YEAR",
          "EXPIRY_IN_PAST", "EXPIRY_TOO_FAR", "PASSWORD_POLICY", "PASSWORD_REQUIRED",
          "PRESET_DUPLICATE", "PRESET_USES_AP", "START_REQUIRED", "UNKNOWN_OPERATION",
          "PIN_REQUIRED", "TIMESTAMP_OUT_OF_RANGE", "REASON_REQUIRED", "PRESET_EMPTY",
          "SELF_REMOVE", "MY_NUMBER_REFUSED", "DELETE_REASON_REQUIRED",
          "AUDIT_MY_NUMBER_REFUSED")),
    Exit(PRECONDITION, "PRECONDITION", "no reader, no card, not a My Number Card, the card "
         "refuses or breaks its layout, AP/operator/preset not found, PIN blocked or too few "
         "tries left",
         ("NO_READER", "NO_CARD", "NOT_MY_NUMBER_CARD", "UNSUPPORTED_CARD", "CARD_ERROR",
          "CARD_PROTOCOL_ERROR", "CARD_DATA_INVALID", "UNEXPECTED_STATUS_WORD",
          "SM_INTEGRITY_ERROR", "RESPONSE_INTEGRITY_FAILED", "CARD_REJECTED",
          "COMMAND_REJECTED", "CARD_MISMATCH", "CARD_AUTH_FAILED",
          "CARD_AUTHENTICATION_FAILED", "AP_AUTH_FAILED", "SECURE_CHANNEL_ERROR",
          "KEY_VERSION_UNKNOWN", "AP_NOT_FOUND", "AP_NOT_CONFIGURED", "AP_TYPE_MISMATCH",
          "UNKNOWN_AP", "NOT_FOUND", "OPERATOR_NOT_FOUND", "ORGANISATION_NOT_FOUND",
          "NO_ORGANISATION", "PRESET_NOT_FOUND", "RESET_NOT_FOUND", "NO_ENROLLED_FINGER",
          "PIN_ERROR", "PIN_BLOCKED", "PIN_TRIES_TOO_FEW", "REVOCATION_FEED_STALE",
          "FAILED_PRECONDITION", "OPERATOR_REMOVED", "BOOTSTRAP_IN_PROGRESS",
          "JOURNAL_ROW_NOT_FOUND", "NOT_AWAITING_CONFIRMATION", "USER_ID_FORMAT")),
    Exit(DENIED, "DENIED", "wrong socket for the role, not permitted, no or expired "
         "operator session, login refused, wrong PIN",
         ("WRONG_ROLE", "PERMISSION_DENIED", "NOT_PERMITTED", "AP_NOT_PERMITTED",
          "AID_FORBIDDEN", "RIGHT_MISSING", "ADMINISTRATOR_REQUIRED", "NOT_ADMINISTRATOR",
          "OTHER_ORGANISATION", "SELF_APPROVAL", "SELF_DISABLE", "OPERATOR_DISABLED",
          "UNAUTHENTICATED", "NO_OPERATOR_SESSION", "SESSION_EXPIRED", "SESSION_IDLE",
          "SESSION_UNKNOWN", "SESSION_WRONG_CONNECTION", "FINGER_NOT_MATCHED",
          "PASSWORD_WRONG", "PASSWORD_NOT_APPROVED", "PASSWORD_APPROVAL_EXPIRED",
          "OPERATOR_LOCKED", "PIN_WRONG", "LOGIN_REFUSED", "SESSION_IN_USE",
          "ORGANISATION_NOT_CONFIGURED", "ORGANISATION_NOT_ALLOWED",
          "BOOTSTRAP_SECRET_INVALID")),
    Exit(UNAVAILABLE, "UNAVAILABLE", "the daemon (not running, or not in the socket's "
         "group), pcscd, the card, the reader, the loading service or fprintd is "
         "unavailable, or the daemon is stopping",
         ("DAEMON_UNREACHABLE", "PCSC_UNAVAILABLE", "READER_UNAVAILABLE", "READER_BUSY",
          "CARD_UNRESPONSIVE", "CARD_IDENTIFYING", "CARD_IN_USE",
          "LOADING_SERVICE_UNAVAILABLE",
          "LOADING_SERVICE_ERROR", "LOADING_SERVICE_PROTOCOL", "LOADING_SERVICE_TIMEOUT",
          "LOADING_SERVICE_NOT_CONFIGURED", "SERVICE_UNAVAILABLE", "SERVICE_REFUSED",
          "OUTSIDE_SERVICE_HOURS", "CHECKPOINTS_NOT_KEPT", "NO_CONNECTION", "PROTOCOL_ERROR",
          "BIOMETRIC_UNAVAILABLE", "BIOMETRIC_BUSY", "BIOMETRIC_PERMISSION_DENIED",
          "STORE_ERROR", "STORE_TOO_NEW", "SHUTTING_DOWN",
          "EVENT_QUEUE_OVERFLOW")),
    Exit(UNIMPLEMENTED, "UNIMPLEMENTED", "not implemented in this version of the daemon",
         ("UNIMPLEMENTED",)),
    Exit(ABORTED, "ABORTED", "card or reader removed during the operation, the operation "
         "or login cancelled, the card reset by another program",
         ("CARD_REMOVED", "READER_REMOVED", "CARD_RESET", "CANCELLED", "LOGIN_CANCELLED",
          "CLIENT_GONE")),
    Exit(EXISTS, "EXISTS", "already exists (an AP on the card, an operator, a finger)",
         ("ALREADY_EXISTS", "OPERATOR_EXISTS", "ORGANISATION_EXISTS",
          "FINGER_ALREADY_ENROLLED", "RESET_ALREADY_ACKNOWLEDGED", "OPERATOR_ID_USED",
          "ADMINISTRATOR_EXISTS")),
    Exit(FULL, "FULL", "card full, or another limit reached",
         ("CARD_FULL", "RESOURCE_EXHAUSTED", "BIOMETRIC_STORAGE_FULL", "TOO_MANY_SESSIONS")),
    Exit(WARNING, "WARNING", "`diagnose`: WARNING (the card works; something needs "
         "attention); `audit verify` / `report`: the audit chain does not verify"),
    Exit(CARD_FAULT, "CARD_FAULT", "`diagnose`: CARD_FAULT"),
    Exit(READER_FAULT, "READER_FAULT", "`diagnose`: READER_FAULT (also: pcscd down, no "
         "reader at all)"),
    Exit(NO_CARD, "NO_CARD", "`diagnose`: NO_CARD"),
    Exit(TIMEOUT, "TIMEOUT", "timed out: no finger or password within the wait, or no "
         "answer within --timeout", ("BIOMETRIC_TIMEOUT", "PASSWORD_TIMEOUT",
                                     "DEADLINE_EXCEEDED")),
    Exit(INTERRUPTED, "INTERRUPTED", "interrupted by Ctrl-C (`watch` and `metrics` end "
         "with 0: that is how they are stopped)"),
    Exit(OUTPUT_CLOSED, "OUTPUT_CLOSED", "the output was closed early (`cardapctl audit "
         "export` piped into `head`), as a command killed by SIGPIPE; nothing is printed"),
)

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
