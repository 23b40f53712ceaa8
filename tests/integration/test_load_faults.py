"""Load/delete through the real stack: every fault of issue 4 and every AP type on both vendors.

The stack here is pcscd + vpcd + the simulator + the daemon started by the test-only entry
point `python -m cardapd_testing.main` (it accepts gRPC metadata
`cardap-session: test:<organisation>:<operator>`), plus the reference loading service
(`python -m cardap_sim.loadsvc serve`) with a fresh dev CA, started by `LoadStack` below,
which also writes the daemon's `[loading]` section. The helpers here are shared by
test_load_tear.py and test_load_kill9.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from cardap import reasons
from cardap.client import CardapClient, CardapClientError
from cardap.v1 import terminal_pb2, terminal_pb2_grpc
from cardap_sim.loadsvc.devca import DevCa, write_private
from cardap_sim.stack import Stack
from cardap_sim.vcard.card import DEV_MASTER_KEYS, VirtualCard
from cardap_sim.vcard.connection import InProcessConnection
from cardap_sim.vcard.identity import check_char
from cardapd.audit import AuditRecord, query, verify
from cardlib.apdu import CommandApdu, ResponseApdu, parse_response
from cardlib.gp.keys import DiversifyingKeyStore
from cardlib.gp.registry import RegistryEntry, Scope, read_registry
from cardlib.gp.scp03 import Scp03Session

from .conftest import (
    expect_error,
    insert_and_wait,
    reader_name,
    remove_and_wait,
    wait_until,
)

OPEN_NOW = "2026-11-24T10:00:00+09:00"  # a Tuesday inside service hours
ORG = "org-a"
SESSION_MD = (("cardap-session", f"test:{ORG}:op-1"),)
TEST_ENTRY = "cardapd_testing.main"
ISD = bytes.fromhex("A000000151000000")
EXT = bytes.fromhex("A000000151455854")
# dev catalogue (cardap_sim.loadsvc.catalogue.dev_catalogue), organisation org-a
AP_C, AP_A, AP_D, AP_CUSTOM = "org-a-staff-c", "org-a-cert-a", "org-a-records-d", "org-a-custom"
AIDS = {AP_C: "D392F000430A0001", AP_A: "D392F000410A0002", AP_D: "D392F000440A0003",
        AP_CUSTOM: "D392F000580A0004"}
LOAD_FILES = {AP_C: "D392F0004C0A0001", AP_A: "D392F0004C0A0002", AP_D: "D392F0004C0A0003",
              AP_CUSTOM: "D392F0004C0A0004"}
ORG_B_AP = "org-b-door-c"


def custom_id(profile: str) -> str:
    """An organisation-assigned user ID, unique per AP (the service refuses reuse)."""
    body = f"CUSTMUSER{time.time_ns() % 1000:03d}"[:11] + profile[-1].upper()
    return body + check_char(body)



# ------------------------------------------------------------------------------ harness


class LoadStack(Stack):
    """Stack(loading=True, test_sessions=True) plus a service restart with another client CA."""

    def __init__(self, workdir: Path, **kw: Any) -> None:
        super().__init__(workdir, loading=True, test_sessions=True, organisation=ORG, **kw)

    def restart_loadsvc(self, fake_now: str | None = None) -> None:
        """Stop the service and start it again on the same port (the daemon reconnects)."""
        self.stop_loadsvc()
        self.start_loadsvc(fake_now=fake_now)

    def start_loadsvc_trusting(self, client_ca: Path) -> None:
        """Restart the service on its port trusting only terminals of `client_ca`.

        (Stack.start_loadsvc has no client-CA option; this is the same command line.)
        """
        self.stop_loadsvc()
        c = self.certs_dir
        log = (self.dir / "loadsvc.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "cardap_sim.loadsvc", "serve",
             "--listen", f"127.0.0.1:{self.loadsvc_port}", "--cert", str(c / "service.pem"),
             "--key", str(c / "service.key"), "--client-ca", str(client_ca),
             "--keys", str(c / "card-keys.json"), "--data-dir", str(self.dir / "loadsvc"),
             "--fake-now", OPEN_NOW],
            stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        log.close()
        assert proc.stdout is not None
        if not proc.stdout.readline().startswith(b"READY"):
            proc.kill()
            proc.wait(5)
            raise RuntimeError("the loading service did not start")
        self.loadsvc = proc


@contextlib.contextmanager
def load_stack(workdir: Path, **kw: Any) -> Iterator[LoadStack]:
    """A started LoadStack, stopped on exit."""
    s = LoadStack(workdir, **kw)
    try:
        s.start()
        yield s
    finally:
        s.stop()


# ------------------------------------------------------------------------------ API calls


def _stub(stack: Stack) -> tuple[grpc.Channel, terminal_pb2_grpc.TerminalStub]:
    ch = grpc.insecure_channel(f"unix:{stack.socket('kiosk')}")
    return ch, terminal_pb2_grpc.TerminalStub(ch)


def load(stack: Stack, ap_id: str, *, reader: str = "", custom_user_id: str = "",
         timeout: float = 90.0) -> list[terminal_pb2.LoadApEvent]:
    """LoadAp on the kiosk socket with a test operator session; every event, in order."""
    ch, stub = _stub(stack)
    try:
        call = stub.LoadAp(terminal_pb2.LoadApRequest(reader=reader, ap_id=ap_id,
                                                      custom_user_id=custom_user_id),
                           metadata=SESSION_MD, timeout=timeout)
        return list(call)
    except grpc.RpcError as exc:
        raise CardapClientError.from_rpc_error(exc) from None
    finally:
        ch.close()


def result_of(events: list[terminal_pb2.LoadApEvent]) -> terminal_pb2.LoadResult:
    """The one LoadResult of a single-AP load; it must be ok."""
    results = [e.result for e in events if e.WhichOneof("event") == "result"]
    assert len(results) == 1, events
    res = results[0]
    assert res.ok, f"{res.reason}: {res.message}"
    return res


def delete(stack: Stack, aid: str, reader: str = "") -> terminal_pb2.DeleteApResponse:
    """DeleteAp with a test operator session."""
    ch, stub = _stub(stack)
    try:
        resp: terminal_pb2.DeleteApResponse = stub.DeleteAp(
            terminal_pb2.DeleteApRequest(reader=reader, aid=aid,
                                         reason=terminal_pb2.DELETE_REASON_HOLDER_REQUEST),
            metadata=SESSION_MD,
            timeout=60)
        return resp
    except grpc.RpcError as exc:
        raise CardapClientError.from_rpc_error(exc) from None
    finally:
        ch.close()


def list_card_aps(stack: Stack, reader: str = "") -> terminal_pb2.ListCardApsResponse:
    """ListCardAps on the kiosk socket."""
    ch, stub = _stub(stack)
    try:
        resp: terminal_pb2.ListCardApsResponse = stub.ListCardAps(
            terminal_pb2.ListCardApsRequest(reader=reader), metadata=SESSION_MD, timeout=30)
        return resp
    except grpc.RpcError as exc:
        raise CardapClientError.from_rpc_error(exc) from None
    finally:
        ch.close()


def expect_load_error(stack: Stack, ap_id: str, code: grpc.StatusCode,
                      **kw: Any) -> CardapClientError:
    """LoadAp must fail with `code` (a LoadResult ok=False without a status is a failure)."""
    events: list[terminal_pb2.LoadApEvent] = []

    def call() -> None:
        events.extend(load(stack, ap_id, **kw))

    with pytest.raises(CardapClientError) as info:
        call()
    err = info.value
    assert err.code == code, f"{err.code} {err.reason}: {err.message}"
    assert err.message, "every error carries a human message"
    return err


# ------------------------------------------------------------------------------ the card


def slot_status(stack: Stack, slot: int) -> dict[str, Any]:
    """The simulator's status entry of `slot`."""
    entry: dict[str, Any] = stack.control.status()["slots"][slot]
    return entry


