"""Where does a cached ReadUserID spend its time above the empty-RPC floor?

`python -m bench.profile_cached [--n 2000]` brings up a private stack and runs the daemon
in-process in a child (`cardapd.main.main`, same configuration as `Stack`) twice:

1. as shipped, with cProfile on the event-loop thread switched on (SIGUSR1) only while
   the client sends cached ReadUserID calls, and dumped (SIGUSR2) right after;
2. with the audit sink's `record` replaced by a no-op coroutine (an experiment only: the
   daemon's code is unchanged on disk), to measure what the audit round trip costs.

Each time the client interleaves batches of health Check and cached ReadUserID on the
gate socket and prints the medians. Nothing here is part of `bench.run`'s report.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.stats import percentile

READER = "Virtual PCD 00 00"


def daemon_child(config: str, variant: str, prof_out: str) -> int:
    """Run the daemon in this process; SIGUSR1/SIGUSR2 start/stop+dump cProfile."""
    import cardapd.daemon as daemon_mod

    if variant == "no-audit":
        async def record(self: Any, ctx: Any, operation: str, **kw: Any) -> int:
            return int(self._head)

        daemon_mod.StoreAuditSink.record = record  # type: ignore[method-assign]
    prof = cProfile.Profile()
    trace_to = os.environ.get("BENCH_TRACE_WAIT")  # file: who calls asyncio.wait
    if trace_to:
        import asyncio
        import collections
        import traceback

        callers: collections.Counter[str] = collections.Counter()
        real_wait = asyncio.wait

        async def traced_wait(fs: Any, **kw: Any) -> Any:
            frames = traceback.extract_stack(limit=4)[:-1]
            callers[f"{len(list(fs))} futures: " + " <- ".join(
                f"{Path(f.filename).name}:{f.lineno}({f.name})" for f in reversed(frames))] += 1
            return await real_wait(fs, **kw)

        asyncio.wait = traced_wait
        import atexit

        atexit.register(lambda: Path(f"{trace_to}.{os.getpid()}").write_text(
            "\n".join(f"{n} × {k}" for k, n in callers.most_common(5)) + "\n"))

    def start(signum: int, frame: object) -> None:
        prof.enable()

    def stop(signum: int, frame: object) -> None:
        prof.disable()
        prof.dump_stats(prof_out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    from cardapd.main import main as daemon_main
    return daemon_main(["--config", config])


def run_variant(stack: Any, variant: str, n: int, batch: int, prof_out: Path) -> dict[str, float]:
    """Start the daemon variant, insert the card, measure, stop. Returns medians (ms)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from cardap.client import CardapClient
    from cardap_sim.stack import wait_for

    log = (stack.dir / f"cardapd-{variant}.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.profile_cached", "--daemon", str(stack.config_path),
         "--variant", variant, "--prof-out", str(prof_out)],
        env=stack.env, stdout=log, stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parent.parent)
    log.close()
    try:
        wait_for(lambda: stack.socket("gate").exists(), 20, "the daemon's gate socket")
        with CardapClient(stack.socket("gate")) as client:
            events = client.watch(timeout=30)
            for ev in events:
                if ev.kind == 2:  # SNAPSHOT_END
                    break
            stack.control.insert(0, stack.dir / "cards" / "demo.json")
            for ev in events:
                if ev.kind == 5:  # CARD_INSERTED
                    break
            events.close()  # type: ignore[attr-defined]  # no stream open while measuring
            health = health_pb2_grpc.HealthStub(client.channel)
            req = health_pb2.HealthCheckRequest()

            def cached() -> None:
                client.read_user_id(READER)

            def check() -> None:
                health.Check(req)

            for _ in range(300):
                check()
                cached()
            samples: dict[str, list[float]] = {"health": [], "cached": []}
            perf = time.perf_counter_ns
            for _ in range(-(-n // batch)):
                order: list[tuple[str, Callable[[], None]]] = [("health", check),
                                                               ("cached", cached)]
                for name, fn in order:
                    if name == "cached":
                        proc.send_signal(signal.SIGUSR1)
                    for _ in range(batch):
                        t = perf()
                        fn()
                        samples[name].append((perf() - t) / 1e6)
                    if name == "cached":
                        proc.send_signal(signal.SIGUSR2)
        stack.control.remove(0)
        return {k: percentile(v, 50) for k, v in samples.items()} | {
            f"{k}_p99": percentile(v, 99) for k, v in samples.items()}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        for role in ("kiosk", "gate", "ops"):
            stack.socket(role).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """Parent (default) or daemon child (`--daemon CONFIG`)."""
    p = argparse.ArgumentParser(prog="python -m bench.profile_cached")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--keep-prof", type=Path, help="copy the cProfile data of the loop here")
    p.add_argument("--daemon", help=argparse.SUPPRESS)
    p.add_argument("--variant", default="normal", help=argparse.SUPPRESS)
    p.add_argument("--prof-out", default="", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.daemon:
        return daemon_child(a.daemon, a.variant, a.prof_out)

    from cardap_sim.stack import Stack

    workdir = Path(tempfile.mkdtemp(prefix="cardapd-prof-"))
    stack = Stack(workdir / "stack", log_level="warning")
    os.environ["PCSCLITE_CSOCK_NAME"] = str(stack.pcscd_socket)
    results: dict[str, dict[str, float]] = {}
    prof_out = workdir / "loop.prof"
    try:
        stack.start(daemon=False)
        stack.write_config()
        stack.demo_card()
        for variant in ("normal", "no-audit"):
            results[variant] = run_variant(stack, variant, a.n, a.batch,
                                           prof_out if variant == "normal" else
                                           workdir / "unused.prof")
        for variant, r in results.items():
            print(f"{variant:9s} health p50 {r['health']:.3f} ms  cached p50 {r['cached']:.3f} ms"
                  f"  cached-health {r['cached'] - r['health']:+.3f} ms   "
                  f"(p99 {r['health_p99']:.3f} / {r['cached_p99']:.3f})")
        if prof_out.exists():
            stats = pstats.Stats(str(prof_out), stream=(buf := io.StringIO()))
            total_calls = a.n  # cached calls profiled
            print(f"\ncProfile of the event-loop thread during {total_calls} cached calls "
                  f"(per-call µs = cumtime / {total_calls}):")
            stats.sort_stats("cumulative").print_stats(a.top)
            stats.sort_stats("tottime").print_stats(a.top)
            stats.print_callers(r"tasks.py:\d+\(wait\)")
            if a.keep_prof:
                shutil.copy(prof_out, a.keep_prof)
            print(buf.getvalue())
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
