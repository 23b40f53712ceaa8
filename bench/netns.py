"""Link delay for the load benchmark: netem in a network namespace when it works, else a proxy.

`netem_available()` tries, as root, a throw-away namespace + veth pair + `tc qdisc netem`
and removes everything again in `finally`. When netem is missing (no `sch_netem` module,
as in many containers) the benchmark falls back to `DelayProxy`: a TCP proxy on loopback
(`python -m bench.netns proxy`) that holds every chunk for RTT/2 in each direction, keeping
order, with TCP_NODELAY on both legs - constant latency without a bandwidth limit, like
`netem delay` without jitter. Traffic stays on loopback or in our own namespaces.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections import deque
from pathlib import Path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=10, check=False)


def netem_available() -> tuple[bool, str]:
    """Whether netns + veth + `tc netem` work here; (False, why) otherwise. Cleans up."""
    if os.geteuid() != 0:
        return False, "not root"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return False, "ip/tc not installed"
    tag = uuid.uuid4().hex[:6]
    ns, a, b = f"cardapb{tag}", f"cbv{tag}a", f"cbv{tag}b"
    try:
        r = _run("ip", "netns", "add", ns)
        if r.returncode:
            return False, "ip netns add: " + r.stderr.strip()
        r = _run("ip", "link", "add", a, "type", "veth", "peer", "name", b, "netns", ns)
        if r.returncode:
            return False, "veth: " + r.stderr.strip()
        r = _run("tc", "qdisc", "add", "dev", a, "root", "netem", "delay", "5ms")
        if r.returncode:
            why = r.stderr.strip().rstrip(".")
            return False, f"netns and veth work, but tc netem does not: {why}"
        return True, "netns + veth + netem"
    finally:
        _run("ip", "link", "del", a)
        _run("ip", "netns", "del", ns)


# ------------------------------------------------------------------------------ proxy


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                delay: float) -> None:
    """Copy reader → writer, delivering each chunk `delay` seconds after it arrived."""
    queue: deque[tuple[float, bytes]] = deque()
    arrived = asyncio.Event()
    done = False

    async def deliver() -> None:
        while True:
            while not queue:
                if done:
                    return
                arrived.clear()
                await arrived.wait()
            due, chunk = queue[0]
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            queue.popleft()
            writer.write(chunk)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            queue.append((time.monotonic() + delay, chunk))
            arrived.set()
    except (ConnectionError, OSError):
        pass
    finally:
        done = True
        arrived.set()
        with contextlib.suppress(ConnectionError, OSError):
            await sender
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _proxy(listen_port: int, target: tuple[str, int], delay: float) -> None:
    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            sr, sw = await asyncio.open_connection(*target)
        except OSError:
            cw.close()
            return
        _nodelay(cw)
        _nodelay(sw)
        try:
            await asyncio.gather(_pump(cr, sw, delay), _pump(sr, cw, delay))
        finally:
            for w in (cw, sw):
                w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    print(f"READY port={server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


class DelayProxy:
    """`python -m bench.netns proxy` as a child process; `port` is where clients connect."""

    def __init__(self, target_port: int, rtt_ms: float, log: Path | None = None) -> None:
        self.rtt_ms = rtt_ms
        out = log.open("ab") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.netns", "proxy", "--target", str(target_port),
             "--delay-ms", str(rtt_ms / 2)],
            stdout=subprocess.PIPE, stderr=out, text=True, start_new_session=True)
        if log:
            out.close()  # type: ignore[union-attr]
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY port="):
            self.close()
            raise RuntimeError(f"delay proxy did not start: {line!r}")
        self.port = int(line.strip().split("=", 1)[1])

    def close(self) -> None:
        """Stop the proxy (our own child, by pid)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> DelayProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.netns probe` or `proxy --target PORT --delay-ms MS [--listen PORT]`."""
    p = argparse.ArgumentParser(prog="python -m bench.netns")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("probe", help="say whether netns + netem work here")
    px = sub.add_parser("proxy", help="delaying TCP proxy on 127.0.0.1")
    px.add_argument("--target", type=int, required=True)
    px.add_argument("--delay-ms", type=float, required=True, help="one-way delay")
    px.add_argument("--listen", type=int, default=0)
    args = p.parse_args(argv)
    if args.cmd == "probe":
        ok, why = netem_available()
        print(("yes: " if ok else "no: ") + why)
        return 0 if ok else 1
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_proxy(args.listen, ("127.0.0.1", args.target), args.delay_ms / 1000))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