def apdu_count(stack: Stack, slot: int) -> int:
    """APDUs the card in `slot` processed since it was inserted."""
    return int(slot_status(stack, slot)["apdu_count"])


@dataclass(frozen=True)
class CardView:
    """The card as a terminal sees it with the card keys: registry and free space."""

    apps: list[RegistryEntry]
    load_files: list[RegistryEntry]
    free: dict[bytes, tuple[int, int]]  # area AID -> (capacity, used)
    card: VirtualCard

    def has_app(self, aid: str) -> bool:
        return any(e.aid == bytes.fromhex(aid) for e in self.apps)

    def has_load_file(self, aid: str) -> bool:
        return any(e.aid == bytes.fromhex(aid) for e in self.load_files)

    def ext_used(self) -> int:
        return self.free[EXT][1]


def parse_ff21(data: bytes) -> dict[bytes, tuple[int, int]]:
    """GET DATA FF21 by hand: `FF 21 len`, then per area `4F aid 81 04 cap 82 04 used`."""
    assert data[:2] == b"\xff\x21", data.hex()
    n, i = data[2], 3
    assert i + n == len(data), "FF21 length"
    out: dict[bytes, tuple[int, int]] = {}
    while i < len(data):
        assert data[i] == 0x4F
        aid = data[i + 2:i + 2 + data[i + 1]]
        i += 2 + data[i + 1]
        assert data[i:i + 2] == b"\x81\x04"
        cap = int.from_bytes(data[i + 2:i + 6], "big")
        assert data[i + 6:i + 8] == b"\x82\x04"
        used = int.from_bytes(data[i + 8:i + 12], "big")
        i += 12
        out[aid] = (cap, used)
    return out


