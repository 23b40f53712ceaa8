"""The card's areas (security domains with a fixed capacity) and its load file records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EXTENDED_AREA_AID = bytes.fromhex("A000000151455854")  # "EXT": 拡張利用領域
REGIONAL_AREA_AID = bytes.fromhex("A000000151524547")  # "REG": 地域住民向け領域
REGIONAL_AREA_CAPACITY = 8192
AREA_NAMES = {EXTENDED_AREA_AID: "extended", REGIONAL_AREA_AID: "regional"}

LF_HALF_LOADED = 0x00
LF_LOADED = 0x01


@dataclass
class LoadFile:
    """One load file: its AID, the area it counts against, bytes and blocks received so far."""

    aid: bytes
    area: bytes
    size: int = 0
    blocks: int = 0
    complete: bool = False

    @property
    def lifecycle(self) -> int:
        """GP life cycle: `01` LOADED once the last block arrived, `00` while half-loaded."""
        return LF_LOADED if self.complete else LF_HALF_LOADED

    def to_json(self) -> dict[str, Any]:
        """The card file's `load_files` entry."""
        return {"aid": self.aid.hex().upper(), "area": AREA_NAMES[self.area],
                "size": self.size, "blocks": self.blocks, "complete": self.complete}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LoadFile:
        """Inverse of to_json."""
        by_name = {v: k for k, v in AREA_NAMES.items()}
        return cls(aid=bytes.fromhex(d["aid"]), area=by_name[str(d["area"])],
                   size=int(d["size"]), blocks=int(d["blocks"]), complete=bool(d["complete"]))
