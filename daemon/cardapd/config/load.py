"""Reading cardapd.toml into the schema, with errors that name the file, the key and the
problem (`cardapd.toml: tap.type_c_aids[1]: not hex: …`) and, for an unknown key, the
nearest known one — so that a typo never falls back to a default on a terminal nobody
watches. msgspec checks types and bounds; its messages are put in this file's words here.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

import msgspec
from msgspec import inspect as mi

from cardapd.config.schema import Config
from cardapd.config.values import decode
from cardapd.errors import ConfigError

_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_PART = re.compile(r"\.([A-Za-z0-9_-]+)|\[(\d+)\]|\[\.\.\.\]")
_SUB = re.compile(r"([A-Za-z0-9_-]+)|\[(\d+)\]")
_MSGSPEC_KINDS = {"float": "a number", "int": "an integer", "bool": "true or false",
                  "str": "a string", "array": "a list", "object": "a table", "null": "nothing"}
_GOT_KINDS = {"float": "a float", "int": "an integer", "bool": "a boolean", "str": "a string",
              "array": "a list", "object": "a table", "null": "nothing"}


def load_config(path: Path | None) -> Config:
    """Read and validate `path` (None: the defaults); raises `ConfigError`."""
    if path is None:
        return Config()
    src = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{src}: cannot read: {exc.strerror or exc}",
                          metadata={"file": src}) from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{src}: invalid TOML: {exc}", metadata={"file": src}) from exc
    if "source" in data:  # where the configuration came from is not a key of the file
        raise _error(src, "source", _unknown("source", ()))
    try:
        cfg = msgspec.convert(data, Config, dec_hook=decode)
    except msgspec.ValidationError as exc:
        raise _translate(src, str(exc), data) from None
    msgspec.structs.force_setattr(cfg, "source", Path(path))
    problem = cfg.inline_secret_problem()
    if problem is not None:
        raise _error(src, "read", problem)
    return cfg


MOVED_PRESET = ("preset sets are kept on the roster per organisation since issue 16: set "
                "them with `cardapctl presets set --org ORG --name NAME --aps A,B` and remove "
                "this key ([presets] has only ready_event now)")


def _error(src: str, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{src}: {key}: {problem}" if key else f"{src}: {problem}",
                       metadata={"file": src, "key": key})


def _unknown(name: str, known: tuple[str, ...]) -> str:
    hint = difflib.get_close_matches(name, known, n=1)
    if hint:
        return f"unknown key (did you mean {hint[0]!r}?)"
    return "unknown key" + (f"; known: {', '.join(known)}" if known else "")


def _parts(path: str) -> list[str | int]:
    """`.tap.type_c_aids[1]` → ["tap", "type_c_aids", 1]."""
    out: list[str | int] = []
    for name, index in _PART.findall(path):
        out.append(name if name else int(index) if index else "")
    return out


def _dotted(parts: list[str | int]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _unwrap(t: mi.Type) -> tuple[mi.Type, dict[str, Any]]:
    """The type inside Metadata/Optional wrappers, and its bounds."""
    bounds: dict[str, Any] = {}
    while True:
        if isinstance(t, mi.Metadata):
            t = t.type
        elif isinstance(t, mi.UnionType):
            others = [u for u in t.types if not isinstance(u, mi.NoneType)]
            if len(others) != 1:
                return t, bounds
            t = others[0]
        else:
            break
    for name in ("gt", "ge", "lt", "le", "min_length"):
        value = getattr(t, name, None)
        if value is not None:
            bounds[name] = value
    return t, bounds


def _type_at(parts: list[str | int]) -> mi.Type | None:
    """The schema type at a path (None when the path leaves the schema)."""
    t: mi.Type = mi.type_info(Config)
    for part in parts:
        t, _ = _unwrap(t)
        if isinstance(t, mi.StructType) and isinstance(part, str):
            field = next((f for f in t.fields if f.name == part), None)
            if field is None:
                return None
            t = field.type
        elif isinstance(t, mi.VarTupleType | mi.ListType) and isinstance(part, int):
            t = t.item_type
        else:
            return None
    return t


def _value_at(data: Any, parts: list[str | int]) -> Any:
    for part in parts:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _translate(src: str, text: str, data: dict[str, Any]) -> ConfigError:
    """A msgspec ValidationError in this file's words."""
    match = _AT.match(text)
    assert match is not None
    message, parts = match["message"], _parts(match["path"] or "")
    if message.startswith("@"):  # a problem deeper than where msgspec stands
        sub, _, message = message[1:].partition(": ")
        parts += [int(i) if i else n for n, i in _SUB.findall(sub)]
        return _error(src, _dotted(parts), message)
    if m := re.fullmatch(r"Object contains unknown field `(.+)`", message):
        t = _type_at(parts)
        inner = _unwrap(t)[0] if t is not None else None
        known = tuple(f.name for f in inner.fields if f.name != "source") \
            if isinstance(inner, mi.StructType) else ()
        if parts == ["presets"] and isinstance(_value_at(data, [*parts, m[1]]), list):
            return _error(src, _dotted([*parts, m[1]]), MOVED_PRESET)
        return _error(src, _dotted([*parts, m[1]]), _unknown(m[1], known))
    if m := re.fullmatch(r"Object missing required field `(.+)`", message):
        return _error(src, _dotted([*parts, m[1]]), "required")
    if m := re.fullmatch(r"Expected `(\w+)`, got `(\w+)`", message):
        want, got = _MSGSPEC_KINDS.get(m[1], m[1]), _GOT_KINDS.get(m[2], m[2])
        return _error(src, _dotted(parts), f"expected {want}, got {got}")
    if re.fullmatch(r"Expected `str` of length >= 1", message):
        return _error(src, _dotted(parts), "expected a non-empty string")
    if re.fullmatch(r"Expected `(int|float)` (>|>=|<|<=) .+", message):
        t = _type_at(parts)
        _, bounds = _unwrap(t) if t is not None else (None, {})
        value = _value_at(data, parts)
        return _error(src, _dotted(parts), _out_of_range(bounds, value))
    if m := re.fullmatch(r"Invalid enum value (.+)", message):
        choices = [f'"{v}"' for v in _choices(parts)]
        listed = ", ".join(choices[:-1]) + (" or " if len(choices) > 1 else "") + choices[-1]
        return _error(src, _dotted(parts), f"must be one of {listed}; got {m[1]}")
    return _error(src, _dotted(parts), message)


def _choices(parts: list[str | int]) -> tuple[object, ...]:
    """The values a Literal key allows, in the order the schema lists them."""
    parent = _type_at(parts[:-1])
    inner = _unwrap(parent)[0] if parent is not None else None
    if not isinstance(inner, mi.StructType) or not isinstance(parts[-1], str):
        return ()
    hint: Any = typing.get_type_hints(inner.cls, include_extras=True).get(parts[-1])
    while typing.get_origin(hint) is not typing.Literal:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if not args:
            return ()
        hint = args[0]
    return typing.get_args(hint)


def _out_of_range(bounds: dict[str, Any], value: object) -> str:
    """The allowed range of a number, and the value found."""
    got = f", got {value:g}" if isinstance(value, int | float) else ""
    if "ge" in bounds and "le" in bounds:
        return f"must be {bounds['ge']}-{bounds['le']}{got}"
    low = (f"greater than {bounds['gt']:g}" if "gt" in bounds
           else f"at least {bounds['ge']:g}" if "ge" in bounds else "")
    high = f"at most {bounds['le']:g}" if "le" in bounds else ""
    return f"must be {' and '.join(p for p in (low, high) if p)}{got}"
