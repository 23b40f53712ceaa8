"""Type C (common card AP): tap and read the user ID and three info fields; the layout is
checked strictly, the user ID is taken as the card holds it (`myna.userid`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from cardapd.errors import ApNotFound, CardDataInvalid
from cardapd.myna.aids import select_aid
from cardapd.myna.files import read_binary
from cardapd.myna.userid import DEFAULT_RULE, USER_ID_LEN, UserIdRule
from cardlib.protocol import ApduProtocol

TYPE_C_LEN = 33
INFO_LEN = 4
_FIELDS = ((0xC1, USER_ID_LEN), (0xC2, INFO_LEN), (0xC3, INFO_LEN), (0xC4, INFO_LEN))


@dataclass(frozen=True)
class TypeCRecord:
    """What a Type C AP holds: the user ID and three opaque 4-byte info fields."""

    user_id: str
    info: tuple[bytes, bytes, bytes]


def parse_type_c(data: bytes, rule: UserIdRule = DEFAULT_RULE) -> TypeCRecord:
    """Check the 33-byte layout `C1 0D uid C2 04 i1 C3 04 i2 C4 04 i3` and the user ID
    against `rule`; else CardDataInvalid."""
    if len(data) != TYPE_C_LEN:
        raise CardDataInvalid(f"Type C data is {len(data)} bytes, expected {TYPE_C_LEN}")
    values: list[bytes] = []
    pos = 0
    for tag, size in _FIELDS:
        if data[pos] != tag or data[pos + 1] != size:
            raise CardDataInvalid(f"Type C field {len(values) + 1}: expected {tag:02X} {size:02X}, "
                                  f"got {data[pos]:02X} {data[pos + 1]:02X}")
        values.append(bytes(data[pos + 2:pos + 2 + size]))
        pos += 2 + size
    return TypeCRecord(rule.decode(values[0], "Type C AP"), (values[1], values[2], values[3]))


class TypeCSession:
    """Reads Type C instances on one card; no authentication is involved."""

    def __init__(self, proto: ApduProtocol) -> None:
        self.proto = proto

    def read(self, aid: bytes, cancel: threading.Event | None = None,
             rule: UserIdRule = DEFAULT_RULE) -> TypeCRecord:
        """SELECT the instance and READ BINARY 33 bytes; ApNotFound on 6A82, never a guess."""
        if not select_aid(self.proto, aid, "SELECT Type C AP", cancel=cancel):
            raise ApNotFound("the Type C AP is not on this card",
                             metadata={"aid": aid.hex().upper()})
        return parse_type_c(read_binary(self.proto, TYPE_C_LEN, cancel=cancel), rule)