def inspect_card(path: Path) -> CardView:
    """Registry (GET STATUS 40/20 in SCP03) and FF21 of a *copy* of the card file."""
    with tempfile.TemporaryDirectory() as d:
        copy = Path(d) / "card.json"
        shutil.copy(path, copy)
        card = VirtualCard.load(copy)
        conn = InProcessConnection(card)

        def plain(cmd: bytes) -> ResponseApdu:
            return parse_response(conn.transmit(cmd))

        assert plain(bytes.fromhex("00A4040C08") + ISD).sw == 0x9000
        ff21 = plain(bytes.fromhex("80CAFF2100"))
        assert ff21.sw == 0x9000
        free = parse_ff21(ff21.data)
        scp = Scp03Session(DiversifyingKeyStore(DEV_MASTER_KEYS), level=0x33, isd_aid=ISD)
        ext = scp.open(plain(scp.begin().encode()))
        scp.confirm(plain(ext.encode()))

        def send(cmd: CommandApdu) -> ResponseApdu:
            return scp.unwrap(plain(scp.wrap(cmd).encode()))

        tlv = card.profile.get_status_tlv
        apps = read_registry(send, Scope.APPLICATIONS, tlv=tlv)
        files = read_registry(send, Scope.LOAD_FILES, tlv=tlv)
        card.path = None  # never write the copy back anywhere
        return CardView(apps, files, free, card)


# ------------------------------------------------------------------------------ records


def journal_rows(stack: Stack) -> list[dict[str, Any]]:
    """Rows of the daemon's operations journal (any SQLite file in state/ with that table)."""
    for db in sorted((stack.dir / "state").glob("*")):
        if db.suffix not in (".db", ".sqlite", ".sqlite3") or db.name == "audit.db":
            continue
        con = sqlite3.connect(str(db), timeout=5)
        con.row_factory = sqlite3.Row
        try:
            rows = [dict(r) for r in con.execute("SELECT * FROM operations")]
        except sqlite3.OperationalError:
            continue
        finally:
            con.close()
        return rows
    return []


