"""Type C (common card AP) instances: SELECT, then READ BINARY of the 33-byte layout."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from .applet import LoadedApplet
from .files import BinaryFile

INFO_LENGTH = 4
USER_ID_LENGTH = 13


@dataclass(frozen=True, slots=True)
class TypeCSpec:
    """A pre-personalised Type C instance: AID (5-16 bytes), 13-char user ID, three 4-byte infos."""

    aid: bytes
    user_id: str
    info: tuple[bytes, bytes, bytes] = field(
        default=(b"\x00" * INFO_LENGTH, b"\x00" * INFO_LENGTH, b"\x00" * INFO_LENGTH))

    def __post_init__(self) -> None:
        """Refuse what cannot be laid out in 33 bytes (the check character is not enforced)."""
        if not 5 <= len(self.aid) <= 16:
            raise ValueError("Type C AID must be 5-16 bytes")
        if len(self.user_id) != USER_ID_LENGTH or not self.user_id.isascii():
            raise ValueError("user ID must be 13 ASCII characters")
        if len(self.info) != 3 or any(len(i) != INFO_LENGTH for i in self.info):
            raise ValueError("Type C needs three 4-byte info fields")


def layout(spec: TypeCSpec) -> bytes:
    """`C1 0D <user ID>` `C2 04 <info1>` `C3 04 <info2>` `C4 04 <info3>` (33 bytes)."""
    out = bytes([0xC1, USER_ID_LENGTH]) + spec.user_id.encode("ascii")
    for tag, info in zip((0xC2, 0xC3, 0xC4), spec.info, strict=True):
        out += bytes([tag, INFO_LENGTH]) + info
    return out


class TypeCApplet(LoadedApplet):
    """A Type C instance: its 33-byte layout is the default binary file (no EF select)."""

    type_code: ClassVar[str] = "C"

    def __init__(self, spec: TypeCSpec) -> None:
        super().__init__(spec.aid)
        self.spec = spec
        self.default_file = BinaryFile(layout(spec))

    def to_json(self) -> dict[str, Any]:
        """`{"type": "C", "aid": hex, "user_id": str, "info": [hex, hex, hex]}`."""
        return {"type": self.type_code, "aid": self.aid.hex().upper(),
                "user_id": self.spec.user_id, "info": [i.hex().upper() for i in self.spec.info]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TypeCApplet:
        """Inverse of to_json."""
        info = tuple(bytes.fromhex(x) for x in d["info"])
        if len(info) != 3:
            raise ValueError("Type C entry needs three info fields")
        return cls(TypeCSpec(bytes.fromhex(d["aid"]), str(d["user_id"]),
                             (info[0], info[1], info[2])))

