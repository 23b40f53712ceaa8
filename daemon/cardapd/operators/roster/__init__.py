"""The operator roster, password fallback and operator sessions (issue 5).

Public API (import from here): `Roster`, `OperatorRecord`, `PasswordApproval`,
`Organisation`, `RosterChange`, `Hasher`, `PasswordCheck`, `PasswordOutcome`,
`check_password`, `check_policy`, `SessionManager`, `OpenedSession`, `Session`,
`connection_scope`, `current_connection`.
"""

from cardapd.operators.roster.model import (
    OperatorRecord,
    Organisation,
    PasswordApproval,
    RosterChange,
)
from cardapd.operators.roster.passwords import (
    MAX_TRIES,
    Hasher,
    PasswordCheck,
    PasswordOutcome,
    check_password,
    check_policy,
)
from cardapd.operators.roster.store import MAX_APPROVAL, Roster
from cardapd.operators.sessions import (
    OpenedSession,
    Session,
    SessionManager,
    connection_scope,
    current_connection,
)

__all__ = [
    "MAX_APPROVAL",
    "MAX_TRIES",
    "Hasher",
    "OpenedSession",
    "OperatorRecord",
    "Organisation",
    "PasswordApproval",
    "PasswordCheck",
    "PasswordOutcome",
    "Roster",
    "RosterChange",
    "Session",
    "SessionManager",
    "check_password",
    "check_policy",
    "connection_scope",
    "current_connection",
]
