"""No client can grow the audit log faster than a bounded rate with refused calls, and
every refused call is still accounted for, exactly (docs/decisions.md D33).

Clients flood the daemon with calls it refuses before doing anything: LoadAP on the gate
socket (WRONG_ROLE, the issue's 1,293 rows a second), LoadAP on the kiosk socket without
an operator session (NO_OPERATOR_SESSION) and requests whose bytes do not parse
(MALFORMED_REQUEST). The audit log then holds a bounded number of `rpc_refused` rows,
and their counts add up, per socket, method and reason, to exactly the refusals the
clients saw.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cardap.client import CardapClientError
from cardap.v1 import terminal_pb2, terminal_pb2_grpc
from cardap_sim.stack import Stack
from cardapd.telemetry.refusals import max_rows_per_window

WINDOW_S = 1.0
FLOOD_S = 3.0


@pytest.fixture
def fstack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path / "stack", audit_config=f"refused_window_s = {WINDOW_S}")
    try:
        s.start()
        yield s
    finally:
        s.stop()


def refused_rows(stack: Stack, after: int = 0) -> list[tuple[int, str, str, dict[str, object]]]:
    conn = sqlite3.connect(f"file:{stack.dir / 'state' / 'audit.db'}?mode=ro", uri=True)
    try:
        return [(seq, actor, reason, json.loads(detail)) for seq, actor, reason, detail in
                conn.execute("SELECT seq, actor, reason, detail FROM audit WHERE operation = "
                             "'rpc_refused' AND seq > ? ORDER BY seq", (after,))]
    finally:
        conn.close()


def last_seq(stack: Stack) -> int:
    conn = sqlite3.connect(f"file:{stack.dir / 'state' / 'audit.db'}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT coalesce(max(seq), 0) FROM audit").fetchone()[0])
    finally:
        conn.close()


def test_a_flood_of_refused_calls_is_bounded_and_counted_exactly(fstack: Stack) -> None:
    # A single refusal is in the log at once, with its request id.
    with grpc.insecure_channel(f"unix:{fstack.socket('gate')}") as ch, \
            pytest.raises(grpc.RpcError) as info:
        list(terminal_pb2_grpc.TerminalStub(ch).LoadAP(
                terminal_pb2.LoadAPRequest(ap_id="x"), timeout=10,
                metadata=(("x-request-id", "first-refusal"),)))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    (first,) = refused_rows(fstack)
    assert (first[1], first[2], first[3]) == ("gate", "WRONG_ROLE",
                                              {"method": "LoadAP", "count": 1,
                                               "summary": False})
    before = first[0]
    seen: Counter[tuple[str, str, str]] = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def flood(role: str, kind: str) -> None:
        with grpc.insecure_channel(f"unix:{fstack.socket(role)}") as ch:
            stub = terminal_pb2_grpc.TerminalStub(ch)
            garbage = ch.unary_unary("/cardap.v1.Terminal/ReadUserID")
            while not stop.is_set():
                try:
                    if kind == "malformed":
                        garbage(b"\xff\xff\xff", timeout=10)
                    else:
                        list(stub.LoadAP(terminal_pb2.LoadAPRequest(ap_id="org-a-staff-c"),
                                         timeout=10))
                except grpc.RpcError as err:
                    reason = CardapClientError.from_rpc_error(err).reason
                    method = "ReadUserID" if kind == "malformed" else "LoadAP"
                    with lock:
                        seen[(role, method, reason)] += 1
                else:
                    raise AssertionError(f"a {kind} call on {role} was not refused")

    threads = [threading.Thread(target=flood, args=args, daemon=True) for args in
               [("gate", "load")] * 3 + [("kiosk", "load")] * 2 + [("gate", "malformed")]]
    started = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(FLOOD_S)
    stop.set()
    for t in threads:
        t.join(30)
    elapsed = time.monotonic() - started
    assert fstack.stop_daemon() == 0  # a graceful stop writes the open window's counts

    total = sum(seen.values())
    assert set(seen) == {("gate", "LoadAP", "WRONG_ROLE"),
                         ("kiosk", "LoadAP", "NO_OPERATOR_SESSION"),
                         ("gate", "ReadUserID", "MALFORMED_REQUEST")}, seen
    assert total >= 300, f"only {total} refusals in {elapsed:.1f} s: the flood did not flood"
    rows = refused_rows(fstack, before)
    counted: Counter[tuple[str, str, str]] = Counter()
    for _, actor, reason, detail in rows:
        counted[(actor, str(detail["method"]), reason)] += int(detail["count"])  # type: ignore[call-overload]
    assert counted == seen  # every refusal accounted for, exactly, per key
    windows = math.ceil(elapsed / WINDOW_S) + 2  # the flood's windows, the first, the stop's
    bound = max_rows_per_window() * windows
    assert len(rows) <= bound, (len(rows), bound)
    assert len(rows) <= 2 * len(seen) * windows  # three keys: two rows per key per window
    assert len(rows) * 20 < total, (len(rows), total)  # the flood no longer writes a row each
    print(f"{total} refusals in {elapsed:.1f} s ({total / elapsed:.0f}/s): {len(rows)} rows, "
          f"bound {bound}")


def test_the_bound_does_not_depend_on_the_number_of_calls(fstack: Stack) -> None:
    """Twice the calls in one window, the same rows: one at the first, one count at the end."""
    rows_per_burst = []
    for burst in (50, 200):
        before = last_seq(fstack)
        with grpc.insecure_channel(f"unix:{fstack.socket('gate')}") as ch:
            stub = terminal_pb2_grpc.TerminalStub(ch)
            for _ in range(burst):
                with pytest.raises(grpc.RpcError):
                    stub.Diagnose(terminal_pb2.DiagnoseRequest(), timeout=10)
        deadline = time.monotonic() + 10
        while sum(int(r[3]["count"]) for r in refused_rows(fstack, before)) < burst:  # type: ignore[call-overload]
            assert time.monotonic() < deadline, "the window's count was never written"
            time.sleep(0.1)
        rows = refused_rows(fstack, before)
        assert sum(int(r[3]["count"]) for r in rows) == burst  # type: ignore[call-overload]
        rows_per_burst.append(len(rows))
    assert rows_per_burst[1] <= rows_per_burst[0] + 2  # a burst may straddle two windows
