"""The daemon's link to the loading service misbehaving, end to end, and no link at all.

The reference loading service (cardap_sim.loadsvc) never answers out of protocol, late,
with a refusal of the terminal itself or without audit checkpoints, so here it runs in the
test process — the real `LoadingServicer`, its real core, the dev CA's certificates, real
mutual TLS on the port the daemon's `[loading]` names — with one misbehaviour switched on
for one call: an empty ServiceMessage mid-session, a SessionDone holding a time no
Timestamp can hold, a stalled session or catalogue, a PERMISSION_DENIED without a reason
of the service's, UNIMPLEMENTED for the checkpoints. Each failure must reach the client as
the registry says (gRPC code, ErrorInfo reason, a LocalizedMessage), be audited, and leave
no journal row unsettled nor the card half-written (a session cut short is reconciled at
once, against the same service behaving again). A daemon without `[loading]` refuses
everything that needs the service with LOADING_SERVICE_NOT_CONFIGURED.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cardap.client import CardapClient, CardapClientError
from cardap.v1 import loading_pb2, loading_pb2_grpc, terminal_pb2, terminal_pb2_grpc
from cardap_sim.loadsvc.billing import Billing
from cardap_sim.loadsvc.catalogue import dev_catalogue
from cardap_sim.loadsvc.checkpoints import CheckpointStore
from cardap_sim.loadsvc.hours import clock_from
from cardap_sim.loadsvc.issuer import Issuer
from cardap_sim.loadsvc.keystore import FileKeyStore
from cardap_sim.loadsvc.revocation import dev_feeds
from cardap_sim.loadsvc.server import LoadingServicer
from cardap_sim.loadsvc.session import ServiceCore
from cardap_sim.stack import Stack

from .conftest import expect_error, remove_and_wait, wait_until
from .test_load_faults import (
    AP_C,
    LOAD_FILES,
    OPEN_NOW,
    SESSION_MD,
    LoadStack,
    assert_all_or_nothing,
    assert_audit_chain,
    audit_failure_and_reconcile,
    audit_rows,
    fresh_card,
    inspect_card,
    load_stack,
    slot_status,
    wait_reconciled,
)

TIMEOUT_S = 8.0  # the daemon's [loading] timeout_s here (every answer, not only the stalls)
TOKEN = SESSION_MD[0][1]


class Misbehaving(LoadingServicer):
    """The reference servicer; `fault` names one misbehaviour, used once and then cleared
    (so the reconciliation that follows a broken session meets the service behaving)."""

    def __init__(self, core: ServiceCore, checkpoints: CheckpointStore) -> None:
        super().__init__(core, dev_feeds(), checkpoints)
        self.fault = ""
        self.after_batches = 0  # a session's fault comes after this many batches went out
        self.stalled = threading.Event()  # set when a stalled call was given up by the daemon
        self.sessions: list[tuple[str, int]] = []  # (fault, batches sent) per card session

    def _take(self, *faults: str) -> str:
        if self.fault in faults:
            fault, self.fault = self.fault, ""
            return fault
        return ""

    async def _stall(self) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.stalled.set()
            raise

    async def GetCatalogue(self, request: loading_pb2.GetCatalogueRequest,
                           context: Any) -> loading_pb2.GetCatalogueResponse:
        fault = self._take("refuse_terminal", "slow_catalogue")
        if fault == "refuse_terminal":
            # the service's own refusal of this terminal (suspended, say): no cardap-reason
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                "terminal kiosk-01 is suspended by the service's administrators")
        if fault == "slow_catalogue":
            await self._stall()
        return await super().GetCatalogue(request, context)

    async def ListAuditCheckpoints(self, request: loading_pb2.ListAuditCheckpointsRequest,
                                   context: Any) -> loading_pb2.ListAuditCheckpointsResponse:
        if self._take("no_checkpoints"):
            # what gRPC answers for a method a service of an older protocol lacks
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        return await super().ListAuditCheckpoints(request, context)

    async def CardSession(self, request_iterator: AsyncIterator[loading_pb2.TerminalMessage],
                          context: Any) -> AsyncIterator[loading_pb2.ServiceMessage]:
        fault = self._take("empty_message", "stall", "refuse_session", "bad_time")
        if fault == "refuse_session":
            # as the reference service refuses: once it has read the SessionOpen (aborting
            # before reading it races the terminal's first message on the stream)
            await request_iterator.__aiter__().__anext__()
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                "terminal kiosk-01 is suspended by the service's administrators")
        real = super().CardSession(request_iterator, context)
        sent = 0
        try:
            async for msg in real:
                if fault == "bad_time" and msg.WhichOneof("msg") == "done":
                    msg.done.next_opening.seconds = 253402300800  # 10000-01-01: no Timestamp
                elif fault and fault != "bad_time" and sent == self.after_batches:
                    if fault == "empty_message":
                        yield loading_pb2.ServiceMessage()  # neither a batch nor a done
                    await self._stall()  # the daemon gives up the call
                yield msg
                sent += msg.WhichOneof("msg") == "batch"
        finally:
            self.sessions.append((fault, sent))
            await real.aclose()


class InProcessService:
    """A grpc.aio server on its own thread's event loop, serving `servicer` over mutual TLS
    with the stack's dev CA certificates on the port its daemon's [loading] names."""

    def __init__(self, stack: Stack) -> None:
        data = stack.dir / "inproc-loadsvc"
        data.mkdir(exist_ok=True)
        c = stack.certs_dir
        core = ServiceCore(dev_catalogue(), FileKeyStore(c / "card-keys.json"),
                           Issuer(data / "user_ids.sqlite3"), Billing(data / "loads.sqlite3"),
                           clock_from(OPEN_NOW))
        self.servicer = Misbehaving(core, CheckpointStore(data / "checkpoints.sqlite3"))
        self.creds = grpc.ssl_server_credentials(
            [((c / "service.key").read_bytes(), (c / "service.pem").read_bytes())],
            root_certificates=(c / "ca.pem").read_bytes(), require_client_auth=True)
        self.address = f"127.0.0.1:{stack.loadsvc_port}"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="loadsvc",
                                       daemon=True)
        self.server: Any = None

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _start(self) -> None:
        self.server = grpc.aio.server()
        loading_pb2_grpc.add_LoadingServiceServicer_to_server(self.servicer, self.server)
        assert self.server.add_secure_port(self.address, self.creds), self.address
        await self.server.start()

    def start(self) -> None:
        self.thread.start()
        self._run(self._start())

    def stop(self) -> None:
        if self.server is not None:
            self._run(self.server.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def reaches_service(stack: Stack) -> bool:
    """Whether a kiosk call that asks the service for the catalogue is answered."""
    try:
        with kiosk(stack) as k:
            k.loadable_aps()
        return True
    except CardapClientError:
        return False


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[LoadStack, Misbehaving]]:
    """A load stack whose daemon talks to the in-process service instead of the reference
    service's process (stopped; the daemon reconnects to the same port)."""
    with load_stack(tmp_path_factory.mktemp("link") / "stack",
                    loading_timeout_s=TIMEOUT_S) as s:
        s.stop_loadsvc()
        svc = InProcessService(s)
        svc.start()
        try:
            # The daemon's channel may have tried the port while no service listened (it
            # then waits out a reconnect backoff): start once a catalogue comes through.
            wait_until(lambda: reaches_service(s), 30, "the daemon to reach the service")
            yield s, svc.servicer
        finally:
            svc.stop()


