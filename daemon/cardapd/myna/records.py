"""Strict layouts of the user ID and info fields of Types A and D."""

from __future__ import annotations

from dataclasses import dataclass

from cardapd.errors import CardDataInvalid, InvalidArgument
from cardapd.myna.userid import DEFAULT_RULE, USER_ID_LEN, UserIdRule

INFO_LEN = 118
AP_DATA_LEN = 2 + USER_ID_LEN + 2 * (2 + INFO_LEN)  # 255
AP_PIN_MIN, AP_PIN_MAX = 4, 16


@dataclass(frozen=True)
class TypeARecord:
    """The user ID and the two opaque info fields of a Type A or Type D instance."""

    user_id: str
    info1: bytes
    info2: bytes


def split_fields(data: bytes, fields: tuple[tuple[int, int], ...], what: str) -> list[bytes]:
    """Values of exactly `tag size value ...` in order, covering `data`; else CardDataInvalid."""
    expected = sum(2 + size for _, size in fields)
    if len(data) != expected:
        raise CardDataInvalid(f"{what}: {len(data)} bytes, expected {expected}")
    values: list[bytes] = []
    pos = 0
    for tag, size in fields:
        if data[pos] != tag or data[pos + 1] != size:
            raise CardDataInvalid(f"{what} field {len(values) + 1}: expected {tag:02X} {size:02X}, "
                                  f"got {data[pos]:02X} {data[pos + 1]:02X}")
        values.append(bytes(data[pos + 2:pos + 2 + size]))
        pos += 2 + size
    return values


def parse_user_data(data: bytes, tags: tuple[int, int, int], what: str,
                    rule: UserIdRule = DEFAULT_RULE) -> TypeARecord:
    """`T1 0D uid T2 76 info1 T3 76 info2` (255 bytes) → TypeARecord."""
    uid, info1, info2 = split_fields(
        data, ((tags[0], USER_ID_LEN), (tags[1], INFO_LEN), (tags[2], INFO_LEN)), what)
    return TypeARecord(rule.decode(uid, what), info1, info2)


def check_ap_pin(pin: bytes) -> None:
    """An AP PIN is 4-16 printable ASCII characters; refuse others before a try is spent."""
    if not AP_PIN_MIN <= len(pin) <= AP_PIN_MAX or not all(0x21 <= b <= 0x7E for b in pin):
        raise InvalidArgument(f"an AP PIN is {AP_PIN_MIN}-{AP_PIN_MAX} printable ASCII "
                              "characters")
