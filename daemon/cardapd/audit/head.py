"""The audit head anchor: the latest committed (seq, hash), kept beside the database.

Why not rename a new file over the old one after every commit: measured here, creating
and renaming a file costs ~200-300 µs (inode allocation, directory update), more than
the gate's whole latency budget. The head is instead updated atomically *in place*:
the file holds two fixed-size, CRC-protected text slots and each update overwrites
the older slot with one `pwrite` (~1-2 µs). A torn write (crash, power loss) can spoil
only the slot being written; the other still holds the previous head, so a reader
always gets a head that is valid and at most one commit behind, which is the
property an atomic replace would give. `cat audit.head` shows both slots.

The head is written after the commit (never before), so it lags the rows, never leads
them; no fsync is needed for that order. It is not fsynced at all: after a power cut it
may be older than the database, which verification accepts (`unanchored` rows).
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

SLOT = 128
_MAGIC = "cardapd-audit-head"


def head_path_for(path: Path) -> Path:
    """Where the head anchor of the database at `path` lives (`audit.db` -> `audit.head`)."""
    return path.with_suffix(".head")


def _encode(seq: int, digest: bytes) -> bytes:
    body = f"{seq:020d} {digest.hex()}"
    line = f"{_MAGIC} {body} {zlib.crc32(body.encode('ascii')):08x}"
    return line.ljust(SLOT - 1).encode("ascii") + b"\n"


def _decode(slot: bytes) -> tuple[int, bytes] | None:
    """One slot's (seq, hash), or None when empty or torn."""
    try:
        magic, seq_text, digest_hex, crc = slot.decode("ascii").split()
        body = f"{seq_text} {digest_hex}"
        if magic != _MAGIC or int(crc, 16) != zlib.crc32(body.encode("ascii")):
            return None
        digest = bytes.fromhex(digest_hex)
        return (int(seq_text), digest) if len(digest) == 32 else None
    except ValueError:
        return None


def read_head(path: Path) -> tuple[int, bytes] | None:
    """The newest valid (seq, hash); None if the file is missing; ValueError if garbage."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    slots = [_decode(data[i:i + SLOT]) for i in range(0, len(data), SLOT)]
    valid = [s for s in slots if s is not None]
    if not valid:
        raise ValueError(f"{path}: no valid head slot")
    return max(valid, key=lambda s: s[0])


class HeadWriter:
    """Keeps the head file open and overwrites its older slot on every update."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1
        self._next = 0

    def _open(self) -> int:
        """(Re)open the file; a file deleted behind our back is recreated."""
        if self._fd >= 0:
            if os.fstat(self._fd).st_nlink > 0:
                return self._fd
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        first, second = (_decode(os.pread(self._fd, SLOT, i * SLOT)) for i in (0, 1))
        # Overwrite the slot that does not hold the newest head.
        self._next = 1 if first is not None and (second is None or first[0] > second[0]) else 0
        return self._fd

    def write(self, seq: int, digest: bytes, *, fsync: bool = False) -> None:
        """Store (seq, hash) in the older slot; raises OSError."""
        fd = self._open()
        os.pwrite(fd, _encode(seq, digest), self._next * SLOT)
        if fsync:
            os.fdatasync(fd)
        self._next ^= 1

    def close(self) -> None:
        """Close the file descriptor."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