@pytest.fixture
def link(served: tuple[LoadStack, Misbehaving]) -> Iterator[tuple[LoadStack, Misbehaving]]:
    """The served stack; after the test: no fault left, slot 0 empty."""
    stack, servicer = served
    servicer.fault, servicer.after_batches = "", 0
    servicer.stalled.clear()
    yield stack, servicer
    servicer.fault = ""
    if slot_status(stack, 0)["state"] != "empty":
        with contextlib.suppress(Exception):
            remove_and_wait(stack, 0)
        stack.control.remove(0)


def saw_session(servicer: Misbehaving, since: int, session: tuple[str, int]) -> None:
    """The service ended a card session `session` (fault, batches sent) after the first
    `since` (it records one when its call ends, which may follow the daemon's answer; a
    reconciliation's session may come after it)."""
    wait_until(lambda: session in servicer.sessions[since:], 20,
               f"the service to end a session {session}")


def kiosk(stack: Stack, language: str | None = None) -> CardapClient:
    return CardapClient(stack.socket("kiosk"), session=TOKEN, language=language, timeout=30)


def load_c(stack: Stack, language: str | None = None) -> None:
    with kiosk(stack, language) as k:
        list(k.load_ap(AP_C, timeout=90))


def failed_load_audited(stack: Stack, card_id: str, reason: str) -> dict[str, Any]:
    """The audited end of the failed load of `card_id`: with `reason`; its detail."""
    rows = [r for r in audit_rows(stack) if r.card_id == card_id and r.operation == "load"]
    assert rows, f"no load of {card_id} audited"
    assert (rows[-1].result, rows[-1].reason) == ("error", reason), rows[-1]
    detail: dict[str, Any] = json.loads(rows[-1].detail_json)
    return detail


def refused_audited(stack: Stack, method: str, reason: str) -> None:
    """A call that failed without an audit row of its own is in the refusal ledger."""
    rows = [json.loads(r.detail_json) for r in audit_rows(stack)
            if r.operation == "rpc_refused" and r.reason == reason]
    assert any(d.get("method") == method for d in rows), rows


