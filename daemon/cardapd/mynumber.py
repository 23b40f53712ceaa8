"""Anything shaped like a My Number is refused (docs/decisions.md D9), except a user ID.

The daemon never reads the My Number; this is the second line: no audit row, roster
identifier or free text that looks like one (12 digits whose last is a valid My Number
check digit) is stored. A user ID read from an AP's user-ID field is not free text: it is
13 bytes the card holds, whatever they look like, and refusing it would refuse the card
(D49). Code that puts one into an audit row marks it `UserIdText`; the guard skips exactly
those values and still checks everything else (reasons, names, free text). An AID is not
free text either: the hex of bytes chosen by whoever registered the application (a Japanese
one starts `D392` and may well go on in digits); refusing one would refuse that AP on every
card. Code marks it `HexText` (`aid_text`). Nor is the name PC/SC gives a connected reader
(its driver's name and often the USB serial number): refusing it would refuse every card in
that reader. The reader service marks it `DeviceName`; a reader name a client typed stays
plain text and is checked.
"""

from __future__ import annotations

import re

_MY_NUMBER_RE = re.compile(r"(?<!\d)\d{12}(?!\d)")
_HEX_RE = re.compile(r"(?:[0-9A-Fa-f]{2})+")
WITHHELD = "(withheld)"
"""What a row or message says in place of a client's value that looks like a My Number."""


def looks_like_my_number(text: str) -> bool:
    """True when `text` holds 12 digits whose last is a valid My Number check digit."""
    for match in _MY_NUMBER_RE.finditer(text):
        digits = match.group(0)
        body = [int(c) for c in reversed(digits[:11])]
        total = sum(p * (n + 1 if n <= 6 else n - 5) for n, p in enumerate(body, start=1))
        rest = total % 11
        if int(digits[11]) == (0 if rest <= 1 else 11 - rest):
            return True
    return False


def withheld(text: str) -> str:
    """`text`, or `WITHHELD` when it looks like a My Number (a client's value echoed in a
    row or a message)."""
    return WITHHELD if looks_like_my_number(text) else text


class UserIdText(str):
    """A user ID (the canonical text of 13 bytes from an AP's user-ID field, or given as
    one and checked as such): exempt from `looks_like_my_number` in stored rows."""

    __slots__ = ()


class HexText(str):
    """The upper-case hex of bytes that name an application (an AID): exempt from
    `looks_like_my_number` in stored rows, like `UserIdText`."""

    __slots__ = ()


class DeviceName(str):
    """The name PC/SC gives a connected reader: exempt from `looks_like_my_number` in stored
    rows, like `UserIdText`."""

    __slots__ = ()


def aid_text(aid: bytes | str) -> str:
    """An AID the terminal knows (from its configuration, the loading service's catalogue,
    the journal or the card; never one only a client typed) for an audit row: its
    upper-case hex, marked `HexText`. Text that is not hex of whole bytes stays a plain
    string (and is checked like any other)."""
    if isinstance(aid, bytes):
        return HexText(aid.hex().upper())
    return HexText(aid.upper()) if _HEX_RE.fullmatch(aid) else aid
