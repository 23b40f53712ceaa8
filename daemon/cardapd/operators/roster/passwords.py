"""Password fallback: argon2id hashing, the password policy and `check_password`.

Hashing uses argon2-cffi's `PasswordHasher` with the parameters of RFC 9106's second
recommended option ("low memory"), spelled out so that a library upgrade cannot
silently change them: argon2id, version 19, **64 MiB** memory (`m=65536` KiB),
**3** passes (`t=3`), **4** lanes (`p=4`), a 16-byte random salt and a 32-byte tag —
about 50-100 ms on a terminal PC, which bounds an offline guesser to a few guesses per
second per core. The parameters are stored in each hash (`$argon2id$v=19$m=65536,t=3,p=4$…`);
a hash with older parameters is re-hashed at the next successful login.

`check_password` is pure: it takes the operator's record (None: no such operator) and
returns a `PasswordCheck` (outcome, tries left, the new counters) that the roster persists
and the caller audits. Every path spends one argon2 verification, also when the answer is
known without one (no such operator, removed, no approval, expired, locked), so response
time does not tell an observer which case applied; the comparison itself is argon2's
constant-time one. Every failure reaches the caller as one reason, `LOGIN_REFUSED`, with
one message and no tries left: who exists, who is locked and who may use a password is
the administrator's to know (the audit row keeps the precise outcome).
The password is never logged, stored in clear, put in an error or a record.
"""

from __future__ import annotations

import enum
import unicodedata
from dataclasses import dataclass
from datetime import datetime

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from cardapd.errors import InvalidArgument, Unauthenticated
from cardapd.operators.roster.model import OperatorRecord, check_time

MAX_TRIES = 5
"""Wrong passwords in a row after which the operator is locked until an administrator unlocks."""

MIN_LENGTH = 12
MAX_LENGTH = 128
MIN_DISTINCT = 5

TIME_COST = 3
MEMORY_COST_KIB = 65536
PARALLELISM = 4
HASH_LEN = 32
SALT_LEN = 16


