"""Accounts and access that give nothing away (issue 14), through the real stack.

The production daemon (`cardapd.main`, real roster sessions) with the reference loading
service: no login reveals who exists, no ops client can take over an organisation without
an administrator (only `cardapd bootstrap-admin`, the local act, appoints the first), no
login silently ends another operator's session, the forbidden AID is refused wherever an
AID enters, removed operators keep their ids, and the terminal certificate is watched and
rotated without a restart.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cardap.client import CardapClient, CardapClientError
from cardap.v1 import terminal_pb2, terminal_pb2_grpc
from cardap_sim.loadsvc.catalogue import dev_catalogue
from cardap_sim.stack import Stack
from cardapd.audit import AuditRecord, query
from cardapd.operators.bootstrap import SECRET_FILE
from cardapd.operators.roster.passwords import REFUSED_MESSAGE

from .conftest import expect_error, insert_and_wait, wait_until
from .test_load_faults import SESSION_MD, LoadStack, load, result_of

ORG, ORG_B = "org-a", "org-b"
PASSWORD = "Kiosk-Counter-7-Blue"
WRONG = "Kiosk-Counter-7-Bleu"
INPUT_ASSIST = "D3921000310001010408"
JPKI = "D392F000260100000001"
CARD_FACE = "D3921000310001010402"
JUKI = "D3921000310001010401"
PD, UA, FP, NF = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED,
                  grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND)


def audit(stack: Stack, operation: str) -> list[AuditRecord]:
    return [r for r in query(stack.dir / "state" / "audit.db") if r.operation == operation]


def password_login(stack: Stack, operator_id: str, password: str = PASSWORD, *,
                   role: str = "kiosk", replace: bool = False, org: str = ORG) -> str:
    """Log in by password; the session token."""
    with CardapClient(stack.socket(role), timeout=30) as c:
        items = list(c.authenticate(org, operator_id, "password", lambda: password,
                                    replace_session=replace))
    session = items[-1]
    assert isinstance(session, terminal_pb2.OperatorSession)
    return session.token


def grant(stack: Stack, token: str, operator_id: str) -> None:
    """Approve password login for `operator_id` (with an administrator's session)."""
    with CardapClient(stack.socket("ops"), session=token) as ops:
        ops.grant_password_fallback(ORG, operator_id, reason="no usable fingerprint",
                                    expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=30),
                                    password=PASSWORD)


def kiosk_call(stack: Stack, token: str) -> Any:
    """A call that needs a live operator session on the kiosk socket."""
    with CardapClient(stack.socket("kiosk"), session=token) as kiosk:
        return kiosk.loadable_aps()


