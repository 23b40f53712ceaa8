"""SELECT EF and READ BINARY with both end-of-file behaviours handled in one path."""

from __future__ import annotations

import threading

from cardlib.apdu import (
    SW_EOF_BEFORE_LE,
    SW_FILE_NOT_FOUND,
    SW_OK,
    SW_WRONG_P1P2,
    CommandApdu,
)
from cardlib.errors import StatusWordError
from cardlib.protocol import ApduProtocol

MAX_OFFSET = 0x7FFF  # P1 bit 8 set would mean a short EF identifier


def select_ef(proto: ApduProtocol, fid: int, *, cancel: threading.Event | None = None) -> bool:
    """SELECT EF by file ID in the current AP (`00 A4 02 0C 02 FID`): True 9000, False 6A82."""
    if not 0 <= fid <= 0xFFFF:
        raise ValueError(f"file ID {fid:#x} is not two bytes")
    resp = proto.send(CommandApdu(0x00, 0xA4, 0x02, 0x0C, fid.to_bytes(2, "big")), cancel=cancel)
    if resp.ok:
        return True
    if resp.sw == SW_FILE_NOT_FOUND:
        return False
    raise StatusWordError(resp.sw, f"SELECT EF {fid:04X}")


def read_binary(proto: ApduProtocol, length: int, offset: int = 0, *,
                cancel: threading.Event | None = None) -> bytes:
    """Read up to `length` bytes from `offset` of the current EF; fewer means end of file.

    End of file shows as `62 82` with fewer bytes, as `6C xx` (the protocol re-sends with
    Le = xx and the card returns fewer bytes), as a short answer with `90 00`, or as `6B 00`
    once the offset reaches the end: all four simply end the read.
    """
    if length < 0 or offset < 0 or offset + max(length - 1, 0) > MAX_OFFSET:
        raise ValueError(f"cannot read {length} bytes at offset {offset}")
    out = bytearray()
    while len(out) < length:
        want = min(256, length - len(out))
        pos = offset + len(out)
        resp = proto.send(CommandApdu(0x00, 0xB0, pos >> 8, pos & 0xFF, le=want), cancel=cancel)
        if resp.sw == SW_WRONG_P1P2:
            break
        if resp.sw not in (SW_OK, SW_EOF_BEFORE_LE):
            raise StatusWordError(resp.sw, f"READ BINARY at {pos}")
        out += resp.data
        if len(resp.data) < want or resp.sw == SW_EOF_BEFORE_LE:
            break
    return bytes(out)
