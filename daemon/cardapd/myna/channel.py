"""What AP sessions send through: the plain protocol or a wrapping (secure messaging) channel."""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from typing import Protocol

from cardlib.apdu import CommandApdu, ResponseApdu
from cardlib.protocol import ApduProtocol


class ApduTransport(Protocol):
    """Anything that sends a command and returns its (final) response; ApduProtocol is one."""

    def send(self, cmd: CommandApdu, *,
             cancel: threading.Event | None = None) -> ResponseApdu:
        """Send `cmd`; the final status word is returned, not raised."""
        ...

    def sensitive(self) -> AbstractContextManager[None]:
        """A block in which no command or response data reaches the traffic log."""
        ...


class Messaging(Protocol):
    """A strategy that protects commands and checks responses (e.g. ISO 7816-4 SM)."""

    def wrap(self, cmd: CommandApdu) -> CommandApdu:
        """The protected form of `cmd`."""
        ...

    def unwrap(self, resp: ResponseApdu) -> ResponseApdu:
        """The checked plain response; raises rather than return unchecked content."""
        ...

    def close(self) -> None:
        """End the session: nothing more is wrapped or unwrapped."""
        ...


class WrappedTransport:
    """An ApduTransport that wraps every command and unwraps every response with `messaging`."""

    def __init__(self, proto: ApduProtocol, messaging: Messaging) -> None:
        self._proto = proto
        self._messaging = messaging

    def sensitive(self) -> AbstractContextManager[None]:
        """The underlying protocol's sensitive block."""
        return self._proto.sensitive()

    def send(self, cmd: CommandApdu, *,
             cancel: threading.Event | None = None) -> ResponseApdu:
        """Wrap, send, unwrap; any failure in between ends the messaging session."""
        wrapped = self._messaging.wrap(cmd)
        try:
            resp = self._proto.send(wrapped, cancel=cancel)
        except BaseException:
            self._messaging.close()
            raise
        return self._messaging.unwrap(resp)
