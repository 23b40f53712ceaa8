"""The configuration reference, generated from the schema: docs/configuration.md (a table
per section) and docs/config.example.toml (every key at its default, with its line of
documentation). `make docs` writes both; a unit test fails when the committed files differ
from what this module generates, so the documentation cannot drift from the code.

    python -m cardapd.config.reference markdown > docs/configuration.md
    python -m cardapd.config.reference example > docs/config.example.toml
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
from msgspec import inspect as mi

from cardapd.config.reload import all_restart_keys
from cardapd.config.schema import Config, SocketsConfig
from cardapd.config.values import SocketMode
from cardapd.myna.custom import UserIdLocator

DEFAULTS = Config()


def _meta(field: mi.Field) -> tuple[str, dict[str, Any]]:
    """A field's documentation line and its extra marks."""
    t = field.type
    if isinstance(t, mi.Metadata):
        return str((t.extra_json_schema or {}).get("description", "")), dict(t.extra or {})
    return "", {}


def _inner(t: mi.Type) -> mi.Type:
    while True:
        if isinstance(t, mi.Metadata):
            t = t.type
        elif isinstance(t, mi.UnionType):
            others = [u for u in t.types if not isinstance(u, mi.NoneType)]
            if len(others) != 1:
                return t
            t = others[0]
        else:
            return t


def type_doc(t: mi.Type) -> str:
    """A type in words, for the reference table."""
    t = _inner(t)
    if isinstance(t, mi.BoolType):
        return "boolean"
    if isinstance(t, mi.IntType | mi.FloatType):
        word = "integer" if isinstance(t, mi.IntType) else "number"
        if t.ge is not None and t.le is not None:
            return f"{word}, {t.ge}-{t.le}"
        low = (f"> {t.gt:.10g}" if t.gt is not None
               else f"≥ {t.ge:.10g}" if t.ge is not None else "")
        high = f"≤ {t.le:.10g}" if t.le is not None else ""
        bounds = ", ".join(b for b in (low, high) if b)
        return f"{word}, {bounds}" if bounds else word
    if isinstance(t, mi.StrType):
        return "string"
    if isinstance(t, mi.LiteralType):
        return " \\| ".join(f"`{v}`" for v in sorted(str(v) for v in t.values))
    if isinstance(t, mi.VarTupleType | mi.ListType):
        item = _inner(t.item_type)
        if isinstance(item, mi.StructType):
            return "array of tables"
        return f"list of {type_doc(item)}"
    if isinstance(t, mi.CustomType):
        if t.cls is Path:
            return "absolute path"
        if t.cls is UserIdLocator:
            return "table: {offset, length} or {tag[, offset, search_length]}"
        return str(getattr(t.cls, "TYPE_DOC", t.cls.__name__))
    return type(t).__name__


def toml_value(value: object) -> str:
    """A default value as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, SocketMode):
        return f'"{value:04o}"'
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def _sections(struct: Any = DEFAULTS, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(dotted table name, its struct type info, its default value), in schema order."""
    info = mi.type_info(type(struct))
    assert isinstance(info, mi.StructType)
    yield prefix, info, struct
    for field in info.fields:
        value = getattr(struct, field.name)
        if isinstance(value, msgspec.Struct):
            yield from _sections(value, f"{prefix}.{field.name}" if prefix else field.name)


def _doc_of(cls: type) -> str:
    """The first line of a section's docstring, without its `[table]: ` lead."""
    first = (cls.__doc__ or "").strip().splitlines()[0]
    text = first.split("]: ", 1)[1] if first.startswith("[") and "]: " in first else first
    return text[:1].upper() + text[1:]


def _cell(text: str) -> str:
    """Text for a markdown table cell."""
    return text.replace("|", "\\|")


def _key_rows(table: str, info: mi.StructType, value: Any) -> Iterator[tuple[str, ...]]:
    for field in info.fields:
        if field.name == "source" or isinstance(getattr(value, field.name), msgspec.Struct):
            continue
        doc, extra = _meta(field)
        name = f"{table}.{field.name}" if table else field.name
        default = getattr(value, field.name)
        if extra.get("shown"):
            shown = f"`{extra['shown']}`"
        elif default in (None, (), "") or (isinstance(default, tuple) and not default):
            shown = "(none)"
        else:
            shown = f"`{toml_value(default)}`"
        restart = "restart" if name in all_restart_keys() or any(
            name.startswith(k + ".") for k in all_restart_keys()) else "reload"
        yield f"`{name}`", type_doc(field.type), shown, restart, _cell(doc)


