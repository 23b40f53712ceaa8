"""Socket roles and the one per-method authorisation table.

Every method of `cardap.v1.Terminal` is listed here with the roles allowed to call it; a
call on any other role's socket is refused with PERMISSION_DENIED (reason WRONG_ROLE)
before the method runs. A test checks that every method of the service is in the table.
"""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    """The client role a socket serves."""

    KIOSK = "kiosk"
    GATE = "gate"
    OPS = "ops"


K, G, O = Role.KIOSK, Role.GATE, Role.OPS

METHOD_ROLES: dict[str, frozenset[Role]] = {
    # readers and cards
    "GetStatus": frozenset({K, G, O}),
    "ListReaders": frozenset({K, G, O}),
    "WatchCardEvents": frozenset({K, G, O}),
    "ReadUserID": frozenset({G, K}),
    "Diagnose": frozenset({K, O}),
    "WatchMetrics": frozenset({O}),
    # operators
    "AuthenticateOperator": frozenset({K}),
    "EndOperatorSession": frozenset({K}),
    # card APs
    "ListLoadableAPs": frozenset({K}),
    "LoadAP": frozenset({K}),
    "DeleteAP": frozenset({K}),
    "ListCardAPs": frozenset({K, O}),
    # audit and reports
    "ExportAudit": frozenset({O}),
    "VerifyAudit": frozenset({O}),
    "GetYearlyReport": frozenset({O}),
    # roster administration
    "ListOperators": frozenset({O}),
    "AddOperator": frozenset({O}),
    "SetOperatorEnabled": frozenset({O}),
    "AppointAdministrator": frozenset({O}),
    "GrantPasswordFallback": frozenset({O}),
    "UnlockOperator": frozenset({O}),
    "EnrollFinger": frozenset({O}),
    # revocation
    "SyncRevocation": frozenset({O}),
    "SetUserIDStatus": frozenset({O}),
}


def allowed(method: str, role: Role) -> bool:
    """Whether `role` may call `method` (unknown methods: nobody)."""
    return role in METHOD_ROLES.get(method, frozenset())
