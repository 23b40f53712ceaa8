"""The AP catalogue: APs, per-vendor images, areas, and which organisation may load which AP.

Data, not code: a deployment gives a TOML or JSON file (`load_catalogue`); without one the
built-in dev catalogue (`dev_catalogue`) is used. Secrets (access keys, PINs) are *not*
here: an AP names its access key by reference and the key store holds the value.
"""

from __future__ import annotations

import enum
import hashlib
import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AREA_SD_AIDS = {
    "extended": bytes.fromhex("A0000001514558 54".replace(" ", "")),
    "regional": bytes.fromhex("A000000151524547"),
}
PROFILES = ("vendor-a", "vendor-b")


class ApType(enum.Enum):
    """The AP types of the standard (A, C, D) and custom."""

    A = "A"
    C = "C"
    D = "D"
    CUSTOM = "custom"

    @property
    def module_aid(self) -> bytes:
        """The module AID that gives an instance this behaviour (docs/card-model.md)."""
        return bytes.fromhex("D392F0004F") + bytes((self.install_code,))

    @property
    def install_code(self) -> int:
        """The `C9 01 <type>` code in INSTALL [for install]."""
        return {"A": 0x41, "C": 0x43, "D": 0x44, "custom": 0x58}[self.value]

    @property
    def needs_access_key(self) -> bool:
        """Types A and D need an AP access key and PIN written at personalisation."""
        return self in (ApType.A, ApType.D)


class CatalogueError(ValueError):
    """The catalogue file is invalid (names the entry and the problem)."""


@dataclass(frozen=True)
class CatalogueAp:
    """One AP the service can load."""

    ap_id: str
    display_name: str
    type: ApType
    instance_aid: bytes
    load_file_aid: bytes
    module_aid: bytes
    area: str
    image_bytes: Mapping[str, int]
    info: tuple[bytes, ...] = ()
    access_key_ref: str = ""
    pin_try_limit: int = 3
    image_seed: str = ""

    @property
    def sd_aid(self) -> bytes:
        """AID of the area (security domain) the load file goes to."""
        return AREA_SD_AIDS[self.area]

    def image(self, profile: str) -> bytes:
        """The vendor's image: deterministic pseudo-random bytes of the catalogued size."""
        size = self.image_bytes.get(profile)
        if size is None:
            raise KeyError(f"AP {self.ap_id} has no image for profile {profile}")
        seed = f"cardap-image/{self.image_seed or self.ap_id}/{profile}".encode()
        return hashlib.shake_256(seed).digest(size)


@dataclass(frozen=True)
class Organisation:
    """A loading organisation and the APs its operators may load."""

    org_id: str
    name: str
    may_load: frozenset[str]
    municipality: bool = False


