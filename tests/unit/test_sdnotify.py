"""sd_notify against a real AF_UNIX datagram socket (path and abstract namespace)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cardapd import sdnotify


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, dict[str, str]]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.settimeout(2)
    yield sock, {"NOTIFY_SOCKET": str(path)}
    sock.close()


def fields(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_ready_status_stopping_watchdog(receiver: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = receiver
    assert sdnotify.ready(env=env)
    assert fields(sock) == {"READY": "1"}
    assert sdnotify.ready("serving 3 sockets", env=env)
    assert fields(sock) == {"READY": "1", "STATUS": "serving 3 sockets"}
    assert sdnotify.status("pcsc down\nreconnecting", env=env)
    assert fields(sock) == {"STATUS": "pcsc down reconnecting"}
    assert sdnotify.watchdog_ping(env=env)
    assert fields(sock) == {"WATCHDOG": "1"}
    assert sdnotify.stopping(env=env)
    assert fields(sock) == {"STOPPING": "1"}
    assert sdnotify.reloading(env=env)
    assert fields(sock) == {"RELOADING": "1"}
    assert sdnotify.notify(env=env, mainpid=42, errno=5)
    assert fields(sock) == {"MAINPID": "42", "ERRNO": "5"}


def test_process_environment_is_used(receiver: tuple[socket.socket, dict[str, str]],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    sock, env = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", env["NOTIFY_SOCKET"])
    assert sdnotify.ready()
    assert fields(sock) == {"READY": "1"}


def test_abstract_namespace() -> None:
    name = f"cardapd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2)
        assert sdnotify.status("hello", env={"NOTIFY_SOCKET": f"@{name}"})
        assert fields(sock) == {"STATUS": "hello"}


def test_no_op_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sdnotify.ready()
    assert not sdnotify.watchdog_ping(env={})
    assert not sdnotify.status("x", env={"NOTIFY_SOCKET": "vsock:2:1234"})


def test_a_gone_socket_is_logged_not_raised(tmp_path: Path) -> None:
    assert not sdnotify.ready(env={"NOTIFY_SOCKET": str(tmp_path / "gone")})


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"WATCHDOG_USEC": "30000000"}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
])
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert sdnotify.watchdog_interval(env=env) == expected
