"""The 13-character user ID of a card AP: 12 symbols and a check character (never the My Number)."""

from __future__ import annotations

import random

ALPHABET = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # 0-9 A-Z without I and O: 34 symbols
USER_ID_LEN = 13
_INDEX = {c: i for i, c in enumerate(ALPHABET)}


def check_char(first12: str) -> str:
    """The check character: ALPHABET[(Σ (i+1)·v(c_i)) mod 34] over the 12 symbols."""
    if len(first12) != USER_ID_LEN - 1 or any(c not in _INDEX for c in first12):
        raise ValueError("a user ID body is 12 symbols of 0-9A-Z without I and O")
    total = sum((i + 1) * _INDEX[c] for i, c in enumerate(first12))
    return ALPHABET[total % len(ALPHABET)]


def validate_user_id(s: str) -> bool:
    """True when `s` is 13 alphabet symbols whose last one is the right check character."""
    if len(s) != USER_ID_LEN or any(c not in _INDEX for c in s):
        return False
    return check_char(s[:-1]) == s[-1]


def generate_user_id(rng: random.Random) -> str:
    """A random valid user ID (for the sim and tests; the loading service assigns real ones)."""
    body = "".join(rng.choice(ALPHABET) for _ in range(USER_ID_LEN - 1))
    return body + check_char(body)
