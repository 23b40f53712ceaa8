"""The loading service over real gRPC with mutual TLS (dev CA), relaying to an in-process card."""

from __future__ import annotations

import datetime as dt
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_loadsvc_session import new_card

from cardap.v1 import loading_pb2, loading_pb2_grpc
from cardap_sim.loadsvc.billing import Billing
from cardap_sim.loadsvc.catalogue import dev_catalogue
from cardap_sim.loadsvc.devca import DevCa, terminal_identity
from cardap_sim.loadsvc.devca import main as devca_main
from cardap_sim.loadsvc.hours import JST, FixedClock
from cardap_sim.loadsvc.issuer import Issuer
from cardap_sim.loadsvc.keystore import dev_keystore
from cardap_sim.loadsvc.relay import run_batch
from cardap_sim.loadsvc.revocation import dev_feeds
from cardap_sim.loadsvc.server import LoadingServer, TlsFiles
from cardap_sim.loadsvc.session import Batch, Phase, PlannedApdu, ServiceCore
from cardap_sim.vcard.identity import validate_user_id


@pytest.fixture
def ca() -> DevCa:
    return DevCa()


@pytest.fixture
async def server(ca: DevCa) -> AsyncIterator[tuple[LoadingServer, ServiceCore]]:
    svc = ca.service_cert()
    core = ServiceCore(dev_catalogue(), dev_keystore(), Issuer(), Billing(),
                       FixedClock(dt.datetime(2026, 11, 23, 10, tzinfo=JST)))
    srv = LoadingServer(core, dev_feeds(), TlsFiles(svc.cert_pem, svc.key_pem, ca.cert_pem))
    await srv.start()
    yield srv, core
    await srv.stop(0)


def channel(port: int, ca_pem: bytes, cert: tuple[bytes, bytes] | None) -> grpc.aio.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=cert[1] if cert else None,
        certificate_chain=cert[0] if cert else None)
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", creds)


