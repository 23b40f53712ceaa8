"""Operator sessions: who may load and delete. The provider arrives with issue 5.

Until then the daemon has no production provider: `NoOperatorSessions` refuses every
token, so LoadAP/DeleteAP/ListLoadableAPs answer UNAUTHENTICATED. Tests get a provider
only through `python -m cardapd_testing.main` (see docs/decisions.md, D14).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from cardapd.errors import NotAuthorized, Unauthenticated

SESSION_METADATA = "cardap-session"


class Right(enum.Enum):
    """What an operator may do (mirrors cardap.v1.Right)."""

    LOAD = "load"
    DELETE = "delete"
    DIAGNOSE = "diagnose"
    ADMINISTER = "administer"


@dataclass(frozen=True)
class Operator:
    """An authenticated operator."""

    organisation: str
    operator_id: str
    rights: frozenset[Right]

    @property
    def actor(self) -> str:
        """`organisation/operator` for audit rows."""
        return f"{self.organisation}/{self.operator_id}"

    def require(self, right: Right) -> None:
        """PERMISSION_DENIED unless the operator holds `right`."""
        if right not in self.rights:
            raise NotAuthorized(f"operator {self.actor} has no {right.value} right",
                                reason="RIGHT_MISSING", metadata={"right": right.value})


class OperatorSessions(Protocol):
    """Validates a session token sent as gRPC metadata `cardap-session`."""

    def validate(self, token: str) -> Operator:
        """The token's operator; raises Unauthenticated when it is not a live session."""
        ...


class NoOperatorSessions:
    """The production provider until issue 5: no session is ever valid."""

    def validate(self, token: str) -> Operator:
        """Always refuses."""
        raise Unauthenticated("operator sessions arrive with issue 5 (fingerprint login); "
                              "this daemon cannot authenticate operators yet",
                              reason="NO_OPERATOR_SESSION",
                              metadata={"capability": "operator sessions", "issue": "5"})
