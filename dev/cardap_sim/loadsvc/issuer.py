"""User ID issuer: random 13-character IDs in the reference service's own scheme (a check
character, `cardap_sim.vcard.identity`), unique per organisation and AP.

A user ID is never derived from the card; it is only *bound* to the card id and the
terminal's journal id so that a retried load gets the same user ID back.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cardap_sim.vcard.identity import USER_ID_ALPHABET as ALPHABET
from cardap_sim.vcard.identity import check_char, validate_user_id

USER_ID_LEN = 13

_SCHEMA = """
CREATE TABLE IF NOT EXISTS user_ids (
    organisation TEXT NOT NULL,
    ap_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    card_id TEXT NOT NULL,
    journal_id TEXT NOT NULL,
    custom INTEGER NOT NULL DEFAULT 0,
    UNIQUE (organisation, ap_id, user_id),
    UNIQUE (organisation, journal_id)
);
"""
MAX_ATTEMPTS = 32


class JournalConflict(ValueError):
    """A journal id that was already used for another card or AP."""


class UserIdTaken(ValueError):
    """A custom user ID already used for this organisation and AP."""


@dataclass(frozen=True)
class Issued:
    """One issued user ID and whether it was new."""

    user_id: str
    card_id: str
    new: bool


def random_user_id() -> str:
    """12 random symbols from the 34-symbol alphabet and their check character."""
    body = "".join(secrets.choice(ALPHABET) for _ in range(USER_ID_LEN - 1))
    return body + check_char(body)


class Issuer:
    """SQLite-backed issuer; thread-safe."""

    def __init__(self, path: Path | str = ":memory:", *,
                 generate: Callable[[], str] = random_user_id) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._generate = generate
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)

    def lookup(self, organisation: str, journal_id: str) -> Issued | None:
        """The user ID already issued for this journal id, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT user_id, card_id FROM user_ids WHERE organisation=? AND journal_id=?",
                (organisation, journal_id)).fetchone()
        return None if row is None else Issued(str(row[0]), str(row[1]), False)

    def issue(self, *, organisation: str, ap_id: str, card_id: str, journal_id: str,
              custom_user_id: str | None = None) -> Issued:
        """Issue (or, for a retried journal id on the same card and AP, return) a user ID."""
        if not journal_id:
            raise ValueError("a journal id is required to issue a user ID")
        if custom_user_id is not None and not _valid_custom(custom_user_id):
            raise ValueError("a custom user ID is 13 printable ASCII characters")
        with self._lock:
            row = self._db.execute(
                "SELECT user_id, card_id, ap_id FROM user_ids WHERE organisation=? "
                "AND journal_id=?", (organisation, journal_id)).fetchone()
            if row is not None:
                if row[1] != card_id or row[2] != ap_id:
                    raise JournalConflict("journal id already used for another card or AP")
                if custom_user_id is not None and row[0] != custom_user_id:
                    raise JournalConflict("journal id already used with another user ID")
                return Issued(str(row[0]), card_id, False)
            for _ in range(MAX_ATTEMPTS):
                user_id = custom_user_id if custom_user_id is not None else self._generate()
                try:
                    self._db.execute(
                        "INSERT INTO user_ids VALUES (?, ?, ?, ?, ?, ?)",
                        (organisation, ap_id, user_id, card_id, journal_id,
                         int(custom_user_id is not None)))
                except sqlite3.IntegrityError:
                    if custom_user_id is not None:
                        raise UserIdTaken("this user ID is already used for this AP") from None
                    continue
                return Issued(user_id, card_id, True)
        raise RuntimeError("could not find a free user ID (generator exhausted)")

    def count(self, organisation: str, ap_id: str) -> int:
        """How many user IDs were issued for this organisation and AP."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM user_ids WHERE organisation=? AND ap_id=?",
                (organisation, ap_id)).fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


def _valid_custom(user_id: str) -> bool:
    """Custom user IDs: 13 printable ASCII characters (the organisation's own scheme)."""
    return (len(user_id) == USER_ID_LEN and user_id.isascii() and user_id.isprintable())


__all__ = ["Issued", "Issuer", "JournalConflict", "UserIdTaken", "random_user_id",
           "validate_user_id"]
