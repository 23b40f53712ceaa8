"""Log records to journald through its native protocol, each field indexable.

Under systemd, lines on stderr become only `MESSAGE=` in the journal. A native entry
carries fields `journalctl` can filter on: `journalctl -u cardapd CARDAPD_OPERATION=load_ap`.
The protocol (systemd.io/JOURNAL_NATIVE_PROTOCOL) is one datagram per entry to
`/run/systemd/journal/socket`: `KEY=value\\n` per field, or, for a value holding a newline,
`KEY\\n` + the value's length as 64-bit little endian + the value + `\\n`. An entry too big
for one datagram travels as a sealed memfd passed with SCM_RIGHTS, as libsystemd does.

Fields: MESSAGE (with the traceback on errors), PRIORITY (syslog level), SYSLOG_IDENTIFIER
(`cardapd`), CODE_FILE, CODE_LINE, CODE_FUNC, LOGGER, THREAD_NAME, and when known
CARDAPD_REQUEST_ID, CARDAPD_OPERATION, CARDAPD_READER, CARDAPD_CARD_ID, CARDAPD_ROLE. Every
value, not only the message, goes through `logsetup.scrub` (no 12-digit run leaves).
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import logging
import os
import re
import socket
import stat
import struct
import sys
from collections.abc import Callable, Mapping
from typing import TextIO

SOCKET_PATH = "/run/systemd/journal/socket"
SOCKET_ENV = "CARDAPD_JOURNAL_SOCKET"  # another journald's socket (tests, namespaces)
IDENTIFIER = "cardapd"
CONTEXT_FIELDS = ("request_id", "operation", "reader", "card_id", "role", "audit_operation",
                  "result", "reason", "duration_ms", "operator", "audit_seq")

# journald: uppercase letters, digits and "_", not starting with "_" or a digit, <= 64.
_FIELD_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_SNDBUF = 8 << 20  # what libsystemd asks for; the kernel caps it at wmem_max

# syslog(3) levels
LOG_CRIT, LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG = 2, 3, 4, 6, 7


def priority(levelno: int) -> int:
    """The syslog priority of a logging level (TRAFFIC and DEBUG are debug)."""
    if levelno <= logging.DEBUG:
        return LOG_DEBUG
    if levelno <= logging.INFO:
        return LOG_INFO
    if levelno <= logging.WARNING:
        return LOG_WARNING
    if levelno <= logging.ERROR:
        return LOG_ERR
    return LOG_CRIT


def valid_field_name(name: str) -> bool:
    """Whether journald accepts `name` as a field a client may set."""
    return _FIELD_NAME.fullmatch(name) is not None


def encode(fields: Mapping[str, str | bytes]) -> bytes:
    """One entry in the native protocol (binary-safe form for values with a newline)."""
    out = bytearray()
    for name, value in fields.items():
        if not valid_field_name(name):
            raise ValueError(f"invalid journal field name {name!r}")
        data = value.encode("utf-8", "backslashreplace") if isinstance(value, str) else value
        key = name.encode("ascii")
        if b"\n" in data:
            out += key + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key + b"=" + data + b"\n"
    return bytes(out)


class JournalSender:
    """Sends encoded entries to journald's native socket."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or os.environ.get(SOCKET_ENV) or SOCKET_PATH
        self._sock: socket.socket | None = None

    def _socket(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SNDBUF)
            self._sock = sock
        return self._sock

    def send(self, data: bytes) -> None:
        """Send one entry; through a sealed memfd when it is too big for a datagram."""
        sock = self._socket()
        try:
            sock.sendto(data, self.path)
        except OSError as exc:
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self._send_memfd(sock, data)

    def _send_memfd(self, sock: socket.socket, data: bytes) -> None:
        fd = os.memfd_create("cardapd-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
                        | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)  # journald wants it sealed
            sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))],
                         0, self.path)
        finally:
            os.close(fd)

    def available(self) -> bool:
        """Whether the journal socket exists (a cheap check before choosing it)."""
        try:
            return stat.S_ISSOCK(os.stat(self.path).st_mode)
        except OSError:
            return False

    def close(self) -> None:
        """Close the socket (the next send opens a new one)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class JournalHandler(logging.Handler):
    """A logging handler writing native journal entries.

    If journald cannot be reached (restarting, gone), the record is written to `fallback`
    (stderr) by `fallback_formatter`, so it is never lost silently.
    """

    def __init__(self, sender: JournalSender | None = None, *, identifier: str = IDENTIFIER,
                 scrub: Callable[[str], str] | None = None,
                 fallback: TextIO | None = None,
                 fallback_formatter: logging.Formatter | None = None) -> None:
        super().__init__()
        self.sender = sender or JournalSender()
        self.identifier = identifier
        self._scrub = scrub or (lambda text: text)
        self._fallback = fallback
        self._fallback_formatter = fallback_formatter or logging.Formatter(
            "%(levelname)s %(name)s: %(message)s")
        self._exc_formatter = logging.Formatter()

    def fields(self, record: logging.LogRecord) -> dict[str, str]:
        """The journal fields of `record`, every value scrubbed."""
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self._exc_formatter.formatException(record.exc_info)
        elif record.exc_text:  # formatted before the record left its thread
            message += "\n" + record.exc_text
        if record.stack_info:
            message += "\n" + self._exc_formatter.formatStack(record.stack_info)
        out = {
            "MESSAGE": message,
            "PRIORITY": str(priority(record.levelno)),
            "SYSLOG_IDENTIFIER": self.identifier,
            "CODE_FILE": record.pathname,
            "CODE_LINE": str(record.lineno),
            "CODE_FUNC": record.funcName,
            "LOGGER": record.name,
            "THREAD_NAME": record.threadName or "",
        }
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value:
                out[f"CARDAPD_{key.upper()}"] = str(value)
        return {name: self._scrub(value) for name, value in out.items()}

    def emit(self, record: logging.LogRecord) -> None:
        """Send `record` to journald (or to the fallback stream if that fails)."""
        try:
            data = encode(self.fields(record))
        except Exception:
            self.handleError(record)
            return
        try:
            self.sender.send(data)
        except OSError:
            self._fall_back(record)

    def _fall_back(self, record: logging.LogRecord) -> None:
        stream = self._fallback or sys.stderr
        try:
            stream.write(self._scrub(self._fallback_formatter.format(record)) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        """Close the sender's socket."""
        self.sender.close()
        super().close()
