"""A tiny sd_notify(3) client: readiness, status, stopping and watchdog pings to systemd.

Sends one datagram of `KEY=value` lines to `$NOTIFY_SOCKET` (a path, or `@name` for the
abstract namespace). Every call is a no-op returning False when the variable is unset
(run outside systemd, or in tests), and a failed send is logged, never raised: systemd
bookkeeping must not take the daemon down.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def _address(env: Mapping[str, str]) -> str | bytes | None:
    """The socket address from NOTIFY_SOCKET (abstract names start with '@')."""
    value = env.get("NOTIFY_SOCKET", "")
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    if value:
        log.debug("NOTIFY_SOCKET %r is not supported (only paths and @abstract)", value)
    return None


def notify(*, env: Mapping[str, str] | None = None, **fields: str | int) -> bool:
    """Send `KEY=value` fields (keys upper-cased) in one datagram; True if sent."""
    address = _address(os.environ if env is None else env)
    if address is None or not fields:
        return False
    lines = (f"{key.upper()}={str(value).replace(chr(10), ' ')}"
             for key, value in fields.items())
    payload = "\n".join(lines).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(payload, address)
    except OSError as exc:
        log.warning("sd_notify failed: %s", exc)
        return False
    return True


def ready(status_text: str | None = None, *, env: Mapping[str, str] | None = None) -> bool:
    """READY=1 (and optionally a status line): the sockets are listening."""
    if status_text is None:
        return notify(env=env, READY=1)
    return notify(env=env, READY=1, STATUS=status_text)


def stopping(*, env: Mapping[str, str] | None = None) -> bool:
    """STOPPING=1: graceful shutdown has begun."""
    return notify(env=env, STOPPING=1)


def reloading(*, env: Mapping[str, str] | None = None) -> bool:
    """RELOADING=1: a reload has begun (send `ready()` when it is done)."""
    return notify(env=env, RELOADING=1)


def status(text: str, *, env: Mapping[str, str] | None = None) -> bool:
    """STATUS=text: one line shown by `systemctl status`."""
    return notify(env=env, STATUS=text)


def watchdog_ping(*, env: Mapping[str, str] | None = None) -> bool:
    """WATCHDOG=1: the daemon is alive (send every `watchdog_interval() / 2` seconds)."""
    return notify(env=env, WATCHDOG=1)


def watchdog_interval(*, env: Mapping[str, str] | None = None) -> float | None:
    """The watchdog timeout in seconds, or None when systemd expects no pings from us."""
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid is not None and pid.strip() != str(os.getpid())):
        return None
    return usec / 1_000_000
