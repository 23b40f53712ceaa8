"""[[read.aps]], [pin] and [revocation]: the gate's secure-read and revocation settings.

Secrets (AP access keys, system PINs) come from a file readable by the daemon's user only
(mode 0600 or stricter, no symlink) or, for tests, inline hex in a config file that is
itself 0600. They are held in `Secret`, whose repr and str never show the value.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cardapd.myna.custom import UserIdLocator, parse_locator

if TYPE_CHECKING:
    from cardapd.config import _Table

ApKind = Literal["A", "C", "D", "custom"]
PinMode = Literal["system", "caller", "none"]
StalePolicy = Literal["allow_with_warning", "deny"]
_SECRET_MAX = 4096


class Secret:
    """Secret bytes; never shown by repr/str (logs, tracebacks, config dumps)."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    @property
    def value(self) -> bytes:
        """The secret bytes (hand them to the card session only)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret(<hidden>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", len(self._value)))


@dataclass(frozen=True, slots=True)
class ReadApConfig:
    """One AP the gate reads: how to authenticate and where the user ID is."""

    aid: bytes
    type: ApKind
    organisation: str
    access_key: Secret | None = None
    pin: PinMode = "none"
    system_pin: Secret | None = None
    locator: UserIdLocator | None = None


@dataclass(frozen=True, slots=True)
class PinConfig:
    """[pin]: the PIN guard refuses a VERIFY when tries left ≤ floor (≥ 1)."""

    floor: int = 1


@dataclass(frozen=True, slots=True)
class RevocationConfig:
    """[revocation]: pull interval, stale threshold and what a stale feed means for a read."""

    interval_s: float = 86400.0
    max_age_s: float = 172800.0
    stale_policy: StalePolicy = "allow_with_warning"


def read_secret_file(path: Path) -> bytes:
    """A secret file's stripped content; ValueError unless a regular 0600 file (no symlink)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise ValueError(f"cannot open {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path} is not a regular file")
        if st.st_mode & 0o077:
            raise ValueError(f"{path} has mode {stat.S_IMODE(st.st_mode):04o}: group or others "
                             "may read it; chmod 600 it")
        data = os.read(fd, _SECRET_MAX + 1)
    finally:
        os.close(fd)
    if len(data) > _SECRET_MAX:
        raise ValueError(f"{path} is too large for a key or PIN")
    return data.strip()


def _hex_key(t: _Table, name: str, text: str) -> Secret:
    """An AES access key (16 or 32 bytes) from hex text."""
    try:
        key = bytes.fromhex(text)
    except ValueError:
        t.fail(name, "not hex (the value is not shown)")
    if len(key) not in (16, 32):
        t.fail(name, f"an AP access key is 16 or 32 bytes, this is {len(key)}")
    return Secret(key)


def _pin(t: _Table, name: str, raw: bytes) -> Secret:
    """An AP PIN: 4-16 printable ASCII characters."""
    if not 4 <= len(raw) <= 16 or not all(0x21 <= b <= 0x7E for b in raw):
        t.fail(name, "an AP PIN is 4-16 printable ASCII characters (the value is not shown)")
    return Secret(raw)


def _secret(t: _Table, file_key: str, inline_key: str) -> tuple[str, bytes | str] | None:
    """("file", content) / ("inline", text) / None; both set is an error."""
    path_text = t.get(file_key, str, "")
    inline = t.get(inline_key, str, "")
    if path_text and inline:
        t.fail(inline_key, f"set {file_key} or {inline_key}, not both")
    if path_text:
        if not path_text.startswith("/"):
            t.fail(file_key, f"must be an absolute path, got {path_text!r}")
        try:
            return "file", read_secret_file(Path(path_text))
        except ValueError as exc:
            t.fail(file_key, str(exc))
    return ("inline", inline) if inline else None


