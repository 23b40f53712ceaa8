"""Secrets of the configuration (AP access keys, system PINs): held so they never show.

They come from a file readable by the daemon's user only (mode 0600 or stricter, no
symlink) or, for tests, inline in a configuration file that is itself 0600. `Secret`'s
repr and str never show the value, so a log line, a traceback or a configuration dump
cannot leak it; two secrets compare by value (a reload notices a changed key file).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

SECRET_MAX = 4096


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
        data = os.read(fd, SECRET_MAX + 1)
    finally:
        os.close(fd)
    if len(data) > SECRET_MAX:
        raise ValueError(f"{path} is too large for a key or PIN")
    return data.strip()


def load_or_create_key_file(path: Path, size: int = 32) -> bytes:
    """A key kept in `path` as hex (0600, no symlink); `size` random bytes are written
    there first, atomically, when the file does not exist yet."""
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, os.urandom(size).hex().encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # never replaces a key another process wrote meanwhile
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    text = read_secret_file(path)
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"{path} does not hold a hex key") from None
    if len(key) < 16:
        raise ValueError(f"{path} holds a key shorter than 16 bytes")
    return key
