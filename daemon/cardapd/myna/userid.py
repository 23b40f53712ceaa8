"""The 13-byte user ID of a card AP, as the card holds it (docs/decisions.md D49).

The public sources say only that a user ID is 13 bytes written when the AP is loaded
(002: "利用者ID (13bytes) は、自動で書き込まれます"); they give no alphabet and no check
character. So a read accepts the 13 bytes as they are, checked at most for being printable
ASCII (`charset = "printable"`, the default) or not at all (`"binary"`, per AP). A stricter
format is an organisation's own opt-in rule (`[user_id_formats]`), applied to its APs only.

A user ID travels as text in one canonical form: the 13 characters when every byte is
printable ASCII, else `0x` and 26 upper-case hex digits. The two forms cannot be confused
(13 characters against 28), so the text names the bytes exactly (`raw_from_text`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from cardapd.errors import CardDataInvalid

USER_ID_LEN = 13
HEX_PREFIX = "0x"
Charset = Literal["printable", "binary"]
CHARSETS: tuple[Charset, ...] = ("printable", "binary")
_HEX_RE = re.compile(r"0x[0-9A-F]{26}")


class UserIdFormatError(CardDataInvalid):
    """The user ID breaks the organisation's opt-in format ([user_id_formats])."""

    reason = "USER_ID_FORMAT"


def printable(raw: bytes) -> bool:
    """True when every byte is printable ASCII (0x20-0x7E)."""
    return all(0x20 <= b <= 0x7E for b in raw)


def text_form(raw: bytes) -> str:
    """The canonical text of a user ID: the characters if printable ASCII, else 0x + hex."""
    return raw.decode("ascii") if printable(raw) else HEX_PREFIX + raw.hex().upper()


def raw_from_text(text: str) -> bytes | None:
    """The 13 bytes a canonical text names (None when `text` is not one)."""
    if len(text) == USER_ID_LEN and text.isascii() and printable(text.encode("ascii")):
        return text.encode("ascii")
    if _HEX_RE.fullmatch(text):
        return bytes.fromhex(text[2:])
    return None


def is_user_id_text(text: str) -> bool:
    """Whether `text` is the canonical text of some 13-byte user ID."""
    return raw_from_text(text) is not None


@dataclass(frozen=True)
class UserIdRule:
    """How the user IDs of one AP are accepted: the bytes allowed, and the organisation's
    own format when it configured one (a regular expression over the canonical text)."""

    charset: Charset = "printable"
    pattern: re.Pattern[str] | None = None
    organisation: str = ""

    def decode(self, raw: bytes, what: str) -> str:
        """The user ID read from an AP's user-ID field, as canonical text; CardDataInvalid
        when it is not 13 bytes or breaks this rule (never a guess, never repaired)."""
        if len(raw) != USER_ID_LEN:
            raise CardDataInvalid(f"{what}: the user ID field holds {len(raw)} bytes, "
                                  f"a user ID is {USER_ID_LEN}")
        if self.charset == "printable" and not printable(raw):
            raise CardDataInvalid(f"{what}: the user ID is not printable ASCII (this AP's "
                                  "user_id_charset is \"printable\")")
        text = text_form(raw)
        self.check_format(text, what)
        return text

    def check_format(self, text: str, what: str) -> None:
        """UserIdFormatError when the organisation's format does not match `text`."""
        if self.pattern is not None and not self.pattern.fullmatch(text):
            raise UserIdFormatError(
                f"{what}: the user ID does not follow the format organisation "
                f"{self.organisation} configured ([user_id_formats])",
                metadata={"organisation": self.organisation})


DEFAULT_RULE = UserIdRule()
"""13 printable ASCII bytes, no format: what every AP gets unless configured otherwise."""
