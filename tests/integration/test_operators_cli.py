"""Disabled operators, and cardapctl's roster/login/audit/report commands, through the real stack.

One module stack (loading service + private bus with real fprintd on the virtual sensor):
admin-1 (finger "arch", appointed administrator, logged in on the ops socket) and op-d
(finger "loop-right", right LOAD), one demo card in slot 0. cardapctl runs as a
subprocess against the running daemon (CARDAPD_SOCKET_DIR), never through its Python API.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import grpc
import pytest

from cardap.v1 import operators_pb2, terminal_pb2
from cardap_sim.biometric import GreyImage, nist_print, variants
from cardap_sim.stack import Stack
from cardapd.audit.report import JST

from .conftest import expect_error, insert_and_wait
from .test_operators import (
    ORG,
    PASSWORD,
    STAFF_C,
    audit_rows,
    bootstrap,
    enrol,
    login,
    rpc,
)

ADMIN = "admin-1"
FINGER_OP = "op-d"
CLI_OP = "op-cli"
ROOT = Path(__file__).resolve().parents[2]
AUDIT_FIELDS = ["seq", "time", "request_id", "actor", "operation", "reader", "card_id",
                "result", "reason", "detail_json", "hash"]
EXIT_OK, EXIT_DENIED, EXIT_AUDIT_BROKEN = 0, 4, 10


def cardapctl() -> str:
    """The installed cardapctl of this checkout's venv (or of the running interpreter)."""
    for candidate in (ROOT / ".venv" / "bin" / "cardapctl",
                      Path(sys.executable).with_name("cardapctl")):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("cardapctl")
    assert found, "cardapctl is not installed (pip install -e .)"
    return found


