"""APDU exchange with `61xx`/`6Cxx` handling, bounded so a misbehaving card cannot loop us."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from cardlib.apdu import CommandApdu, ResponseApdu, describe_sw, parse_response
from cardlib.connection import CardConnection
from cardlib.errors import Cancelled, CardProtocolError, StatusWordError
from cardlib.traffic import TrafficLoggingConnection

MAX_GET_RESPONSE = 64  # 64 x 256 bytes = 16 KiB: far above anything the model returns
MAX_RESPONSE_BYTES = 32768


def _check_cancel(cancel: threading.Event | None) -> None:
    """Raise Cancelled when the caller set the event (checked before every APDU)."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("operation cancelled")


class ApduProtocol:
    """Sends command APDUs over a CardConnection, with traffic logging and response chaining."""

    def __init__(self, conn: CardConnection, *, logger: logging.Logger | None = None,
                 max_get_response: int = MAX_GET_RESPONSE) -> None:
        if isinstance(conn, TrafficLoggingConnection):
            self._conn = conn
        else:
            self._conn = TrafficLoggingConnection(conn, logger)
        self._max_get_response = max_get_response

    @property
    def connection(self) -> TrafficLoggingConnection:
        """The (logging) connection in use."""
        return self._conn

    @property
    def atr(self) -> bytes:
        """The card's ATR."""
        return self._conn.atr

    @contextmanager
    def sensitive(self) -> Iterator[None]:
        """Within this block no command or response data reaches the traffic log."""
        with self._conn.sensitive():
            yield

    def send(self, cmd: CommandApdu, *, cancel: threading.Event | None = None) -> ResponseApdu:
        """Send `cmd`, follow `61xx` and `6Cxx`; any final status word is returned, not raised."""
        resp = self._exchange(cmd, cancel)
        data = bytearray(resp.data)
        rounds = 0
        while resp.sw1 == 0x61:
            rounds += 1
            if rounds > self._max_get_response:
                raise CardProtocolError(f"card kept answering 61xx after {rounds - 1} "
                                        "GET RESPONSE commands")
            resp = self._exchange(CommandApdu(0x00, 0xC0, 0x00, 0x00, le=resp.sw2 or 256), cancel)
            data += resp.data
            if len(data) > MAX_RESPONSE_BYTES:
                raise CardProtocolError(f"chained response exceeds {MAX_RESPONSE_BYTES} bytes")
        return ResponseApdu(bytes(data), resp.sw)

    def send_ok(self, cmd: CommandApdu, context: str, *,
                cancel: threading.Event | None = None) -> bytes:
        """Send `cmd` and return its data; any status word but `90 00` raises StatusWordError."""
        resp = self.send(cmd, cancel=cancel)
        if not resp.ok:
            raise StatusWordError(resp.sw, context)
        return resp.data

    def _transmit(self, cmd: CommandApdu, cancel: threading.Event | None) -> ResponseApdu:
        """One APDU out, one response in, with the length checked against Le."""
        _check_cancel(cancel)
        resp = parse_response(self._conn.transmit(cmd.encode()))
        if not (0x61 <= resp.sw1 <= 0x6F or 0x90 <= resp.sw1 <= 0x9F):
            raise CardProtocolError(f"the card answered malformed data (impossible status word "
                                    f"{resp.sw:04X})")
        limit = 256 if cmd.le is None else cmd.le
        if len(resp.data) > limit:
            raise CardProtocolError(f"card returned {len(resp.data)} bytes for Le={cmd.le} "
                                    f"({describe_sw(resp.sw)})")
        return resp

    def _exchange(self, cmd: CommandApdu, cancel: threading.Event | None) -> ResponseApdu:
        """Transmit, re-sending once with the exact Le when the card answers `6Cxx`."""
        resp = self._transmit(cmd, cancel)
        if resp.sw1 != 0x6C:
            return resp
        exact = resp.sw2 or 256
        if exact == cmd.le:
            raise CardProtocolError(f"card answered 6C{resp.sw2:02X} to the Le it asked for")
        resp = self._transmit(cmd.with_le(exact), cancel)
        if resp.sw1 == 0x6C:
            raise CardProtocolError("card answered 6Cxx twice for one command")
        return resp