def cardapd(*args: str, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The `cardapd` command line (the production entry point)."""
    return subprocess.run([sys.executable, "-m", "cardapd.main", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def astack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two organisations on the terminal. org-a's admin-1 was appointed by the local act and
    set up admin-2 (password login approved) and op-1…op-5, then its session ended."""
    s = Stack(tmp_path_factory.mktemp("accounts") / "s", loading=True,
              organisations={ORG: "Organisation A", ORG_B: "Organisation B"},
              extra_config='[operators]\nbiometric = "none"\n')
    try:
        s.start()
        boot = s.bootstrap_admin("admin-1", ORG)
        with CardapClient(s.socket("ops"), session=boot) as ops:
            ops.add_operator(ORG, "admin-2", "Second administrator", rights=("load",))
            ops.appoint_administrator(ORG, "admin-2")
            for op in ("op-1", "op-2", "op-3", "op-4", "op-5"):
                ops.add_operator(ORG, op, f"Operator {op}", rights=("load", "delete"))
        for op in ("admin-2", "op-1", "op-3", "op-4", "op-5"):
            grant(s, boot, op)
        with CardapClient(s.socket("ops")) as ops:
            ops.end_session(boot)
        yield s
    finally:
        s.stop()


@contextlib.contextmanager
def admin(stack: Stack) -> Iterator[CardapClient]:
    """admin-2 logged in on the ops socket (by password), logged out at the end."""
    token = password_login(stack, "admin-2", role="ops")
    with CardapClient(stack.socket("ops"), session=token) as ops:
        try:
            yield ops
        finally:
            ops.end_session(token)


# ------------------------------------------------------------------ 2. no takeover


def test_no_ops_client_can_take_over_an_organisation(astack: Stack) -> None:
    """org-b has no administrator: nothing on the ops socket makes one, only the local act."""
    st = astack
    with CardapClient(st.socket("ops")) as ops:
        expect_error(lambda: ops.add_operator(ORG_B, "mallory", "M"), PD,
                     "ADMINISTRATOR_REQUIRED")
        expect_error(lambda: ops.appoint_administrator(ORG_B, "mallory"), PD,
                     "ADMINISTRATOR_REQUIRED")
        expect_error(lambda: list(ops.enroll_finger(ORG_B, "mallory", "left-thumb")), PD,
                     "ADMINISTRATOR_REQUIRED")
        for secret in ("", "00" * 32):
            expect_error(lambda s=secret: ops.bootstrap_administrator(
                ORG_B, "mallory", secret=s), PD, "BOOTSTRAP_SECRET_INVALID")
    with admin(st) as ops:
        expect_error(lambda: ops.add_operator(ORG_B, "mallory", "M"), PD, "OTHER_ORGANISATION")
    # A secret file that anyone else could have read is refused, even with its secret.
    loose = st.dir / "state" / SECRET_FILE
    loose.write_text("ab" * 32)
    loose.chmod(0o644)
    with CardapClient(st.socket("ops")) as ops:
        expect_error(lambda: ops.bootstrap_administrator(ORG_B, "mallory", secret="ab" * 32),
                     PD, "BOOTSTRAP_SECRET_INVALID")
    loose.unlink()
    # The local act: cardapd bootstrap-admin (as root on a terminal).
    done = cardapd("bootstrap-admin", "--config", str(st.config_path), "--organisation",
                   ORG_B, "--operator", "b-admin", "--name", "B Admin", "--no-enroll",
                   env=st.env)
    assert done.returncode == 0, done.stderr
    assert "b-admin is an administrator of org-b" in done.stdout
    again = cardapd("bootstrap-admin", "--config", str(st.config_path), "--organisation",
                    ORG_B, "--operator", "other", "--no-enroll", env=st.env)
    assert again.returncode == 4, again
    assert "ADMINISTRATOR_EXISTS" in again.stderr
    assert not (st.dir / "state" / SECRET_FILE).exists(), "a secret serves once, then goes"
    with CardapClient(st.socket("ops")) as ops:
        byid = {o.operator_id: o for o in ops.list_operators(ORG_B).operators}
    assert list(byid) == ["b-admin"]
    assert byid["b-admin"].administrator
    rows = audit(st, "roster_bootstrap_administrator")
    assert [(r.result, r.reason) for r in rows if "org-b" in r.detail_json] == [
        ("error", "BOOTSTRAP_SECRET_INVALID")] * 3 + [("ok", None),
                                                      ("error", "ADMINISTRATOR_EXISTS")]
    ok = next(r for r in rows if r.result == "ok" and "b-admin" in r.actor)
    assert ok.actor == "ops:org-b/b-admin"
    assert ok.detail["authorised_by"] == "local bootstrap secret"
    refused = [r for r in audit(st, "roster_add_operator") if r.result == "error"]
    assert {r.reason for r in refused} >= {"ADMINISTRATOR_REQUIRED", "OTHER_ORGANISATION"}


# ------------------------------------------------------------------ 1. one refusal


def test_every_failed_password_login_is_refused_alike(astack: Stack) -> None:
    """Unknown, removed, wrong password, no approval, disabled, locked: one reason, one
    message, no tries left; the audit keeps the precise reason."""
    st = astack
    with admin(st) as ops:
        ops.add_operator(ORG, "op-dis", "Disabled")
        ops.grant_password_fallback(ORG, "op-dis", reason="no usable fingerprint",
                                    expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=9),
                                    password=PASSWORD)
        ops.set_operator_enabled(ORG, "op-dis", False)
    for _ in range(5):  # op-4 locked by five wrong passwords
        with pytest.raises(CardapClientError):
            password_login(st, "op-4", WRONG)
    cases = [("nobody", PASSWORD, "OPERATOR_NOT_FOUND"), ("op-1", WRONG, "PASSWORD_WRONG"),
             ("op-2", PASSWORD, "PASSWORD_NOT_APPROVED"),
             ("op-dis", PASSWORD, "OPERATOR_DISABLED"), ("op-4", PASSWORD, "OPERATOR_LOCKED")]
    before = len(audit(st, "operator_login"))
    seen = set()
    for operator_id, password, _ in cases:
        err = expect_error(lambda o=operator_id, p=password: password_login(st, o, p), UA,
                           "LOGIN_REFUSED")
        assert err.message == REFUSED_MESSAGE
        assert set(err.metadata) == {"request_id"}, err.metadata  # no tries_left
        seen.add((err.code, err.reason, err.message))
    assert len(seen) == 1
    rows = audit(st, "operator_login")[before:]
    assert [(r.result, r.reason) for r in rows] == [("error", c[2]) for c in cases]
    assert [json.loads(r.detail_json)["operator_id"] for r in rows] == [c[0] for c in cases]


