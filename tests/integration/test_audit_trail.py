"""The audit trail: one row per operation, the right fields, a verifying chain, kill -9 safety."""

from __future__ import annotations

import os
import random
import signal
import threading
from pathlib import Path

import grpc
import pytest

from cardap.client import CardapClient, CardapClientError
from cardap.v1 import terminal_pb2, terminal_pb2_grpc
from cardap_sim.stack import Stack, demo_user_id
from cardapd.audit import AuditRecord, query, verify

from .conftest import (
    client,
    daemon_alive,
    insert_and_wait,
    reader_name,
    remove_and_wait,
    restart_daemon,
    wait_until,
)


def audit_path(stack: Stack) -> Path:
    return stack.dir / "state" / "audit.db"


def rows(stack: Stack) -> list[AuditRecord]:
    return list(query(audit_path(stack)))


def by_request(stack: Stack, rid: str) -> list[AuditRecord]:
    return [r for r in rows(stack) if r.request_id == rid]


def assert_chain_ok(stack: Stack) -> int:
    result = verify(audit_path(stack))
    assert result.ok, result
    assert result.first_bad_seq is None, result
    assert result.problem is None, result
    return result.rows_checked


def test_one_row_per_operation(stack: Stack) -> None:
    r0 = reader_name(stack, 0)
    reader = insert_and_wait(stack, 0, stack.demo_card())
    card_id = reader.card.card_id
    with CardapClient(stack.socket("gate"), request_id="audit-cached") as gate:
        assert gate.read_user_id().cached
    with CardapClient(stack.socket("gate"), request_id="audit-fresh") as kiosk:
        assert not kiosk.read_user_id(r0, fresh=True).cached
    with CardapClient(stack.socket("gate"), request_id="audit-failed") as gate, \
            pytest.raises(CardapClientError):
        gate.read_user_id(aid="D392F000430100FF")  # no such AP on the card
    with CardapClient(stack.socket("ops"), request_id="audit-diag") as kiosk:
        kiosk.diagnose(r0)
    with CardapClient(stack.socket("ops"), request_id="audit-diag-ops") as ops:
        ops.diagnose(reader_name(stack, 1))
    remove_and_wait(stack, 0)
    wait_until(lambda: any(r.operation == "card_removed" for r in rows(stack)), 10,
               "the card_removed row")

    all_rows = rows(stack)
    assert [r.seq for r in all_rows] == list(range(1, len(all_rows) + 1))
    assert all_rows[0].operation == "daemon_started"
    assert all_rows[0].actor == "system"
    # The configured organisations are on the roster before any card or client is served.
    first_served = min(r.seq for r in all_rows
                       if r.request_id or r.operation == "card_inserted")
    added = [r.seq for r in all_rows if r.operation == "roster_add_organisation"]
    assert added
    assert max(added) < first_served, (added, first_served)

    (inserted,) = [r for r in all_rows if r.operation == "card_inserted"]
    assert (inserted.reader, inserted.card_id, inserted.result) == (r0, card_id, "ok")
    assert card_id.startswith("cert-")  # keyed hash of the certificate's issuer and serial
    (removed,) = [r for r in all_rows if r.operation == "card_removed"]
    assert (removed.reader, removed.result) == (r0, "ok")

    (cached,) = by_request(stack, "audit-cached")
    assert (cached.operation, cached.actor, cached.reader, cached.card_id, cached.result,
            cached.reason) == ("read_user_id", "gate", r0, card_id, "ok", None)
    assert cached.detail["cached"] is True
    (fresh,) = by_request(stack, "audit-fresh")
    assert (fresh.operation, fresh.actor, fresh.result) == ("read_user_id", "gate", "ok")
    assert fresh.detail["cached"] is False
    (failed,) = by_request(stack, "audit-failed")
    assert (failed.operation, failed.actor, failed.reader, failed.card_id, failed.result,
            failed.reason) == ("read_user_id", "gate", r0, card_id, "error", "AP_NOT_FOUND")
    (diag,) = by_request(stack, "audit-diag")
    assert (diag.operation, diag.actor, diag.reader, diag.card_id, diag.result) == (
        "diagnose", "ops", r0, card_id, "ok")
    (diag_ops,) = by_request(stack, "audit-diag-ops")
    assert (diag_ops.actor, diag_ops.reader, diag_ops.card_id) == (
        "ops", reader_name(stack, 1), None)
    assert len([r for r in all_rows if r.operation == "read_user_id"]) == 3
    assert demo_user_id() not in str([r.as_dict() for r in all_rows])

    assert assert_chain_ok(stack) == len(all_rows)
    with client(stack, "ops") as ops:
        assert ops.status().audit_head_seq == all_rows[-1].seq


@pytest.mark.reliability
def test_kill_9_loses_no_acknowledged_read(stack: Stack) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    insert_and_wait(stack, 0, stack.demo_card())
    kill_at = rng.randint(20, 180)
    reached = threading.Event()

    def killer() -> None:
        reached.wait(60)
        threading.Event().wait(rng.uniform(0, 0.02))
        stack.stop_daemon(signal.SIGKILL)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    acknowledged: list[str] = []
    failures: list[grpc.StatusCode] = []
    with grpc.insecure_channel(f"unix:{stack.socket('gate')}") as channel:
        stub = terminal_pb2_grpc.TerminalStub(channel)
        for i in range(200):
            if i == kill_at:
                reached.set()
            rid = f"k9-{seed:08x}-{i:03d}"
            request = terminal_pb2.ReadUserIDRequest(fresh=rng.random() < 0.5)
            try:
                stub.ReadUserID(request, timeout=5, metadata=(("x-request-id", rid),))
            except grpc.RpcError as err:
                failures.append(err.code())
                if len(failures) >= 3:
                    break
                continue
            acknowledged.append(rid)
    thread.join(20)
    assert not thread.is_alive()
    assert not daemon_alive(stack)
    assert kill_at <= len(acknowledged) + len(failures), (seed, kill_at, len(acknowledged))
    assert failures, f"seed {seed}: the daemon was never seen dead"
    assert all(code == grpc.StatusCode.UNAVAILABLE for code in failures), failures

    assert_chain_ok(stack)
    recorded = {r.request_id for r in rows(stack)
                if r.operation == "read_user_id" and r.result == "ok"}
    missing = [rid for rid in acknowledged if rid not in recorded]
    assert not missing, f"seed {seed}: acknowledged reads missing from the audit: {missing}"

    before = rows(stack)[-1].seq
    restart_daemon(stack)
    with CardapClient(stack.socket("gate"), request_id="after-restart") as gate:
        assert gate.read_user_id(fresh=True).user_id == demo_user_id()
    with client(stack, "ops") as ops:
        assert ops.status().audit_head_seq > before
    new = [r for r in rows(stack) if r.seq > before]
    assert "daemon_started" in [r.operation for r in new]
    assert "after-restart" in [r.request_id for r in new]
    assert_chain_ok(stack)
