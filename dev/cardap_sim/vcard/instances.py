"""Registry of loaded AP instance types by the `type` code stored in the card file."""

from __future__ import annotations

from typing import Any

from .applet import LoadedApplet
from .custom import CustomApplet
from .loaded import GpInfo, GpInstance
from .typea import TypeAApplet
from .typec import TypeCApplet
from .typed import TypeDApplet

# Issue 6 may register more custom types here.
LOADED_TYPES: dict[str, type[LoadedApplet]] = {
    cls.type_code: cls for cls in (TypeAApplet, TypeCApplet, TypeDApplet, CustomApplet)}

# INSTALL [for install]: the module AID decides the behaviour (docs/card-model.md).
MODULES: dict[bytes, type[GpInstance]] = {
    cls.module_aid: cls for cls in (TypeAApplet, TypeCApplet, TypeDApplet, CustomApplet)}


def applet_from_json(d: dict[str, Any]) -> LoadedApplet:
    """Rebuild one `aps` entry with the class registered for its type code."""
    kind = str(d.get("type"))
    cls = LOADED_TYPES.get(kind)
    if cls is None:
        raise ValueError(f"unknown AP instance type {kind!r}")
    return cls.from_json(d)


def new_instance(module: bytes, aid: bytes, gp: GpInfo) -> GpInstance:
    """A fresh SELECTABLE instance of the type the module AID names."""
    cls = MODULES[module]
    if cls is TypeCApplet:
        return TypeCApplet(aid=aid, gp=gp)
    if cls is CustomApplet:
        return CustomApplet(aid, gp)
    return TypeDApplet(aid, gp) if cls is TypeDApplet else TypeAApplet(aid, gp)