def settled_after_session_cut(stack: Stack, path: Path, card_id: str, ext_before: int
                               ) -> bool:
    """The journal row of the cut session is reconciled at once (the card stayed; audited
    after the failure) and the card holds the AP whole or not at all; whether it holds it."""
    rows = wait_reconciled(stack, card_id)
    assert any(r["action"] == "load" for r in rows), rows
    audit_failure_and_reconcile(stack, card_id)
    loaded = assert_all_or_nothing(inspect_card(path), AP_C, ext_before)
    assert_audit_chain(stack)
    return loaded


# ------------------------------------------------------------------------------ card session


def test_an_empty_message_mid_session_is_a_protocol_error_and_reconciled(
        link: tuple[LoadStack, Misbehaving]) -> None:
    stack, servicer = link
    path, card_id = fresh_card(stack, "protocol")
    before = inspect_card(path).ext_used()
    servicer.fault, servicer.after_batches = "empty_message", 1
    since = len(servicer.sessions)
    err = expect_error(lambda: load_c(stack, "ja"), grpc.StatusCode.UNAVAILABLE,
                       "LOADING_SERVICE_PROTOCOL")
    saw_session(servicer, since, ("empty_message", 1))  # the fault came mid-session
    assert "empty message" in err.message
    assert err.locale == "ja"
    assert "搭載サービスの応答が手順に従っていません" in err.localized, err.localized
    detail = failed_load_audited(stack, card_id, "LOADING_SERVICE_PROTOCOL")
    assert detail["ap_id"] == AP_C
    assert not settled_after_session_cut(stack, path, card_id, before)
    assert not inspect_card(path).has_load_file(LOAD_FILES[AP_C])


def test_a_session_done_with_an_impossible_time_is_a_protocol_error_naming_the_field(
        link: tuple[LoadStack, Misbehaving]) -> None:
    stack, servicer = link
    path, card_id = fresh_card(stack, "badtime")
    before = inspect_card(path).ext_used()
    servicer.fault = "bad_time"
    since = len(servicer.sessions)
    err = expect_error(lambda: load_c(stack), grpc.StatusCode.UNAVAILABLE,
                       "LOADING_SERVICE_PROTOCOL")
    assert err.metadata["field"] == "next_opening", err.metadata
    assert "invalid time in next_opening" in err.message
    saw_session(servicer, since, ("bad_time", 2))
    failed_load_audited(stack, card_id, "LOADING_SERVICE_PROTOCOL")
    # the service had finished: the reconciliation records the completed install
    assert settled_after_session_cut(stack, path, card_id, before)


def test_a_silent_service_mid_session_times_out_and_is_reconciled(
        link: tuple[LoadStack, Misbehaving]) -> None:
    stack, servicer = link
    path, card_id = fresh_card(stack, "timeout")
    before = inspect_card(path).ext_used()
    # a load is two batches (open the secure channel; then every write): the service
    # falls silent after the card did all the writes, before its SessionDone
    servicer.fault, servicer.after_batches = "stall", 2
    since = len(servicer.sessions)
    err = expect_error(lambda: load_c(stack), grpc.StatusCode.UNAVAILABLE,
                       "LOADING_SERVICE_TIMEOUT")
    assert f"within {TIMEOUT_S:g} s" in err.message
    assert servicer.stalled.wait(TIMEOUT_S + 20), "the daemon never gave the stalled call up"
    saw_session(servicer, since, ("stall", 2))
    failed_load_audited(stack, card_id, "LOADING_SERVICE_TIMEOUT")
    # the writes were all done: the reconciliation records the completed install
    assert settled_after_session_cut(stack, path, card_id, before)
    with CardapClient(stack.socket("ops")) as ops:  # the reconciliation's session answered
        assert ops.status().loading_link.state == terminal_pb2.LOADING_LINK_UP


def test_a_terminal_refused_at_the_session_is_permission_denied_and_the_card_untouched(
        link: tuple[LoadStack, Misbehaving]) -> None:
    stack, servicer = link
    path, card_id = fresh_card(stack, "refused")
    stack.control.clear_apdus(0)
    servicer.fault = "refuse_session"
    err = expect_error(lambda: load_c(stack, "ja"), grpc.StatusCode.PERMISSION_DENIED,
                       "SERVICE_REFUSED")
    assert "suspended by the service's administrators" in err.message
    assert "搭載サービスがこの端末を拒否しました" in err.localized, err.localized
    # only the terminal's own presence probe (SELECT, GET RESPONSE) reached the card
    seen = {h[1] for h in stack.control.apdus(0)}
    assert seen <= {0xA4, 0xC0}, [h.hex() for h in stack.control.apdus(0)]
    failed_load_audited(stack, card_id, "SERVICE_REFUSED")
    wait_reconciled(stack, card_id)
    assert not inspect_card(path).load_files


