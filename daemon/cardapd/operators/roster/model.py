"""Roster values: operators, approvals, organisations and the change records to audit.

Each type maps 1:1 to a message of `cardap/v1/operators.proto` / `terminal.proto`
(`OperatorRecord` ↔ `Operator`, `PasswordApproval` ↔ `PasswordApproval`). Identifiers
are validated here, once, so nothing malformed reaches SQLite or the audit log.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cardapd.domain import Operator, Right
from cardapd.errors import InvalidArgument
from cardapd.mynumber import looks_like_my_number

ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""Organisation, operator and AP ids: no `/` or `:` (they are the audit actor's separators)."""

MAX_TEXT = 256
FINGERS = frozenset({
    "left-thumb", "left-index-finger", "left-middle-finger", "left-ring-finger",
    "left-little-finger", "right-thumb", "right-index-finger", "right-middle-finger",
    "right-ring-finger", "right-little-finger",
})
"""fprintd's finger names."""


def check_id(kind: str, value: str) -> str:
    """`value` if it is a valid identifier; InvalidArgument naming `kind` otherwise."""
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise InvalidArgument(f"{kind} must be 1-64 letters, digits, '.', '_' or '-' "
                              "starting with a letter or digit",
                              reason="INVALID_IDENTIFIER", metadata={"field": kind})
    if looks_like_my_number(value):
        raise InvalidArgument(f"{kind} looks like a My Number; choose another identifier",
                              reason="INVALID_IDENTIFIER", metadata={"field": kind})
    return value


def check_text(kind: str, value: str, *, required: bool = True) -> str:
    """Stripped `value`, at most MAX_TEXT characters, no control characters."""
    text = value.strip() if isinstance(value, str) else ""
    if required and not text:
        raise InvalidArgument(f"{kind} is required", reason="MISSING_FIELD",
                              metadata={"field": kind})
    if len(text) > MAX_TEXT or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InvalidArgument(f"{kind} must be at most {MAX_TEXT} printable characters",
                              reason="INVALID_TEXT", metadata={"field": kind})
    if looks_like_my_number(text):
        raise InvalidArgument(f"{kind} looks like it holds a My Number",
                              reason="INVALID_TEXT", metadata={"field": kind})
    return text


def check_time(kind: str, value: datetime) -> datetime:
    """`value` in UTC; naive datetimes are refused (their zone is a guess)."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidArgument(f"{kind} must be a timezone-aware time",
                              reason="INVALID_TIME", metadata={"field": kind})
    return value.astimezone(UTC)


def check_rights(rights: Iterable[Right]) -> frozenset[Right]:
    """The rights an operator may be given directly (ADMINISTER comes with appointment)."""
    out = frozenset(rights)
    if not all(isinstance(r, Right) for r in out):
        raise InvalidArgument("unknown right", reason="INVALID_RIGHT")
    if Right.ADMINISTER in out:
        raise InvalidArgument("the administer right comes only with AppointAdministrator",
                              reason="INVALID_RIGHT", metadata={"right": "administer"})
    return out


def to_us(value: datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    return int(check_time("time", value).timestamp() * 1_000_000)


def from_us(value: int) -> datetime:
    """The UTC datetime of epoch microseconds."""
    return datetime.fromtimestamp(value / 1_000_000, UTC)


@dataclass(frozen=True, slots=True)
class PasswordApproval:
    """An administrator's approval of ID + password login (cardap.v1.PasswordApproval)."""

    approved_by: str
    reason: str
    approved_at: datetime
    expires_at: datetime

    def valid_at(self, now: datetime) -> bool:
        """True while `now` is before the expiry."""
        return check_time("now", now) < self.expires_at


@dataclass(frozen=True, slots=True)
class OperatorRecord:
    """One operator on the roster (cardap.v1.Operator), never holding a password."""

    organisation: str
    operator_id: str
    display_name: str
    rights: frozenset[Right]
    enabled: bool = True
    administrator: bool = False
    enrolled_fingers: tuple[str, ...] = ()
    password_approval: PasswordApproval | None = None
    locked: bool = False
    failed_password_tries: int = 0
    removed_at: datetime | None = None
    removed_by: str = ""

    @property
    def removed(self) -> bool:
        """Removed from the roster: kept as a record (its id is never used again), never
        able to log in or be changed."""
        return self.removed_at is not None

    @property
    def actor(self) -> str:
        """`organisation/operator`, as in audit rows."""
        return f"{self.organisation}/{self.operator_id}"

    @property
    def effective_rights(self) -> frozenset[Right]:
        """The rights plus ADMINISTER for an administrator."""
        return self.rights | {Right.ADMINISTER} if self.administrator else self.rights

    def to_operator(self) -> Operator:
        """The authenticated operator, as loading checks its rights."""
        return Operator(self.organisation, self.operator_id, self.effective_rights)


@dataclass(frozen=True, slots=True)
class Organisation:
    """An organisation working on this terminal."""

    organisation: str
    display_name: str


@dataclass(frozen=True, slots=True)
class RosterChange:
    """What one administration operation did, ready for its audit row."""

    actor: str
    operation: str
    organisation: str
    operator_id: str | None
    detail: Mapping[str, Any] = field(default_factory=dict)
    operator: OperatorRecord | None = None

    def entry(self, *, role: str = "ops", request_id: str | None = None) -> RosterEntry:
        """What the audit row says (actor `role:organisation/operator`, as `OpContext.actor`)."""
        actor = f"{role}:{self.actor}" if self.actor else role
        detail = {"organisation": self.organisation, **self.detail}
        if self.operator_id is not None:
            detail["operator_id"] = self.operator_id
        return RosterEntry(self.operation, actor, detail, request_id)


@dataclass(frozen=True)
class RosterEntry:
    """A roster change as its audit row records it."""

    operation: str
    actor: str
    detail: Mapping[str, Any]
    request_id: str | None = None

    @property
    def detail_json(self) -> str:
        """The detail as canonical JSON (what the audit row stores)."""
        return json.dumps(self.detail, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=True)
