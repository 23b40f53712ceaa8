"""Builders for GP card content management commands: INSTALL, LOAD, DELETE, STORE DATA, GET DATA."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cardlib.apdu import CommandApdu
from cardlib.gp.primitives import BLOCK
from cardlib.gp.scp03 import MAC_LEN, SecurityLevel, max_plain_length, wrapped_length
from cardlib.tlv import encode_tlv

CLA_GP = 0x80
INS_INSTALL = 0xE6
INS_LOAD = 0xE8
INS_DELETE = 0xE4
INS_STORE_DATA = 0xE2
INS_GET_DATA = 0xCA
INS_SELECT = 0xA4

INSTALL_FOR_LOAD = 0x02
INSTALL_FOR_INSTALL_AND_SELECTABLE = 0x0C
LAST_BLOCK = 0x80
DELETE_RELATED = 0x80
MAX_BLOCKS = 256
HEADER_LEN = 5  # CLA INS P1 P2 Lc
MIN_AID = 5
MAX_AID = 16

TAG_LOAD_FILE_DATA_BLOCK = 0xC4
TAG_APP_PARAMS = 0xC9
TAG_SYSTEM_PARAMS = 0xEF


def _check_aid(aid: bytes, what: str, *, empty_ok: bool = False) -> None:
    """ValueError unless `aid` is 5-16 bytes (or empty where GP allows it)."""
    if empty_ok and not aid:
        return
    if not MIN_AID <= len(aid) <= MAX_AID:
        raise ValueError(f"{what} must be 5-16 bytes, got {len(aid)}")


def _lv(value: bytes) -> bytes:
    """One-byte length then value (INSTALL's data field items)."""
    if len(value) > 0xFF:
        raise ValueError("INSTALL field longer than 255 bytes")
    return bytes((len(value),)) + value


def select(aid: bytes, *, fci: bool = False) -> CommandApdu:
    """SELECT by AID: `00 A4 04 0C` (no FCI, the model's form) or `00 A4 04 00 .. 00`."""
    _check_aid(aid, "AID")
    return CommandApdu(0x00, INS_SELECT, 0x04, 0x00 if fci else 0x0C, aid,
                       le=256 if fci else None)


def load_parameters(*, nv_code: int | None = None, volatile_data: int | None = None,
                    nv_data: int | None = None) -> bytes:
    """System parameters for INSTALL [for load]: `EF` with C6/C7/C8 space limits (2 bytes each)."""
    inner = b""
    for tag, value in ((0xC6, nv_code), (0xC7, volatile_data), (0xC8, nv_data)):
        if value is not None:
            if not 0 <= value <= 0xFFFF:
                raise ValueError("memory limits are 0..65535 bytes")
            inner += encode_tlv(tag, value.to_bytes(2, "big"))
    return encode_tlv(TAG_SYSTEM_PARAMS, inner) if inner else b""


def install_for_load(load_file_aid: bytes, sd_aid: bytes = b"", *, load_hash: bytes = b"",
                     parameters: bytes = b"", token: bytes = b"") -> CommandApdu:
    """INSTALL [for load] (P1 02): load file AID, SD AID, hash, load parameters, token."""
    _check_aid(load_file_aid, "load file AID")
    _check_aid(sd_aid, "security domain AID", empty_ok=True)
    data = _lv(load_file_aid) + _lv(sd_aid) + _lv(load_hash) + _lv(parameters) + _lv(token)
    return CommandApdu(CLA_GP, INS_INSTALL, INSTALL_FOR_LOAD, 0x00, data, le=256)


def install_parameters(app_specific: bytes = b"", system: bytes = b"") -> bytes:
    """INSTALL parameters: `C9` application parameters (always present, maybe empty) + system."""
    return encode_tlv(TAG_APP_PARAMS, app_specific) + system


def install_for_install(load_file_aid: bytes, module_aid: bytes, app_aid: bytes, *,
                        privileges: bytes = b"\x00", parameters: bytes | None = None,
                        token: bytes = b"") -> CommandApdu:
    """INSTALL [for install and make selectable] (P1 0C)."""
    _check_aid(load_file_aid, "load file AID")
    _check_aid(module_aid, "module AID")
    _check_aid(app_aid, "application AID")
    if len(privileges) not in (1, 3):
        raise ValueError("privileges are 1 or 3 bytes")
    params = install_parameters() if parameters is None else parameters
    data = (_lv(load_file_aid) + _lv(module_aid) + _lv(app_aid) + _lv(privileges)
            + _lv(params) + _lv(token))
    return CommandApdu(CLA_GP, INS_INSTALL, INSTALL_FOR_INSTALL_AND_SELECTABLE, 0x00, data,
                       le=256)


def load_file_data_block(image: bytes) -> bytes:
    """The Load File as LOAD sends it: the image in a `C4` TLV (BER length)."""
    if not image:
        raise ValueError("empty load file image")
    return encode_tlv(TAG_LOAD_FILE_DATA_BLOCK, image)


def max_block_size(max_command_data: int, level: SecurityLevel | None) -> int:
    """LOAD/STORE DATA block size: profile max command data minus C-MAC and C-DEC padding."""
    return min(max_command_data, 255) if level is None else max_plain_length(max_command_data,
                                                                             level)


def split_blocks(data: bytes, block_size: int) -> list[bytes]:
    """Split `data` into blocks of at most `block_size` bytes, all full but the last."""
    if block_size <= 0:
        raise ValueError("block size must be positive")
    if not data:
        raise ValueError("nothing to split")
    blocks = [data[i:i + block_size] for i in range(0, len(data), block_size)]
    if len(blocks) > MAX_BLOCKS:
        raise ValueError(f"{len(blocks)} blocks exceed the one-byte block number")
    return blocks


def load_commands(load_file: bytes, block_size: int) -> list[CommandApdu]:
    """LOAD commands: P1 00, 80 on the last block; P2 block number from 00."""
    blocks = split_blocks(load_file, block_size)
    last = len(blocks) - 1
    return [CommandApdu(CLA_GP, INS_LOAD, LAST_BLOCK if n == last else 0x00, n, block, le=256)
            for n, block in enumerate(blocks)]


def bytes_sent(commands: list[CommandApdu], level: SecurityLevel | None) -> int:
    """Exact command bytes on the wire once wrapped at `level` (header, Lc, data, MAC, Le)."""
    total = 0
    for cmd in commands:
        n = len(cmd.data) if level is None else wrapped_length(len(cmd.data), level)
        total += 4 + (1 + n if n else 0) + (1 if cmd.le is not None else 0)
    return total


def minimum_bytes(payload: int, max_command_data: int, level: SecurityLevel | None, *,
                  with_le: bool = True) -> int:
    """Lower bound on the bytes any split of `payload` bytes into wrapped commands must send."""
    count = -(-payload // max_block_size(max_command_data, level))
    mac = MAC_LEN if level is not None and level & SecurityLevel.C_MAC else 0
    data = payload
    if level is not None and level & SecurityLevel.C_DECRYPTION:
        data = -(-(payload + count) // BLOCK) * BLOCK  # each block pads by >= 1, sum is 16k
    return data + count * (HEADER_LEN + mac + (1 if with_le else 0))


def delete(aid: bytes, *, related: bool = False) -> CommandApdu:
    """DELETE `80 E4 00 P2 Lc 4F len AID 00` (P2 80: with related objects)."""
    _check_aid(aid, "AID")
    return CommandApdu(CLA_GP, INS_DELETE, 0x00, DELETE_RELATED if related else 0x00,
                       encode_tlv(0x4F, aid), le=256)


class StoreDataStructure(enum.IntEnum):
    """STORE DATA P1 bits 5-4: how the data is structured."""

    NONE = 0x00
    DGI = 0x08
    BER_TLV = 0x10


class StoreDataEncryption(enum.IntEnum):
    """STORE DATA P1 bits 7-6: how the data is encrypted (DEK for ENCRYPTED)."""

    NONE = 0x00
    APPLICATION_DEPENDENT = 0x20
    ENCRYPTED = 0x60


@dataclass(frozen=True)
class StoreDataOptions:
    """The P1 coding of a STORE DATA sequence."""

    structure: StoreDataStructure = StoreDataStructure.DGI
    encryption: StoreDataEncryption = StoreDataEncryption.NONE


def store_data(data: bytes, block: int, *, last: bool,
               options: StoreDataOptions = StoreDataOptions()) -> CommandApdu:
    """STORE DATA `80 E2 P1 block Lc data` (P1: 80 last block | encryption | structure)."""
    if not 0 <= block <= 0xFF:
        raise ValueError("STORE DATA block number is one byte")
    p1 = (LAST_BLOCK if last else 0x00) | options.encryption | options.structure
    return CommandApdu(CLA_GP, INS_STORE_DATA, p1, block, data, le=256)


def store_data_commands(data: bytes, block_size: int, *,
                        options: StoreDataOptions = StoreDataOptions()
                        ) -> list[CommandApdu]:
    """A STORE DATA sequence carrying `data`, last-block bit on the final command."""
    blocks = split_blocks(data, block_size)
    return [store_data(b, n, last=n == len(blocks) - 1, options=options)
            for n, b in enumerate(blocks)]


def dgi(tag: int, value: bytes) -> bytes:
    """A Data Grouping Identifier object: 2-byte tag, length (1 byte, or FF + 2 bytes), value."""
    if not 0 <= tag <= 0xFFFF:
        raise ValueError("DGI tags are two bytes")
    if len(value) > 0xFFFF:
        raise ValueError("DGI value too long")
    length = (bytes((len(value),)) if len(value) < 0xFF
              else b"\xff" + len(value).to_bytes(2, "big"))
    return tag.to_bytes(2, "big") + length + value


def get_data(tag: int) -> CommandApdu:
    """GET DATA `80 CA P1 P2 00`: P1P2 is the tag (`9F7F` CPLC, `66` card data, `9F65`)."""
    if not 0 < tag <= 0xFFFF:
        raise ValueError("GET DATA tag must fit P1-P2")
    return CommandApdu(CLA_GP, INS_GET_DATA, tag >> 8, tag & 0xFF, le=256)
