"""Card content management behind the ISD: INSTALL, LOAD, DELETE, STORE DATA, GET STATUS."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from cardlib.errors import CardProtocolError
from cardlib.gp.primitives import aes_cbc_decrypt, unpad80
from cardlib.tlv import parse_all, parse_single

from . import apdu
from .apdu import Command, SwError
from .applet import Applet, LoadedApplet, Reply
from .areas import AREA_NAMES, EXTENDED_AREA_AID, LoadFile
from .faults import Faults
from .gp_status import (
    ISD_PRIVILEGES,
    LC_CARD_SECURED,
    SCOPE_APPS,
    SCOPE_ISD,
    SCOPE_LOAD_FILES,
    SCOPE_LOAD_FILES_AND_MODULES,
    area_entry,
    entry,
    instance_entry,
    load_file_entry,
    split_answers,
)
from .instances import MODULES, new_instance
from .loaded import LC_SELECTABLE, GpInfo, GpInstance
from .profiles import Profile
from .state import CardState

INS_INSTALL = 0xE6
INS_LOAD = 0xE8
INS_DELETE = 0xE4
INS_STORE_DATA = 0xE2
INS_GET_STATUS = 0xF2
CONTENT_INS = frozenset({INS_INSTALL, INS_LOAD, INS_DELETE, INS_STORE_DATA, INS_GET_STATUS})
INSTALL_FOR_LOAD = 0x02
INSTALL_FOR_INSTALL = 0x0C
INSTALL_FOR_PERSONALIZATION = 0x20
SW_ALREADY_EXISTS = 0x6A89
SW_MORE_DATA = 0x6310
DONE = Reply(b"\x00")  # GP: INSTALL/LOAD/DELETE answer one `00` byte when nothing else


class CardServices(Protocol):
    """What the ISD needs from the card: state, applets, faults, install/delete, persistence."""

    @property
    def profile(self) -> Profile:
        """The vendor profile."""
        ...

    @property
    def state(self) -> CardState:
        """The persistent state."""
        ...

    applets: dict[bytes, Applet]
    faults: Faults

    @property
    def contactless(self) -> bool:
        """Presented through a contactless reader (no CPLC answer: docs/card-model.md)."""
        ...

    def install(self, applet: LoadedApplet) -> None:
        """Add and persist an instance."""
        ...

    def delete(self, aid: bytes, *, persist: bool = True) -> None:
        """Remove an instance."""
        ...

    def save(self) -> None:
        """Write the card file."""
        ...


@dataclass
class _Store:
    """A STORE DATA sequence in progress (volatile)."""

    target: GpInstance
    block: int = 0
    encrypted: bool | None = None
    buffer: bytearray = field(default_factory=bytearray)


def _aid(value: bytes) -> bytes:
    """6A80 unless 5-16 bytes."""
    if not 5 <= len(value) <= 16:
        raise SwError(apdu.SW_WRONG_DATA)
    return value


def lv_fields(data: bytes, count: int) -> list[bytes]:
    """INSTALL data: exactly `count` length-value fields (6A80 otherwise)."""
    out: list[bytes] = []
    pos = 0
    for _ in range(count):
        if pos >= len(data) or pos + 1 + data[pos] > len(data):
            raise SwError(apdu.SW_WRONG_DATA)
        out.append(bytes(data[pos + 1:pos + 1 + data[pos]]))
        pos += 1 + data[pos]
    if pos != len(data):
        raise SwError(apdu.SW_WRONG_DATA)
    return out


def parse_dgis(data: bytes) -> list[tuple[int, bytes]]:
    """DGIs: 2-byte tag, length (1 byte, or FF + 2 bytes), value; 6A80 when malformed."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        if pos + 3 > len(data):
            raise SwError(apdu.SW_WRONG_DATA)
        tag, length, pos = int.from_bytes(data[pos:pos + 2], "big"), data[pos + 2], pos + 3
        if length == 0xFF:
            if pos + 2 > len(data):
                raise SwError(apdu.SW_WRONG_DATA)
            length, pos = int.from_bytes(data[pos:pos + 2], "big"), pos + 2
        if pos + length > len(data):
            raise SwError(apdu.SW_WRONG_DATA)
        out.append((tag, bytes(data[pos:pos + length])))
        pos += length
    return out