# ------------------------------------------------------------------------------ unary calls


def test_a_terminal_refused_by_the_service_is_permission_denied(
        link: tuple[LoadStack, Misbehaving]) -> None:
    stack, servicer = link
    servicer.fault = "refuse_terminal"
    with kiosk(stack, "ja") as k:
        err = expect_error(k.loadable_aps, grpc.StatusCode.PERMISSION_DENIED,
                           "SERVICE_REFUSED")
    assert err.locale == "ja"
    assert "搭載サービスがこの端末を拒否しました" in err.localized, err.localized
    refused_audited(stack, "ListLoadableAps", "SERVICE_REFUSED")
    with kiosk(stack) as k:  # an answer: the link itself is up
        assert AP_C in {a.ap_id for a in k.loadable_aps().aps}


def test_a_catalogue_not_answered_in_time_is_a_timeout(
        link: tuple[LoadStack, Misbehaving]) -> None:
    stack, servicer = link
    servicer.fault = "slow_catalogue"
    with kiosk(stack) as k:
        err = expect_error(k.loadable_aps, grpc.StatusCode.UNAVAILABLE,
                           "LOADING_SERVICE_TIMEOUT")
    assert "did not answer in time (the catalogue)" in err.message, err.message
    assert servicer.stalled.wait(TIMEOUT_S + 20)
    refused_audited(stack, "ListLoadableAps", "LOADING_SERVICE_TIMEOUT")


def test_a_service_that_keeps_no_checkpoints_says_so(
        link: tuple[LoadStack, Misbehaving]) -> None:
    stack, servicer = link
    servicer.fault = "no_checkpoints"
    with CardapClient(stack.socket("ops"), language="ja") as ops:
        err = expect_error(lambda: ops.verify_audit(from_service=True),
                           grpc.StatusCode.UNAVAILABLE, "CHECKPOINTS_NOT_KEPT")
        assert "搭載サービスは操作記録のチェックポイントを保管していません" in err.localized, \
            err.localized
        refused_audited(stack, "VerifyAudit", "CHECKPOINTS_NOT_KEPT")
        again = ops.verify_audit(from_service=True)  # the service keeps them again
    assert again.ok, again


# ------------------------------------------------------------------------------ no [loading]


@pytest.fixture(scope="module")
def unlinked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A terminal with operator sessions but no [loading] section."""
    s = Stack(tmp_path_factory.mktemp("unlinked") / "stack", test_sessions=True)
    try:
        s.start()
        yield s
    finally:
        s.stop()


def test_without_a_loading_service_what_needs_one_is_refused(unlinked: Stack) -> None:
    stack = unlinked
    with kiosk(stack, "ja") as k:
        err = expect_error(k.loadable_aps, grpc.StatusCode.UNAVAILABLE,
                           "LOADING_SERVICE_NOT_CONFIGURED")
    assert "この端末には搭載サービスが設定されていません" in err.localized, err.localized
    refused_audited(stack, "ListLoadableAps", "LOADING_SERVICE_NOT_CONFIGURED")
    with CardapClient(stack.socket("ops")) as ops:
        expect_error(lambda: ops.verify_audit(from_service=True),
                     grpc.StatusCode.UNAVAILABLE, "LOADING_SERVICE_NOT_CONFIGURED")
        assert ops.verify_audit().ok  # the local chain is checked all the same
    refused_audited(stack, "VerifyAudit", "LOADING_SERVICE_NOT_CONFIGURED")
    ch = grpc.insecure_channel(f"unix:{stack.socket('ops')}")
    try:
        with pytest.raises(grpc.RpcError) as raised:
            terminal_pb2_grpc.TerminalStub(ch).SyncRevocation(
                terminal_pb2.SyncRevocationRequest(), timeout=10)
    finally:
        ch.close()
    sync = CardapClientError.from_rpc_error(raised.value)
    assert (sync.code, sync.reason) == (grpc.StatusCode.UNAVAILABLE,
                                        "LOADING_SERVICE_NOT_CONFIGURED"), sync
    rows = [r for r in audit_rows(stack) if r.operation == "revocation_sync"]
    assert rows, "the refused sync is audited"
    assert (rows[-1].result, rows[-1].reason) == ("error", "LOADING_SERVICE_NOT_CONFIGURED")
    with CardapClient(stack.socket("ops")) as ops:
        link = ops.status().loading_link
    assert link.state == terminal_pb2.LOADING_LINK_NOT_CONFIGURED
