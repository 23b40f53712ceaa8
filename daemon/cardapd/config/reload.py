"""What a SIGHUP reload changes (docs/decisions.md D19), derived from the schema's marks.

Keys marked `restart=True` name what was bound or opened at start (sockets, stores, the
metrics listener, the fingerprint service): a reload keeps their running values and says
that their new ones wait for a restart. Every other changed key applies at once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import msgspec
from msgspec import inspect as mi

from cardapd.config.schema import Config


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a reload does: `config` runs from now on, `live` keys apply at once, `restart`
    keys changed in the file but keep their running values until the next start."""

    config: Config
    live: tuple[str, ...]
    restart: tuple[str, ...]


def _restart_marked(field: mi.Field) -> bool:
    t = field.type
    return isinstance(t, mi.Metadata) and bool((t.extra or {}).get("restart"))


def _fields(struct: msgspec.Struct) -> list[mi.Field]:
    info = mi.type_info(type(struct))
    assert isinstance(info, mi.StructType)
    return [f for f in info.fields if f.name != "source"]


def restart_keys(struct_type: type[msgspec.Struct] = Config, prefix: str = "") -> list[str]:
    """Every key (dotted, as in the file) whose change waits for a restart."""
    out: list[str] = []
    info = mi.type_info(struct_type)
    assert isinstance(info, mi.StructType)
    for field in info.fields:
        name = f"{prefix}.{field.name}" if prefix else field.name
        if _restart_marked(field):
            out.append(name)
        elif isinstance(field.type, mi.StructType):
            out += restart_keys(field.type.cls, name)
    return out


@functools.cache
def all_restart_keys() -> tuple[str, ...]:
    """The restart-only keys of cardapd.toml (computed once, when first asked)."""
    return tuple(restart_keys())


def needs_restart(key: str) -> bool:
    """Whether a changed `key` only takes effect at the next start."""
    return any(key == k or key.startswith(k + ".") for k in all_restart_keys())


def changed_keys(old: Config, new: Config) -> tuple[str, ...]:
    """The keys whose values differ, as written in the file (`tap.read_on_insert`,
    `sockets.kiosk.path`, `read.aps`, `metrics.listen`), in schema order."""
    out: list[str] = []

    def walk(prefix: str, a: Any, b: Any) -> None:
        if isinstance(a, msgspec.Struct) and type(a) is type(b):
            for field in _fields(a):
                walk(f"{prefix}.{field.name}" if prefix else field.name,
                     getattr(a, field.name), getattr(b, field.name))
        elif a != b:
            out.append(prefix)

    walk("", old, new)
    return tuple(out)


def _keep(running: Any, new: Any) -> Any:
    """`new`, with the running value of every restart-marked key."""
    if not isinstance(new, msgspec.Struct) or type(running) is not type(new):
        return new
    changes = {}
    for field in _fields(new):
        ran, now = getattr(running, field.name), getattr(new, field.name)
        kept = ran if _restart_marked(field) else _keep(ran, now)
        if kept is not now:
            changes[field.name] = kept
    if not changes:
        return new
    out = msgspec.structs.replace(new, **changes)
    if isinstance(new, Config):
        msgspec.structs.force_setattr(out, "source", new.source)
    return out


def plan_reload(running: Config, new: Config) -> ReloadPlan:
    """Split the changes of a validated new file into live ones and ones for a restart."""
    changed = changed_keys(running, new)
    return ReloadPlan(_keep(running, new), tuple(k for k in changed if not needs_restart(k)),
                      tuple(k for k in changed if needs_restart(k)))
