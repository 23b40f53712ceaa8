"""kill -9 of the daemon in a loop during 1,000 audited operations: nothing acknowledged lost.

Reads (cached and fresh) on the gate socket and diagnoses on the kiosk socket run from a
client while another thread SIGKILLs the daemon at random moments and restarts it. Every
operation the client saw succeed must be in the audit log afterwards, and the hash chain
(with its head anchor) must verify after every crash and at the end.
"""

from __future__ import annotations

import os
import random
import signal
import threading

import grpc

from cardap.v1 import terminal_pb2, terminal_pb2_grpc
from cardap_sim.stack import Stack
from cardapd.audit import query, verify

from .conftest import daemon_alive, insert_and_wait, restart_daemon

OPERATIONS = 1000
KILLS = 5


def test_kill_9_in_a_loop_loses_no_acknowledged_operation(stack: Stack) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    insert_and_wait(stack, 0, stack.demo_card())
    db = stack.dir / "state" / "audit.db"
    kill_points = sorted(rng.sample(range(50, OPERATIONS - 50), KILLS))
    acknowledged: dict[str, str] = {}  # request id → operation
    done = 0
    kills = 0
    while done < OPERATIONS:
        target = kill_points[kills] if kills < KILLS else None
        reached = threading.Event()
        killer = None
        if target is not None:
            def kill(ev: threading.Event = reached) -> None:
                ev.wait(60)
                threading.Event().wait(rng.uniform(0, 0.01))
                stack.stop_daemon(signal.SIGKILL)
            killer = threading.Thread(target=kill, daemon=True)
            killer.start()
        with grpc.insecure_channel(f"unix:{stack.socket('gate')}") as gate_ch, \
                grpc.insecure_channel(f"unix:{stack.socket('ops')}") as kiosk_ch:
            gate = terminal_pb2_grpc.TerminalStub(gate_ch)
            kiosk = terminal_pb2_grpc.TerminalStub(kiosk_ch)
            while done < OPERATIONS:
                if target is not None and done >= target:  # two kill points may be close
                    reached.set()
                rid = f"loop-{seed:08x}-{done:04d}"
                meta = (("x-request-id", rid),)
                try:
                    if done % 10 == 9:
                        kiosk.Diagnose(terminal_pb2.DiagnoseRequest(), timeout=5, metadata=meta)
                        acknowledged[rid] = "diagnose"
                    else:
                        gate.ReadUserID(terminal_pb2.ReadUserIDRequest(
                            fresh=rng.random() < 0.3), timeout=5, metadata=meta)
                        acknowledged[rid] = "read_user_id"
                except grpc.RpcError as err:
                    code = err.code()
                    expected = (target is not None and reached.is_set() and code in
                                (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED))
                    if not expected:
                        raise AssertionError(f"seed {seed}: unexpected failure: {err}") from err
                    break  # the daemon died under us
                finally:
                    done += 1
        if killer is not None:
            killer.join(20)
            assert not daemon_alive(stack), f"seed {seed}: daemon still alive after SIGKILL"
            kills += 1
            result = verify(db)
            assert result.ok, (seed, result)
            restart_daemon(stack)
    assert kills == KILLS
    result = verify(db)
    assert result.ok, (seed, result)
    recorded = {(r.request_id, r.operation) for r in query(db) if r.result == "ok"}
    missing = [(rid, op) for rid, op in acknowledged.items() if (rid, op) not in recorded]
    assert not missing, f"seed {seed}: {len(missing)} acknowledged operations missing"
    assert len(acknowledged) >= OPERATIONS - 2 * KILLS
