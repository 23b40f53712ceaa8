"""The revocation feed per organisation: versioned in-operation/suspended/abolished entries.

Data only for now (issue 6 connects it to the J-LIS side): a JSON file or the dev feed.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cardap_sim.loadsvc.hours import JST


class CardStatus(enum.Enum):
    """Status of a user ID (values match cards.proto UserIDStatus names)."""

    IN_OPERATION = "in_operation"
    SUSPENDED = "suspended"
    ABOLISHED = "abolished"


@dataclass(frozen=True)
class FeedEntry:
    """One change in a feed."""

    aid: str
    user_id: str
    status: CardStatus
    version: int
    changed_at: dt.datetime


class RevocationFeeds:
    """All organisations' feeds; each change bumps that organisation's version."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, dict[tuple[str, str], FeedEntry]] = {}
        self._versions: dict[str, int] = {}

    def set_status(self, organisation: str, aid: str, user_id: str, status: CardStatus,
                   at: dt.datetime | None = None) -> FeedEntry:
        """Record a status change (a later one for the same user ID replaces it)."""
        with self._lock:
            version = self._versions.get(organisation, 0) + 1
            self._versions[organisation] = version
            entry = FeedEntry(aid.upper(), user_id, status, version,
                              at or dt.datetime.now(JST))
            self._entries.setdefault(organisation, {})[(entry.aid, user_id)] = entry
            return entry

    def since(self, organisation: str, version: int) -> tuple[int, list[FeedEntry]]:
        """(current version, entries changed after `version`) of one organisation."""
        with self._lock:
            entries = sorted((e for e in self._entries.get(organisation, {}).values()
                              if e.version > version), key=lambda e: e.version)
            return self._versions.get(organisation, 0), entries


def load_feeds(path: Path) -> RevocationFeeds:
    """Read `{"org": [{"aid", "user_id", "status", "changed_at"?}, ...]}`."""
    data: dict[str, Any] = json.loads(path.read_text("utf-8"))
    feeds = RevocationFeeds()
    for org, entries in data.items():
        for e in entries:
            at = dt.datetime.fromisoformat(e["changed_at"]) if "changed_at" in e else None
            feeds.set_status(org, str(e["aid"]), str(e["user_id"]), CardStatus(e["status"]), at)
    return feeds


def dev_feeds() -> RevocationFeeds:
    """A small dev feed for org-a (one suspended and one abolished user ID)."""
    feeds = RevocationFeeds()
    at = dt.datetime(2026, 1, 5, 3, 0, tzinfo=JST)
    feeds.set_status("org-a", "D392F000430A0001", "000000000001C", CardStatus.IN_OPERATION, at)
    feeds.set_status("org-a", "D392F000430A0001", "000000000002Q", CardStatus.SUSPENDED, at)
    feeds.set_status("org-a", "D392F000430A0001", "0000000000032", CardStatus.ABOLISHED, at)
    return feeds