def audit_rows(stack: Stack) -> list[AuditRecord]:
    return list(query(stack.dir / "state" / "audit.db"))


def assert_audit_chain(stack: Stack) -> None:
    result = verify(stack.dir / "state" / "audit.db")
    assert result.ok, result


def wait_reconciled(stack: Stack, card_id: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Until no journal row of `card_id` needs reconciling; returns that card's rows."""
    def settled() -> bool:
        rows = [r for r in journal_rows(stack) if r["card_id"] == card_id]
        return bool(rows) and not any(r["needs_reconcile"] for r in rows) and all(
            r["state"] not in ("started", "interrupted") for r in rows)
    wait_until(settled, timeout, f"the journal of {card_id} to be reconciled", interval=0.2)
    return [r for r in journal_rows(stack) if r["card_id"] == card_id]


def audit_failure_and_reconcile(stack: Stack, card_id: str) -> tuple[AuditRecord, AuditRecord]:
    """The failed load row and a later reconciliation row of `card_id`."""
    rows = [r for r in audit_rows(stack) if r.card_id == card_id]
    failed = [r for r in rows if "load" in r.operation and r.result != "ok"]
    assert failed, f"no failed load audited: {[(r.operation, r.result) for r in rows]}"
    if json.loads(failed[-1].detail_json).get("step") == "presence_probe":
        # Torn while the terminal asked whether the AP is there (SELECTs only): the load
        # had not begun, no journal row, nothing to reconcile.
        return failed[-1], failed[-1]
    recon = [r for r in rows if "reconcil" in r.operation and r.seq > failed[-1].seq]
    assert recon, f"no reconciliation audited: {[(r.operation, r.result) for r in rows]}"
    return failed[-1], recon[-1]


def assert_all_or_nothing(view: CardView, ap_id: str, ext_used_before: int) -> bool:
    """Complete (instance personalised + file LOADED) or gone without trace; True if loaded."""
    inst = next((e for e in view.apps if e.aid == bytes.fromhex(AIDS[ap_id])), None)
    lf = next((e for e in view.load_files if e.aid == bytes.fromhex(LOAD_FILES[ap_id])), None)
    if inst is None and lf is None:
        assert view.ext_used() == ext_used_before, "free space not back where it was"
        return False
    assert inst is not None, f"orphan load file {LOAD_FILES[ap_id]} (lifecycle {lf})"
    assert lf is not None, "instance without its load file"
    assert lf.lifecycle == 0x01, f"instance without a LOADED file: {lf}"
    applet = view.card.applets[bytes.fromhex(AIDS[ap_id])]
    assert getattr(applet, "personalised", False), "instance present but not personalised"
    assert applet_user_id(applet), "personalised without a user ID"
    return True


def applet_user_id(applet: object) -> str | None:
    """The user ID a loaded instance holds (custom: found in its content, `C1 0D uid`)."""
    d: dict[str, Any] = applet.to_json()  # type: ignore[attr-defined]
    if d.get("user_id"):
        return str(d["user_id"])
    content = bytes.fromhex(d.get("content") or "")
    at = content.find(b"\xc1\x0d")
    return content[at + 2:at + 15].decode("ascii", "replace") if at >= 0 else None


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def lstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadStack]:
    with load_stack(tmp_path_factory.mktemp("load") / "stack") as s:
        yield s


@pytest.fixture
def slot0(lstack: LoadStack) -> Iterator[LoadStack]:
    """Slot 0 is emptied and faults cleared after the test."""
    yield lstack
    with contextlib.suppress(Exception):
        lstack.control.fault(0, clear=True)
    if slot_status(lstack, 0)["state"] != "empty":
        with contextlib.suppress(Exception):
            remove_and_wait(lstack, 0)
        lstack.control.remove(0)
    lstack.restart_loadsvc()  # back to the normal service (hours, CA) for the next test
    wait_until(lambda: _catalogue_ok(lstack), 30, "the daemon to reach the service again",
               interval=0.5)


