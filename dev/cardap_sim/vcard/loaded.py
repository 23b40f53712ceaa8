"""Loaded instances under GlobalPlatform: registry data, life cycle, personalisation by DGI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from cardlib.errors import CardProtocolError
from cardlib.tlv import parse_all

from . import apdu
from .apdu import SwError
from .applet import LoadedApplet

LC_SELECTABLE = 0x07
LC_PERSONALISED = 0x0F  # application-specific state: STORE DATA completed

DGI_USER_DATA = 0x0101  # user ID and info fields, TLV C1/C2/C3...
DGI_ACCESS_KEY = 0x8101  # AP access key (16 or 32 bytes), encrypted under the DEK
DGI_PIN = 0x8102  # AP PIN (ASCII 4-16), encrypted under the DEK
DGI_PIN_TRY_LIMIT = 0x0103  # 1 byte, 1..15
USER_ID_LENGTH = 13
TAG_USER_ID = 0xC1


@dataclass
class GpInfo:
    """What the registry knows of an instance: load file, module, area, life cycle."""

    load_file: bytes | None = None  # None: pre-issued (no load file on the card)
    module: bytes | None = None
    area: bytes | None = None
    lifecycle: int = LC_PERSONALISED

    def to_json(self) -> dict[str, Any]:
        """The GP part of an `aps` entry (none for a pre-issued instance: the issue-1 format)."""
        if self == GpInfo():
            return {}
        return {"load_file": _hex(self.load_file), "module": _hex(self.module),
                "area": _hex(self.area), "lifecycle": self.lifecycle}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GpInfo:
        """Inverse of to_json; entries without GP data are pre-issued and personalised."""
        return cls(load_file=_unhex(d.get("load_file")), module=_unhex(d.get("module")),
                   area=_unhex(d.get("area")), lifecycle=int(d.get("lifecycle", LC_PERSONALISED)))


def _hex(b: bytes | None) -> str | None:
    return None if b is None else b.hex().upper()


def _unhex(s: object) -> bytes | None:
    return None if s is None else bytes.fromhex(str(s))


class GpInstance(LoadedApplet):
    """A loaded instance: SELECTABLE after INSTALL, PERSONALISED after the last STORE DATA."""

    module_aid: ClassVar[bytes] = b""
    install_type: ClassVar[int] = 0  # the `C9 01 <type>` byte of INSTALL [for install]
    gp: GpInfo

    @property
    def personalised(self) -> bool:
        """True once STORE DATA completed (READ commands answer 6985 before)."""
        return self.gp.lifecycle == LC_PERSONALISED

    def require_personalised(self) -> None:
        """6985 until the instance is personalised."""
        if not self.personalised:
            raise SwError(apdu.SW_CONDITIONS_NOT_SATISFIED)

    def personalise(self, dgis: dict[int, bytes]) -> None:
        """Apply decrypted DGIs (SwError 6A80 when they do not fit the type); then PERSONALISED."""
        raise NotImplementedError


def require_only(dgis: dict[int, bytes], allowed: set[int], required: set[int]) -> None:
    """6A80 unless every DGI is allowed for the type and the required ones are present."""
    if not set(dgis) <= allowed or not required <= set(dgis):
        raise SwError(apdu.SW_WRONG_DATA)


def parse_user_data(value: bytes, info_tags: tuple[int, ...],
                    max_info: int) -> tuple[str, tuple[bytes, ...]]:
    """DGI 0101: `C1 0D <user ID>` then one TLV per info tag in order (each ≤ max_info bytes)."""
    try:
        tlvs = parse_all(value)
    except (CardProtocolError, ValueError):
        raise SwError(apdu.SW_WRONG_DATA) from None
    tags = tuple(t.tag for t in tlvs)
    if tags != (TAG_USER_ID, *info_tags):
        raise SwError(apdu.SW_WRONG_DATA)
    uid = tlvs[0].value
    if len(uid) != USER_ID_LENGTH or not all(0x21 <= c <= 0x7E for c in uid):
        raise SwError(apdu.SW_WRONG_DATA)
    infos = tuple(bytes(t.value) for t in tlvs[1:])
    if any(len(i) > max_info for i in infos):
        raise SwError(apdu.SW_WRONG_DATA)
    return uid.decode("ascii"), infos
