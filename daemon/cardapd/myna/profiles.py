"""The vendor profile table (profiles.toml): chip quirks looked up by CPLC, ATR as fallback."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal, cast

from cardapd.errors import ConfigError
from cardapd.myna.cplc import Cplc

GetStatusForm = Literal["tlv", "legacy"]
EofStyle = Literal["6282", "6C"]


@dataclass(frozen=True)
class Profile:
    """One chip vendor's behaviour, as data."""

    name: str
    ic_fabricator: str | None  # 4 upper-case hex digits
    atrs: tuple[bytes, ...]
    max_command_data: int
    get_status_form: GetStatusForm
    read_binary_eof: EofStyle | None  # informational: read_binary handles both
    extended_area_size: int | None

    @property
    def known(self) -> bool:
        """False for the fallback `unknown` profile."""
        return self.ic_fabricator is not None


@dataclass(frozen=True)
class ProfileTable:
    """All known profiles plus the fallback."""

    profiles: tuple[Profile, ...]
    unknown: Profile

    def by_name(self, name: str) -> Profile:
        """The profile called `name` (`unknown` included); KeyError otherwise."""
        for p in (*self.profiles, self.unknown):
            if p.name == name:
                return p
        raise KeyError(name)

    def lookup(self, cplc: Cplc | None, atr: bytes) -> Profile:
        """CPLC IC fabricator first, then a known ATR, else the `unknown` profile."""
        if cplc is not None:
            for p in self.profiles:
                if p.ic_fabricator == cplc.fabricator_hex:
                    return p
        for p in self.profiles:
            if bytes(atr) in p.atrs:
                return p
        return self.unknown


def _profile(raw: dict[str, Any], fallback: bool) -> Profile:
    """Build and validate one profile from its TOML table."""
    try:
        name = str(raw["name"])
        form = raw["get_status_form"]
        eof = raw.get("read_binary_eof")
        mcd = int(raw["max_command_data"])
        fab = None if fallback else str(raw["ic_fabricator"]).upper()
        if form not in ("tlv", "legacy") or eof not in ("6282", "6C", None):
            raise ValueError("get_status_form or read_binary_eof has an unknown value")
        if not 1 <= mcd <= 255 or (fab is not None and len(bytes.fromhex(fab)) != 2):
            raise ValueError("max_command_data or ic_fabricator out of range")
        area = raw.get("extended_area_size")
        return Profile(
            name=name, ic_fabricator=fab,
            atrs=tuple(bytes.fromhex(a) for a in raw.get("atrs", [])),
            max_command_data=mcd, get_status_form=cast(GetStatusForm, form),
            read_binary_eof=cast(EofStyle | None, eof),
            extended_area_size=None if area is None else int(area),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"profiles.toml: profile {raw.get('name')!r}: {exc}") from None


def parse_profiles(text: str) -> ProfileTable:
    """Parse a profile table from TOML text; ConfigError when invalid."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"profiles.toml: {exc}") from None
    table = ProfileTable(tuple(_profile(p, False) for p in doc.get("profile", [])),
                         _profile(doc.get("unknown", {}), True))
    names = [p.name for p in (*table.profiles, table.unknown)]
    fabs = [p.ic_fabricator for p in table.profiles]
    if len(set(names)) != len(names) or len(set(fabs)) != len(fabs):
        raise ConfigError("profiles.toml: duplicate profile name or IC fabricator")
    return table


@cache
def load_profiles() -> ProfileTable:
    """The packaged profile table (read once)."""
    text = resources.files("cardapd.myna").joinpath("profiles.toml").read_text("utf-8")
    return parse_profiles(text)


def profile_for(cplc: Cplc | None, atr: bytes) -> Profile:
    """The profile of a card: CPLC IC fabricator first, ATR as fallback, else `unknown`."""
    return load_profiles().lookup(cplc, atr)