@dataclass
class Catalogue:
    """All APs and organisations of a deployment, and the terminals shared by several
    organisations (terminal id → the organisations it may act for besides the one in its
    certificate)."""

    aps: dict[str, CatalogueAp] = field(default_factory=dict)
    organisations: dict[str, Organisation] = field(default_factory=dict)
    terminals: dict[str, frozenset[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check references and uniqueness; CatalogueError names the first problem."""
        seen: dict[bytes, str] = {}
        for ap in self.aps.values():
            for aid in (ap.instance_aid, ap.load_file_aid):
                other = seen.setdefault(aid, ap.ap_id)
                if other != ap.ap_id:
                    raise CatalogueError(f"AID {aid.hex().upper()} used by {other} and "
                                         f"{ap.ap_id}")
            if ap.type.needs_access_key and not ap.access_key_ref:
                raise CatalogueError(f"AP {ap.ap_id}: type {ap.type.value} needs access_key_ref")
        for terminal, orgs in self.terminals.items():
            for org_id in orgs:
                if org_id not in self.organisations:
                    raise CatalogueError(f"terminal {terminal} may act for unknown "
                                         f"organisation {org_id}")
        for org in self.organisations.values():
            for ap_id in org.may_load:
                if ap_id not in self.aps:
                    raise CatalogueError(f"organisation {org.org_id} may load unknown AP {ap_id}")
                if self.aps[ap_id].area == "regional" and not org.municipality:
                    raise CatalogueError(f"organisation {org.org_id} is not a municipality and "
                                         f"cannot load the regional AP {ap_id}")

    def may_act_for(self, terminal_id: str, certificate_org: str, organisation: str) -> bool:
        """Whether terminal `terminal_id` (certificate O `certificate_org`) may act for
        `organisation`: its own, or one the deployment lets it serve (shared use)."""
        return organisation == certificate_org or \
            organisation in self.terminals.get(terminal_id, frozenset())

    def permitted(self, organisation: str, ap_id: str) -> bool:
        """Whether `organisation` may load (and delete) `ap_id`."""
        org = self.organisations.get(organisation)
        return org is not None and ap_id in org.may_load and ap_id in self.aps

    def for_organisation(self, organisation: str) -> list[CatalogueAp]:
        """The APs `organisation` may load, in catalogue order (none for an unknown one)."""
        org = self.organisations.get(organisation)
        if org is None:
            return []
        return [ap for ap_id, ap in self.aps.items() if ap_id in org.may_load]

    def by_instance_aid(self, aid: bytes) -> CatalogueAp | None:
        """The AP that installs instance `aid`."""
        return next((ap for ap in self.aps.values() if ap.instance_aid == aid), None)


def _hex(d: Mapping[str, Any], key: str, where: str, *, default: bytes | None = None) -> bytes:
    """A hex AID field, 5-16 bytes."""
    raw = d.get(key)
    if raw is None:
        if default is None:
            raise CatalogueError(f"{where}: missing {key}")
        return default
    try:
        value = bytes.fromhex(str(raw))
    except ValueError:
        raise CatalogueError(f"{where}: {key} is not hex") from None
    if not 5 <= len(value) <= 16:
        raise CatalogueError(f"{where}: {key} must be 5-16 bytes")
    return value


def _ap_from(d: Mapping[str, Any]) -> CatalogueAp:
    """One `[[ap]]` table."""
    ap_id = str(d.get("id", ""))
    where = f"ap {ap_id or '?'}"
    if not ap_id:
        raise CatalogueError("an AP without id")
    try:
        ap_type = ApType(str(d.get("type", "")))
    except ValueError:
        raise CatalogueError(f"{where}: type must be A, C, D or custom") from None
    area = str(d.get("area", "extended"))
    if area not in AREA_SD_AIDS:
        raise CatalogueError(f"{where}: area must be extended or regional")
    sizes = d.get("image_bytes", {})
    if not isinstance(sizes, dict) or not sizes:
        raise CatalogueError(f"{where}: image_bytes must map profiles to sizes")
    image_bytes: dict[str, int] = {}
    for prof, size in sizes.items():
        if not isinstance(size, int) or not 1 <= size <= 65535:
            raise CatalogueError(f"{where}: image size for {prof} must be 1..65535")
        image_bytes[str(prof)] = size
    info = tuple(bytes.fromhex(str(x)) for x in d.get("info", []))
    return CatalogueAp(
        ap_id=ap_id, display_name=str(d.get("display_name", ap_id)), type=ap_type,
        instance_aid=_hex(d, "instance_aid", where),
        load_file_aid=_hex(d, "load_file_aid", where),
        module_aid=_hex(d, "module_aid", where, default=ap_type.module_aid),
        area=area, image_bytes=image_bytes, info=info,
        access_key_ref=str(d.get("access_key_ref", "")),
        pin_try_limit=int(d.get("pin_try_limit", 3)), image_seed=str(d.get("image_seed", "")))


def catalogue_from_dict(data: Mapping[str, Any]) -> Catalogue:
    """Build a catalogue from the parsed file (keys `ap` and `organisation`, lists of tables)."""
    aps: dict[str, CatalogueAp] = {}
    for d in data.get("ap", []):
        ap = _ap_from(d)
        if ap.ap_id in aps:
            raise CatalogueError(f"duplicate AP id {ap.ap_id}")
        aps[ap.ap_id] = ap
    orgs: dict[str, Organisation] = {}
    for d in data.get("organisation", []):
        org_id = str(d.get("id", ""))
        if not org_id or org_id in orgs:
            raise CatalogueError(f"organisation id missing or duplicated: {org_id!r}")
        orgs[org_id] = Organisation(org_id, str(d.get("name", org_id)),
                                    frozenset(str(x) for x in d.get("may_load", [])),
                                    bool(d.get("municipality", False)))
    terminals: dict[str, frozenset[str]] = {}
    for d in data.get("terminal", []):
        terminal_id = str(d.get("id", ""))
        if not terminal_id or terminal_id in terminals:
            raise CatalogueError(f"terminal id missing or duplicated: {terminal_id!r}")
        terminals[terminal_id] = frozenset(str(x) for x in d.get("organisations", []))
    return Catalogue(aps, orgs, terminals)


def load_catalogue(path: Path) -> Catalogue:
    """Read a `.toml` or `.json` catalogue file."""
    text = path.read_bytes()
    try:
        data = (json.loads(text) if path.suffix == ".json"
                else tomllib.loads(text.decode("utf-8")))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CatalogueError(f"{path}: {exc}") from None
    return catalogue_from_dict(data)


def make_ap(ap_id: str, ap_type: ApType, instance_aid: str, load_file_aid: str, *,
            sizes: Mapping[str, int], area: str = "extended", info: Iterable[bytes] = (),
            access_key_ref: str = "", display_name: str = "") -> CatalogueAp:
    """Convenience constructor for code and tests."""
    return CatalogueAp(ap_id=ap_id, display_name=display_name or ap_id, type=ap_type,
                       instance_aid=bytes.fromhex(instance_aid),
                       load_file_aid=bytes.fromhex(load_file_aid),
                       module_aid=ap_type.module_aid, area=area, image_bytes=dict(sizes),
                       info=tuple(info), access_key_ref=access_key_ref)


def dev_catalogue() -> Catalogue:
    """The built-in development catalogue (org-a, org-b and a municipality); terminal
    kiosk-01 is a counter shared by org-a and org-b (not the municipality)."""
    aps = [
        make_ap("org-a-staff-c", ApType.C, "D392F000430A0001", "D392F0004C0A0001",
                sizes={"vendor-a": 2048, "vendor-b": 2304}, display_name="Org A staff ID",
                info=(b"\x00\x00\x00\x01", b"\x00\x00\x00\x02", b"\x00\x00\x00\x03")),
        make_ap("org-a-cert-a", ApType.A, "D392F000410A0002", "D392F0004C0A0002",
                sizes={"vendor-a": 8192, "vendor-b": 8704}, display_name="Org A certificates",
                access_key_ref="org-a/org-a-cert-a", info=(b"ORG-A", b"CERT")),
        make_ap("org-a-records-d", ApType.D, "D392F000440A0003", "D392F0004C0A0003",
                sizes={"vendor-a": 6144, "vendor-b": 6656}, display_name="Org A records",
                access_key_ref="org-a/org-a-records-d", info=(b"ORG-A", b"RECORDS")),
        make_ap("org-a-custom", ApType.CUSTOM, "D392F000580A0004", "D392F0004C0A0004",
                sizes={"vendor-a": 4096, "vendor-b": 4096}, display_name="Org A own AP"),
        make_ap("org-b-door-c", ApType.C, "D392F000430B0001", "D392F0004C0B0001",
                sizes={"vendor-a": 3072, "vendor-b": 3328}, display_name="Org B door",
                info=(b"\x00\x00\x00\x00",) * 3),
        make_ap("city-resident-c", ApType.C, "D392F000431C0001", "D392F0004C1C0001",
                sizes={"vendor-a": 2048, "vendor-b": 2048}, area="regional",
                display_name="City resident card", info=(b"\x00\x00\x00\x00",) * 3),
    ]
    orgs = [
        Organisation("org-a", "Org A", frozenset({"org-a-staff-c", "org-a-cert-a",
                                                 "org-a-records-d", "org-a-custom"})),
        Organisation("org-b", "Org B", frozenset({"org-b-door-c"})),
        Organisation("city", "A municipality", frozenset({"city-resident-c"}),
                     municipality=True),
    ]
    return Catalogue({ap.ap_id: ap for ap in aps}, {o.org_id: o for o in orgs},
                     {"kiosk-01": frozenset({"org-a", "org-b"})})
