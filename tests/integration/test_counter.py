"""A counter shared by several organisations (issue 16), through the real stack.

The operator's organisation decides the catalogue, the rights, the presets and who is
billed; the roster is the one source of rights under the service's catalogue; an operator
stands behind every card action on the kiosk socket; presets per organisation with a
default, loaded by one call, with an optional preset-ready event.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cardap.client import CardapClient
from cardap.v1 import cards_pb2, terminal_pb2
from cardap_sim.stack import Stack, demo_user_id
from cardapd.audit import AuditRecord, query
from cardapd.audit.report import JST

from .conftest import cardapctl, expect_error, insert_and_wait, wait_event

ORG_A, ORG_B = "org-a", "org-b"
PASSWORD = "Kiosk-Counter-7-Blue"
STAFF_C, CERT_A, RECORDS_D, DOOR_B = ("org-a-staff-c", "org-a-cert-a", "org-a-records-d",
                                      "org-b-door-c")
AIDS = {STAFF_C: "D392F000430A0001", CERT_A: "D392F000410A0002",
        RECORDS_D: "D392F000440A0003", DOOR_B: "D392F000430B0001"}
PD, UA = grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED
K = cards_pb2


def audit(stack: Stack, operation: str) -> list[AuditRecord]:
    return [r for r in query(stack.dir / "state" / "audit.db") if r.operation == operation]


def results(events: list[terminal_pb2.LoadApEvent]) -> list[terminal_pb2.LoadResult]:
    return [e.result for e in events if e.WhichOneof("event") == "result"]


def login(stack: Stack, org: str, operator_id: str, role: str = "kiosk") -> str:
    """A password login; the session token."""
    with CardapClient(stack.socket(role), timeout=30) as c:
        session = list(c.authenticate(org, operator_id, "password", lambda: PASSWORD))[-1]
    assert isinstance(session, terminal_pb2.OperatorSession)
    return session.token


def logout(stack: Stack, token: str, role: str = "kiosk") -> None:
    with CardapClient(stack.socket(role)) as c:
        c.end_session(token)


def set_up(stack: Stack, org: str, operators: dict[str, tuple[str, ...]]) -> str:
    """The local act appoints admin-<org>, who adds `operators` (id → rights) with password
    login approved; the administrator's ops session token."""
    admin = stack.bootstrap_admin(f"admin-{org}", org)
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    with CardapClient(stack.socket("ops"), session=admin) as ops:
        for op, rights in operators.items():
            ops.add_operator(org, op, op, rights=rights)
            ops.grant_password_fallback(org, op, reason="no usable fingerprint",
                                        expires_at=until, password=PASSWORD)
    return admin


# ------------------------------------------------------------------ 1. shared use


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Stack]:
    """One terminal (kiosk-01, certificate O=org-a) serving org-a, org-b and the city; the
    loading service lets it act for org-a and org-b only. Test operator tokens."""
    s = Stack(tmp_path / "s", loading=True, test_sessions=True,
              organisations={ORG_A: "Organisation A", ORG_B: "Organisation B",
                             "city": "A municipality"})
    try:
        s.start()
        yield s
    finally:
        s.stop()


def load(stack: Stack, token: str, ap_id: str) -> terminal_pb2.LoadResult:
    with CardapClient(stack.socket("kiosk"), session=token, timeout=60) as kiosk:
        done = results(list(kiosk.load_ap(ap_id)))
    assert len(done) == 1
    assert done[0].ok, done[0]
    return done[0]


