"""Secure channel strategies over an ApduProtocol: plain, SCP03 (local keys), relay (remote)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol

from cardlib.apdu import CommandApdu, ResponseApdu
from cardlib.errors import StatusWordError
from cardlib.gp.scp03 import Scp03Session
from cardlib.protocol import ApduProtocol


class SecureChannel(Protocol):
    """How a command reaches the card: the strategy GP code is written against."""

    def send(self, proto: ApduProtocol, cmd: CommandApdu, *,
             cancel: threading.Event | None = None) -> ResponseApdu:
        """Send `cmd` with this channel's protection; return the unprotected response."""
        ...


def send_ok(channel: SecureChannel, proto: ApduProtocol, cmd: CommandApdu, context: str, *,
            cancel: threading.Event | None = None) -> bytes:
    """Send through `channel`; any status word but 9000 raises StatusWordError."""
    resp = channel.send(proto, cmd, cancel=cancel)
    if not resp.ok:
        raise StatusWordError(resp.sw, context)
    return resp.data


class PlainChannel:
    """No protection (GET DATA before authentication, SELECT)."""

    def send(self, proto: ApduProtocol, cmd: CommandApdu, *,
             cancel: threading.Event | None = None) -> ResponseApdu:
        """Send `cmd` as is."""
        return proto.send(cmd, cancel=cancel)


class Scp03Channel:
    """SCP03 with the session held locally: open() authenticates, send() wraps and unwraps."""

    def __init__(self, session: Scp03Session) -> None:
        self._session = session

    @property
    def session(self) -> Scp03Session:
        """The underlying pure session."""
        return self._session

    @classmethod
    def open(cls, proto: ApduProtocol, session: Scp03Session, *,
             cancel: threading.Event | None = None) -> Scp03Channel:
        """Run INITIALIZE UPDATE and EXTERNAL AUTHENTICATE (the ISD must be selected)."""
        with proto.sensitive():
            init = proto.send(session.begin(), cancel=cancel)
            ext_auth = session.open(init)
            session.confirm(proto.send(ext_auth, cancel=cancel))
        return cls(session)

    def send(self, proto: ApduProtocol, cmd: CommandApdu, *,
             cancel: threading.Event | None = None) -> ResponseApdu:
        """Wrap, send, unwrap; a failed R-MAC closes the session and raises."""
        return self._session.unwrap(proto.send(self._session.wrap(cmd), cancel=cancel))


def relay(proto: ApduProtocol, batch: Sequence[CommandApdu], *,
          stop_sw: frozenset[int] | None = None,
          cancel: threading.Event | None = None) -> list[ResponseApdu]:
    """Terminal side of the split mode: send already-wrapped APDUs in order, return raw answers.

    Stops after the first response whose SW is an error (not 9000/61xx/62xx/63xx) unless
    `stop_sw` names the status words to stop on; the service unwraps what came back.
    """
    out: list[ResponseApdu] = []
    for cmd in batch:
        resp = proto.send(cmd, cancel=cancel)
        out.append(resp)
        stop = (resp.sw in stop_sw) if stop_sw is not None else not (
            resp.ok or resp.sw1 in (0x62, 0x63))
        if stop:
            break
    return out
