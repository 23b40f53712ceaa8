"""GET STATUS: command builder, parsers for the TLV and legacy forms, and the `6310` loop."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from cardlib.apdu import (
    SW_GP_MORE_DATA,
    SW_OK,
    SW_REF_DATA_NOT_FOUND,
    CommandApdu,
    ResponseApdu,
)
from cardlib.errors import CardProtocolError, StatusWordError
from cardlib.tlv import Tlv, parse_all

MIN_AID = 5
MAX_AID = 16
MAX_GET_STATUS_ROUNDS = 64  # 64 x 256 bytes: far above what a card registry holds

TAG_REGISTRY_ENTRY = 0xE3
TAG_AID = 0x4F
TAG_LIFECYCLE = 0x9F70
TAG_PRIVILEGES = 0xC5
TAG_LOAD_FILE = 0xC4
TAG_ASSOCIATED_SD = 0xCC
TAG_MODULE = 0x84
TAG_VERSION = 0xCE


class Scope(enum.IntEnum):
    """GET STATUS P1: which part of the registry to list."""

    ISD = 0x80
    APPLICATIONS = 0x40  # applications and security domains
    LOAD_FILES = 0x20
    LOAD_FILES_AND_MODULES = 0x10


class EntryKind(enum.Enum):
    """What a registry entry is."""

    ISD = "isd"
    SECURITY_DOMAIN = "security_domain"
    APPLICATION = "application"
    LOAD_FILE = "load_file"


CARD_LIFECYCLE = {0x01: "OP_READY", 0x07: "INITIALIZED", 0x0F: "SECURED",
                  0x7F: "CARD_LOCKED", 0xFF: "TERMINATED"}


def lifecycle_name(kind: EntryKind, value: int) -> str:
    """Human name of a life cycle byte (GP Card Spec 11.1.1); unknown codings keep their hex."""
    if kind is EntryKind.ISD:
        return CARD_LIFECYCLE.get(value, f"UNKNOWN_{value:02X}")
    if kind is EntryKind.LOAD_FILE:
        return "LOADED" if value == 0x01 else f"UNKNOWN_{value:02X}"
    if value & 0x80 and value & 0x03 == 0x03:
        return "LOCKED"
    if value == 0x03:
        return "INSTALLED"
    if value == 0x07:
        return "SELECTABLE"
    if value == 0x0F and kind is EntryKind.SECURITY_DOMAIN:
        return "PERSONALIZED"
    if value & 0x07 == 0x07:
        return f"APPLICATION_SPECIFIC_{value:02X}"
    return f"UNKNOWN_{value:02X}"


@dataclass(frozen=True)
class RegistryEntry:
    """One GP registry entry, typed; `privileges` is 1 byte (legacy) or 3 bytes (TLV)."""

    aid: bytes
    lifecycle: int
    privileges: bytes
    kind: EntryKind
    modules: tuple[bytes, ...] = ()
    associated_sd: bytes | None = None
    load_file: bytes | None = None
    version: bytes | None = None

    @property
    def state(self) -> str:
        """The life cycle state name (SELECTABLE, LOADED, SECURED, ...)."""
        return lifecycle_name(self.kind, self.lifecycle)

    @property
    def is_security_domain(self) -> bool:
        """True when the first privilege byte has the Security Domain bit (80)."""
        return bool(self.privileges and self.privileges[0] & 0x80)


def get_status(scope: Scope, *, tlv: bool = True, next_: bool = False,
               aid_prefix: bytes = b"") -> CommandApdu:
    """GET STATUS `80 F2 P1 P2 Lc 4F len prefix 00` (P2 02 TLV / 00 legacy, +01 get next)."""
    if len(aid_prefix) > MAX_AID:
        raise ValueError("AID prefix longer than 16 bytes")
    p2 = (0x02 if tlv else 0x00) | (0x01 if next_ else 0x00)
    return CommandApdu(0x80, 0xF2, int(scope), p2,
                       bytes((TAG_AID, len(aid_prefix))) + aid_prefix, le=256)


def _kind(scope: Scope, privileges: bytes) -> EntryKind:
    """Entry kind from the scope asked and the Security Domain privilege."""
    if scope is Scope.ISD:
        return EntryKind.ISD
    if scope in (Scope.LOAD_FILES, Scope.LOAD_FILES_AND_MODULES):
        return EntryKind.LOAD_FILE
    return (EntryKind.SECURITY_DOMAIN if privileges and privileges[0] & 0x80
            else EntryKind.APPLICATION)


def _aid(value: bytes, what: str) -> bytes:
    """Validate an AID from the card (5-16 bytes)."""
    if not MIN_AID <= len(value) <= MAX_AID:
        raise CardProtocolError(f"{what} of {len(value)} bytes (AIDs are 5-16 bytes)")
    return bytes(value)


def _single(tlvs: list[Tlv], tag: int, *, required: bool) -> bytes | None:
    """The value of the only TLV with `tag`; a duplicate, or a missing required one, is an error."""
    found = [t.value for t in tlvs if t.tag == tag]
    if len(found) > 1:
        raise CardProtocolError(f"registry entry repeats tag {tag:X}")
    if not found:
        if required:
            raise CardProtocolError(f"registry entry lacks tag {tag:X}")
        return None
    return found[0]


def _parse_tlv_entry(scope: Scope, template: Tlv) -> RegistryEntry:
    """Parse one `E3` template."""
    if template.tag != TAG_REGISTRY_ENTRY:
        raise CardProtocolError(f"GET STATUS TLV response holds tag {template.tag:X}, not E3")
    tlvs = template.children()
    aid = _aid(_single(tlvs, TAG_AID, required=True) or b"", "registry AID")
    lifecycle = _single(tlvs, TAG_LIFECYCLE, required=True) or b""
    if len(lifecycle) != 1:
        raise CardProtocolError(f"life cycle of {len(lifecycle)} bytes, expected 1")
    privileges = _single(tlvs, TAG_PRIVILEGES, required=False) or b""
    if len(privileges) not in (0, 1, 3):
        raise CardProtocolError(f"privileges of {len(privileges)} bytes, expected 1 or 3")
    sd = _single(tlvs, TAG_ASSOCIATED_SD, required=False)
    load_file = _single(tlvs, TAG_LOAD_FILE, required=False)
    modules = tuple(_aid(t.value, "module AID") for t in tlvs if t.tag == TAG_MODULE)
    if modules and scope is not Scope.LOAD_FILES_AND_MODULES:
        raise CardProtocolError("module AIDs outside a P1 10 GET STATUS answer")
    return RegistryEntry(
        aid=aid, lifecycle=lifecycle[0], privileges=bytes(privileges),
        kind=_kind(scope, privileges), modules=modules,
        associated_sd=None if sd is None else _aid(sd, "associated SD AID"),
        load_file=None if load_file is None else _aid(load_file, "load file AID"),
        version=_single(tlvs, TAG_VERSION, required=False))


def parse_tlv(scope: Scope, data: bytes) -> list[RegistryEntry]:
    """Parse a P2 02 answer: a sequence of `E3` templates."""
    return [_parse_tlv_entry(scope, t) for t in parse_all(data)]


def parse_legacy(scope: Scope, data: bytes) -> list[RegistryEntry]:
    """Parse a P2 00 answer: [len AID lifecycle privileges [count (len module)...]]..."""
    out: list[RegistryEntry] = []
    pos = 0

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        if pos + n > len(data):
            raise CardProtocolError(f"GET STATUS legacy answer truncated in {what}")
        chunk = data[pos:pos + n]
        pos += n
        return bytes(chunk)

    while pos < len(data):
        aid = _aid(take(take(1, "AID length")[0], "AID"), "registry AID")
        lifecycle, privileges = take(2, "life cycle and privileges")
        modules: list[bytes] = []
        if scope is Scope.LOAD_FILES_AND_MODULES:
            for _ in range(take(1, "module count")[0]):
                modules.append(_aid(take(take(1, "module AID length")[0], "module AID"),
                                    "module AID"))
        priv = bytes((privileges,))
        out.append(RegistryEntry(aid=aid, lifecycle=lifecycle, privileges=priv,
                                 kind=_kind(scope, priv), modules=tuple(modules)))
    return out


def parse_get_status(scope: Scope, data: bytes, *, tlv: bool) -> list[RegistryEntry]:
    """Parse GET STATUS data in the form asked for; only CardProtocolError escapes."""
    return parse_tlv(scope, data) if tlv else parse_legacy(scope, data)


def read_registry(send: Callable[[CommandApdu], ResponseApdu], scope: Scope, *,
                  tlv: bool = True, aid_prefix: bytes = b"") -> list[RegistryEntry]:
    """Run GET STATUS to the end: follow `6310` with "get next", `6A88` means an empty list."""
    entries: list[RegistryEntry] = []
    for rounds in range(MAX_GET_STATUS_ROUNDS):
        resp = send(get_status(scope, tlv=tlv, next_=rounds > 0, aid_prefix=aid_prefix))
        if resp.sw == SW_REF_DATA_NOT_FOUND and rounds == 0:
            return []
        if resp.sw not in (SW_OK, SW_GP_MORE_DATA):
            raise StatusWordError(resp.sw, f"GET STATUS P1={int(scope):02X}")
        entries += parse_get_status(scope, resp.data, tlv=tlv)
        if resp.sw == SW_OK:
            return entries
        if not resp.data:
            raise CardProtocolError("GET STATUS answered 6310 with no data")
    raise CardProtocolError(f"GET STATUS still answered 6310 after {MAX_GET_STATUS_ROUNDS} rounds")
