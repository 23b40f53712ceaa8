"""What a test may assume about this machine, and the one way a test may skip.

`make test` installs everything the tests use (`make setup`: Debian packages, the venv,
the generated code) and the repository carries every fixture. So a tool that `make setup`
installs, or a file the repository carries, is *required*: when it is missing the test
fails and says how to get it (`need`). Only what a machine may lack for reasons outside
the repository — udevd not running, no root, a kernel feature, a distribution build
option — may skip, through `machine_lacks`, whose reason starts with "machine lacks".
`tests/conftest.py` turns any other skip into a failure.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import NoReturn

import pytest

MACHINE_LACKS = "machine lacks"
"""The prefix of every allowed skip reason."""

# tool -> (where to look besides $PATH, the Debian package `make setup` installs)
NODE_MODULES = Path(__file__).resolve().parents[1] / "node_modules"
"""The npm tools `make setup` installs from package-lock.json (`npm ci`)."""

REQUIRED: dict[str, tuple[tuple[str, ...], str]] = {
    "pcscd": (("/usr/sbin/pcscd",), "pcscd"),
    "libifdvpcd.so": (("/usr/lib/pcsc/drivers/serial/libifdvpcd.so",), "vsmartcard-vpcd"),
    "fprintd": (("/usr/libexec/fprintd",), "fprintd"),
    "dbus-daemon": ((), "dbus"),
    "promtool": ((), "prometheus"),
    "prometheus": ((), "prometheus"),
    "systemd-analyze": ((), "systemd"),
    "systemd-sysusers": ((), "systemd"),
    "systemd-tmpfiles": ((), "systemd"),
    "systemd-journald": (("/lib/systemd/systemd-journald",
                          "/usr/lib/systemd/systemd-journald"), "systemd"),
    "journalctl": ((), "systemd"),
    "systemd-journal-remote": (("/lib/systemd/systemd-journal-remote",
                                "/usr/lib/systemd/systemd-journal-remote"),
                               "systemd-journal-remote"),
    "systemd-journal-upload": (("/lib/systemd/systemd-journal-upload",
                                "/usr/lib/systemd/systemd-journal-upload"),
                               "systemd-journal-remote"),
    "udevadm": (("/usr/bin/udevadm", "/bin/udevadm"), "udev"),
    "node": ((), "nodejs"),
    "unshare": ((), "util-linux"),
    "setpriv": ((), "util-linux"),
    "mount": ((), "mount"),
    "gcc": ((), "gcc"),
    "mmdebstrap": ((), "mmdebstrap"),
    "dpkg-buildpackage": ((), "dpkg-dev"),
    "dh_virtualenv": ((), "dh-virtualenv"),
    "lintian": ((), "lintian"),
    "nsenter": ((), "util-linux"),
    "chroot": ((), "coreutils"),
    "pkcs15-tool": ((), "opensc"),
    "opensc-tool": ((), "opensc"),
    # from npm (package.json), not Debian: `make setup` runs npm ci
    "buf": ((str(NODE_MODULES / ".bin" / "buf"),), "npm, by make setup: @bufbuild/buf"),
    "grpc-js": ((str(NODE_MODULES / "@grpc" / "grpc-js" / "package.json"),),
                "npm, by make setup: @grpc/grpc-js"),
}


def find(tool: str) -> str | None:
    """Where `tool` is installed (None when it is not)."""
    extra, _ = REQUIRED.get(tool, ((), ""))
    for candidate in extra:
        if Path(candidate).exists():
            return candidate
    return shutil.which(tool)


def need(tool: str) -> str:
    """The path of `tool`; fails the test when it is missing (`make setup` installs it)."""
    path = find(tool)
    if path is None:
        package = REQUIRED.get(tool, ((), "?"))[1]
        pytest.fail(f"{tool} is missing: `make setup` installs it (Debian package "
                    f"{package}); this is not a reason to skip", pytrace=False)
    return path


def machine_lacks(what: str) -> NoReturn:
    """Skip: this machine lacks `what`, which nothing in the repository can provide."""
    pytest.skip(f"{MACHINE_LACKS} {what}")