# ------------------------------------------------------------------ 3. no silent replacement


def test_a_login_replaces_another_operators_session_only_when_asked(astack: Stack) -> None:
    st = astack
    one = password_login(st, "op-1")
    kiosk_call(st, one)
    err = expect_error(lambda: password_login(st, "op-3"), FP, "SESSION_IN_USE")
    assert "op-1" not in err.message  # the caller is not told who
    kiosk_call(st, one)  # the refusal ended nothing
    again = password_login(st, "op-1")  # the same operator: their own session is replaced
    expect_error(lambda: kiosk_call(st, one), UA, "SESSION_UNKNOWN")
    three = password_login(st, "op-3", replace=True)
    expect_error(lambda: kiosk_call(st, again), UA, "SESSION_UNKNOWN")
    kiosk_call(st, three)
    rows = audit(st, "operator_login")[-3:]
    refused, own, replaced = rows[0], rows[1], rows[2]
    assert (refused.result, refused.reason) == ("error", "SESSION_IN_USE")
    assert refused.detail["live_session_of"] == "org-a/op-1"
    assert (own.actor, own.detail["replaced_own_session"]) == ("kiosk:org-a/op-1", True)
    assert replaced.actor == "kiosk:org-a/op-3"
    assert replaced.detail["replaced_session_of"] == "org-a/op-1"
    assert replaced.detail["replaced_own_session"] is False
    with CardapClient(st.socket("kiosk")) as kiosk:
        kiosk.end_session(three)


# ------------------------------------------------------------------ 5. removed operators


