"""Anything shaped like a My Number is refused (docs/decisions.md D9).

The daemon never reads the My Number; this is the second line: no audit row, roster
identifier or free text that looks like one (12 digits whose last is a valid My Number
check digit) is stored.
"""

from __future__ import annotations

import re

_MY_NUMBER_RE = re.compile(r"(?<!\d)\d{12}(?!\d)")


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