class ContentManager:
    """The ISD's content management state machine; persistent changes are saved per APDU."""

    def __init__(self, card: CardServices, isd_aid: bytes) -> None:
        self.card = card
        self.isd_aid = isd_aid
        self.reset()

    def reset(self) -> None:
        """Forget the volatile context (load in progress, STORE DATA target, 6310 rest)."""
        self.loading: LoadFile | None = None
        self.load_buffer = bytearray()
        self.store: _Store | None = None
        self.status_rest: list[bytes] = []
        self.status_key: tuple[int, bool] | None = None

    @property
    def _state(self) -> CardState:
        return self.card.state

    def _taken(self, aid: bytes) -> bool:
        """True when an AP, a load file, an area or the ISD already uses `aid`."""
        return (aid in self.card.applets or aid in AREA_NAMES or aid == self.isd_aid
                or any(lf.aid == aid for lf in self._state.load_files))

    def dispatch(self, cmd: Command) -> Reply:
        """Route an unwrapped content management command."""
        if cmd.ins == INS_INSTALL:
            return self.install(cmd)
        if cmd.ins == INS_LOAD:
            return self.load(cmd)
        if cmd.ins == INS_DELETE:
            return self.delete(cmd)
        if cmd.ins == INS_STORE_DATA:
            return self.store_data(cmd)
        return self.get_status(cmd)

    # --- INSTALL ------------------------------------------------------------------------------

    def install(self, cmd: Command) -> Reply:
        """INSTALL [for load] (02), [for install and make selectable] (0C), [for perso.] (20)."""
        if cmd.p2 != 0x00 or cmd.p1 not in (INSTALL_FOR_LOAD, INSTALL_FOR_INSTALL,
                                             INSTALL_FOR_PERSONALIZATION):
            raise SwError(apdu.SW_WRONG_P1P2)
        if cmd.p1 == INSTALL_FOR_LOAD:
            return self._install_for_load(lv_fields(cmd.data, 5))
        fields = lv_fields(cmd.data, 6)
        if cmd.p1 == INSTALL_FOR_PERSONALIZATION:
            target = self.card.applets.get(_aid(fields[2]))
            if not isinstance(target, GpInstance):
                raise SwError(apdu.SW_REF_NOT_FOUND)
            self.store = _Store(target)
            return DONE
        return self._install_for_install(fields)

    def _install_for_load(self, fields: list[bytes]) -> Reply:
        """Start a load: a half-loaded file (00) is recorded at once, persisted."""
        lf_aid, sd_aid, load_hash, _params, token = fields
        _aid(lf_aid)
        if sd_aid not in AREA_NAMES or load_hash or token:
            raise SwError(apdu.SW_WRONG_DATA)
        if self._taken(lf_aid):
            raise SwError(apdu.SW_CONDITIONS_NOT_SATISFIED)
        lf = LoadFile(lf_aid, sd_aid)
        self._state.load_files.append(lf)
        self.loading, self.load_buffer = lf, bytearray()
        self.card.save()
        return DONE

    def _install_for_install(self, fields: list[bytes]) -> Reply:
        """Create a SELECTABLE instance of the module's type; STORE DATA goes to it next."""
        lf_aid, module, app_aid, privileges, params, _token = fields
        for aid in (lf_aid, module, app_aid):
            _aid(aid)
        lf = next((x for x in self._state.load_files if x.aid == lf_aid), None)
        if lf is None or not lf.complete:
            raise SwError(apdu.SW_REF_NOT_FOUND)
        cls = MODULES.get(module)
        if cls is None or privileges not in (b"\x00", b"\x00\x00\x00"):
            raise SwError(apdu.SW_WRONG_DATA)
        try:
            c9 = [t.value for t in parse_all(params) if t.tag == 0xC9]
        except (CardProtocolError, ValueError):
            raise SwError(apdu.SW_WRONG_DATA) from None
        if c9 != [bytes((cls.install_type,))]:
            raise SwError(apdu.SW_WRONG_DATA)
        if self._taken(app_aid):
            raise SwError(SW_ALREADY_EXISTS)
        inst = new_instance(module, app_aid, GpInfo(lf_aid, module, lf.area, LC_SELECTABLE))
        self.card.install(inst)
        self.store = _Store(inst)
        return DONE

    # --- LOAD ---------------------------------------------------------------------------------

    def load(self, cmd: Command) -> Reply:
        """LOAD block P2 (in order); 6A84 past the area's capacity; LOADED after the last."""
        if cmd.p1 not in (0x00, 0x80):
            raise SwError(apdu.SW_WRONG_P1P2)
        lf = self.loading
        if lf is None or lf not in self._state.load_files:
            raise SwError(apdu.SW_CONDITIONS_NOT_SATISFIED)
        if cmd.p2 != lf.blocks:
            raise SwError(apdu.SW_WRONG_P1P2)
        if not cmd.data:
            raise SwError(apdu.SW_WRONG_DATA)
        full = self.card.faults.full_extended_area and lf.area == EXTENDED_AREA_AID
        if full or (self._state.area_used(lf.area) + len(cmd.data)
                    > self._state.area_capacity(lf.area)):
            raise SwError(apdu.SW_NO_SPACE)
        data = self.load_buffer + cmd.data
        last = cmd.p1 == 0x80
        if last:
            try:
                parse_single(bytes(data), 0xC4)
            except (CardProtocolError, ValueError):
                raise SwError(apdu.SW_WRONG_DATA) from None
        self.load_buffer = data
        lf.size += len(cmd.data)
        lf.blocks += 1
        if last:
            lf.complete = True
            self.loading, self.load_buffer = None, bytearray()
        self.card.save()
        return DONE

    # --- DELETE -------------------------------------------------------------------------------

    def delete(self, cmd: Command) -> Reply:
        """DELETE `4F aid` (P2 80: with related objects); the area's space comes back."""
        if cmd.p1 != 0x00 or cmd.p2 not in (0x00, 0x80):
            raise SwError(apdu.SW_WRONG_P1P2)
        try:
            aid = parse_single(cmd.data, 0x4F).value
        except (CardProtocolError, ValueError):
            raise SwError(apdu.SW_WRONG_DATA) from None
        _aid(aid)
        if aid == self.isd_aid or aid in AREA_NAMES:
            raise SwError(apdu.SW_CONDITIONS_NOT_SATISFIED)
        target = self.card.applets.get(aid)
        if isinstance(target, LoadedApplet):
            self._forget([aid])
            self.card.delete(aid)
            return DONE
        lf = next((x for x in self._state.load_files if x.aid == aid), None)
        if lf is None:
            raise SwError(apdu.SW_REF_NOT_FOUND)
        related = [a.aid for a in self._state.aps
                   if isinstance(a, GpInstance) and a.gp.load_file == aid]
        if related and cmd.p2 != 0x80:
            raise SwError(apdu.SW_CONDITIONS_NOT_SATISFIED)
        self._forget(related)
        for app_aid in related:
            self.card.delete(app_aid, persist=False)
        self._state.load_files.remove(lf)
        if self.loading is lf:
            self.loading, self.load_buffer = None, bytearray()
        self.card.save()
        return DONE

    def _forget(self, aids: list[bytes]) -> None:
        """Drop a STORE DATA target that is being deleted."""
        if self.store is not None and self.store.target.aid in aids:
            self.store = None

    # --- STORE DATA ---------------------------------------------------------------------------

    def store_data(self, cmd: Command) -> Reply:
        """STORE DATA of DGIs to the last installed instance; PERSONALISED after the last block."""
        if cmd.p1 & 0x07 or cmd.p1 & 0x60 == 0x40 or cmd.p1 & 0x18 not in (0x00, 0x08):
            raise SwError(apdu.SW_WRONG_P1P2)
        store = self.store
        if store is None or store.target.aid not in self.card.applets \
                or store.target.personalised:
            raise SwError(apdu.SW_CONDITIONS_NOT_SATISFIED)
        encrypted = bool(cmd.p1 & 0x60)
        if cmd.p2 != store.block or store.encrypted not in (None, encrypted):
            raise SwError(apdu.SW_WRONG_P1P2)
        store.block += 1
        store.encrypted = encrypted
        store.buffer += cmd.data
        if not cmd.p1 & 0x80:
            return Reply()
        self.store = _Store(store.target)  # a failed sequence restarts from block 0
        dgis: dict[int, bytes] = {}
        for tag, value in parse_dgis(bytes(store.buffer)):
            if tag in dgis:
                raise SwError(apdu.SW_WRONG_DATA)
            if tag & 0x8000 and not encrypted:
                raise SwError(apdu.SW_WRONG_DATA)
            dgis[tag] = self._decrypt(value) if tag & 0x8000 else value
        store.target.personalise(dgis)
        self.store = None
        self.card.save()
        return Reply()

    def _decrypt(self, value: bytes) -> bytes:
        """An encrypted DGI value: AES-CBC(static DEK, zero ICV) of pad80(plain)."""
        if not value or len(value) % 16:
            raise SwError(apdu.SW_WRONG_DATA)
        plain = aes_cbc_decrypt(self._state.static_keys.dek, bytes(16), value)
        try:
            return unpad80(plain)
        except CardProtocolError:
            raise SwError(apdu.SW_WRONG_DATA) from None

    # --- GET STATUS ---------------------------------------------------------------------------

    def get_status(self, cmd: Command) -> Reply:
        """GET STATUS P1 80/40/20/10, P2 02 TLV / 00 legacy (+01 next); 6310 when more."""
        tlv = bool(cmd.p2 & 0x02)
        if cmd.p1 not in (SCOPE_ISD, SCOPE_APPS, SCOPE_LOAD_FILES, SCOPE_LOAD_FILES_AND_MODULES) \
                or cmd.p2 & 0xFC or (tlv and not self.card.profile.get_status_tlv):
            raise SwError(apdu.SW_WRONG_P1P2)
        try:
            prefix = parse_single(cmd.data, 0x4F).value
        except (CardProtocolError, ValueError):
            raise SwError(apdu.SW_WRONG_DATA) from None
        if len(prefix) > 16:
            raise SwError(apdu.SW_WRONG_DATA)
        if cmd.p2 & 0x01:
            if self.status_key != (cmd.p1, tlv) or not self.status_rest:
                raise SwError(apdu.SW_CONDITIONS_NOT_SATISFIED)
            entries = self.status_rest
        else:
            entries = self._entries(cmd.p1, tlv, prefix)
            if not entries:
                self.status_rest, self.status_key = [], None
                raise SwError(apdu.SW_REF_NOT_FOUND)
        data, self.status_rest = split_answers(entries)
        self.status_key = (cmd.p1, tlv) if self.status_rest else None
        return Reply(data, SW_MORE_DATA if self.status_rest else apdu.SW_OK)

    def _entries(self, scope: int, tlv: bool, prefix: bytes) -> list[bytes]:
        """Every registry entry of `scope` whose AID starts with `prefix`."""
        out: list[tuple[bytes, bytes]] = []
        if scope == SCOPE_ISD:
            out.append((self.isd_aid, entry(self.isd_aid, LC_CARD_SECURED, ISD_PRIVILEGES,
                                            tlv=tlv)))
        elif scope == SCOPE_APPS:
            out += [(a, area_entry(a, self.isd_aid, tlv=tlv)) for a in AREA_NAMES]
            out += [(a.aid, instance_entry(a, self.isd_aid, tlv=tlv))
                    for a in self._state.aps if isinstance(a, GpInstance)]
        else:
            modules = tuple(MODULES) if scope == SCOPE_LOAD_FILES_AND_MODULES else None
            out += [(lf.aid, load_file_entry(lf, modules, tlv=tlv))
                    for lf in self._state.load_files]
        return [e for aid, e in out if aid.startswith(prefix)]