class Hasher:
    """argon2id with explicit parameters (defaults: RFC 9106 low-memory, see module doc)."""

    def __init__(self, *, time_cost: int = TIME_COST, memory_cost_kib: int = MEMORY_COST_KIB,
                 parallelism: int = PARALLELISM) -> None:
        self._ph = argon2.PasswordHasher(time_cost=time_cost, memory_cost=memory_cost_kib,
                                         parallelism=parallelism, hash_len=HASH_LEN,
                                         salt_len=SALT_LEN, type=argon2.Type.ID)
        self._dummy = self._ph.hash("cardapd dummy password for timing")

    def hash(self, password: str) -> str:
        """The PHC string of `password` (normalised to NFC first)."""
        return self._ph.hash(_normalise(password))

    def verify(self, encoded: str, password: str) -> bool:
        """True when `password` matches `encoded` (constant-time in argon2)."""
        try:
            return self._ph.verify(encoded, _normalise(password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def burn(self, password: str) -> None:
        """Spend one verification on nothing (keeps refusals as slow as checks)."""
        self.verify(self._dummy, password)

    def needs_rehash(self, encoded: str) -> bool:
        """True when `encoded` was made with other parameters than ours."""
        try:
            return self._ph.check_needs_rehash(encoded)
        except InvalidHashError:
            return True


def _normalise(password: str) -> str:
    """NFC, so the same password typed through different input methods matches."""
    return unicodedata.normalize("NFC", password)


def check_policy(password: str, *, organisation: str = "", operator_id: str = "") -> None:
    """InvalidArgument (reason PASSWORD_POLICY) unless `password` is acceptable."""
    text = _normalise(password) if isinstance(password, str) else ""
    problem = None
    if len(text) < MIN_LENGTH:
        problem = f"at least {MIN_LENGTH} characters"
    elif len(text) > MAX_LENGTH:
        problem = f"at most {MAX_LENGTH} characters"
    elif any(unicodedata.category(c).startswith("C") for c in text):
        problem = "no control or invisible characters"
    elif len(set(text)) < MIN_DISTINCT:
        problem = f"at least {MIN_DISTINCT} different characters"
    elif text.isdigit():
        problem = "not only digits"
    else:
        lowered = text.casefold()
        for name in (organisation, operator_id):
            if len(name) >= 3 and name.casefold() in lowered:
                problem = "not containing the organisation or operator id"
    if problem is not None:
        raise InvalidArgument(f"the password must have {problem}", reason="PASSWORD_POLICY")


class PasswordOutcome(enum.Enum):
    """What a password attempt came to (stable values for audit rows)."""

    OK = "ok"
    NOT_FOUND = "not_found"
    REMOVED = "removed"
    WRONG = "wrong"
    LOCKED = "locked"
    NO_APPROVAL = "no_approval"
    EXPIRED = "approval_expired"
    DISABLED = "disabled"


LOGIN_REFUSED = "LOGIN_REFUSED"
REFUSED_MESSAGE = ("login refused: the organisation, operator ID or password is wrong, or "
                   "this operator may not log in this way now; an administrator can see why")


class LoginRefused(Unauthenticated):
    """Every failed login as the caller sees it (UNAUTHENTICATED `LOGIN_REFUSED`, one
    message, no metadata); `precise` is the reason the audit row keeps."""

    reason = LOGIN_REFUSED

    def __init__(self, precise: str) -> None:
        super().__init__(REFUSED_MESSAGE)
        self.precise = precise


_REASONS = {
    PasswordOutcome.NOT_FOUND: "OPERATOR_NOT_FOUND",
    PasswordOutcome.REMOVED: "OPERATOR_REMOVED",
    PasswordOutcome.WRONG: "PASSWORD_WRONG",
    PasswordOutcome.LOCKED: "OPERATOR_LOCKED",
    PasswordOutcome.NO_APPROVAL: "PASSWORD_NOT_APPROVED",
    PasswordOutcome.EXPIRED: "PASSWORD_APPROVAL_EXPIRED",
    PasswordOutcome.DISABLED: "OPERATOR_DISABLED",
}


@dataclass(frozen=True, slots=True)
class PasswordCheck:
    """The outcome of one attempt and the counters to store afterwards."""

    outcome: PasswordOutcome
    tries_left: int
    failed_tries: int
    locked: bool
    rehash: bool = False

    @property
    def ok(self) -> bool:
        """True on success."""
        return self.outcome is PasswordOutcome.OK

    @property
    def reason(self) -> str:
        """The stable reason for the audit row and the error ("" on success)."""
        return _REASONS.get(self.outcome, "")

    def detail(self) -> dict[str, object]:
        """Audit detail: outcome and tries left (never the password)."""
        return {"method": "password", "outcome": self.outcome.value,
                "tries_left": self.tries_left}

    def raise_for_outcome(self) -> None:
        """Nothing on success; `LoginRefused` (its precise reason inside) otherwise."""
        if not self.ok:
            raise LoginRefused(self.reason)


def check_password(operator: OperatorRecord | None, password_hash: str | None, password: str,
                   now: datetime, hasher: Hasher) -> PasswordCheck:
    """Check one attempt against the operator's approval, lock state and hash (`operator`
    None: no such operator on the roster)."""
    now = check_time("now", now)
    if operator is None:
        hasher.burn(password)
        return PasswordCheck(PasswordOutcome.NOT_FOUND, 0, 0, False)
    failed = operator.failed_password_tries
    left = max(MAX_TRIES - failed, 0)
    refusal: PasswordOutcome | None = None
    if operator.removed:
        refusal = PasswordOutcome.REMOVED
    elif not operator.enabled:
        refusal = PasswordOutcome.DISABLED
    elif operator.locked:
        refusal, left = PasswordOutcome.LOCKED, 0
    elif operator.password_approval is None or password_hash is None:
        refusal = PasswordOutcome.NO_APPROVAL
    elif not operator.password_approval.valid_at(now):
        refusal = PasswordOutcome.EXPIRED
    if refusal is not None or password_hash is None:
        hasher.burn(password)
        return PasswordCheck(refusal or PasswordOutcome.NO_APPROVAL, left, failed,
                             operator.locked)
    if hasher.verify(password_hash, password):
        return PasswordCheck(PasswordOutcome.OK, MAX_TRIES, 0, False,
                             rehash=hasher.needs_rehash(password_hash))
    failed += 1
    if failed >= MAX_TRIES:
        return PasswordCheck(PasswordOutcome.LOCKED, 0, failed, True)
    return PasswordCheck(PasswordOutcome.WRONG, MAX_TRIES - failed, failed, False)
