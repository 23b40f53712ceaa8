"""Elementary files inside an AP: transparent (binary) files and PIN reference-data files."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class PinState:
    """A PIN's value and retry counter; persistent, shared with the card file."""

    value: str
    max_tries: int
    tries: int

    def to_json(self) -> dict[str, Any]:
        """JSON form stored in the card file."""
        return {"value": self.value, "max_tries": self.max_tries, "tries": self.tries}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PinState:
        """Inverse of to_json."""
        return cls(value=str(d["value"]), max_tries=int(d["max_tries"]), tries=int(d["tries"]))


@dataclass(slots=True)
class BinaryFile:
    """A transparent EF read with READ BINARY; `needs_pin` names a PIN EF that must be verified."""

    content: bytes
    needs_pin: int | None = None


@dataclass(slots=True)
class PinFile:
    """A PIN EF: selected, then VERIFY checks or queries its counter."""

    pin: PinState


ElementaryFile = BinaryFile | PinFile
