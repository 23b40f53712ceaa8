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


K, G, OPS = Role.KIOSK, Role.GATE, Role.OPS

METHOD_ROLES: dict[str, frozenset[Role]] = {
    # readers and cards
    "GetStatus": frozenset({K, G, OPS}),
    "WatchStatus": frozenset({K, G, OPS}),
    "ListReaders": frozenset({K, G, OPS}),
    "WatchCardEvents": frozenset({K, G, OPS}),
    "ReadUserID": frozenset({G, K}),
    "Diagnose": frozenset({K, OPS}),
    "WatchMetrics": frozenset({OPS}),
    # operators
    # (ops too: an administrator logs in there for roster changes; sessions bind per socket)
    "AuthenticateOperator": frozenset({K, OPS}),
    "EndOperatorSession": frozenset({K, OPS}),
    # card APs
    "ListLoadableAPs": frozenset({K}),
    "LoadAP": frozenset({K}),
    "DeleteAP": frozenset({K}),
    "ListCardAPs": frozenset({K, OPS}),
    "ConfirmReconcile": frozenset({K}),
    # audit and reports
    "ExportAudit": frozenset({OPS}),
    "VerifyAudit": frozenset({OPS}),
    "GetYearlyReport": frozenset({OPS}),
    "AcknowledgeAuditReset": frozenset({OPS}),
    # roster administration
    "ListOperators": frozenset({OPS}),
    "AddOperator": frozenset({OPS}),
    "SetOperatorEnabled": frozenset({OPS}),
    "AppointAdministrator": frozenset({OPS}),
    "GrantPasswordFallback": frozenset({OPS}),
    "UnlockOperator": frozenset({OPS}),
    "EnrollFinger": frozenset({OPS}),
    # revocation
    "SyncRevocation": frozenset({OPS}),
    "SetUserIDStatus": frozenset({OPS}),
    # accounts
    "BootstrapAdministrator": frozenset({OPS}),
    "RemoveOperator": frozenset({OPS}),
    # rights and presets per organisation
    "SetOperatorRights": frozenset({OPS}),
    "GetOrganisationRights": frozenset({OPS}),
    "SetOrganisationAPs": frozenset({OPS}),
    "SetPreset": frozenset({OPS}),
    "SetDefaultPreset": frozenset({OPS}),
}


def allowed(method: str, role: Role) -> bool:
    """Whether `role` may call `method` (unknown methods: nobody)."""
    return role in METHOD_ROLES.get(method, frozenset())
