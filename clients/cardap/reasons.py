"""Every stable error reason, in one registry: what it means, what to do next.

A failed call carries a google.rpc.ErrorInfo (domain `cardapd`) whose `reason` is one of
these codes. Each entry says which gRPC code(s) the daemon sends it with, what the reason
means, which metadata keys come with it, the client's next step, and the exit code
cardapctl ends with (`cardap.exitcodes` derives its table from this one). The meaning and
the next step are marked for translation (`N_`, catalogue domain `reasons`): the daemon
puts them, in the call's language and filled from the error's metadata, into a
google.rpc.LocalizedMessage beside the English `status.message` (`localized`). The
README's reason table and the operations guide's exit-code table are generated from here
(`python -m cardap.reasons readme README.md` / `guide docs/operations.md`, run by `make
docs`; tests fail when they differ).

A reason is never renamed or removed once published; a newer daemon may send reasons an
older client does not know (the client falls back on the gRPC code).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from cardap.i18n import N_, tr

Source = Literal["daemon", "client", "grpc", "audit"]
"""Who produces the reason: the daemon (an ErrorInfo), the Python client itself (no
daemon answered, or the answer was incomplete), gRPC itself (no ErrorInfo: the client
takes the status code's name), or an audit row (never an error of a call)."""

ExitName = Literal["FAIL", "USAGE", "PRECONDITION", "DENIED", "UNAVAILABLE",
                   "UNIMPLEMENTED", "ABORTED", "EXISTS", "FULL", "TIMEOUT"]

PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class Reason:
    """One stable reason: its code, gRPC code(s) (the usual first), cardapctl's exit
    code, what it means and what to do next (English ids, translated where shown), the
    metadata keys that come with it (`request_id` always does) and who produces it."""

    code: str
    grpc: tuple[str, ...]
    exit: ExitName
    meaning: str
    next_step: str
    metadata: tuple[str, ...] = ()
    source: Source = "daemon"


# Next steps shared by several reasons (one text, one translation).
FIX_REQUEST = N_("Correct the request and send it again.")
FIX_FIELD = N_("Correct the field {field} and send the request again.")
RETRY_LATER = N_("Try again in a moment; if it keeps failing, run diagnose and tell the "
                 "administrator.")
SEE_LOG = N_("Tell the administrator, with the request ID; the daemon's log says more.")
INSERT_CARD = N_("Insert the card (chip side into the reader) and try again.")
CARD_AGAIN = N_("Take the card out, insert it again and retry; if it fails again, run "
                "diagnose on the card.")
LOG_IN = N_("Log in as an operator (cardapctl login) and try again.")
ASK_ADMIN = N_("Ask an administrator of your organisation for this.")
CHECK_SERVICE = N_("Check the network link to the loading service and try again later; "
                   "tell the administrator if it persists.")
NOTHING = N_("Nothing to do: it is already there.")
RENAME = N_("Choose another name or identifier.")
CHECK_CONFIG = N_("Correct the configuration (cardapd --check-config) and reload the daemon.")
ASK_AGAIN = N_("Start again when ready.")
FINGER_AGAIN = N_("Place the finger on the sensor again, or log in with the password.")

_R = Reason
REASONS: tuple[Reason, ...] = (
    # -- the request itself ------------------------------------------------------------
    _R("INVALID_ARGUMENT", ("INVALID_ARGUMENT",), "USAGE",
       N_("A field of the request is missing, malformed or too long."), FIX_REQUEST,
       ("field",)),
    _R("MALFORMED_REQUEST", ("INVALID_ARGUMENT",), "USAGE",
       N_("The request is not a valid message."),
       N_("Update the client: its messages do not match this daemon's API.")),
    _R("MISSING_FIELD", ("INVALID_ARGUMENT",), "USAGE",
       N_("A required field ({field}) is empty."), FIX_FIELD, ("field",)),
    _R("AID_REQUIRED", ("INVALID_ARGUMENT",), "USAGE",
       N_("The request must name the AP by its AID."), FIX_REQUEST, ("field",)),
    _R("AID_BUILT_IN", ("INVALID_ARGUMENT",), "USAGE",
       N_("The AID ({field}) could select a built-in AP of every My Number Card where a "
          "card AP is expected."),
       N_("Name the AID of a card AP (cardapctl aps lists them)."), ("field",)),
    _R("AP_TYPE_MISMATCH", ("INVALID_ARGUMENT",), "PRECONDITION",
       N_("The AP named is not of the type this call reads."), FIX_FIELD, ("field",)),
    _R("READER_AMBIGUOUS", ("FAILED_PRECONDITION",), "USAGE",
       N_("Several readers hold a card ({readers}); the request must name one."),
       N_("Name the reader (--reader) or take out the cards you do not mean."),
       ("readers",)),
    _R("DELETE_REASON_REQUIRED", ("INVALID_ARGUMENT",), "USAGE",
       N_("A deletion must say why the AP is deleted."),
       N_("Give the reason (--reason holder_request, card_renewal or other)."),
       ("field",)),
    _R("INVALID_FINGER", ("INVALID_ARGUMENT",), "USAGE",
       N_("That is not a finger the sensor knows."),
       N_("Name one of the fingers listed (right-index-finger, …)."),
       ("finger", "fingers")),
    _R("INVALID_IDENTIFIER", ("INVALID_ARGUMENT",), "USAGE",
       N_("An identifier ({field}) has characters or a length it may not have."),
       FIX_FIELD, ("field",)),
    _R("INVALID_OPERATOR", ("INVALID_ARGUMENT",), "USAGE",
       N_("The operator is not named correctly."), FIX_REQUEST),
    _R("INVALID_RIGHT", ("INVALID_ARGUMENT",), "USAGE",
       N_("A right named is not one of the rights."),
       N_("Use the rights listed by cardapctl rights --help."), ("field", "right")),
    _R("INVALID_TEXT", ("INVALID_ARGUMENT",), "USAGE",
       N_("A text field ({field}) is too long or holds characters it may not."),
       FIX_FIELD, ("field",)),
    _R("INVALID_TIME", ("INVALID_ARGUMENT",), "USAGE",
       N_("A time ({field}) is not valid here."), FIX_FIELD, ("field",)),
    _R("INVALID_TIMEOUTS", ("INVALID_ARGUMENT",), "USAGE",
       N_("The session timeouts do not fit together (idle must not exceed the maximum)."),
       FIX_REQUEST),
    _R("INVALID_YEAR", ("INVALID_ARGUMENT",), "USAGE",
       N_("No report exists for that year."),
       N_("Name a past or the current year.")),
    _R("EXPIRY_IN_PAST", ("INVALID_ARGUMENT",), "USAGE",
       N_("The expiry given is already past."), N_("Give an expiry in the future.")),
    _R("EXPIRY_TOO_FAR", ("INVALID_ARGUMENT",), "USAGE",
       N_("The expiry given is further away than allowed."),
       N_("Give a nearer expiry.")),
    _R("PASSWORD_POLICY", ("INVALID_ARGUMENT",), "USAGE",
       N_("The new password does not meet the password rules."),
       N_("Choose a longer password that follows the rules in the message.")),
    _R("PRESET_DUPLICATE", ("INVALID_ARGUMENT",), "USAGE",
       N_("The preset names the same AP twice."), N_("Name each AP once.")),
    _R("PRESET_EMPTY", ("INVALID_ARGUMENT",), "USAGE",
       N_("A preset must name at least one AP."), N_("Name the APs of the preset.")),
    _R("PRESET_USES_AP", ("INVALID_ARGUMENT",), "USAGE",
       N_("An AP still used by a preset ({presets}) cannot be taken away."),
       N_("Change or remove those presets first."), ("presets",)),
    _R("START_REQUIRED", ("INVALID_ARGUMENT",), "USAGE",
       N_("The first message of this stream must be its start."),
       N_("Update the client: it must send the start message first."), ("field",)),
    _R("UNKNOWN_OPERATION", ("INVALID_ARGUMENT",), "USAGE",
       N_("The operation named ({operation}) is not one the audit log records."),
       N_("Use an operation name listed by cardapctl audit export --help."),
       ("operation", "field")),
    _R("PIN_REQUIRED", ("INVALID_ARGUMENT",), "USAGE",
       N_("This AP needs the card holder's PIN."),
       N_("Ask the card holder to enter the PIN and send it with the request."),
       ("field",)),
    _R("TIMESTAMP_OUT_OF_RANGE", ("INVALID_ARGUMENT",), "USAGE",
       N_("A time ({field}) is outside the range a timestamp can hold."), FIX_FIELD,
       ("field",)),
    _R("REASON_REQUIRED", ("INVALID_ARGUMENT",), "USAGE",
       N_("This action must say why it is done."), N_("Give the reason and try again."),
       ("field",)),
    _R("SELF_REMOVE", ("INVALID_ARGUMENT",), "USAGE",
       N_("An operator cannot remove themself."),
       N_("Ask another administrator to do it.")),
    _R("SELF_DISABLE", ("INVALID_ARGUMENT",), "DENIED",
       N_("An operator cannot disable themself."),
       N_("Ask another administrator to do it.")),
    _R("MY_NUMBER_REFUSED", ("INVALID_ARGUMENT",), "USAGE",
       N_("The field {field} holds what looks like a My Number, which is never stored."),
       N_("Remove the number from the text and send it again."), ("field",)),
    _R("AUDIT_MY_NUMBER_REFUSED", ("UNAVAILABLE",), "USAGE",
       N_("The audit log refused a row holding what looks like a My Number."),
       N_("Remove the number from the text and try again.")),
    _R("NO_ORGANISATION", ("INVALID_ARGUMENT",), "PRECONDITION",
       N_("No organisation's APs are read on this terminal ([[read.aps]]): there is no "
          "revocation feed to pull."),
       N_("Configure the APs read here ([[read.aps]], each with its organisation) and "
          "reload the daemon.")),
    _R("NO_CONNECTION", ("INVALID_ARGUMENT",), "UNAVAILABLE",
       N_("The call came over no connection a session can be bound to."),
       N_("Call over the daemon's Unix socket.")),
    _R("ENROLL_FAILED", ("INVALID_ARGUMENT",), "FAIL",
       N_("The fingerprint enrolment failed."), N_("Start the enrolment again.")),
    # -- readers and cards -------------------------------------------------------------
    _R("NO_READER", ("FAILED_PRECONDITION",), "PRECONDITION",
       N_("No card reader is connected, or the reader named is not there."),
       N_("Connect the reader (or name one from cardapctl readers) and try again."),
       ("reader",)),
    _R("NO_CARD", ("FAILED_PRECONDITION",), "PRECONDITION",
       N_("There is no card in the reader."), INSERT_CARD, ("reader",)),
    _R("NOT_MY_NUMBER_CARD", ("FAILED_PRECONDITION",), "PRECONDITION",
       N_("The card in the reader is not a My Number Card."),
       N_("Insert the card holder's My Number Card."), ("reader",)),
    _R("UNSUPPORTED_CARD", ("FAILED_PRECONDITION",), "PRECONDITION",
       N_("The loading service does not support this card."),
       N_("This card cannot take the AP; tell the card holder."),
       ("service_reason", "aid")),
    _R("CARD_ERROR", ("FAILED_PRECONDITION",), "PRECONDITION",
       N_("The card answered, but not as a My Number Card must."), CARD_AGAIN,
       ("reader",)),
    _R("CARD_PROTOCOL_ERROR", ("FAILED_PRECONDITION",), "PRECONDITION",
       N_("The card's answer was malformed (garbage or truncated)."), CARD_AGAIN,
       ("reader",)),
    _R("CARD_DATA_INVALID", ("FAILED_PRECONDITION",), "PRECONDITION",
       N_("The AP's data on the card does not follow its layout."),
       N_("The card's data is not usable; send the card holder to the issuer."),
       ("reader",)),
    _R("UNEXPECTED_STATUS_WORD", ("FAILED_PRECONDITION",), "PRECONDITION",
       N_("The card answered status word {sw}, which the operation did not expect."),
       CARD_AGAIN, ("sw",)),
    _R("SM_INTEGRITY_ERROR", ("DATA_LOSS",), "PRECONDITION",
       N_("A secure-messaging answer of the card failed its check; its content was "
          "dropped."), CARD_AGAIN),
    _R("RESPONSE_INTEGRITY_FAILED", ("FAILED_PRECONDITION",), "PRECONDITION",
       N_("A protected answer of the card failed its check."), CARD_AGAIN),
    _R("SECURE_CHANNEL_ERROR", ("FAILED_PRECONDITION",), "PRECONDITION",
       N_("The secure channel with the card could not be kept."), CARD_AGAIN),
    _R("CARD_AUTHENTICATION_FAILED", ("FAILED_PRECONDITION",), "PRECONDITION",
       N_("The card did not prove itself with the expected keys."), SEE_LOG),
    _R("KEY_VERSION_UNKNOWN", ("FAILED_PRECONDITION",), "PRECONDITION",
       N_("The card uses a key version the terminal does not know."), SEE_LOG),
    _R("COMMAND_REJECTED", ("FAILED_PRECONDITION",), "PRECONDITION",
       N_("The card refused a command of the secure channel."), CARD_AGAIN),
    _R("CARD_REJECTED", ("FAILED_PRECONDITION",), "PRECONDITION",
       N_("The card refused the loading service's commands."), CARD_AGAIN,
       ("service_reason", "aid")),
    _R("CARD_MISMATCH", ("FAILED_PRECONDITION",), "PRECONDITION",
       N_("The card in the reader is not the one the loading session began with."),
       N_("Insert the same card and start again."), ("service_reason",)),
    _R("CARD_AUTH_FAILED", ("FAILED_PRECONDITION",), "PRECONDITION",
       N_("The loading service could not authenticate the card."), CARD_AGAIN,
       ("service_reason", "aid")),
    _R("AP_AUTH_FAILED", ("FAILED_PRECONDITION",), "PRECONDITION",
       N_("The terminal's access key does not open this AP on the card."),
       N_("Check the AP's key in the configuration; the card may belong elsewhere."),
       ("reader",)),
    _R("AP_NOT_FOUND", ("NOT_FOUND",), "PRECONDITION",
       N_("The AP asked for is not on this card."),
       N_("Load the AP first, or read another one."), ("reader",)),
    _R("AP_NOT_CONFIGURED", ("FAILED_PRECONDITION",), "PRECONDITION",
       N_("This terminal is not configured to read that AP."), CHECK_CONFIG),
    _R("UNKNOWN_AP", ("NOT_FOUND",), "PRECONDITION",
       N_("The AP {ap_id} is not in the organisation's catalogue at the loading service."),
       N_("Choose an AP from cardapctl loadable."), ("ap_id",)),
    _R("USER_ID_FORMAT", ("FAILED_PRECONDITION", "INVALID_ARGUMENT"), "PRECONDITION",
       N_("A user ID does not follow its organisation's format."),
       N_("Check the user ID (or the card's AP) against the organisation's format.")),
    _R("PIN_ERROR", ("FAILED_PRECONDITION",), "PRECONDITION",
       N_("The PIN check failed."), N_("Let the card holder try again, carefully."),
       ("tries_left",)),
    _R("PIN_WRONG", ("UNAUTHENTICATED",), "DENIED",
       N_("The PIN was wrong: {tries_left} tries left."),
       N_("Let the card holder enter the PIN again only if they are sure of it; the "
          "municipality resets a blocked PIN."), ("tries_left",)),
    _R("PIN_BLOCKED", ("FAILED_PRECONDITION",), "PRECONDITION",
       N_("The PIN is blocked."),
       N_("Send the card holder to the municipality to have the PIN reset."),
       ("tries_left",)),
    _R("PIN_TRIES_TOO_FEW", ("FAILED_PRECONDITION",), "PRECONDITION",
       N_("Only {tries_left} PIN tries are left; the terminal does not risk one."),
       N_("Send the card holder to the municipality; the terminal will not try the PIN."),
       ("tries_left",)),
    _R("CARD_REMOVED", ("ABORTED",), "ABORTED",
       N_("The card left the reader during the operation."),
       N_("Insert the card again and keep it still; the terminal checks what was done."),
       ("reader",)),
    _R("CARD_RESET", ("ABORTED",), "ABORTED",
       N_("Another program reset the card during the operation."),
       N_("Stop the other program using the reader and try again."), ("reader",)),
    _R("READER_REMOVED", ("ABORTED",), "ABORTED",
       N_("The reader went away during the operation."),
       N_("Connect the reader again and retry."), ("reader",)),
    _R("CARD_UNRESPONSIVE", ("UNAVAILABLE",), "UNAVAILABLE",
       N_("The card does not answer."), CARD_AGAIN, ("reader",)),
    _R("CARD_IN_USE", ("UNAVAILABLE",), "UNAVAILABLE",
       N_("Another program holds the card."),
       N_("Close the other program using the reader and try again."), ("reader",)),
    _R("CARD_IDENTIFYING", ("UNAVAILABLE",), "UNAVAILABLE",
       N_("The card is still being identified."), N_("Try again in a second.")),
    _R("READER_BUSY", ("UNAVAILABLE",), "UNAVAILABLE",
       N_("The reader is busy with another operation."),
       N_("Wait for the other operation to end and try again.")),
    _R("READER_UNAVAILABLE", ("UNAVAILABLE",), "UNAVAILABLE",
       N_("The reader cannot be used now."), RETRY_LATER),
    _R("PCSC_UNAVAILABLE", ("UNAVAILABLE",), "UNAVAILABLE",
       N_("The smart card service (pcscd) is not available; the daemon is reconnecting."),
       RETRY_LATER),
    # -- the card's capacity and what is on it -----------------------------------------
    _R("ALREADY_EXISTS", ("ALREADY_EXISTS",), "EXISTS",
       N_("The AP is already on the card."), NOTHING, ("aid", "ap_id", "reader")),
    _R("CARD_FULL", ("RESOURCE_EXHAUSTED",), "FULL",
       N_("The card has {free_bytes} bytes free; the AP needs {needed_bytes}."),
       N_("Delete an AP the card holder no longer needs, then load again."),
       ("free_bytes", "needed_bytes", "aid", "service_reason")),
    _R("RESOURCE_EXHAUSTED", ("RESOURCE_EXHAUSTED",), "FULL",
       N_("A capacity ran out."), RETRY_LATER),
    # -- the loading service -----------------------------------------------------------
    _R("NOT_PERMITTED", ("PERMISSION_DENIED",), "DENIED",
       N_("The organisation may not do this with that AP (its catalogue or its "
          "administrators' rules)."), ASK_ADMIN, ("ap_id", "aid", "journal_id")),
    _R("OUTSIDE_SERVICE_HOURS", ("UNAVAILABLE",), "UNAVAILABLE",
       N_("The loading service is closed now."),
       N_("Load again when the service opens (see next_opening)."), ("next_opening",)),
    _R("LOADING_SERVICE_UNAVAILABLE", ("UNAVAILABLE",), "UNAVAILABLE",
       N_("The loading service cannot be reached."), CHECK_SERVICE,
       ("grpc_code", "batches")),
    _R("LOADING_SERVICE_ERROR", ("UNAVAILABLE",), "UNAVAILABLE",
       N_("The loading service failed with a reason this terminal does not know."),
       CHECK_SERVICE, ("service_reason",)),
    _R("LOADING_SERVICE_PROTOCOL", ("UNAVAILABLE",), "UNAVAILABLE",
       N_("The loading service answered out of protocol."), SEE_LOG, ("field",)),
    _R("LOADING_SERVICE_TIMEOUT", ("UNAVAILABLE",), "UNAVAILABLE",
       N_("The loading service did not answer in time."), CHECK_SERVICE),
    _R("LOADING_SERVICE_NOT_CONFIGURED", ("UNAVAILABLE",), "UNAVAILABLE",
       N_("This terminal has no loading service configured."), CHECK_CONFIG),
    _R("PROTOCOL_ERROR", ("UNAVAILABLE",), "UNAVAILABLE",
       N_("The loading session broke its protocol."), RETRY_LATER, ("service_reason",)),
    _R("SERVICE_REFUSED", ("PERMISSION_DENIED",), "UNAVAILABLE",
       N_("The loading service refused the terminal."), SEE_LOG),
    _R("ORGANISATION_NOT_ALLOWED", ("PERMISSION_DENIED",), "DENIED",
       N_("The loading service does not let this terminal act for that organisation."),
       ASK_ADMIN),
    _R("CHECKPOINTS_NOT_KEPT", ("UNAVAILABLE",), "UNAVAILABLE",
       N_("The loading service does not keep audit checkpoints."), SEE_LOG),
    _R("SERVICE_UNAVAILABLE", ("UNAVAILABLE",), "UNAVAILABLE",
       N_("A service the daemon needs cannot be reached now."), RETRY_LATER),
    _R("JOURNAL_ROW_NOT_FOUND", ("NOT_FOUND",), "PRECONDITION",
       N_("No card operation {journal_id} waits in the journal."),
       N_("Check the journal ID the terminal reported and try again."),
       ("journal_id",)),
    _R("NOT_AWAITING_CONFIRMATION", ("FAILED_PRECONDITION",), "PRECONDITION",
       N_("The card operation {journal_id} does not wait for a confirmation."),
       N_("Nothing to confirm: the operation is already settled."),
       ("journal_id",)),
    _R("PRESET_NOT_FOUND", ("NOT_FOUND",), "PRECONDITION",
       N_("The organisation has no preset named {preset}."),
       N_("Choose a preset from cardapctl loadable."), ("preset",)),
    # -- operators, sessions and rights ------------------------------------------------
    _R("WRONG_ROLE", ("PERMISSION_DENIED",), "DENIED",
       N_("{method} is not available on the {role} socket."),
       N_("Call it on the socket of the right role (kiosk, gate or ops)."),
       ("method", "role")),
    _R("PERMISSION_DENIED", ("PERMISSION_DENIED",), "DENIED",
       N_("The caller may not do this."), ASK_ADMIN),
    _R("AID_FORBIDDEN", ("PERMISSION_DENIED",), "DENIED",
       N_("That AID could select the text input assist AP, which is never selected."),
       N_("Name another AID; the My Number is never read."), ("field",)),
    _R("RIGHT_MISSING", ("PERMISSION_DENIED",), "DENIED",
       N_("The operator lacks the right {right}."), ASK_ADMIN, ("right",)),
    _R("ADMINISTRATOR_REQUIRED", ("PERMISSION_DENIED",), "DENIED",
       N_("Only an administrator may do this."), ASK_ADMIN),
    _R("NOT_ADMINISTRATOR", ("PERMISSION_DENIED",), "DENIED",
       N_("The operator is not an administrator."), ASK_ADMIN),
    _R("OTHER_ORGANISATION", ("PERMISSION_DENIED",), "DENIED",
       N_("That operator belongs to another organisation."),
       N_("Ask an administrator of that organisation.")),
    _R("SELF_APPROVAL", ("PERMISSION_DENIED",), "DENIED",
       N_("An operator cannot approve their own password."),
       N_("Ask another administrator to approve it.")),
    _R("OPERATOR_DISABLED", ("PERMISSION_DENIED", "INVALID_ARGUMENT"), "DENIED",
       N_("The operator is disabled."), ASK_ADMIN),
    _R("OPERATOR_LOCKED", (), "DENIED",
       N_("The operator is locked after too many wrong passwords."),
       N_("Ask an administrator to unlock the operator."), source="audit"),
    _R("ORGANISATION_NOT_CONFIGURED", ("PERMISSION_DENIED",), "DENIED",
       N_("This terminal does not act for organisation {organisation}."),
       CHECK_CONFIG, ("organisation",)),
    _R("BOOTSTRAP_SECRET_INVALID", ("PERMISSION_DENIED",), "DENIED",
       N_("The bootstrap secret is wrong or used up."),
       N_("Use the secret of cardapd bootstrap-admin on this terminal.")),
    _R("UNAUTHENTICATED", ("UNAUTHENTICATED",), "DENIED",
       N_("The call needs an operator session."), LOG_IN),
    _R("NO_OPERATOR_SESSION", ("UNAUTHENTICATED",), "DENIED",
       N_("No operator is logged in for this call."), LOG_IN),
    _R("SESSION_EXPIRED", ("UNAUTHENTICATED",), "DENIED",
       N_("The operator session has expired."), LOG_IN),
    _R("SESSION_IDLE", ("UNAUTHENTICATED",), "DENIED",
       N_("The operator session ended after being idle."), LOG_IN),
    _R("SESSION_UNKNOWN", ("UNAUTHENTICATED",), "DENIED",
       N_("The session token is not known (the daemon may have restarted)."), LOG_IN),
    _R("SESSION_WRONG_CONNECTION", ("UNAUTHENTICATED",), "DENIED",
       N_("The session belongs to another socket."),
       N_("Use the session on the socket where it was opened, or log in here.")),
    _R("LOGIN_REFUSED", ("UNAUTHENTICATED",), "DENIED",
       N_("Login refused: the organisation, operator ID or password is wrong, or the "
          "operator may not log in now."),
       N_("Check what you typed and try again; after repeated failures the operator is "
          "locked.")),
    _R("FINGER_NOT_MATCHED", ("PERMISSION_DENIED",), "DENIED",
       N_("The finger did not match."), FINGER_AGAIN),
    _R("PASSWORD_WRONG", (), "DENIED",
       N_("The password is wrong."), N_("Type the password again, carefully."), source="audit"),
    _R("PASSWORD_NOT_APPROVED", (), "DENIED",
       N_("The new password waits for an administrator's approval."),
       N_("Ask an administrator to approve it."), source="audit"),
    _R("PASSWORD_APPROVAL_EXPIRED", (), "DENIED",
       N_("The approval of the password has expired."),
       N_("Ask an administrator to approve it again."), source="audit"),
    _R("SESSION_IN_USE", ("FAILED_PRECONDITION",), "DENIED",
       N_("Another operator's session is open on this socket."),
       N_("Ask that operator to log out (or wait for the session to end).")),
    _R("TOO_MANY_SESSIONS", ("RESOURCE_EXHAUSTED",), "FULL",
       N_("Too many operator sessions are open."),
       N_("Log out sessions no longer used and try again.")),
    _R("OPERATOR_NOT_FOUND", ("NOT_FOUND", "PERMISSION_DENIED"), "PRECONDITION",
       N_("No such operator in the organisation."),
       N_("Check the organisation and operator ID."), ("organisation", "operator_id")),
    _R("OPERATOR_REMOVED", ("FAILED_PRECONDITION", "PERMISSION_DENIED"), "PRECONDITION",
       N_("The operator has been removed."), ASK_ADMIN, ("organisation", "operator_id")),
    _R("OPERATOR_EXISTS", ("ALREADY_EXISTS",), "EXISTS",
       N_("That operator already exists."), RENAME),
    _R("OPERATOR_ID_USED", ("ALREADY_EXISTS",), "EXISTS",
       N_("The operator ID {operator_id} has been used before and is never reused."),
       RENAME, ("organisation", "operator_id")),
    _R("ORGANISATION_EXISTS", ("ALREADY_EXISTS",), "EXISTS",
       N_("That organisation already exists."), RENAME),
    _R("ORGANISATION_NOT_FOUND", ("NOT_FOUND",), "PRECONDITION",
       N_("No organisation {organisation} on the roster."),
       N_("Check the organisation's name."), ("organisation",)),
    _R("ADMINISTRATOR_EXISTS", ("FAILED_PRECONDITION",), "EXISTS",
       N_("The organisation {organisation} already has an administrator."),
       N_("Ask that administrator to add and appoint the others."), ("organisation",)),
    _R("BOOTSTRAP_IN_PROGRESS", ("FAILED_PRECONDITION",), "PRECONDITION",
       N_("The first administrator is still being set up."), ASK_AGAIN),
    # -- fingerprints and waits --------------------------------------------------------
    _R("NO_ENROLLED_FINGER", ("NOT_FOUND",), "PRECONDITION",
       N_("The operator has no finger enrolled."),
       N_("Enrol a finger (cardapctl enroll) or log in with the password.")),
    _R("FINGER_ALREADY_ENROLLED", ("ALREADY_EXISTS",), "EXISTS",
       N_("That finger is already enrolled."), N_("Enrol another finger, or none.")),
    _R("BIOMETRIC_UNAVAILABLE", ("UNAVAILABLE",), "UNAVAILABLE",
       N_("The fingerprint sensor (fprintd) is not available."),
       N_("Check the sensor's cable, or log in with the password."), ("cause",)),
    _R("BIOMETRIC_BUSY", ("UNAVAILABLE",), "UNAVAILABLE",
       N_("The fingerprint sensor is in use by another program."), RETRY_LATER),
    _R("BIOMETRIC_PERMISSION_DENIED", ("PERMISSION_DENIED",), "UNAVAILABLE",
       N_("The daemon may not use the fingerprint sensor."), SEE_LOG),
    _R("BIOMETRIC_STORAGE_FULL", ("RESOURCE_EXHAUSTED",), "FULL",
       N_("The fingerprint sensor's storage is full."),
       N_("Remove fingers no longer used, then enrol again.")),
    _R("BIOMETRIC_TIMEOUT", ("CANCELLED",), "TIMEOUT",
       N_("No finger was placed within {timeout_s} seconds."), FINGER_AGAIN,
       ("timeout_s",)),
    _R("PASSWORD_TIMEOUT", ("CANCELLED",), "TIMEOUT",
       N_("No password came within the wait."), ASK_AGAIN),
    _R("CANCELLED", ("CANCELLED",), "ABORTED",
       N_("The operation was cancelled."), ASK_AGAIN),
    _R("LOGIN_CANCELLED", ("CANCELLED",), "ABORTED",
       N_("The login was cancelled."), ASK_AGAIN),
    _R("CLIENT_GONE", (), "ABORTED",  # nobody is left to receive it: audit rows only
       N_("The client went away during the operation."), ASK_AGAIN, source="audit"),
    # -- the daemon and its stores -----------------------------------------------------
    _R("FAILED_PRECONDITION", ("FAILED_PRECONDITION",), "PRECONDITION",
       N_("The terminal is not in the state this needs."), RETRY_LATER),
    _R("NOT_FOUND", ("NOT_FOUND",), "PRECONDITION",
       N_("The thing named does not exist."), FIX_REQUEST),
    _R("REVOCATION_FEED_STALE", ("FAILED_PRECONDITION",), "PRECONDITION",
       N_("The revocation information is too old to decide."),
       N_("Sync the revocation information (SyncRevocation) and try again.")),
    _R("RESET_NOT_FOUND", ("NOT_FOUND",), "PRECONDITION",
       N_("No audit reset {reset_seq} is recorded."),
       N_("Name a reset that cardapctl audit verify reports."),
       ("reset_seq",)),
    _R("RESET_ALREADY_ACKNOWLEDGED", ("ALREADY_EXISTS",), "EXISTS",
       N_("The audit reset {reset_seq} is already acknowledged."), NOTHING,
       ("reset_seq",)),
    _R("STORE_ERROR", ("UNAVAILABLE",), "UNAVAILABLE",
       N_("The audit log or another store cannot be written; nothing was done."),
       SEE_LOG),
    _R("STORE_TOO_NEW", ("UNAVAILABLE",), "UNAVAILABLE",
       N_("A store was written by a newer cardapd (version {version})."),
       N_("Install that cardapd version again, or restore the store from a backup."),
       ("store", "version", "supported")),
    _R("CONFIG_INVALID", ("FAILED_PRECONDITION",), "FAIL",
       N_("The configuration is invalid."), CHECK_CONFIG),
    _R("SHUTTING_DOWN", ("UNAVAILABLE",), "UNAVAILABLE",
       N_("The daemon is stopping."), N_("Try again once the daemon is back.")),
    _R("EVENT_QUEUE_OVERFLOW", ("UNAVAILABLE",), "UNAVAILABLE",
       N_("The client fell too far behind the card events."),
       N_("Reconnect to get a fresh snapshot.")),
    _R("INTERNAL", ("INTERNAL",), "FAIL",
       N_("The daemon met an unexpected error."), SEE_LOG),
    # -- made by the client or by gRPC, not sent in an ErrorInfo -----------------------
    _R("DAEMON_UNREACHABLE", ("UNAVAILABLE",), "UNAVAILABLE",
       N_("The daemon cannot be reached on its socket."),
       N_("Check that cardapd runs and that you are in the socket's group."),
       source="client"),
    _R("LOGIN_INCOMPLETE", ("UNKNOWN",), "FAIL",
       N_("The login stream ended without a session."), ASK_AGAIN, source="client"),
    _R("PASSWORD_REQUIRED", ("INVALID_ARGUMENT",), "USAGE",
       N_("The login asks for a password and none was given."),
       N_("Give the password when asked."), source="client"),
    _R("CLIENT_ERROR", ("UNKNOWN",), "FAIL",
       N_("cardapctl failed before or without the daemon."),
       N_("Read the message and correct the command."), source="client"),
    _R("DEADLINE_EXCEEDED", ("DEADLINE_EXCEEDED",), "TIMEOUT",
       N_("No answer came within the call's deadline."),
       N_("Try again with a longer --timeout."), source="grpc"),
    _R("UNIMPLEMENTED", ("UNIMPLEMENTED",), "UNIMPLEMENTED",
       N_("This daemon does not implement the call."),
       N_("Update cardapd, or use a client of its version."), source="grpc"),
    # -- audit rows only ---------------------------------------------------------------
    _R("AUDIT_ANCHOR_MISMATCH", (), "FAIL",
       N_("The audit log did not match its anchor at start: an anchor reset was "
          "recorded."), N_("Acknowledge the reset after checking why (cardapctl audit)."),
       source="audit"),
    _R("RELOAD_FAILED", (), "FAIL",
       N_("A validated configuration reload failed: at the stage roster (the roster could "
          "not take its new organisations) nothing of it is in force; at the stage apply "
          "some of its changes may be."),
       N_("Fix what the daemon's log names (e.g. another program holding roster.db) and "
          "reload again; after a failure at the stage apply, restart the daemon (systemctl "
          "restart cardapd) and send its log to the maintainers."), source="audit"),
)

BY_CODE: dict[str, Reason] = {r.code: r for r in REASONS}
"""Every reason by its code."""


def get(code: str) -> Reason | None:
    """The registered reason of `code` (None: one this client does not know)."""
    return BY_CODE.get(code)


def localized(code: str, lang: str, metadata: Mapping[str, str]) -> str:
    """The reason's meaning and next step in `lang`, filled from the error's metadata
    ("" for a reason this client does not know)."""
    reason = BY_CODE.get(code)
    if reason is None:
        return ""
    values = dict(metadata)
    meaning = tr(lang, reason.meaning, **values)
    step = tr(lang, reason.next_step, **values)
    return f"{meaning} {step}" if lang != "ja" else f"{meaning}{step}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown() -> str:
    """The README's reason table (English), one row per reason."""
    rows = ["| reason | gRPC code | meaning | metadata | next step | exit |",
            "|---|---|---|---|---|---|"]
    for r in REASONS:
        code = " / ".join(r.grpc) or "(audit row)"
        if r.source in ("client", "grpc"):
            code += f" ({r.source})"
        meta = ", ".join(f"`{k}`" for k in r.metadata) or "-"
        rows.append(f"| `{r.code}` | {code} | {_cell(r.meaning)} | {meta} | "
                    f"{_cell(r.next_step)} | {r.exit} |")
    return "\n".join(rows) + "\n"


BEGIN, END = "<!-- reasons:begin -->", "<!-- reasons:end -->"


def with_table(readme: str) -> str:
    """`readme` with its marked reason section rewritten from the registry."""
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return (f"{head}{BEGIN}\n<!-- generated from clients/cardap/reasons.py by make docs; "
            f"do not edit -->\n{markdown()}{END}{tail}")


def with_exit_table(guide: str) -> str:
    """The operations guide with its exit-code table (the first table under "### Exit
    codes") rewritten from `cardap.exitcodes`, whose reasons come from this registry."""
    from cardap import exitcodes
    head, section = guide.split("### Exit codes", 1)
    start = section.index("| code | name |")
    end = section.index("\n\n", start) + 1
    return f"{head}### Exit codes{section[:start]}{exitcodes.markdown()}{section[end:]}"


def main(argv: list[str] | None = None) -> int:
    """`markdown`: print the table; `readme PATH`: rewrite the marked section of PATH."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["markdown"]:
        sys.stdout.write(markdown())
        return 0
    if args[:1] in (["readme"], ["guide"]) and len(args) == 2:
        from pathlib import Path
        path = Path(args[1])
        rewrite = with_table if args[0] == "readme" else with_exit_table
        path.write_text(rewrite(path.read_text()))
        return 0
    print("usage: python -m cardap.reasons markdown | readme README | guide OPERATIONS",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