def parse_read_ap(t: _Table) -> tuple[ReadApConfig, bool]:
    """One [[read.aps]] table; the flag says whether it held an inline secret."""
    aid_text = t.get("aid", str, "")
    try:
        aid = bytes.fromhex(aid_text)
    except ValueError:
        t.fail("aid", f"not hex: {aid_text!r}")
    if not 5 <= len(aid) <= 16:
        t.fail("aid", "an AID is 5 to 16 bytes (10-32 hex digits)")
    kind_text = t.choice("type", "", ("A", "D", "custom", "C"))
    kind: ApKind = "A" if kind_text == "A" else "D" if kind_text == "D" else (
        "C" if kind_text == "C" else "custom")
    organisation = t.get("organisation", str, "")
    if not organisation:
        t.fail("organisation", "required: the organisation whose revocation feed covers it")
    inline = False
    key: Secret | None = None
    pin_mode: PinMode = "none"
    system_pin: Secret | None = None
    locator: UserIdLocator | None = None
    secret = _secret(t, "access_key_file", "access_key_hex")
    pin_secret = _secret(t, "system_pin_file", "system_pin")
    mode = t.get("pin", str, "")
    raw_locator = t.raw("locator", None)
    if kind in ("A", "D"):
        if secret is None:
            t.fail("access_key_file", f"a Type {kind} AP needs access_key_file (or "
                                      "access_key_hex for tests)")
        inline = secret[0] == "inline"
        text = secret[1] if isinstance(secret[1], str) else secret[1].decode("ascii", "replace")
        key = _hex_key(t, "access_key_hex" if inline else "access_key_file", text)
        if mode not in ("system", "caller"):
            t.fail("pin", f"must be \"system\" or \"caller\" for a Type {kind} AP")
        pin_mode = "system" if mode == "system" else "caller"
        if pin_mode == "system":
            if pin_secret is None:
                t.fail("system_pin_file", "pin = \"system\" needs system_pin_file (or "
                                          "system_pin for tests)")
            inline = inline or pin_secret[0] == "inline"
            value = pin_secret[1]
            system_pin = _pin(t, "system_pin", value.encode() if isinstance(value, str)
                              else value)
        elif pin_secret is not None:
            t.fail("system_pin", "only with pin = \"system\"")
    else:
        for name, given in (("access_key_file", secret), ("system_pin_file", pin_secret),
                            ("pin", mode)):
            if given:
                t.fail(name, f"a {kind} AP is read without a key or PIN; remove it")
    if kind == "custom":
        if not isinstance(raw_locator, dict):
            t.fail("locator", "a custom AP needs a locator table: {offset = N, length = 13} "
                              "or {tag = \"C1\"}")
        try:
            locator = parse_locator(raw_locator)
        except ValueError as exc:
            t.fail("locator", str(exc))
    elif raw_locator is not None:
        t.fail("locator", "only for custom APs")
    t.done()
    return ReadApConfig(aid, kind, organisation, key, pin_mode, system_pin, locator), inline


def parse_pin(t: _Table) -> PinConfig:
    """[pin] floor (an integer ≥ 1: the last try is never spent)."""
    floor = t.get("floor", int, 1)
    if not 1 <= floor <= 15:
        t.fail("floor", f"must be 1-15 (the last try is never spent), got {floor}")
    t.done()
    return PinConfig(floor)


def parse_revocation(t: _Table) -> RevocationConfig:
    """[revocation] interval_s, max_age_s, stale_policy."""
    interval = t.number("interval_s", 86400.0, 0.0, 30 * 86400.0)
    max_age = t.number("max_age_s", 172800.0, 0.0, 365 * 86400.0)
    policy = t.choice("stale_policy", "allow_with_warning", ("allow_with_warning", "deny"))
    t.done()
    return RevocationConfig(interval, max_age,
                            "deny" if policy == "deny" else "allow_with_warning")


def check_private(t: _Table, source: Path | None) -> None:
    """Inline secrets need a config file that only its owner may read."""
    if source is None:
        return
    try:
        mode = source.stat().st_mode
    except OSError:
        return
    if mode & 0o077:
        t.fail("", f"holds an inline access key or PIN but {source} has mode "
                   f"{stat.S_IMODE(mode):04o}; chmod 600 it or use *_file keys")
