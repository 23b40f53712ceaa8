"""Registry of loaded AP instance types by the `type` code stored in the card file."""

from __future__ import annotations

from typing import Any

from .applet import LoadedApplet
from .typec import TypeCApplet

# Issues 4/6 register "A", "D" and custom types here.
LOADED_TYPES: dict[str, type[LoadedApplet]] = {TypeCApplet.type_code: TypeCApplet}


def applet_from_json(d: dict[str, Any]) -> LoadedApplet:
    """Rebuild one `aps` entry with the class registered for its type code."""
    kind = str(d.get("type"))
    cls = LOADED_TYPES.get(kind)
    if cls is None:
        raise ValueError(f"unknown AP instance type {kind!r}")
    return cls.from_json(d)