def test_a_removed_operator_stays_on_the_roster_and_its_id_is_never_reused(
        astack: Stack) -> None:
    st = astack
    token = password_login(st, "op-5")
    with admin(st) as ops:
        removed = ops.remove_operator(ORG, "op-5")
        assert removed.removed
        assert removed.removed_by == "admin-2"
        assert removed.HasField("removed_at")
        assert not removed.enabled
        expect_error(lambda: ops.add_operator(ORG, "op-5", "Someone else"),
                     grpc.StatusCode.ALREADY_EXISTS, "OPERATOR_ID_USED")
        expect_error(lambda: ops.appoint_administrator(ORG, "op-5"), FP, "OPERATOR_REMOVED")
        expect_error(lambda: ops.set_operator_enabled(ORG, "op-5", True), FP,
                     "OPERATOR_REMOVED")
        expect_error(lambda: ops.remove_operator(ORG, "admin-2"),
                     grpc.StatusCode.INVALID_ARGUMENT, "SELF_REMOVE")
        listed = {o.operator_id: o for o in ops.list_operators(ORG).operators}
    assert listed["op-5"].removed
    assert listed["op-5"].display_name == "Operator op-5"
    expect_error(lambda: kiosk_call(st, token), PD, "OPERATOR_REMOVED")
    expect_error(lambda: kiosk_call(st, token), UA, "SESSION_UNKNOWN")
    expect_error(lambda: password_login(st, "op-5"), UA, "LOGIN_REFUSED")
    assert audit(st, "operator_login")[-1].reason == "OPERATOR_REMOVED"
    rows = audit(st, "roster_remove_operator")
    assert [(r.result, r.reason) for r in rows] == [("ok", None), ("error", "SELF_REMOVE")]
    row = rows[0]
    assert row.actor == "ops:org-a/admin-2"
    assert row.detail["prints_deleted"] == "no_service"
    with admin(st) as ops:
        expect_error(lambda: ops.remove_operator(ORG, "op-5"), FP, "OPERATOR_REMOVED")


# ------------------------------------------------------------------ 4. one AID check


@pytest.mark.parametrize(("aid", "what"), [
    (INPUT_ASSIST, "input assist"), (INPUT_ASSIST.lower(), "input assist"),
    (INPUT_ASSIST[:10], "input assist"), (INPUT_ASSIST[:16].lower(), "input assist"),
    (JPKI, "JPKI AP"), (JPKI[:10], "JPKI AP"), (CARD_FACE, "card face AP"), (JUKI, "住基AP"),
])
def test_check_config_refuses_an_aid_that_could_select_a_forbidden_or_built_in_ap(
        tmp_path: Path, aid: str, what: str) -> None:
    for text, key in ((f'[tap]\ntype_c_aids = ["D392F00043010001", "{aid}"]\n',
                       "tap.type_c_aids[1]"),
                      (f'[[read.aps]]\naid = "{aid}"\ntype = "C"\norganisation = "org-a"\n',
                       "read.aps[0].aid")):
        path = tmp_path / "cardapd.toml"
        path.write_text(text)
        result = cardapd("--config", str(path), "--check-config")
        assert result.returncode == 2, result
        assert f"{key}: " in result.stderr
        assert what in result.stderr


def test_the_forbidden_aid_is_refused_in_a_reload_and_in_requests(astack: Stack) -> None:
    st = astack
    card = st.demo_card("aids")
    insert_and_wait(st, 0, card)
    good = st.config_path.read_text()
    st.config_path.write_text(good.replace('type_c_aids = ["D392F00043010001"]',
                                           'type_c_aids = ["D392F00043010001", "d392100031"]'))
    before = len(audit(st, "config_reload"))
    try:
        assert st.daemon is not None
        st.daemon.send_signal(signal.SIGHUP)
        wait_until(lambda: len(audit(st, "config_reload")) > before, 20, "the reload row")
    finally:
        st.config_path.write_text(good)
    row = audit(st, "config_reload")[-1]
    assert (row.result, row.reason) == ("error", "CONFIG_INVALID")
    assert row.detail["key"] == "tap.type_c_aids[1]"
    with CardapClient(st.socket("gate")) as gate:
        assert gate.read_user_id(fresh=True).user_id  # the running configuration serves on
        for aid, code, reason in ((INPUT_ASSIST.lower(), PD, "AID_FORBIDDEN"),
                                  (INPUT_ASSIST[:12], PD, "AID_FORBIDDEN"),
                                  (JPKI, grpc.StatusCode.INVALID_ARGUMENT, "AID_BUILT_IN"),
                                  (JPKI[:10], grpc.StatusCode.INVALID_ARGUMENT,
                                   "AID_BUILT_IN"),
                                  (CARD_FACE, grpc.StatusCode.INVALID_ARGUMENT,
                                   "AID_BUILT_IN")):
            err = expect_error(lambda a=aid: gate.read_user_id(aid=a, fresh=True), code,
                               reason)
            assert err.metadata["field"] == "aid"
    token = password_login(st, "op-1")
    with CardapClient(st.socket("kiosk"), session=token) as kiosk:
        expect_error(lambda: kiosk.delete_ap(JUKI, reason="holder_request"),
                     grpc.StatusCode.INVALID_ARGUMENT, "AID_BUILT_IN")
        expect_error(lambda: kiosk.delete_ap(INPUT_ASSIST,
                                             reason="holder_request"), PD, "AID_FORBIDDEN")
        kiosk.end_session(token)
    selects = st.control.selects(0)
    assert bytes.fromhex(INPUT_ASSIST) not in selects
    assert bytes.fromhex(JUKI) not in selects
    st.control.remove(0)