def test_two_organisations_on_one_terminal(shared: Stack) -> None:
    """Each loads and deletes only its own APs and is billed for its own; a third the
    service does not let this terminal serve, and a fourth the terminal is not configured
    for, are refused with their reasons."""
    st = shared
    a, b = "test:org-a:op-a", "test:org-b:op-b"
    insert_and_wait(st, 0, st.demo_card())
    with CardapClient(st.socket("kiosk"), session=a) as kiosk:
        assert [x.ap_id for x in kiosk.loadable_aps().aps] == [STAFF_C, CERT_A, RECORDS_D,
                                                               "org-a-custom"]
    with CardapClient(st.socket("kiosk"), session=b) as kiosk:
        assert [x.ap_id for x in kiosk.loadable_aps().aps] == [DOOR_B]
    assert load(st, a, STAFF_C).aid == AIDS[STAFF_C]
    assert load(st, b, DOOR_B).aid == AIDS[DOOR_B]
    with CardapClient(st.socket("kiosk"), session=a, timeout=60) as kiosk:
        expect_error(lambda: list(kiosk.load_ap(DOOR_B)), grpc.StatusCode.NOT_FOUND,
                     "UNKNOWN_AP")
        expect_error(lambda: kiosk.delete_ap(AIDS[DOOR_B],
                                             reason="holder_request"), PD, "NOT_PERMITTED")
    with CardapClient(st.socket("kiosk"), session=b, timeout=60) as kiosk:
        expect_error(lambda: list(kiosk.load_ap(STAFF_C)), grpc.StatusCode.NOT_FOUND,
                     "UNKNOWN_AP")
        expect_error(lambda: kiosk.delete_ap(AIDS[STAFF_C],
                                             reason="holder_request"), PD, "NOT_PERMITTED")
    with CardapClient(st.socket("kiosk"), session="test:city:op-c", timeout=60) as kiosk:
        err = expect_error(lambda: kiosk.loadable_aps(), PD, "ORGANISATION_NOT_ALLOWED")
        assert "city" in err.message
        expect_error(lambda: list(kiosk.load_ap("city-resident-c")), PD,
                     "ORGANISATION_NOT_ALLOWED")
    with CardapClient(st.socket("kiosk"), session="test:org-z:op-z", timeout=60) as kiosk:
        expect_error(lambda: list(kiosk.load_ap(STAFF_C)), PD, "ORGANISATION_NOT_CONFIGURED")
    with CardapClient(st.socket("kiosk"), session=b, timeout=60) as kiosk:
        assert kiosk.delete_ap(AIDS[DOOR_B], reason="holder_request").outcome == "DELETED"
    with CardapClient(st.socket("kiosk"), session=a, timeout=60) as kiosk:
        assert kiosk.delete_ap(AIDS[STAFF_C], reason="holder_request").outcome == "DELETED"
    # Billed for its own: the service's statement and the terminal's yearly report.
    for org in (ORG_A, ORG_B, "city"):
        out = subprocess.run([sys.executable, "-m", "cardap_sim.loadsvc", "report",
                              "--data-dir", str(st.dir / "loadsvc"), "--organisation", org,
                              "--year", "2026"], capture_output=True, text=True, timeout=30,
                             check=True)
        expected = {ORG_A: {STAFF_C: 1}, ORG_B: {DOOR_B: 1}, "city": {}}[org]
        assert json.loads(out.stdout)["per_ap"] == expected
    with CardapClient(st.socket("ops"), timeout=60) as ops:
        report = ops.yearly_report(dt.datetime.now(JST).year)
    assert {o.organisation: (o.loads, o.charge_yen) for o in report.organisations} == {
        ORG_A: (1, 10), ORG_B: (1, 10)}
    loads = [r for r in audit(st, "load") if r.result == "ok"]
    assert {(r.actor, r.detail["organisation"], r.detail["ap_id"]) for r in loads} == {
        ("kiosk:org-a/op-a", ORG_A, STAFF_C), ("kiosk:org-b/op-b", ORG_B, DOOR_B)}
    deletes = [r for r in audit(st, "delete") if r.result == "ok"]
    assert {(r.actor, r.detail["organisation"]) for r in deletes} == {
        ("kiosk:org-b/op-b", ORG_B), ("kiosk:org-a/op-a", ORG_A)}


# ------------------------------------------------------------------ 2. the roster's rights


