"""Prompts streamed to the kiosk while a finger is enrolled or verified."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


class PromptCode(enum.StrEnum):
    """Stable prompt codes (never renamed once published)."""

    PLACE_FINGER = "PLACE_FINGER"
    RETRY_SCAN = "RETRY_SCAN"
    REMOVE_FINGER = "REMOVE_FINGER"
    ENROLL_STAGE = "ENROLL_STAGE"
    ENROLL_COMPLETED = "ENROLL_COMPLETED"
    MATCHED = "MATCHED"
    NOT_MATCHED = "NOT_MATCHED"


@dataclass(frozen=True)
class Prompt:
    """One prompt: a code, fprintd's result string when it has one, the enrol stage n/N."""

    code: PromptCode
    reason: str = ""
    stage: int = 0
    stages: int = 0


PromptSink = Callable[[Prompt], Awaitable[None] | None]
