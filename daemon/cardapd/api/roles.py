"""Socket roles and the one per-method authorisation table.

Every method of `cardap.v1.Terminal` is listed here with the roles allowed to call it; a
call on any other role's socket is refused with PERMISSION_DENIED (reason WRONG_ROLE)
before the method runs. A test checks that every method of the service is in the table.
A method renamed for the one acronym style (`RENAMED`: the v1.0.0 name, deprecated in the
protos and served until v2) is allowed where its successor is.
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
    "ReadUserId": frozenset({G, K}),
    "Diagnose": frozenset({K, OPS}),
    "WatchMetrics": frozenset({OPS}),
    # operators
    # (ops too: an administrator logs in there for roster changes; sessions bind per socket)
    "AuthenticateOperator": frozenset({K, OPS}),
    "EndOperatorSession": frozenset({K, OPS}),
    # card APs
    "ListLoadableAps": frozenset({K}),
    "LoadAp": frozenset({K}),
    "DeleteAp": frozenset({K}),
    "ListCardAps": frozenset({K, OPS}),
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
    "SetUserIdStatus": frozenset({OPS}),
    # accounts
    "BootstrapAdministrator": frozenset({OPS}),
    "RemoveOperator": frozenset({OPS}),
    # rights and presets per organisation
    "SetOperatorRights": frozenset({OPS}),
    "GetOrganisationRights": frozenset({OPS}),
    "SetOrganisationAps": frozenset({OPS}),
    "SetPreset": frozenset({OPS}),
    "SetDefaultPreset": frozenset({OPS}),
}


RENAMED: dict[str, str] = {
    # v1.0.0 name -> its successor (docs/decisions.md, "The protos as a contract")
    "ReadUserID": "ReadUserId",
    "ListLoadableAPs": "ListLoadableAps",
    "LoadAP": "LoadAp",
    "DeleteAP": "DeleteAp",
    "ListCardAPs": "ListCardAps",
    "SetUserIDStatus": "SetUserIdStatus",
    "SetOrganisationAPs": "SetOrganisationAps",
}
"""The methods deprecated for a new name, each served by its successor's implementation."""


def allowed(method: str, role: Role) -> bool:
    """Whether `role` may call `method` (unknown methods: nobody)."""
    return role in METHOD_ROLES.get(RENAMED.get(method, method), frozenset())
