"""GET STATUS answers: registry entries in the TLV (`E3`) or legacy form, and the FF21 areas."""

from __future__ import annotations

from cardlib.tlv import encode_tlv

from .areas import LoadFile
from .loaded import GpInstance

SCOPE_ISD = 0x80
SCOPE_APPS = 0x40
SCOPE_LOAD_FILES = 0x20
SCOPE_LOAD_FILES_AND_MODULES = 0x10
LC_CARD_SECURED = 0x0F
LC_SD_PERSONALISED = 0x0F
ISD_PRIVILEGES = bytes.fromhex("9EFE80")
SD_PRIVILEGES = bytes.fromhex("800000")
APP_PRIVILEGES = bytes.fromhex("000000")
MAX_STATUS_DATA = 224  # plain bytes per answer: fits 256 once R-ENC padded and R-MAC'd


def entry(aid: bytes, lifecycle: int, privileges: bytes | None, *, tlv: bool,
          load_file: bytes | None = None, sd: bytes | None = None,
          modules: tuple[bytes, ...] | None = None) -> bytes:
    """One registry entry; `modules` is given only for P1 10 answers."""
    if not tlv:
        out = bytes((len(aid),)) + aid + bytes((lifecycle, (privileges or b"\x00")[0]))
        if modules is not None:
            out += bytes((len(modules),)) + b"".join(bytes((len(m),)) + m for m in modules)
        return out
    inner = encode_tlv(0x4F, aid) + encode_tlv(0x9F70, bytes((lifecycle,)))
    if privileges is not None:
        inner += encode_tlv(0xC5, privileges)
    if load_file is not None:
        inner += encode_tlv(0xC4, load_file)
    if sd is not None:
        inner += encode_tlv(0xCC, sd)
    for m in modules or ():
        inner += encode_tlv(0x84, m)
    return encode_tlv(0xE3, inner)


def instance_entry(inst: GpInstance, isd_aid: bytes, *, tlv: bool) -> bytes:
    """An application entry: life cycle, no privileges, its load file and area."""
    return entry(inst.aid, inst.gp.lifecycle, APP_PRIVILEGES, tlv=tlv,
                 load_file=inst.gp.load_file, sd=inst.gp.area or isd_aid)


def load_file_entry(lf: LoadFile, modules: tuple[bytes, ...] | None, *, tlv: bool) -> bytes:
    """A load file entry (`01` LOADED, `00` half-loaded); complete files list the modules."""
    return entry(lf.aid, lf.lifecycle, None, tlv=tlv, sd=lf.area,
                 modules=None if modules is None else (modules if lf.complete else ()))


def area_entry(aid: bytes, isd_aid: bytes, *, tlv: bool) -> bytes:
    """An area: a security domain, personalised, associated with the ISD."""
    return entry(aid, LC_SD_PERSONALISED, SD_PRIVILEGES, tlv=tlv, sd=isd_aid)


def areas_ff21(usage: list[tuple[bytes, int, int]]) -> bytes:
    """`FF 21 L` then per area `4F aid` `81 04 capacity` `82 04 used` (extended first)."""
    inner = b"".join(encode_tlv(0x4F, aid) + encode_tlv(0x81, cap.to_bytes(4, "big"))
                     + encode_tlv(0x82, used.to_bytes(4, "big")) for aid, cap, used in usage)
    # encoded by hand: the shared TLV codec treats a leading FF as padding, not a tag
    return b"\xFF\x21" + bytes((len(inner),)) + inner


def split_answers(entries: list[bytes]) -> tuple[bytes, list[bytes]]:
    """The entries that fit one answer, and the rest for `get next`."""
    out = b""
    for n, e in enumerate(entries):
        if out and len(out) + len(e) > MAX_STATUS_DATA:
            return out, entries[n:]
        out += e
    return out, []