def test_devca_cli_writes_private_keys(tmp_path: Path) -> None:
    assert devca_main(["--out", str(tmp_path), "--terminal", "kiosk-01",
                       "--organisation", "org-a"]) == 0
    for name in ("ca.key", "service.key", "kiosk-01.key"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600
    ident = terminal_identity((tmp_path / "kiosk-01.pem").read_bytes())
    assert (ident.terminal_id, ident.organisation) == ("kiosk-01", "org-a")


async def test_catalogue_and_health_with_client_cert(
        server: tuple[LoadingServer, ServiceCore], ca: DevCa) -> None:
    srv, _ = server
    term = ca.terminal_cert("kiosk-01", "org-b")
    async with channel(srv.port, ca.cert_pem, (term.cert_pem, term.key_pem)) as ch:
        stub = loading_pb2_grpc.LoadingServiceStub(ch)
        resp = await stub.GetCatalogue(loading_pb2.GetCatalogueRequest())
        assert resp.organisation == "org-b"
        assert [e.ap_id for e in resp.aps] == ["org-b-door-c"]
        assert resp.aps[0].image_bytes["vendor-a"] == 3072
        hc = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
        assert hc.status == health_pb2.HealthCheckResponse.SERVING


async def test_other_organisation_is_permission_denied(
        server: tuple[LoadingServer, ServiceCore], ca: DevCa) -> None:
    """kiosk-09 of org-b serves org-b only; kiosk-01 serves org-a and org-b, not the city:
    any other organisation is PERMISSION_DENIED with the reason in trailing metadata."""
    srv, _ = server
    for terminal, org, asked in (("kiosk-09", "org-b", "org-a"), ("kiosk-01", "org-a", "city")):
        term = ca.terminal_cert(terminal, org)
        async with channel(srv.port, ca.cert_pem, (term.cert_pem, term.key_pem)) as ch:
            stub = loading_pb2_grpc.LoadingServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetCatalogue(loading_pb2.GetCatalogueRequest(organisation=asked))
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert ("cardap-reason", "ORGANISATION_NOT_ALLOWED") in tuple(
                err.value.trailing_metadata() or ())
            assert f"{terminal} may not act for organisation {asked}" in (
                err.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetRevocationFeed(loading_pb2.GetRevocationFeedRequest(
                    organisation=asked))
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            call = stub.CardSession()
            await call.write(loading_pb2.TerminalMessage(open=loading_pb2.SessionOpen(
                organisation=asked, action="load", ap_id="org-a-staff-c", journal_id="j")))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call.read()
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_shared_terminal_acts_for_the_organisations_it_serves(
        server: tuple[LoadingServer, ServiceCore], ca: DevCa) -> None:
    srv, _ = server
    term = ca.terminal_cert("kiosk-01", "org-a")
    async with channel(srv.port, ca.cert_pem, (term.cert_pem, term.key_pem)) as ch:
        stub = loading_pb2_grpc.LoadingServiceStub(ch)
        for org, aps in (("", ["org-a-staff-c", "org-a-cert-a", "org-a-records-d",
                               "org-a-custom"]), ("org-b", ["org-b-door-c"])):
            resp = await stub.GetCatalogue(loading_pb2.GetCatalogueRequest(organisation=org))
            assert resp.organisation == (org or "org-a")
            assert [e.ap_id for e in resp.aps] == aps


async def test_cert_from_another_ca_is_rejected(
        server: tuple[LoadingServer, ServiceCore], ca: DevCa) -> None:
    srv, _ = server
    rogue = DevCa("rogue CA").terminal_cert("kiosk-01", "org-a")
    async with channel(srv.port, ca.cert_pem, (rogue.cert_pem, rogue.key_pem)) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await loading_pb2_grpc.LoadingServiceStub(ch).GetCatalogue(
                loading_pb2.GetCatalogueRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_no_client_cert_is_rejected(
        server: tuple[LoadingServer, ServiceCore], ca: DevCa) -> None:
    srv, _ = server
    async with channel(srv.port, ca.cert_pem, None) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await loading_pb2_grpc.LoadingServiceStub(ch).GetCatalogue(
                loading_pb2.GetCatalogueRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_revocation_feed(server: tuple[LoadingServer, ServiceCore], ca: DevCa) -> None:
    srv, _ = server
    term = ca.terminal_cert("kiosk-01", "org-a")
    async with channel(srv.port, ca.cert_pem, (term.cert_pem, term.key_pem)) as ch:
        stub = loading_pb2_grpc.LoadingServiceStub(ch)
        full = await stub.GetRevocationFeed(loading_pb2.GetRevocationFeedRequest())
        assert full.version == 3
        assert len(full.entries) == 3
        assert all(validate_user_id(e.user_id) for e in full.entries)
        since = await stub.GetRevocationFeed(loading_pb2.GetRevocationFeedRequest(
            since_version=2))
        assert [e.version for e in since.entries] == [3]


async def test_card_session_over_grpc(server: tuple[LoadingServer, ServiceCore],
                                      ca: DevCa) -> None:
    srv, core = server
    card, conn = new_card("vendor-a")
    term = ca.terminal_cert("kiosk-01", "org-a")
    async with channel(srv.port, ca.cert_pem, (term.cert_pem, term.key_pem)) as ch:
        call = loading_pb2_grpc.LoadingServiceStub(ch).CardSession()
        await call.write(loading_pb2.TerminalMessage(open=loading_pb2.SessionOpen(
            action="load", ap_id="org-a-staff-c", card_id=card.card_id,
            journal_id="grpc-1", operator_id="op-1")))
        trips = 0
        while True:
            msg = await call.read()
            assert msg is not grpc.aio.EOF
            if msg.WhichOneof("msg") == "done":
                done = msg.done
                break
            trips += 1
            pb = msg.batch
            batch = Batch(pb.batch_id, tuple(PlannedApdu(a.command, tuple(a.expect_sw),
                                                         a.sensitive) for a in pb.apdus),
                          Phase(pb.phase), pb.percent, pb.step)
            ans = run_batch(conn.transmit, batch)
            await call.write(loading_pb2.TerminalMessage(result=loading_pb2.BatchResult(
                batch_id=ans.batch_id, responses=list(ans.responses), complete=ans.complete)))
        await call.done_writing()
    assert done.ok, done.message
    assert done.reason == "LOADED"
    assert validate_user_id(done.user_id)
    assert done.round_trips == trips == 2
    assert done.billed
    assert done.card_id == card.card_id
    assert done.profile == "vendor-a"
    assert core.billing.count("org-a", 2026) == 1
