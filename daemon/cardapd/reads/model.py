"""What a user ID read returns."""

from __future__ import annotations

from dataclasses import dataclass

from cardapd.domain import IdStatus


@dataclass(frozen=True)
class UserIdRead:
    """The result of a user ID read."""

    user_id: str
    info: tuple[bytes, ...]
    card_id: str
    reader: str
    aid: bytes
    cached: bool
    status: IdStatus = IdStatus.UNKNOWN
    feed_age_s: int = 0
    feed_stale: bool = False
    warning: str = ""
