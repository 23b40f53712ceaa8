"""APDU traffic logging at a TRAFFIC level (5), with secrets redacted to their length."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from cardlib.connection import CardConnection

TRAFFIC = 5
logging.addLevelName(TRAFFIC, "TRAFFIC")

# INS whose command data is a secret (PIN, key material, cryptogram, personalisation).
REDACTED_INS: frozenset[int] = frozenset({
    0x20, 0x21,  # VERIFY
    0x24, 0x25,  # CHANGE REFERENCE DATA
    0x2C, 0x2D,  # RESET RETRY COUNTER (PUK, new PIN)
    0x82,  # EXTERNAL / MUTUAL AUTHENTICATE
    0x86, 0x87,  # GENERAL AUTHENTICATE
    0x88,  # INTERNAL AUTHENTICATE
    0xE2,  # STORE DATA (GlobalPlatform personalisation)
})


def _command_text(apdu: bytes, redact: bool) -> str:
    """Header in hex, then the body in hex or only its length when redacted."""
    if len(apdu) < 4:
        return f"malformed {len(apdu)}-byte command" if redact else apdu.hex().upper()
    header, body = apdu[:4].hex().upper(), apdu[4:]
    if not body:
        return header
    if not (redact or apdu[1] in REDACTED_INS):
        return f"{header} {body.hex().upper()}"
    if len(body) == 1:  # Le only: no data to hide
        return f"{header} {body.hex().upper()}"
    if len(body) - 1 - body[0] in (0, 1):  # Lc data [Le]
        le = body[1 + body[0]:].hex().upper()
        return f"{header} [{body[0]} bytes redacted]" + (f" {le}" if le else "")
    return f"{header} [{len(body)} bytes redacted]"


def _response_text(resp: bytes, redact: bool) -> str:
    """Status word in hex, then the data in hex or only its length when redacted."""
    if len(resp) < 2:
        return f"malformed {len(resp)}-byte response"
    sw, data = resp[-2:].hex().upper(), resp[:-2]
    if not data:
        return sw
    if redact:
        return f"[{len(data)} bytes redacted] {sw}"
    return f"{data.hex().upper()} {sw}"


class TrafficLoggingConnection:
    """A CardConnection wrapper logging every APDU at TRAFFIC, never a secret."""

    def __init__(self, conn: CardConnection, logger: logging.Logger | None = None) -> None:
        self._conn = conn
        self._log = logger or logging.getLogger("cardlib.traffic")
        self._sensitive_depth = 0

    @property
    def atr(self) -> bytes:
        """The wrapped connection's ATR."""
        return self._conn.atr

    @property
    def inner(self) -> CardConnection:
        """The wrapped connection."""
        return self._conn

    @property
    def is_sensitive(self) -> bool:
        """True inside `sensitive()`: all data is logged as lengths only."""
        return self._sensitive_depth > 0

    @contextmanager
    def sensitive(self) -> Iterator[None]:
        """Within this block command and response data are never logged (re-entrant)."""
        self._sensitive_depth += 1
        try:
            yield
        finally:
            self._sensitive_depth -= 1

    def transmit(self, apdu: bytes) -> bytes:
        """Log the command, transmit it, log the response."""
        enabled = self._log.isEnabledFor(TRAFFIC)
        redact = self.is_sensitive
        if enabled:
            self._log.log(TRAFFIC, "> %s", _command_text(apdu, redact))
        resp = self._conn.transmit(apdu)
        if enabled:
            self._log.log(TRAFFIC, "< %s", _response_text(resp, redact))
        return resp

    def close(self) -> None:
        """Close the wrapped connection."""
        self._conn.close()