def cli(stack: Stack, *argv: str, stdin: str = "", timeout: float = 60
        ) -> subprocess.CompletedProcess[str]:
    """Run `cardapctl argv` against the stack's daemon (no session from the environment)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CARDAPD_SESSION", "CARDAPD_SESSION_FILE")}
    env["CARDAPD_SOCKET_DIR"] = str(stack.socket_dir)
    return subprocess.run([cardapctl(), *argv], input=stdin, capture_output=True, text=True,
                          env=env, timeout=timeout, check=False)


def ok(proc: subprocess.CompletedProcess[str], code: int = EXIT_OK) -> str:
    """stdout of a run that exited with `code` (else fail showing both streams)."""
    assert proc.returncode == code, (
        f"{proc.args[1:]} exited {proc.returncode}, expected {code}\n"
        f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc.stdout


def private_file(path: Path, text: str) -> Path:
    """Write `text` to a new 0600 file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def roster(stack: Stack) -> dict[str, operators_pb2.Operator]:
    """The roster of ORG by operator ID (ListOperators on the ops socket)."""
    resp = rpc(stack, "ops", "ListOperators", terminal_pb2.ListOperatorsRequest(
        organisation=ORG))
    return {o.operator_id: o for o in resp.operators}


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack with the loading service and real fprintd (virtual_image)."""
    s = Stack(tmp_path_factory.mktemp("opcli") / "s", loading=True, biometric=True)
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def prints() -> dict[str, list[GreyImage]]:
    return {n: variants(nist_print(n)) for n in ("arch", "loop-right")}


@pytest.fixture(scope="module")
def admin(cstack: Stack, prints: dict[str, list[GreyImage]]) -> str:
    """admin-1 bootstrapped and logged in on ops (its token); op-d added and enrolled."""
    token = bootstrap(cstack, prints["arch"], ADMIN)
    rpc(cstack, "ops", "AddOperator", terminal_pb2.AddOperatorRequest(
        organisation=ORG, operator_id=FINGER_OP, display_name="Finger operator",
        rights=[operators_pb2.RIGHT_LOAD]), token)
    enrol(cstack, FINGER_OP, prints["loop-right"][:8], token)
    return token


@pytest.fixture(scope="module")
def card(cstack: Stack) -> Path:
    """The demo card, inserted in slot 0 and identified by the daemon."""
    path = cstack.demo_card()
    insert_and_wait(cstack, 0, path)
    return path


# ---------------------------------------------------------------- 1. disabled operator


def test_disabled_operator_session_and_login_refused(
        cstack: Stack, admin: str, card: Path, prints: dict[str, list[GreyImage]]) -> None:
    images = prints["loop-right"][6:]
    _, token = login(cstack, FINGER_OP, images=images)
    # the session is live: a session-only call succeeds with it
    loadable = rpc(cstack, "kiosk", "ListLoadableAPs", terminal_pb2.ListLoadableAPsRequest(),
                   token)
    assert STAFF_C in str(loadable)

    disabled = rpc(cstack, "ops", "SetOperatorEnabled", terminal_pb2.SetOperatorEnabledRequest(
        organisation=ORG, operator_id=FINGER_OP, enabled=False), admin)
    assert not disabled.enabled
    assert not roster(cstack)[FINGER_OP].enabled

    # the live session no longer loads (refused before the card or the service is touched)
    expect_error(lambda: rpc(cstack, "kiosk", "LoadAP",
                             terminal_pb2.LoadAPRequest(ap_id=STAFF_C), token, timeout=60),
                 grpc.StatusCode.PERMISSION_DENIED, "OPERATOR_DISABLED")
    assert not [r for r in audit_rows(cstack, "load") if r[1] == "ok"]
    # a new login is refused, looking like a finger that never came (nothing tells who is
    # disabled); the audit row says why
    expect_error(lambda: login(cstack, FINGER_OP, timeout_s=2),
                 grpc.StatusCode.CANCELLED, "BIOMETRIC_TIMEOUT")
    assert "OPERATOR_DISABLED" in [r[2] for r in audit_rows(cstack, "operator_login")
                                   if r[1] == "error"]
    assert (f"ops:{ORG}/{ADMIN}", "ok", "") in audit_rows(cstack, "roster_set_enabled")

    # enabled again: the operator logs in and the new session works
    enabled = rpc(cstack, "ops", "SetOperatorEnabled", terminal_pb2.SetOperatorEnabledRequest(
        organisation=ORG, operator_id=FINGER_OP, enabled=True), admin)
    assert enabled.enabled
    # the session open when the operator was disabled does not come back
    expect_error(lambda: rpc(cstack, "kiosk", "ListLoadableAPs",
                             terminal_pb2.ListLoadableAPsRequest(), token),
                 grpc.StatusCode.UNAUTHENTICATED, "SESSION_UNKNOWN")
    codes, token2 = login(cstack, FINGER_OP, images=images)
    assert "MATCHED" in codes
    assert token2 != token
    loadable = rpc(cstack, "kiosk", "ListLoadableAPs", terminal_pb2.ListLoadableAPsRequest(),
                   token2)
    assert STAFF_C in str(loadable)
    rpc(cstack, "kiosk", "EndOperatorSession",
        terminal_pb2.EndOperatorSessionRequest(token=token2))


# ---------------------------------------------------------------- 2. cardapctl


def test_cardapctl_roster_login_load_audit_report(cstack: Stack, admin: str, card: Path,
                                                  tmp_path: Path) -> None:
    admin_file = private_file(tmp_path / "admin.token", admin + "\n")
    as_admin = ("--session-file", str(admin_file))

    # the roster, as JSON
    listed = json.loads(ok(cli(cstack, "operators", "list", "--json")))
    byid = {o["operator_id"]: o for o in listed["operators"]}
    assert byid[ADMIN]["administrator"] is True
    assert byid[FINGER_OP]["enabled"] is True
    assert byid[FINGER_OP]["enrolled_fingers"] == ["right-index-finger"]
    assert byid[FINGER_OP]["rights"] == ["RIGHT_LOAD"]
    assert CLI_OP not in byid

    # roster changes need the administrator's session (bootstrap is closed)
    denied = cli(cstack, "operators", "add", "--org", ORG, "--operator", CLI_OP,
                 "--name", "CLI operator")
    ok(denied, EXIT_DENIED)
    assert "ADMINISTRATOR_REQUIRED" in denied.stderr
    out = ok(cli(cstack, *as_admin, "operators", "add", "--org", ORG, "--operator", CLI_OP,
                 "--name", "CLI operator", "--rights", "load"))
    assert f"{ORG}/{CLI_OP}" in out
    expires = (datetime.now().astimezone() + timedelta(days=30)).date().isoformat()
    granted = cli(cstack, *as_admin, "operators", "grant-password", "--org", ORG,
                  "--operator", CLI_OP, "--reason", "no usable finger", "--expires", expires,
                  "--password-stdin", stdin=PASSWORD + "\n")
    ok(granted)
    assert PASSWORD not in granted.stdout + granted.stderr
    approval = roster(cstack)[CLI_OP].password_approval
    assert (approval.approved_by, approval.reason) == (ADMIN, "no usable finger")

    # login with the approved password: the token goes to a 0600 file, nowhere else
    token_file = tmp_path / "op.token"
    logged = cli(cstack, "login", "--org", ORG, "--operator", CLI_OP, "--password",
                 "--password-stdin", "--token-file", str(token_file), stdin=PASSWORD + "\n")
    ok(logged)
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = token_file.read_text(encoding="utf-8").strip()
    assert len(token) >= 32
    assert token not in logged.stdout + logged.stderr
    assert PASSWORD not in logged.stdout + logged.stderr

    loaded = cli(cstack, "--session-file", str(token_file), "load", "--ap", STAFF_C)
    assert re.search(rf"^{STAFF_C}: loaded as [0-9A-F]+, user ID ", ok(loaded), re.M), \
        loaded.stdout
    assert "readable by others" not in loaded.stderr

    # logout ends the session and removes the file; the old token is then refused
    ok(cli(cstack, "logout", "--token-file", str(token_file)))
    assert not token_file.exists()
    stale = private_file(tmp_path / "stale.token", token + "\n")
    refused = cli(cstack, "--session-file", str(stale), "load", "--ap", STAFF_C)
    ok(refused, EXIT_DENIED)
    assert "SESSION_UNKNOWN" in refused.stderr

    # the chain verifies
    assert "audit chain verifies" in ok(cli(cstack, "audit", "verify"))

    # CSV export holds the load (who, what, which card, result) and no secret
    export = tmp_path / "audit.csv"
    ok(cli(cstack, "audit", "export", "--format", "csv", "--out", str(export)))
    assert export.stat().st_mode & 0o777 == 0o600
    text = export.read_text(encoding="utf-8")
    assert PASSWORD not in text
    assert token not in text
    with export.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == AUDIT_FIELDS
        rows = list(reader)
    loads = [r for r in rows if r["operation"] == "load" and r["result"] == "ok"]
    assert len(loads) == 1, loads
    load = loads[0]
    assert load["actor"] == f"kiosk:{ORG}/{CLI_OP}"
    assert load["card_id"]
    assert STAFF_C in load["detail_json"]
    assert [int(r["seq"]) for r in rows] == sorted(int(r["seq"]) for r in rows)

    # the yearly report: org-a with 1 load × 10 yen, and the chain verified
    this_year = datetime.now(JST).year
    report = tmp_path / "report.txt"
    reported = cli(cstack, "report", "--year", str(this_year), "--out", str(report))
    ok(reported)
    document = report.read_text(encoding="utf-8")
    assert f"card AP loads {this_year}" in document
    assert re.search(rf"^{ORG}\s+1\s+10\s+0$", document, re.M), document
    assert re.search(r"^total\s+1\s+10$", document, re.M), document
    assert "OK: the chain verifies" in document
    assert f"{ORG}: 1 loads, 10 yen" in reported.stderr

    # one row changed directly in the database file: verify exits 10 and names the row
    seq = int(load["seq"])
    db = sqlite3.connect(cstack.dir / "state" / "audit.db")
    try:
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"
                                  ).fetchall():
            db.execute(f"DROP TRIGGER {name}")
        changed = db.execute("UPDATE audit SET reason = 'tampered' WHERE seq = ?", (seq,))
        assert changed.rowcount == 1
        db.commit()
    finally:
        db.close()
    broken = cli(cstack, "audit", "verify")
    assert f"does NOT verify: changed at row {seq}" in ok(broken, EXIT_AUDIT_BROKEN)
    verdict = json.loads(ok(cli(cstack, "audit", "verify", "--json"), EXIT_AUDIT_BROKEN))
    assert (verdict["ok"], int(verdict["first_bad_seq"]), verdict["problem"]) == \
        (False, seq, "changed")
    # the report still comes out, but says so and exits 10
    ok(cli(cstack, "report", "--year", str(this_year), "--out", str(report)),
       EXIT_AUDIT_BROKEN)
    assert f"FAILED: changed at row {seq}" in report.read_text(encoding="utf-8")
