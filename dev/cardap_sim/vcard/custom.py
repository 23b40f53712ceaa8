"""Custom (独自) instances: a binary file whose content DGI 0101 writes as-is."""

from __future__ import annotations

from typing import Any, ClassVar

from . import apdu
from .apdu import Command, SwError
from .applet import CardContext, Reply
from .files import BinaryFile
from .loaded import DGI_USER_DATA, LC_PERSONALISED, GpInfo, GpInstance, require_only

CUSTOM_MODULE_AID = bytes.fromhex("D392F0004F58")
MAX_CONTENT = 0x7FFF


class CustomApplet(GpInstance):
    """A custom instance: plain READ BINARY of the organisation's own layout (default file)."""

    type_code: ClassVar[str] = "custom"
    module_aid: ClassVar[bytes] = CUSTOM_MODULE_AID
    install_type: ClassVar[int] = 0x58

    def __init__(self, aid: bytes, gp: GpInfo, content: bytes | None = None) -> None:
        super().__init__(aid)
        self.gp = gp
        self.content = content
        if content is not None:
            self.default_file = BinaryFile(content)

    def read_binary(self, cmd: Command, ctx: CardContext) -> Reply:
        """READ BINARY of the content; 6985 before personalisation."""
        self.require_personalised()
        return super().read_binary(cmd, ctx)

    def personalise(self, dgis: dict[int, bytes]) -> None:
        """DGI 0101 only, 1 byte or more: the file content as-is."""
        require_only(dgis, {DGI_USER_DATA}, {DGI_USER_DATA})
        content = dgis[DGI_USER_DATA]
        if not 0 < len(content) <= MAX_CONTENT:
            raise SwError(apdu.SW_WRONG_DATA)
        self.content = content
        self.default_file = BinaryFile(content)
        self.gp.lifecycle = LC_PERSONALISED

    def to_json(self) -> dict[str, Any]:
        """`{"type": "custom", "aid": hex, "content": hex|null}` + GP registry data."""
        return {"type": self.type_code, "aid": self.aid.hex().upper(),
                "content": None if self.content is None else self.content.hex().upper(),
                **self.gp.to_json()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CustomApplet:
        """Inverse of to_json."""
        content = d.get("content")
        return cls(bytes.fromhex(d["aid"]), GpInfo.from_json(d),
                   None if content is None else bytes.fromhex(content))
