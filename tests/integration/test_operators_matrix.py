"""Authorisation matrix: every RPC × socket role × {no session, operator, administrator}."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from cardap.client import CardapClientError
from cardap.v1 import operators_pb2, terminal_pb2
from cardap_sim.biometric import nist_print, variants
from cardap_sim.stack import Stack
from cardapd.api.roles import METHOD_ROLES, Role

from .test_operators import ORG, PASSWORD, bootstrap, login, rpc
from .test_roles import METHODS, call_empty, roles_of

KINDS = ("none", "operator", "administrator")
# (each with its deprecated v1.0.0 name)
NEEDS_SESSION = {"LoadAp", "DeleteAp", "ListLoadableAps", "LoadAP", "DeleteAP", "ListLoadableAPs"}
KIOSK_NEEDS_SESSION = {"ReadUserId", "Diagnose", "ListCardAps",  # card actions (issue 16)
                       "ReadUserID", "ListCardAPs"}
TARGET = {"organisation": ORG, "operator_id": "op-9"}
ADMIN_CALLS: dict[str, Any] = {
    "SetOperatorEnabled": terminal_pb2.SetOperatorEnabledRequest(enabled=True, **TARGET),
    "UnlockOperator": terminal_pb2.UnlockOperatorRequest(**TARGET),
    "AppointAdministrator": terminal_pb2.AppointAdministratorRequest(
        organisation=ORG, operator_id="op-9"),
}


@pytest.fixture(scope="module")
def mstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Roster: admin-1 (finger, arch), op-1 (password), op-9 (plain)."""
    s = Stack(tmp_path_factory.mktemp("matrix") / "s", biometric=True)
    try:
        s.start()
        arch = variants(nist_print("arch"))
        token = bootstrap(s, arch)
        for op in ("op-1", "op-9"):
            rpc(s, "ops", "AddOperator", terminal_pb2.AddOperatorRequest(
                organisation=ORG, operator_id=op, display_name=op,
                rights=[operators_pb2.RIGHT_LOAD]), token)
        grant = terminal_pb2.GrantPasswordFallbackRequest(
            organisation=ORG, operator_id="op-1", reason="matrix", password=PASSWORD)
        grant.expires_at.FromDatetime(datetime.now(UTC) + timedelta(days=1))
        rpc(s, "ops", "GrantPasswordFallback", grant, token)
        s.arch = arch  # type: ignore[attr-defined]
        yield s
    finally:
        s.stop()


def session(stack: Stack, kind: str, role: str) -> str:
    """A fresh session of `kind` on `role`'s socket ("" for none or where login is refused)."""
    if kind == "none" or Role(role) not in METHOD_ROLES["AuthenticateOperator"]:
        return ""
    if kind == "operator":
        return login(stack, "op-1", role, password=PASSWORD)[1]
    return login(stack, "admin-1", role, images=stack.arch[6:])[1]  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("role", ["kiosk", "gate", "ops"])
def test_matrix(mstack: Stack, role: str, kind: str) -> None:
    token = session(mstack, kind, role)
    meta = [("cardap-session", token)] if token else []
    for name, request in ADMIN_CALLS.items():
        if role != "ops":
            continue
        try:
            rpc(mstack, "ops", name, request, token)
            reason = ""
        except CardapClientError as exc:
            reason = exc.reason
        expected = {"none": "ADMINISTRATOR_REQUIRED", "operator": "NOT_ADMINISTRATOR",
                    "administrator": ""}[kind]
        assert reason == expected, f"{name} with {kind}: {reason}"
    with grpc.insecure_channel(f"unix:{mstack.socket(role)}") as ch:
        # EndOperatorSession last: it ends the session the other calls use
        for method in sorted(METHODS, key=lambda m: m.name == "EndOperatorSession"):
            allowed = Role(role) in roles_of(method.name)
            try:
                call_empty(ch, method, metadata=meta)
                err = None
            except grpc.RpcError as exc:
                err = CardapClientError.from_rpc_error(exc)
            where = f"{method.name} on {role} with {kind}"
            if not allowed:
                assert err is not None, where
                assert err.reason == "WRONG_ROLE", where
                continue
            if err is None:
                continue
            assert err.code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), where
            if method.name in NEEDS_SESSION or (role == "kiosk"
                                                 and method.name in KIOSK_NEEDS_SESSION):
                refused = err.code == grpc.StatusCode.UNAUTHENTICATED
                assert refused == (not token), f"{where}: {err}"