@pytest.fixture(scope="module")
def counter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The production daemon (real sessions) with the loading service: org-a's admin-org-a
    (by the local act) and op-1 (LOAD only, password), the demo card in slot 0."""
    s = Stack(tmp_path_factory.mktemp("counter") / "s", loading=True,
              extra_config='[operators]\nbiometric = "none"\n')
    try:
        s.start()
        s.admin = set_up(s, ORG_A, {"op-1": ("load",)})  # type: ignore[attr-defined]
        insert_and_wait(s, 0, s.demo_card())
        yield s
    finally:
        s.stop()


def ctl(stack: Stack, *args: str) -> dict[str, Any]:
    """cardapctl with the administrator's session; its JSON answer."""
    token_file = stack.dir / "admin.token"
    token_file.write_text(stack.admin + "\n")  # type: ignore[attr-defined]
    token_file.chmod(0o600)
    done = cardapctl(stack.socket_dir, "--session-file", str(token_file), "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_the_roster_is_the_one_source_of_rights(counter: Stack) -> None:
    """Under the catalogue's outer limit, org-a's administrator decides which APs its
    operators may load and delete and what each operator may do; every right is enforced
    (cardapctl for each change)."""
    st = counter
    rights = ctl(st, "rights", "set", "--org", ORG_A, "--load", f"{STAFF_C},{RECORDS_D}",
                 "--delete", STAFF_C)
    assert (rights["restricted"], rights["load_ap_ids"], rights["delete_ap_ids"]) == (
        True, [RECORDS_D, STAFF_C], [STAFF_C])
    token = login(st, ORG_A, "op-1")
    with CardapClient(st.socket("kiosk"), session=token, timeout=60) as kiosk:
        assert [x.ap_id for x in kiosk.loadable_aps().aps] == [STAFF_C, RECORDS_D]
        err = expect_error(lambda: list(kiosk.load_ap(CERT_A)), PD, "NOT_PERMITTED")
        assert "administrators of org-a" in err.message
        assert results(list(kiosk.load_ap(STAFF_C)))[0].ok
        expect_error(lambda: kiosk.delete_ap(AIDS[STAFF_C],
                                             reason="holder_request"), PD, "RIGHT_MISSING")
        expect_error(lambda: kiosk.diagnose(), PD, "RIGHT_MISSING")
        operator = ctl(st, "operators", "set-rights", "--org", ORG_A, "--operator", "op-1",
                       "--rights", "load,delete,diagnose")
        assert sorted(operator["rights"]) == ["RIGHT_DELETE", "RIGHT_DIAGNOSE", "RIGHT_LOAD"]
        assert kiosk.delete_ap(AIDS[STAFF_C],
                               reason="holder_request").outcome == "DELETED"  # the same session
        assert results(list(kiosk.load_ap(RECORDS_D)))[0].ok
        err = expect_error(lambda: kiosk.delete_ap(AIDS[RECORDS_D],
                                                   reason="holder_request"), PD, "NOT_PERMITTED")
        assert "delete" in err.message
        assert kiosk.diagnose().readers
        ctl(st, "rights", "set", "--org", ORG_A, "--unrestricted")
        assert kiosk.delete_ap(AIDS[RECORDS_D], reason="holder_request").outcome == "DELETED"
        ctl(st, "operators", "set-rights", "--org", ORG_A, "--operator", "op-1",
            "--rights", "")
        assert list(kiosk.loadable_aps().aps) == []
        expect_error(lambda: list(kiosk.load_ap(STAFF_C)), PD, "RIGHT_MISSING")
        expect_error(lambda: kiosk.card_aps(), PD, "RIGHT_MISSING")
        ctl(st, "operators", "set-rights", "--org", ORG_A, "--operator", "op-1",
            "--rights", "load")
    logout(st, token)
    changes = [(r.operation, r.actor) for r in query(st.dir / "state" / "audit.db")
               if r.operation in ("roster_set_rights", "roster_set_organisation_aps")]
    assert changes
    assert all(a == "ops:org-a/admin-org-a" for _, a in changes)
    diag = [r for r in audit(st, "diagnose") if r.result == "ok"][-1]
    assert diag.actor == "kiosk:org-a/op-1"


def test_presets_per_organisation_with_a_default(counter: Stack) -> None:
    st = counter
    ctl(st, "presets", "set", "--org", ORG_A, "--name", "new-staff", "--aps",
        f"{STAFF_C},{RECORDS_D}", "--default")
    listed = ctl(st, "presets", "list", "--org", ORG_A)
    assert listed["default_preset"] == "new-staff"
    assert listed["presets"] == [{"name": "new-staff", "ap_ids": [STAFF_C, RECORDS_D]}]
    token = login(st, ORG_A, "op-1")
    with CardapClient(st.socket("kiosk"), session=token, timeout=60) as kiosk:
        assert kiosk.loadable_aps().default_preset == "new-staff"
        assert results(list(kiosk.load_ap(STAFF_C)))[0].ok
        done = results(list(kiosk.load_ap(default_preset=True)))
    logout(st, token)
    assert [(r.ap_id, r.already_present) for r in done] == [(STAFF_C, True),
                                                           (RECORDS_D, False)]
    done_cli = cardapctl(st.socket_dir, "--session", "x", "load", "--default-preset")
    assert done_cli.returncode == 4, done_cli  # not a live session: refused
    ctl(st, "presets", "default", "--org", ORG_A, "--none")
    ctl(st, "presets", "delete", "--org", ORG_A, "--name", "new-staff")
    assert ctl(st, "presets", "list", "--org", ORG_A)["presets"] == []


# ------------------------------------------------------------------ 3. an operator behind


def test_an_operator_stands_behind_every_card_action_on_the_kiosk(counter: Stack) -> None:
    st = counter
    with CardapClient(st.socket("kiosk")) as kiosk:
        assert kiosk.status().readers == 2  # status needs no session
        expect_error(lambda: kiosk.read_user_id(fresh=True), UA, "NO_OPERATOR_SESSION")
        expect_error(lambda: kiosk.diagnose(), UA, "NO_OPERATOR_SESSION")
        expect_error(lambda: kiosk.card_aps(), UA, "NO_OPERATOR_SESSION")
        tap = next(r.card.tap for r in kiosk.readers().readers if r.card.card_id)
        assert [(t.user_id, t.reason) for t in tap] == [("", "NO_OPERATOR_SESSION")]
    with CardapClient(st.socket("gate")) as gate:  # the gate socket is unchanged
        assert gate.read_user_id().user_id == demo_user_id()
        tap = next(r.card.tap for r in gate.readers().readers if r.card.card_id)
        assert tap[0].user_id == demo_user_id()
    st.control.remove(0)
    with CardapClient(st.socket("kiosk"), timeout=120) as kiosk:
        events = kiosk.watch(timeout=110)
        wait_event(events, K.CARD_EVENT_KIND_SNAPSHOT_END)
        st.control.insert(0, st.demo_card())
        hidden = wait_event(events, K.CARD_EVENT_KIND_CARD_INSERTED)
        assert [(t.user_id, t.reason) for t in hidden.reader.card.tap] == [
            ("", "NO_OPERATOR_SESSION")]
        token = login(st, ORG_A, "op-1")
        st.control.remove(0)
        wait_event(events, K.CARD_EVENT_KIND_CARD_REMOVED)
        st.control.insert(0, st.demo_card())
        shown = wait_event(events, K.CARD_EVENT_KIND_CARD_INSERTED)
        assert [t.user_id for t in shown.reader.card.tap] == [demo_user_id()]
        with CardapClient(st.socket("kiosk"), session=token, timeout=60) as op:
            assert op.read_user_id(fresh=True).user_id == demo_user_id()
            assert op.card_aps().free_bytes
        logout(st, token)
        st.control.remove(0)
        wait_event(events, K.CARD_EVENT_KIND_CARD_REMOVED)
        st.control.insert(0, st.demo_card())
        again = wait_event(events, K.CARD_EVENT_KIND_CARD_INSERTED)
        assert again.reader.card.tap[0].user_id == ""
    reads = [r for r in audit(st, "read_user_id") if r.actor.startswith("kiosk")]
    assert reads[-1].actor == "kiosk:org-a/op-1"
    listed = [r for r in audit(st, "list_card_aps") if r.actor.startswith("kiosk")]
    assert listed[-1].actor == "kiosk:org-a/op-1"


# ------------------------------------------------------------------ 4. preset ready


def test_preset_ready_event_on_insert_and_one_call_to_confirm(tmp_path: Path) -> None:
    """With [presets] ready_event, an inserted card while an operator is logged in at the
    kiosk raises PRESET_READY (kiosk socket only) naming the default preset's missing APs;
    nothing is written until the kiosk's one LoadAp default_preset call."""
    s = Stack(tmp_path / "s", loading=True,
              extra_config='[operators]\nbiometric = "none"\n[presets]\nready_event = true\n')
    try:
        s.start()
        admin = set_up(s, ORG_A, {"op-1": ("load",)})
        with CardapClient(s.socket("ops"), session=admin) as ops:
            ops.set_preset(ORG_A, "new-staff", [STAFF_C, RECORDS_D], make_default=True)
            ops.end_session(admin)
        card = s.demo_card()
        with CardapClient(s.socket("kiosk"), timeout=120) as kiosk, \
                CardapClient(s.socket("gate"), timeout=120) as gate:
            events, gate_events = kiosk.watch(timeout=110), gate.watch(timeout=110)
            wait_event(events, K.CARD_EVENT_KIND_SNAPSHOT_END)
            wait_event(gate_events, K.CARD_EVENT_KIND_SNAPSHOT_END)
            s.control.insert(0, card)  # nobody logged in: no event
            wait_event(events, K.CARD_EVENT_KIND_CARD_INSERTED)
            s.control.remove(0)
            assert K.CARD_EVENT_KIND_PRESET_READY not in kinds_until_removed(events)
            token = login(s, ORG_A, "op-1")
            s.control.insert(0, card)
            seen = [wait_event(events, K.CARD_EVENT_KIND_CARD_INSERTED)]
            ready = wait_event(events, K.CARD_EVENT_KIND_PRESET_READY)
            assert (ready.preset_ready.organisation, ready.preset_ready.name,
                    list(ready.preset_ready.ap_ids)) == (ORG_A, "new-staff",
                                                         [STAFF_C, RECORDS_D])
            assert ready.reader.name == seen[0].reader.name
            assert not any(e.kind == K.CARD_EVENT_KIND_PRESET_READY
                           for e in gate_until_removed(s, gate_events))
            assert not audit(s, "load"), "nothing is written without the operator's call"
            with CardapClient(s.socket("kiosk"), session=token, timeout=60) as op:
                s.control.insert(0, card)
                wait_event(events, K.CARD_EVENT_KIND_CARD_INSERTED)
                done = results(list(op.load_ap(default_preset=True)))
                assert [(r.ap_id, r.ok) for r in done] == [(STAFF_C, True), (RECORDS_D, True)]
                s.control.remove(0)
                wait_event(events, K.CARD_EVENT_KIND_CARD_REMOVED)
                s.control.insert(0, card)  # everything is there now: no event
                wait_event(events, K.CARD_EVENT_KIND_CARD_INSERTED)
                assert op.card_aps().aps
                s.control.remove(0)
                assert K.CARD_EVENT_KIND_PRESET_READY not in kinds_until_removed(events)
            logout(s, token)
    finally:
        s.stop()
    rows = [r for r in audit(s, "load") if r.result == "ok"]
    assert {r.detail.get("preset") for r in rows} == {"new-staff"}
    assert all(r.actor == "kiosk:org-a/op-1" for r in rows)


def gate_until_removed(stack: Stack, events: Iterator[cards_pb2.CardEvent]
                       ) -> list[cards_pb2.CardEvent]:
    """Pull the card and return what the gate saw up to its removal."""
    stack.control.remove(0)
    seen = []
    for ev in events:
        seen.append(ev)
        if ev.kind == K.CARD_EVENT_KIND_CARD_REMOVED:
            break
    return seen


def kinds_until_removed(events: Iterator[cards_pb2.CardEvent]) -> list[int]:
    """The kinds of the events up to the next CARD_REMOVED."""
    kinds = []
    for ev in events:
        kinds.append(ev.kind)
        if ev.kind == K.CARD_EVENT_KIND_CARD_REMOVED:
            break
    return kinds
