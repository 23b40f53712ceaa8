"""Fake identifiers: a check-digit-valid (fake) My Number and 13-character user IDs.

The user IDs made here follow the reference loading service's own scheme (12 symbols of
0-9A-Z without I and O, then a check character): a choice of this simulator, not a fact
about real cards. The daemon assumes none of it (docs/decisions.md D49).
"""

from __future__ import annotations

import random
import secrets

USER_ID_ALPHABET = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # 0-9A-Z without I and O: 34 symbols
assert len(USER_ID_ALPHABET) == 34


def my_number_check_digit(first11: str) -> int:
    """The My Number check digit (Ministerial ordinance formula) for the first 11 digits."""
    if len(first11) != 11 or not first11.isdigit():
        raise ValueError("need exactly 11 digits")
    total = 0
    for n in range(1, 12):
        p = int(first11[11 - n])
        q = n + 1 if n <= 6 else n - 5
        total += p * q
    rem = total % 11
    return 0 if rem <= 1 else 11 - rem


def fake_my_number() -> str:
    """A random 12-digit number with a valid check digit, for the input-assist AP only."""
    first11 = "".join(str(secrets.randbelow(10)) for _ in range(11))
    return first11 + str(my_number_check_digit(first11))


def user_id_check_char(first12: str) -> str:
    """The check character of a user ID: symbol at (sum (i+1)*v(c_i)) mod 34."""
    if len(first12) != 12 or any(c not in USER_ID_ALPHABET for c in first12):
        raise ValueError("need 12 symbols from 0-9A-Z without I and O")
    total = sum((i + 1) * USER_ID_ALPHABET.index(c) for i, c in enumerate(first12))
    return USER_ID_ALPHABET[total % 34]


def make_user_id(first12: str) -> str:
    """A complete 13-character user ID from its first 12 symbols."""
    return first12 + user_id_check_char(first12)


def random_user_id() -> str:
    """A random valid user ID (fixtures; never derived from a My Number)."""
    return make_user_id("".join(secrets.choice(USER_ID_ALPHABET) for _ in range(12)))


def validate_user_id(s: str) -> bool:
    """True when `s` follows the reference scheme (13 symbols, right check character)."""
    if len(s) != 13 or any(c not in USER_ID_ALPHABET for c in s):
        return False
    return user_id_check_char(s[:12]) == s[12]


check_char = user_id_check_char


def generate_user_id(rng: random.Random) -> str:
    """A reference-scheme user ID from `rng` (reproducible fixtures)."""
    return make_user_id("".join(rng.choice(USER_ID_ALPHABET) for _ in range(12)))
