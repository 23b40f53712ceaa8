"""The configuration's own value types and how each is read from TOML (`decode`).

msgspec decodes the standard types (strings, numbers, booleans, lists, tables) and checks
their bounds; the values with a shape of their own — absolute paths, AIDs in hex, socket
modes, addresses, secrets read from 0600 files, custom AP locators — are
classes here, built by `decode` (msgspec's `dec_hook`). A problem raises ValueError (or
TypeError for the wrong TOML type) with a message that never shows a secret. A message may
start with `@key: ` to say that the problem lies deeper than where msgspec stands (an entry
of a table, a sibling key); `cardapd.config.load` turns that into the full dotted key.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cardapd.config.secrets import Secret, read_secret_file
from cardapd.myna.aids import aid_problem
from cardapd.myna.custom import UserIdLocator, parse_locator

UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL
DERIVED = Path()
"""The default of a path derived from another key (`audit.path` from `daemon.state_dir`)."""

TOML_KIND = {bool: "a boolean", str: "a string", int: "an integer", float: "a float",
             list: "a list", dict: "a table"}


def kind(value: object) -> str:
    """The TOML name of a value's type, for messages."""
    return TOML_KIND.get(type(value), type(value).__name__)


def at(key: str, problem: str) -> str:
    """A message for a problem at `key` below the current position."""
    return f"@{key}: {problem}"


def within(prefix: str, message: str) -> str:
    """`message` (maybe `@key: …`) as a message of the enclosing table `prefix`."""
    if message.startswith("@"):
        sub, _, problem = message[1:].partition(": ")
        return at(f"{prefix}.{sub}" if sub else prefix, problem)
    return at(prefix, message)


def _string(value: object, what: str = "a string") -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected {what}, got {kind(value)}")
    return value


def absolute_path(value: object) -> Path:
    """An absolute file system path."""
    text = _string(value)
    if not text.startswith("/"):
        raise ValueError(f"must be an absolute path, got {text!r}")
    return Path(text)


class Aid(bytes):
    """An application identifier of a card AP, written in hex: 5 to 16 bytes, never one
    that could select the text input assist AP or a built-in AP (`myna.aids.aid_problem`,
    the one AID check)."""

    TYPE_DOC = "AID, hex (5-16 bytes)"

    @classmethod
    def parse(cls, value: object) -> Aid:
        text = _string(value, "a non-empty string")
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise ValueError(f"not hex: {text!r} (write it like \"D392F000260100000001\")"
                             ) from None
        if not 5 <= len(raw) <= 16:
            raise ValueError(f"an AID is 5 to 16 bytes, this is {len(raw)}")
        problem = aid_problem(raw)
        if problem is not None:
            raise ValueError(f"{raw.hex().upper()} {problem[1]}")
        return cls(raw)


class GroupName(str):
    """A Unix group's name."""

    TYPE_DOC = "group name"

    __slots__ = ()

    @classmethod
    def parse(cls, value: object) -> GroupName:
        text = _string(value)
        if not text:
            raise ValueError("must not be empty")
        return cls(text)


class SocketMode(int):
    """A socket's permission mode: "0660", "660" or 0o660; never open to every user."""

    TYPE_DOC = "octal mode"

    @classmethod
    def parse(cls, value: object) -> SocketMode:
        if isinstance(value, str):
            try:
                mode = int(value.removeprefix("0o"), 8)
            except ValueError:
                raise ValueError(f"not an octal mode: {value!r} (write it like \"0660\")"
                                 ) from None
        elif isinstance(value, int) and not isinstance(value, bool):
            mode = value
        else:
            raise TypeError(f"expected an octal mode like \"0660\", got {kind(value)}")
        if not 0 <= mode <= 0o777:
            raise ValueError(f"{mode:#o} is not a permission mode; write it as \"0660\" or "
                             "0o660 (a bare 660 is decimal)")
        if mode & 0o007:
            raise ValueError(f"{mode:04o} gives access to every local user; the role group "
                             "is what separates kiosk, gate and ops (use 0660)")
        return cls(mode)