def test_catalogue_entries_that_could_select_the_input_assist_ap_are_left_out(
        tmp_path: Path) -> None:
    """The service's catalogue holds an entry whose instance AID is a prefix of the input
    assist AP's: the terminal leaves it out (and logs why); the rest still loads."""
    cat = dev_catalogue()
    data: dict[str, Any] = {"ap": [], "organisation": []}
    for ap in cat.aps.values():
        data["ap"].append({"id": ap.ap_id, "type": ap.type.value, "area": ap.area,
                           "instance_aid": ap.instance_aid.hex(),
                           "load_file_aid": ap.load_file_aid.hex(),
                           "image_bytes": dict(ap.image_bytes),
                           "access_key_ref": ap.access_key_ref,
                           "info": [i.hex() for i in ap.info]})
    data["ap"].append({"id": "rogue-c", "type": "C", "instance_aid": INPUT_ASSIST[:14],
                       "load_file_aid": "D392F0004C0A0099",
                       "image_bytes": {"vendor-a": 100, "vendor-b": 100},
                       "info": ["00000000"] * 3})
    for org in cat.organisations.values():
        data["organisation"].append({"id": org.org_id, "name": org.name,
                                     "may_load": sorted(org.may_load) + (
                                         ["rogue-c"] if org.org_id == ORG else []),
                                     "municipality": org.municipality})
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps(data))
    s = LoadStack(tmp_path / "s")
    s.catalogue = path
    try:
        s.start()
        with CardapClient(s.socket("kiosk"), session="test:org-a:op-1") as kiosk:
            ids = [a.ap_id for a in kiosk.loadable_aps().aps]
        assert "rogue-c" not in ids
        assert "org-a-staff-c" in ids
        insert_and_wait(s, 0, s.demo_card())
        err = expect_error(lambda: load(s, "rogue-c"), grpc.StatusCode.NOT_FOUND,
                           "UNKNOWN_AP")
        assert err.metadata["ap_id"] == "rogue-c"
        assert "rogue-c" in err.message
        result_of(load(s, "org-a-staff-c"))
        assert bytes.fromhex(INPUT_ASSIST[:14]) not in s.control.selects(0)
        log = (s.dir / "cardapd.log").read_text()
        assert "catalogue entry 'rogue-c'.instance_aid" in log
    finally:
        s.stop()


# ------------------------------------------------------------------ 6. the certificate


def scrape_expiry(stack: Stack) -> float:
    url = f"http://127.0.0.1:{stack.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("cardapd_loading_client_cert_expiry_timestamp_seconds "):
                return float(line.split()[1])
    raise AssertionError("no certificate expiry metric")