def _catalogue_ok(stack: Stack) -> bool:
    ch, stub = _stub(stack)
    try:
        stub.ListLoadableAps(terminal_pb2.ListLoadableApsRequest(), metadata=SESSION_MD,
                             timeout=5)
    except grpc.RpcError:
        return False
    finally:
        ch.close()
    return True


def fresh_card(stack: Stack, name: str, profile: str = "vendor-a") -> tuple[Path, str]:
    """A new card in slot 0, identified by the daemon; (path, card id)."""
    path = stack.new_card(f"{name}-{time.monotonic_ns()}", profile=profile)
    reader = insert_and_wait(stack, 0, path)
    return path, reader.card.card_id


# ------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("profile", ["vendor-a", "vendor-b"])
def test_every_type_loads_on_both_vendors(slot0: LoadStack, profile: str) -> None:
    path, _ = fresh_card(slot0, "types", profile)
    r0 = reader_name(slot0, 0)
    before = inspect_card(path).ext_used()
    cid = custom_id(profile)
    for ap in (AP_C, AP_A, AP_D, AP_CUSTOM):
        events = load(slot0, ap, reader=r0,
                      custom_user_id=cid if ap == AP_CUSTOM else "")
        res = result_of(events)
        assert (res.ap_id, res.aid.upper()) == (ap, AIDS[ap])
        assert len(res.user_id) == 13, res
        if ap == AP_CUSTOM:
            assert res.user_id == cid
        progress = [e.progress for e in events if e.WhichOneof("event") == "progress"]
        assert progress, "a load streams progress"
        assert [p.percent for p in progress] == sorted(p.percent for p in progress)
        view = inspect_card(path)
        assert assert_all_or_nothing(view, ap, before)
        assert applet_user_id(view.card.applets[bytes.fromhex(AIDS[ap])]) == res.user_id
        cap, used = view.free[EXT]
        assert res.free_bytes == cap - used
        if ap == AP_C:
            with CardapClient(slot0.socket("kiosk"), session=SESSION_MD[0][1]) as kiosk:
                read = kiosk.read_user_id(r0, aid=AIDS[AP_C], fresh=True)
                assert (read.user_id, read.cached) == (res.user_id, False)
    listed = list_card_aps(slot0, r0)
    assert {a.aid.upper() for a in listed.aps} >= set(AIDS.values())
    view = inspect_card(path)
    assert listed.free_bytes["extended"] == view.free[EXT][0] - view.free[EXT][1]
    ok = [r for r in journal_rows(slot0) if r["state"] == "done" and r["action"] == "load"]
    assert {r["ap_id"] for r in ok} >= set(AIDS)


