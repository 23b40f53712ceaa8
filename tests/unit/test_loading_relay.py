"""The daemon's batch runner against the in-process virtual card and the service engine."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from cardap.v1 import loading_pb2
from cardap_sim.loadsvc.billing import Billing
from cardap_sim.loadsvc.catalogue import dev_catalogue
from cardap_sim.loadsvc.hours import JST, FixedClock
from cardap_sim.loadsvc.issuer import Issuer
from cardap_sim.loadsvc.keystore import dev_keystore
from cardap_sim.loadsvc.server import answer_from, batch_message
from cardap_sim.loadsvc.session import Batch, CardSession, Done, ServiceCore, SessionRequest
from cardap_sim.vcard.card import VirtualCard
from cardap_sim.vcard.connection import InProcessConnection
from cardapd.loading.relay import run_batch
from cardlib.protocol import ApduProtocol

OPEN = dt.datetime(2026, 11, 24, 10, tzinfo=JST)


def proto_for(card: VirtualCard, logger: logging.Logger | None = None) -> ApduProtocol:
    return ApduProtocol(InProcessConnection(card), logger=logger)


def drive(session: CardSession, proto: ApduProtocol) -> tuple[Done, int]:
    """Run a session with the daemon's runner, through the proto messages."""
    step = session.start()
    trips = 0
    while isinstance(step, Batch):
        trips += 1
        result = run_batch(proto, batch_message(step).batch)
        step = session.answer(answer_from(result))
    return step, trips


def apdu(hexstr: str, expect: tuple[int, ...] = (0x9000,), sensitive: bool = False
         ) -> loading_pb2.Apdu:
    return loading_pb2.Apdu(command=bytes.fromhex(hexstr), expect_sw=list(expect),
                            sensitive=sensitive)


def test_stops_at_the_first_unexpected_status_word() -> None:
    card = VirtualCard.create(profile="vendor-a")
    batch = loading_pb2.ApduBatch(batch_id=7, apdus=[
        apdu("00A4040C08A000000151000000"), apdu("00A4040C05D3920000FF"),
        apdu("80CA9F7F00")])
    result = run_batch(proto_for(card), batch)
    assert (result.batch_id, result.complete, len(result.responses)) == (7, False, 2)
    assert result.responses[-1][-2:] == b"\x6a\x82"
    assert not result.transport_error


def test_denied_aid_is_never_sent() -> None:
    card = VirtualCard.create(profile="vendor-a")
    assist = "D3921000310001010408"
    batch = loading_pb2.ApduBatch(batch_id=1, apdus=[
        apdu("00A4040C08A000000151000000"), apdu(f"00A4040C0A{assist}")])
    result = run_batch(proto_for(card), batch)
    assert (result.complete, result.transport_error, len(result.responses)) == (
        False, "AID_FORBIDDEN", 1)
    assert bytes.fromhex(assist) not in card.selects


def test_sensitive_apdus_stay_out_of_the_traffic_log(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.traffic")
    card = VirtualCard.create(profile="vendor-a")
    secret = "80CA9F7F00"
    batch = loading_pb2.ApduBatch(batch_id=1, apdus=[apdu(secret, sensitive=True)])
    with caplog.at_level(1, logger="test.traffic"):
        result = run_batch(proto_for(card, logger), batch)
    assert result.complete
    text = " ".join(r.getMessage() for r in caplog.records).replace(" ", "").upper()
    assert "9F7F2A" not in text


def test_full_load_and_delete_sessions() -> None:
    card = VirtualCard.create(profile="vendor-a")
    core = ServiceCore(dev_catalogue(), dev_keystore(), Issuer(), Billing(), FixedClock(OPEN))
    proto = proto_for(card)
    done, trips = drive(CardSession(core, SessionRequest(
        organisation="org-a", action="load", ap_id="org-a-records-d", journal_id="j-1")), proto)
    assert (done.ok, str(done.reason), trips) == (True, "LOADED", 2)
    done, _ = drive(CardSession(core, SessionRequest(
        organisation="org-a", action="delete", ap_id="org-a-records-d")), proto)
    assert (done.ok, str(done.reason)) == (True, "DELETED")
