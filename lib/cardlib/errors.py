"""The card library's error tree: what can go wrong talking to a card, and nothing else.

Each error carries a stable machine-readable `reason` and a human message; none carries a
key, a PIN or card data. Errors of the transport itself (card removed, reader gone) are the
transport's own: `CardConnection.transmit` lets them through untouched. Programs built on
the library (the daemon, the simulator, the loading service) translate these into their
own errors where they meet them.
"""

from __future__ import annotations

from collections.abc import Mapping


class CardLibError(Exception):
    """Base class: a failure in talking to a card, with a stable `reason`."""

    reason: str = "CARD_ERROR"

    def __init__(self, message: str, *, reason: str | None = None,
                 metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})

    @property
    def message(self) -> str:
        """The human message."""
        return str(self.args[0]) if self.args else self.reason


class Cancelled(CardLibError):
    """The caller's cancel event was set; checked before every APDU."""

    reason = "CANCELLED"


class CardProtocolError(CardLibError):
    """The card's answer is malformed: garbage, truncated, or an impossible length."""

    reason = "CARD_PROTOCOL_ERROR"


class ResponseIntegrityError(CardProtocolError):
    """A protected response failed its R-MAC check or decrypted to bad padding."""

    reason = "RESPONSE_INTEGRITY_FAILED"


class StatusWordError(CardLibError):
    """A status word the operation did not expect."""

    reason = "UNEXPECTED_STATUS_WORD"

    def __init__(self, sw: int, context: str) -> None:
        super().__init__(f"{context}: card answered {sw:04X}", metadata={"sw": f"{sw:04X}"})
        self.sw = sw
        self.context = context


class SecureChannelError(CardLibError):
    """The SCP03 secure channel could not be opened or was used out of order."""

    reason = "SECURE_CHANNEL_ERROR"


class CardAuthenticationError(SecureChannelError):
    """The card cryptogram is wrong: other keys than ours, or not the card we think it is."""

    reason = "CARD_AUTHENTICATION_FAILED"


class UnknownKeyVersion(SecureChannelError):
    """The card uses a key version number the key store does not hold."""

    reason = "KEY_VERSION_UNKNOWN"


class CommandRejected(SecureChannelError):
    """Card side: a command failed C-MAC/C-DEC checks; `sw` is what the card answers."""

    reason = "COMMAND_REJECTED"

    def __init__(self, message: str, sw: int) -> None:
        super().__init__(message, metadata={"sw": f"{sw:04X}"})
        self.sw = sw
