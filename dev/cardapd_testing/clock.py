"""TEST-ONLY: an audit clock that runs ahead of the wall clock by the seconds in a file.

Retention, sealing by day and the yearly report's coverage depend on days and years
passing; a test writes an offset (seconds, a float) into the file named by
`CARDAPD_TEST_CLOCK_FILE` and the daemon started by `cardapd_testing.main` sees time jump.
The file is read again only when it changes (inode, modification time, size).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

CLOCK_ENV = "CARDAPD_TEST_CLOCK_FILE"


class FileClock:
    """Microseconds since the epoch, plus the offset in the file (0 while it is missing)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: tuple[int, int, int] = (-1, -1, -1)
        self._offset_us = 0

    def __call__(self) -> int:
        try:
            st = os.stat(self.path)
            mtime = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            mtime = (0, 0, 0)
        if mtime != self._mtime:
            self._mtime = mtime
            try:
                self._offset_us = int(float(self.path.read_text().strip() or 0) * 1_000_000)
            except (OSError, ValueError):
                self._offset_us = 0
        return time.time_ns() // 1000 + self._offset_us


def set_offset(path: Path, seconds: float) -> None:
    """Move the daemon's audit clock to `seconds` ahead of the wall clock (atomically)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{seconds}\n")
    os.replace(tmp, path)
