"""Floods of the kiosk socket: more than 1000 idle connections, or connections that send
only the HTTP/2 preface. The ops socket keeps answering, the kiosk socket holds at most
its limit and says so (a gauge and a log line), the flood's connections are closed after
the handshake deadline, and the kiosk socket serves again (issue 15, point 2).

The daemon runs with systemd's default soft open-file limit (1024): what a unit without
LimitNOFILE gives it. Its socket limits, not luck, keep descriptors for the ops socket.
"""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cardap.client import CardapClient
from cardap_sim.stack import Stack

from .conftest import wait_until

pytestmark = pytest.mark.reliability

FLOOD = 1200
LIMIT = 128  # the default [sockets.<role>] max_connections
CLOSING = 16
"""gRPC accepts a connection above the limit and closes it at once: a count taken in that
instant sees it too, so the gauge may pass the limit by the few being closed (seen: 129 on
a quiet machine; a loaded one closes more slowly). Held at the limit means far below the
flood's 1,200, which is what the test is for."""
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SYSTEMD_DEFAULT_NOFILE = 1024


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    s = Stack(tmp_path / "stack")
    s.write_config()
    text = s.config_path.read_text().replace(
        "[sockets]\n", "[sockets]\nhandshake_timeout_s = 2\n", 1)
    s.config_path.write_text(text)
    # The daemon inherits systemd's default soft limit; the test keeps its own for the flood.
    resource.setrlimit(resource.RLIMIT_NOFILE, (SYSTEMD_DEFAULT_NOFILE, hard))
    try:
        s.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        if soft < FLOOD + 200:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, FLOOD * 2), hard))
        yield s
    finally:
        s.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def flood(path: Path, n: int, preface: bool) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(str(path))
        if preface:  # above the limit the daemon may close it before the preface goes out
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                c.sendall(PREFACE)
        socks.append(c)
    return socks


def closed_by_daemon(sock: socket.socket) -> bool:
    """Whether the daemon closed the connection (what it sent first, e.g. its SETTINGS,
    is read and dropped on the way to the end of the stream)."""
    sock.setblocking(False)
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


def gauge(stack: Stack, role: str) -> float:
    url = f"http://127.0.0.1:{stack.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith(f'cardapd_socket_connections{{role="{role}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no connection gauge for {role}")


def ops_answers(stack: Stack) -> bool:
    with CardapClient(stack.socket("ops"), timeout=5) as ops:
        return ops.status().pcsc_available


def limit_logged(stack: Stack, role: str) -> bool:
    for line in (stack.dir / "cardapd.log").read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if "reached its limit" in rec.get("message", "") and f"the {role} socket" in \
                rec["message"]:
            return True
    return False


@pytest.mark.parametrize("preface", [False, True], ids=["idle", "preface-only"])
def test_a_flooded_kiosk_socket_leaves_the_ops_socket_answering(stack: Stack,
                                                               preface: bool) -> None:
    socks = flood(stack.socket("kiosk"), FLOOD, preface)
    try:
        assert ops_answers(stack), "the ops socket answers during the flood"
        seen: list[float] = []

        def full() -> bool:
            seen.append(gauge(stack, "kiosk"))
            return seen[-1] >= LIMIT
        wait_until(full, 10, "the gauge to show the flood")
        seen += [gauge(stack, "kiosk") for _ in range(5)]
        # held at the limit: never more than the connections being closed at once above it
        assert max(seen) <= LIMIT + CLOSING, seen
        wait_until(lambda: limit_logged(stack, "kiosk"), 10, "the limit's log line")
        # Past the handshake deadline (2 s here) the daemon has closed every one of them.
        wait_until(lambda: all([closed_by_daemon(s) for s in socks]), 20,
                   "the flood's connections to be closed by the daemon", interval=0.5)
    finally:
        for s in socks:
            s.close()
    wait_until(lambda: gauge(stack, "kiosk") == 0, 10, "the gauge to fall back")
    with CardapClient(stack.socket("kiosk"), timeout=5) as kiosk:
        assert kiosk.status().version
    assert ops_answers(stack)
    assert stack.daemon is not None
    assert stack.daemon.poll() is None
