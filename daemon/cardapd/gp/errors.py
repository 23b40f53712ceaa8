"""Secure channel failures, as CardapError subclasses with stable reasons (never carrying keys)."""

from __future__ import annotations

from cardapd.errors import CardError, CardProtocolError


class SecureChannelError(CardError):
    """The SCP03 secure channel could not be opened or was used out of order."""

    reason = "SECURE_CHANNEL_ERROR"


class CardAuthenticationError(SecureChannelError):
    """The card cryptogram is wrong: other keys than ours, or not the card we think it is."""

    reason = "CARD_AUTHENTICATION_FAILED"


class UnknownKeyVersion(SecureChannelError):
    """The card uses a key version number the key store does not hold."""

    reason = "KEY_VERSION_UNKNOWN"


class ResponseIntegrityError(CardProtocolError):
    """A protected response failed its R-MAC check or decrypted to bad padding."""

    reason = "RESPONSE_INTEGRITY_FAILED"


class CommandRejected(SecureChannelError):
    """Card side: a command failed C-MAC/C-DEC checks; `sw` is what the card answers."""

    reason = "COMMAND_REJECTED"

    def __init__(self, message: str, sw: int) -> None:
        super().__init__(message, metadata={"sw": f"{sw:04X}"})
        self.sw = sw