def _host_port(text: str, example: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port{example}, got {text!r}")
    return host, int(port)


class ListenAddress(str):
    """Where an HTTP endpoint listens: host:port, IPv6 hosts in brackets."""

    TYPE_DOC = "host:port"

    __slots__ = ()

    @classmethod
    def parse(cls, value: object) -> ListenAddress:
        text = _string(value)
        _host_port(text, " (IPv6 as [::1]:9750)")
        return cls(text)

    @property
    def host(self) -> str:
        """The host part (brackets removed)."""
        return _host_port(self, "")[0]

    @property
    def port(self) -> int:
        """The port."""
        return _host_port(self, "")[1]

    def is_loopback(self) -> bool:
        """Whether the host is a loopback address (or `localhost`)."""
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


class ServiceAddress(str):
    """A service to connect to: host:port; empty means none configured."""

    TYPE_DOC = "host:port"

    __slots__ = ()

    @classmethod
    def parse(cls, value: object) -> ServiceAddress:
        text = _string(value)
        if text:
            _host_port(text, "")
        return cls(text)


class KeyFile(Secret):
    """An AES access key (16 or 32 bytes) in hex, read from a 0600 file."""

    TYPE_DOC = "path of a 0600 file (hex key)"

    __slots__ = ()

    @classmethod
    def parse(cls, value: object) -> KeyFile:
        return cls(hex_key(read_secret_file(absolute_path(value)).decode("ascii", "replace")))


class InlineKey(Secret):
    """An AES access key in hex, inline (tests; the file must then be 0600)."""

    TYPE_DOC = "hex (16 or 32 bytes)"

    __slots__ = ()

    @classmethod
    def parse(cls, value: object) -> InlineKey:
        return cls(hex_key(_string(value)))


class PinFile(Secret):
    """An AP PIN (4-16 printable ASCII characters), read from a 0600 file."""

    TYPE_DOC = "path of a 0600 file (PIN)"

    __slots__ = ()

    @classmethod
    def parse(cls, value: object) -> PinFile:
        return cls(ap_pin(read_secret_file(absolute_path(value))))


class InlinePin(Secret):
    """An AP PIN inline (tests; the file must then be 0600)."""

    TYPE_DOC = "string (4-16 characters)"

    __slots__ = ()

    @classmethod
    def parse(cls, value: object) -> InlinePin:
        return cls(ap_pin(_string(value).encode()))


def hex_key(text: str) -> bytes:
    """An AES key from hex text; the messages never show it."""
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError("not hex (the value is not shown)") from None
    if len(key) not in (16, 32):
        raise ValueError(f"an AP access key is 16 or 32 bytes, this is {len(key)}")
    return key


def ap_pin(raw: bytes) -> bytes:
    """An AP PIN: 4-16 printable ASCII characters; the messages never show it."""
    if not 4 <= len(raw) <= 16 or not all(0x21 <= b <= 0x7E for b in raw):
        raise ValueError("an AP PIN is 4-16 printable ASCII characters (the value is not "
                         "shown)")
    return raw


class Organisations(tuple[tuple[str, str], ...]):
    """[operators.organisations]: id = "display name"."""

    TYPE_DOC = "table: id = display name"

    @classmethod
    def parse(cls, value: object) -> Organisations:
        out = []
        for org, name in _table(value).items():
            if not isinstance(name, str) or not name.strip():
                raise ValueError(at(org, "expected the organisation's display name"))
            out.append((org, name))
        return cls(out)


class UserIdFormats(tuple[tuple[str, str], ...]):
    """[user_id_formats]: organisation = "regular expression" over the user ID's text."""

    TYPE_DOC = "table: organisation = regular expression"

    @classmethod
    def parse(cls, value: object) -> UserIdFormats:
        out = []
        for org, pattern in _table(value).items():
            if not isinstance(pattern, str) or not pattern:
                raise ValueError(at(org, "expected a regular expression (a string)"))
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(at(org, f"not a regular expression: {exc}")) from None
            out.append((org, pattern))
        return cls(out)

    def pattern(self, organisation: str) -> str | None:
        """The organisation's format, if it configured one."""
        return next((p for org, p in self if org == organisation), None)


def _table(value: object) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected a table, got {kind(value)}")
    return value


def locator(value: object) -> UserIdLocator:
    """A custom AP's user ID locator: {offset = N, length = 13} or {tag = "C1"}."""
    if not isinstance(value, dict):
        raise TypeError("a custom AP needs a locator table: {offset = N, length = 13} or "
                        "{tag = \"C1\"}")
    return parse_locator(value)


_PARSERS: dict[type, Any] = {
    Path: absolute_path, Aid: Aid.parse, SocketMode: SocketMode.parse,
    GroupName: GroupName.parse,
    ListenAddress: ListenAddress.parse, ServiceAddress: ServiceAddress.parse,
    KeyFile: KeyFile.parse, InlineKey: InlineKey.parse, PinFile: PinFile.parse,
    InlinePin: InlinePin.parse, Organisations: Organisations.parse,
    UserIdFormats: UserIdFormats.parse,
    UserIdLocator: locator,
}


def decode(kind_: type, value: object) -> object:
    """msgspec's dec_hook: build a value of one of the types above."""
    parse = _PARSERS.get(kind_)
    if parse is None:
        raise NotImplementedError(f"no configuration value of type {kind_.__name__}")
    return parse(value)
