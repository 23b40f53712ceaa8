"""The first administrator of an organisation is appointed by a local act on the terminal.

No client of the ops socket can make itself an organisation's administrator: every roster
change needs an administrator session of that organisation. The one way in is
`cardapd bootstrap-admin`, run by root on the terminal (like the terminal's own first
setup): it writes a fresh one-time secret into the state directory — a file only the
daemon's user and root can create or read there — and presents it in a
`BootstrapAdministrator` call on the ops socket. The daemon accepts the call only when
the secret matches that file (constant-time), the file is a regular file owned by the
daemon's user, mode 0600, not older than `MAX_AGE_S`; it deletes the file on success, so
a secret serves once. Membership in the ops group is not enough: the group cannot write
the state directory. See docs/decisions.md ("The first administrator").
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import stat
import time
from pathlib import Path

from cardapd.errors import FailedPrecondition, NotAuthorized

SECRET_FILE = "bootstrap-admin.secret"  # noqa: S105 - a file name
SECRET_BYTES = 32
MAX_AGE_S = 600.0
"""A secret older than this is refused (and replaced by the next bootstrap-admin run)."""


def secret_path(state_dir: Path) -> Path:
    """Where `cardapd bootstrap-admin` writes the one-time secret."""
    return Path(state_dir) / SECRET_FILE


def write_secret(state_dir: Path, *, now: float | None = None) -> tuple[Path, str]:
    """Write a fresh secret (hex) into a new 0600 file owned like the state directory;
    (its path, the secret). FailedPrecondition while another run's secret is fresh."""
    path = secret_path(state_dir)
    owner = os.stat(state_dir)
    token = secrets.token_hex(SECRET_BYTES)
    when = time.time() if now is None else now
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(2):
        try:
            fd = os.open(path, flags, 0o600)
            break
        except FileExistsError:
            st = os.lstat(path)
            if when - st.st_mtime <= MAX_AGE_S:
                raise FailedPrecondition(
                    f"{path} exists: another bootstrap-admin is running (or was cut short "
                    f"less than {MAX_AGE_S:.0f} s ago); try again later",
                    reason="BOOTSTRAP_IN_PROGRESS") from None
            path.unlink()  # a stale secret of a run that died
    else:
        raise FailedPrecondition(f"cannot create {path}", reason="BOOTSTRAP_IN_PROGRESS")
    try:
        if os.geteuid() == 0:  # root writes it for the daemon's user
            os.fchown(fd, owner.st_uid, owner.st_gid)
        os.write(fd, token.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return path, token


def consume_secret(state_dir: Path, presented: str, *, now: float | None = None) -> None:
    """Accept `presented` once: PERMISSION_DENIED `BOOTSTRAP_SECRET_INVALID` unless it
    matches a fresh, safe secret file, which is then deleted."""
    path = secret_path(state_dir)
    refused = NotAuthorized(
        "the bootstrap secret is missing, stale or wrong: appointing an organisation's first "
        "administrator is a local act (run `cardapd bootstrap-admin` as root on the "
        "terminal)", reason="BOOTSTRAP_SECRET_INVALID")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        raise refused from None
    try:
        st = os.fstat(fd)
        when = time.time() if now is None else now
        if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid()
                or st.st_mode & 0o077 or when - st.st_mtime > MAX_AGE_S):
            raise refused
        expected = os.read(fd, 4 * SECRET_BYTES)
    finally:
        os.close(fd)
    if not presented or not hmac.compare_digest(expected, presented.encode("utf-8",
                                                                           "surrogatepass")):
        raise refused
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
