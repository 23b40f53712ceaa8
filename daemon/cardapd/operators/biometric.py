"""The biometric backend contract, name checks, and login by fingerprint."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Protocol

from cardapd.errors import InvalidArgument, NotAuthorized
from cardapd.operators.prompts import PromptSink

FINGERS = (
    "left-thumb", "left-index-finger", "left-middle-finger", "left-ring-finger",
    "left-little-finger", "right-thumb", "right-index-finger", "right-middle-finger",
    "right-ring-finger", "right-little-finger",
)
ANY_FINGER = "any"
# fprintd keeps prints under <state>/<user>/: the name must be a safe path component.
_USER = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def check_user(user: str) -> str:
    """The fprintd user name of an operator, or InvalidArgument."""
    if not _USER.fullmatch(user) or ".." in user:
        raise InvalidArgument("operator name is not a valid biometric user name",
                              reason="INVALID_OPERATOR")
    return user


def check_finger(finger: str, *, allow_any: bool = False) -> str:
    """A fprintd finger name (or "any" when allowed), or InvalidArgument."""
    if finger in FINGERS or (allow_any and finger == ANY_FINGER):
        return finger
    raise InvalidArgument(f"unknown finger {finger!r}", reason="INVALID_FINGER",
                          metadata={"finger": finger[:40]})


class BiometricBackend(Protocol):
    """What login and enrolment need from a fingerprint service (fprintd)."""

    async def enroll(self, user: str, finger: str, *, cancel: asyncio.Event | None = None,
                     on_prompt: PromptSink | None = None, timeout_s: float = 60.0) -> None:
        """Enrol one finger of `user` (replacing a print already there)."""

    async def verify(self, user: str, finger: str = ANY_FINGER, *, timeout_s: float = 30.0,
                     cancel: asyncio.Event | None = None,
                     on_prompt: PromptSink | None = None) -> bool:
        """Whether the presented finger matches one of `user`'s enrolled prints."""

    async def list_enrolled(self, user: str) -> list[str]:
        """The fingers enrolled for `user` (empty when none)."""

    async def delete_enrolled(self, user: str) -> None:
        """Delete every print of `user`."""

    async def device_state(self) -> str:
        """Check the device without claiming it: "ok", "no_device" or "unavailable"."""

    def observe(self, observer: Callable[[str], None]) -> None:
        """Call `observer` with the device state whenever an operation learns it."""


async def authenticate(backend: BiometricBackend, user: str, *, finger: str = ANY_FINGER,
                       timeout_s: float = 30.0, cancel: asyncio.Event | None = None,
                       on_prompt: PromptSink | None = None) -> None:
    """Log `user` in by finger: return on a match, NotAuthorized(FINGER_NOT_MATCHED) if not."""
    if not await backend.verify(user, finger, timeout_s=timeout_s, cancel=cancel,
                                on_prompt=on_prompt):
        raise NotAuthorized("the finger does not match the operator's enrolled prints",
                            reason="FINGER_NOT_MATCHED")
