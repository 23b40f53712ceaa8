"""Type C (common card AP) instances: SELECT, then READ BINARY of the 33-byte layout."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from . import apdu
from .apdu import Command, SwError
from .applet import CardContext, Reply
from .files import BinaryFile
from .loaded import DGI_USER_DATA, GpInfo, GpInstance, parse_user_data, require_only

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


TYPE_C_MODULE_AID = bytes.fromhex("D392F0004F43")


class TypeCApplet(GpInstance):
    """A Type C instance: its 33-byte layout is the default binary file (no EF select).

    Pre-issued instances come from a TypeCSpec; instances installed by the ISD start
    SELECTABLE without a spec and answer READ BINARY with 6985 until STORE DATA.
    """

    type_code: ClassVar[str] = "C"
    module_aid: ClassVar[bytes] = TYPE_C_MODULE_AID
    install_type: ClassVar[int] = 0x43

    def __init__(self, spec: TypeCSpec | None = None, *, aid: bytes | None = None,
                 gp: GpInfo | None = None) -> None:
        if spec is None and aid is None:
            raise ValueError("a Type C instance needs a spec or an AID")
        super().__init__(spec.aid if spec is not None else aid or b"")
        self.gp = gp if gp is not None else GpInfo()
        self.spec = spec
        if spec is not None:
            self.default_file = BinaryFile(layout(spec))

    def read_binary(self, cmd: Command, ctx: CardContext) -> Reply:
        """READ BINARY of the layout; 6985 before personalisation."""
        self.require_personalised()
        return super().read_binary(cmd, ctx)

    def personalise(self, dgis: dict[int, bytes]) -> None:
        """DGI 0101 only: `C1 0D uid` `C2 04` `C3 04` `C4 04`."""
        require_only(dgis, {DGI_USER_DATA}, {DGI_USER_DATA})
        uid, infos = parse_user_data(dgis[DGI_USER_DATA], (0xC2, 0xC3, 0xC4), INFO_LENGTH)
        if any(len(i) != INFO_LENGTH for i in infos):
            raise SwError(apdu.SW_WRONG_DATA)
        self.spec = TypeCSpec(self.aid, uid, (infos[0], infos[1], infos[2]))
        self.default_file = BinaryFile(layout(self.spec))
        self.gp.lifecycle = 0x0F

    def to_json(self) -> dict[str, Any]:
        """`{"type": "C", "aid": hex, "user_id": str, "info": [hex, hex, hex]}` + GP data."""
        out: dict[str, Any] = {"type": self.type_code, "aid": self.aid.hex().upper(),
                               "user_id": None, "info": None}
        if self.spec is not None:
            out.update(user_id=self.spec.user_id,
                       info=[i.hex().upper() for i in self.spec.info])
        return {**out, **self.gp.to_json()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TypeCApplet:
        """Inverse of to_json (entries without GP data are pre-issued, personalised)."""
        gp = GpInfo.from_json(d)
        if d.get("user_id") is None:
            return cls(aid=bytes.fromhex(d["aid"]), gp=gp)
        info = tuple(bytes.fromhex(x) for x in d["info"])
        if len(info) != 3:
            raise ValueError("Type C entry needs three info fields")
        return cls(TypeCSpec(bytes.fromhex(d["aid"]), str(d["user_id"]),
                             (info[0], info[1], info[2])), gp=gp)