def reload_and_wait(stack: Stack) -> AuditRecord:
    before = len(audit(stack, "config_reload"))
    assert stack.daemon is not None
    stack.daemon.send_signal(signal.SIGHUP)
    wait_until(lambda: len(audit(stack, "config_reload")) > before, 20, "the reload row")
    return audit(stack, "config_reload")[-1]


def test_terminal_certificate_expiry_is_watched_and_rotated_without_a_restart(
        tmp_path: Path) -> None:
    s = LoadStack(tmp_path / "s")
    try:
        s.write_certs()
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        soon = now + dt.timedelta(days=12)
        s.install_terminal_cert(not_after=soon)
        s.start()
        pid = s.daemon.pid if s.daemon else 0
        assert scrape_expiry(s) == soon.timestamp()
        with CardapClient(s.socket("ops")) as ops:
            st = ops.status()
        assert st.loading_cert_not_after.ToDatetime(tzinfo=dt.UTC) == soon
        assert len(st.warnings) == 1
        assert "expires on" in st.warnings[0]
        assert "in 11 days" in st.warnings[0]
        ctl = subprocess.run([str(Path(sys.executable).parent / "cardapctl"), "--role", "ops",
                              "status"], env=s.env, capture_output=True, text=True,
                             timeout=30, check=False)
        assert ctl.returncode == 0, ctl
        assert "WARNING: the terminal certificate" in ctl.stdout
        insert_and_wait(s, 0, s.demo_card())
        result_of(load(s, "org-a-staff-c"))
        # An expired certificate installed and reloaded: the link uses it (and is refused).
        expired = now - dt.timedelta(days=1)
        s.install_terminal_cert(not_before=now - dt.timedelta(days=30), not_after=expired)
        row = reload_and_wait(s)
        assert row.result == "ok"
        assert "loading certificate (rotated)" in row.detail["applied"]
        assert scrape_expiry(s) == expired.timestamp()
        with CardapClient(s.socket("ops")) as ops:
            assert "EXPIRED" in ops.status().warnings[0]
        err = expect_error(lambda: load(s, "org-a-records-d"), grpc.StatusCode.UNAVAILABLE,
                           "LOADING_SERVICE_UNAVAILABLE")
        assert err.message
        # A renewed certificate: loads work again, no warning, the same process.
        renewed = now + dt.timedelta(days=400)
        s.install_terminal_cert(not_after=renewed)
        assert reload_and_wait(s).result == "ok"
        assert scrape_expiry(s) == renewed.timestamp()
        wait_until(lambda: try_load(s), 60, "a load with the renewed certificate")
        with CardapClient(s.socket("ops")) as ops:
            assert list(ops.status().warnings) == []
        # Half a rotation (a new certificate, the old key): refused, the link keeps working.
        s.install_terminal_cert(not_after=now + dt.timedelta(days=800), cert_only=True)
        row = reload_and_wait(s)
        assert (row.result, row.reason) == ("error", "CONFIG_INVALID")
        assert row.detail["key"] == "loading.key"
        assert scrape_expiry(s) == renewed.timestamp()
        with CardapClient(s.socket("kiosk"), session="test:org-a:op-1") as kiosk:
            kiosk.delete_ap("D392F000430A0001", reason="holder_request")
        assert s.daemon is not None
        assert s.daemon.pid == pid
        assert s.daemon.poll() is None
    finally:
        s.stop()


def try_load(stack: Stack) -> bool:
    """One load of org-a-records-d (the link may still be reconnecting): True when it
    loaded."""
    ch = grpc.insecure_channel(f"unix:{stack.socket('kiosk')}")
    try:
        events = list(terminal_pb2_grpc.TerminalStub(ch).LoadAP(
            terminal_pb2.LoadAPRequest(ap_id="org-a-records-d"), metadata=SESSION_MD,
            timeout=60))
    except grpc.RpcError:
        time.sleep(0.5)
        return False
    finally:
        ch.close()
    return any(e.WhichOneof("event") == "result" and e.result.ok for e in events)