def markdown() -> str:
    """docs/configuration.md."""
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated from daemon/cardapd/config/schema.py by `make docs`; do not edit. -->",
        "",
        "`cardapd --config /etc/cardapd/cardapd.toml` reads one TOML file; "
        "`cardapd --check-config` validates it and exits (0 valid, 2 invalid). Every key is "
        "optional and an empty file gives the defaults below; an unknown key is an error "
        "that names the key and the nearest known one. **reload**: a `SIGHUP` (`systemctl "
        "reload cardapd`) applies the change at once; **restart**: the running value stays "
        "until the next start (the reload says so). docs/config.example.toml holds the "
        "same keys as a file.",
        "",
    ]
    for table, info, value in _sections():
        rows = list(_key_rows(table, info, value))
        if not rows:
            continue
        if not table:  # keys of the root: tables of their own
            out += [f"## `[{row[0].strip('`')}]`\n\n{row[4]} Type: {row[1]}; change: "
                    f"{row[3]}.\n" for row in rows]
            continue
        out += [f"## `[{table}]`", "", _doc_of(info.cls), "",
                "| key | type | default | change | meaning |", "|---|---|---|---|---|"]
        out += ["| " + " | ".join(row) + " |" for row in rows]
        out.append("")
        if table == "read":
            aps = mi.type_info(type(DEFAULTS.read))
            assert isinstance(aps, mi.StructType)
            item = _inner(next(f for f in aps.fields if f.name == "aps").type)
            assert isinstance(item, mi.VarTupleType)
            ap = _inner(item.item_type)
            assert isinstance(ap, mi.StructType)
            out += ["### `[[read.aps]]`", "", _doc_of(ap.cls), "",
                    "| key | type | required | meaning |", "|---|---|---|---|"]
            out += [f"| `{f.name}` | {type_doc(f.type)} | {'yes' if f.required else ''} | "
                    f"{_cell(_meta(f)[0])} |" for f in ap.fields]
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def _comment(text: str, width: int = 88) -> list[str]:
    """`text` as `# ` comment lines."""
    lines, line = [], "#"
    for word in text.split():
        if len(line) + 1 + len(word) > width:
            lines.append(line)
            line = "#"
        line += " " + word
    return [*lines, line] if line != "#" else lines


def example() -> str:
    """docs/config.example.toml."""
    out = ["# cardapd configuration: /etc/cardapd/cardapd.toml",
           "# Generated from daemon/cardapd/config/schema.py by `make docs`; every key at its",
           "# default. Every key is optional: an empty file gives these values. Unknown keys",
           "# are errors. Check a file without starting the daemon:",
           "#   cardapd --config FILE --check-config",
           "# docs/configuration.md explains each key; (restart) marks the keys a reload",
           "# (SIGHUP) cannot change.", ""]
    for table, info, value in _sections():
        if not table:
            continue
        out += [f"[{table}]", *_comment(_doc_of(info.cls))]
        for field in info.fields:
            default = getattr(value, field.name)
            if isinstance(default, msgspec.Struct):
                continue
            doc, extra = _meta(field)
            name = f"{table}.{field.name}"
            if name in all_restart_keys():
                doc += " (restart)"
            if extra.get("shown"):
                doc += f" Default: {extra['shown']}."
            if table == "read" and field.name == "aps":
                out += _comment(doc)
                out += _read_aps_example()
                continue
            out += _comment(doc)
            if isinstance(default, tuple) and default == () and extra.get("example") and \
                    not isinstance(default, list):
                if field.name in ("organisations",):
                    out.append(f"# {field.name} = {extra['example']}")
                else:
                    out.append(f"{field.name} = []  # e.g. {extra['example']}")
            elif default is None or (default == "" and extra.get("example")):
                out.append(f"# {field.name} = {extra.get('example') or '…'}")
            else:
                out.append(f"{field.name} = {toml_value(default)}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _read_aps_example() -> list[str]:
    return [
        "#",
        "# [[read.aps]]",
        "# aid = \"D392F000410A0002\"           # instance AID, hex",
        "# type = \"A\"                         # \"A\", \"D\", \"custom\" or \"C\"",
        "# organisation = \"org-a\"             # whose revocation feed covers this AP",
        "# access_key_file = \"/etc/cardapd/keys/org-a-cert-a.key\"  # A/D: hex key, 0600",
        "# pin = \"caller\"                     # A/D: \"caller\" (ReadUserID.pin) or \"system\"",
        "#",
        "# [[read.aps]]",
        "# aid = \"D392F000440A0003\"",
        "# type = \"D\"",
        "# organisation = \"org-a\"",
        "# access_key_file = \"/etc/cardapd/keys/org-a-records-d.key\"",
        "# pin = \"system\"",
        "# system_pin_file = \"/etc/cardapd/keys/org-a-records-d.pin\"  # mode 0600",
        "#",
        "# [[read.aps]]",
        "# aid = \"D392F000580A0004\"",
        "# type = \"custom\"",
        "# organisation = \"org-a\"",
        "# locator = { tag = \"C1\" }           # or { offset = 2, length = 13 }",
        "#",
        "# Secret files must be regular files (no symlink) with no group/other permission",
        "# bits. For tests only, access_key_hex = \"…\" and system_pin = \"…\" may stand",
        "# inline; the configuration file must then itself be mode 0600.",
    ]


def main(argv: list[str] | None = None) -> int:
    """Print the markdown reference or the example file."""
    what = (argv if argv is not None else sys.argv[1:]) or ["markdown"]
    if what[0] not in ("markdown", "example"):
        print("usage: python -m cardapd.config.reference markdown|example", file=sys.stderr)
        return 2
    sys.stdout.write(markdown() if what[0] == "markdown" else example())
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["SocketsConfig", "example", "markdown", "type_doc"]