def test_card_full_is_resource_exhausted_with_free_space(slot0: LoadStack) -> None:
    path, _ = fresh_card(slot0, "full")
    slot0.control.fault(0, full_extended_area=True)
    err = expect_load_error(slot0, AP_C, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert err.reason == "CARD_FULL", err
    assert err.metadata.get("free_bytes") == "0", err.metadata
    assert int(err.metadata["needed_bytes"]) >= 2048, err.metadata
    slot0.control.fault(0, clear=True)
    view = inspect_card(path)
    assert not view.has_app(AIDS[AP_C])
    assert not view.has_load_file(LOAD_FILES[AP_C])


@pytest.mark.parametrize(("refuse", "sw"), [
    ({"refuse_ins": 0xE6, "refuse_p1": 0x0C, "refuse_sw": 0x6985}, "6985"),  # INSTALL [inst.]
    ({"refuse_ins": 0xE8, "refuse_nth": 3, "refuse_sw": 0x6581}, "6581"),  # the 3rd LOAD
], ids=["install-6985", "load-6581"])
def test_card_refusing_a_command_is_card_rejected_audited_and_reconciled(
        slot0: LoadStack, refuse: dict[str, int], sw: str) -> None:
    """The card answers one of the service's commands with an error status word (a real
    card's refusal, not a lost link): the code and reason the registry gives, the Japanese
    LocalizedMessage, the failure audited, the half-done load cleaned and its journal row
    reconciled, the card as it was."""
    path, card_id = fresh_card(slot0, "refused")
    before = inspect_card(path).ext_used()
    slot0.control.fault(0, **refuse)
    with CardapClient(slot0.socket("kiosk"), session=SESSION_MD[0][1], language="ja",
                      timeout=90) as kiosk:
        err = expect_error(lambda: list(kiosk.load_ap(AP_C, timeout=90)),
                           grpc.StatusCode[reasons.BY_CODE["CARD_REJECTED"].grpc[0]],
                           "CARD_REJECTED")
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "refuse_ins" not in slot_status(slot0, 0)["faults"], "the card refused a command"
    assert sw in err.message, err.message
    assert err.metadata["service_reason"] == "CARD_REJECTED", err.metadata
    assert err.metadata["aid"].upper() == AIDS[AP_C], err.metadata
    assert err.locale == "ja"
    assert err.localized.startswith("カードが搭載サービスのコマンドを拒否しました。"), \
        err.localized
    failed, _ = audit_failure_and_reconcile_when_settled(slot0, card_id)
    assert (failed.operation, failed.result, failed.reason) == (
        "load", "error", "CARD_REJECTED"), failed
    assert not assert_all_or_nothing(inspect_card(path), AP_C, before)
    assert_audit_chain(slot0)


def audit_failure_and_reconcile_when_settled(stack: LoadStack, card_id: str
                                             ) -> tuple[AuditRecord, AuditRecord]:
    """Once the journal of `card_id` is settled: its failed load and reconciliation rows."""
    rows = wait_reconciled(stack, card_id)
    assert any(r["action"] == "load" for r in rows), rows
    return audit_failure_and_reconcile(stack, card_id)


def test_ap_of_another_organisation_is_not_found_in_its_catalogue(slot0: LoadStack) -> None:
    path, _ = fresh_card(slot0, "perm")
    err = expect_load_error(slot0, ORG_B_AP, grpc.StatusCode.NOT_FOUND)
    assert err.reason == "UNKNOWN_AP", err
    assert not inspect_card(path).has_load_file("D392F0004C0B0001")


def test_foreign_card_is_failed_precondition(slot0: LoadStack) -> None:
    path = slot0.new_card(f"foreign-{time.monotonic_ns()}", profile="foreign")
    insert_and_wait(slot0, 0, path)
    expect_load_error(slot0, AP_C, grpc.StatusCode.FAILED_PRECONDITION)
    assert not inspect_card(path).load_files


@pytest.mark.parametrize(("now", "opens"), [
    ("2026-11-24T23:00:00+09:00", "2026-11-25T08:00:00+09:00"),  # after closing
    ("2026-12-30T10:00:00+09:00", "2027-01-04T08:00:00+09:00"),  # New Year holidays
])
def test_outside_service_hours_is_unavailable_with_next_opening(
        slot0: LoadStack, now: str, opens: str) -> None:
    path, _ = fresh_card(slot0, "hours")
    slot0.restart_loadsvc(fake_now=now)
    slot0.control.clear_apdus(0)
    err = expect_load_error(slot0, AP_C, grpc.StatusCode.UNAVAILABLE)
    assert err.reason == "OUTSIDE_SERVICE_HOURS", err
    got = dt.datetime.fromisoformat(err.metadata["next_opening"].replace("Z", "+00:00"))
    assert got == dt.datetime.fromisoformat(opens), err.metadata
    # A closed service never reaches the card: the terminal's own presence probe (is the AP
    # there already? SELECT by AID, GET RESPONSE) is all the card saw; nothing was written.
    seen = {h[1] for h in slot0.control.apdus(0)}
    assert seen <= {0xA4, 0xC0}, [h.hex() for h in slot0.control.apdus(0)]
    assert not inspect_card(path).load_files


def _assert_nothing_sent(stack: LoadStack, path: Path) -> None:
    before, selects = apdu_count(stack, 0), stack.control.selects(0)
    err = expect_load_error(stack, AP_C, grpc.StatusCode.UNAVAILABLE)
    assert err.reason not in ("OUTSIDE_SERVICE_HOURS", "DAEMON_UNREACHABLE"), err
    assert apdu_count(stack, 0) == before, "APDUs reached the card"
    assert stack.control.selects(0) == selects
    assert not inspect_card(path).load_files


def test_service_unreachable_is_unavailable_and_card_untouched(slot0: LoadStack) -> None:
    path, _ = fresh_card(slot0, "down")
    slot0.stop_loadsvc()  # nothing listens on the configured port any more
    _assert_nothing_sent(slot0, path)


def test_terminal_certificate_rejected_is_unavailable_and_card_untouched(
        slot0: LoadStack, tmp_path: Path) -> None:
    path, _ = fresh_card(slot0, "cert")
    other = DevCa("another CA")
    (tmp_path / "other-ca.pem").write_bytes(other.cert_pem)
    write_private(tmp_path / "other-ca.key", other.key_pem)
    # the service now trusts only terminals of another CA: the kiosk's certificate is rejected
    slot0.start_loadsvc_trusting(tmp_path / "other-ca.pem")
    _assert_nothing_sent(slot0, path)


def test_ap_already_on_card_is_already_exists(slot0: LoadStack) -> None:
    path, _ = fresh_card(slot0, "twice")
    first = result_of(load(slot0, AP_C))
    used = inspect_card(path).ext_used()
    err = expect_load_error(slot0, AP_C, grpc.StatusCode.ALREADY_EXISTS)
    assert err.reason == "ALREADY_EXISTS", err
    view = inspect_card(path)
    assert view.ext_used() == used
    with CardapClient(slot0.socket("kiosk"), session=SESSION_MD[0][1]) as kiosk:
        assert kiosk.read_user_id(aid=AIDS[AP_C], fresh=True).user_id == first.user_id


def test_delete_is_idempotent_and_frees_space(slot0: LoadStack) -> None:
    path, _ = fresh_card(slot0, "delete")
    before = inspect_card(path).ext_used()
    result_of(load(slot0, AP_C))
    assert delete(slot0, AIDS[AP_C]).outcome == "DELETED"
    view = inspect_card(path)
    assert not view.has_app(AIDS[AP_C])
    assert not view.has_load_file(LOAD_FILES[AP_C])
    assert view.ext_used() == before
    again = delete(slot0, AIDS[AP_C])
    assert again.outcome == "ALREADY_ABSENT"
    assert again.free_bytes == view.free[EXT][0] - view.free[EXT][1]


def test_card_pulled_mid_load_is_aborted_then_reconciled(slot0: LoadStack) -> None:
    path, card_id = fresh_card(slot0, "pulled")
    before = inspect_card(path).ext_used()
    slot0.control.fault(0, tear_after=14)  # probe (5) + auth/status/INSTALL (4) + 5 LOADs
    err = expect_load_error(slot0, AP_C, grpc.StatusCode.ABORTED)
    assert err.reason == "CARD_REMOVED", err
    half = inspect_card(path)
    assert half.has_load_file(LOAD_FILES[AP_C]), "the tear should leave a half-loaded file"
    rows = [r for r in journal_rows(slot0) if r["card_id"] == card_id]
    assert rows
    assert rows[-1]["needs_reconcile"], rows
    insert_and_wait(slot0, 0, path)
    wait_reconciled(slot0, card_id)
    loaded = assert_all_or_nothing(inspect_card(path), AP_C, before)
    assert not loaded, "a load torn in the LOAD blocks cannot have completed"
    audit_failure_and_reconcile(slot0, card_id)
    assert_audit_chain(slot0)
