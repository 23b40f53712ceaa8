"""The systemd unit verifies cleanly and is tightly sandboxed; sysusers/tmpfiles apply."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from testenv import machine_lacks, need

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
MAX_EXPOSURE = 2.0



@pytest.fixture(autouse=True)
def _systemd_tools() -> None:
    for tool in ("systemd-analyze", "systemd-sysusers", "systemd-tmpfiles"):
        need(tool)


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at an executable that exists here."""
    text = (SYSTEMD / "cardapd.service").read_text()
    text, count = re.subn(r"(?m)^ExecStart=/usr/bin/cardapd ",
                          f"ExecStart={shutil.which('true')} ", text)
    assert count == 1
    path = tmp_path / "cardapd.service"
    path.write_text(text)
    return path


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False,
                          env=env)


def test_unit_verifies_without_warnings(unit: Path, tmp_path: Path) -> None:
    """Also its Documentation=: the man page it names is the one `make man` renders (the
    package installs it; tests/integration/test_debian_package.py checks the files)."""
    man = tmp_path / "man"
    for section in ("1", "8"):
        (man / f"man{section}").mkdir(parents=True)
    pages = subprocess.run([sys.executable, "-m", "release.manpages", "--version", "0",
                            str(tmp_path / "pages")], capture_output=True, text=True,
                           timeout=120, check=True, cwd=SYSTEMD.parent).stdout.split()
    for page in map(Path, pages):
        shutil.copy(page, man / f"man{page.suffix[1:]}" / page.name)
    result = run("systemd-analyze", "verify", str(unit),
                 env={**os.environ, "MANPATH": str(man)})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "cardapd.service" not in output, output


def test_unit_exposure_is_low(unit: Path) -> None:
    result = run("systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit))
    output = result.stdout + result.stderr
    match = re.search(r"Overall exposure level for cardapd\.service: (\d+\.\d+)", output)
    assert match, output
    assert float(match.group(1)) <= MAX_EXPOSURE, output


def test_unit_has_the_required_settings() -> None:
    text = (SYSTEMD / "cardapd.service").read_text()
    for line in ("Type=notify", "NotifyAccess=main", "WatchdogSec=30", "Restart=on-failure",
                 "ExecStart=/usr/bin/cardapd --config /etc/cardapd/cardapd.toml",
                 "ExecReload=/bin/kill -HUP $MAINPID", "User=cardapd", "Group=cardapd",
                 "StateDirectory=cardapd", "RuntimeDirectory=cardapd",
                 "RuntimeDirectoryMode=0755", "ConfigurationDirectory=cardapd",
                 "Wants=pcscd.socket", "ProtectSystem=strict", "NoNewPrivileges=yes",
                 "CapabilityBoundingSet=", "IPAddressDeny=any", "IPAddressAllow=localhost",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
                 "SupplementaryGroups=cardap-kiosk cardap-gate cardap-ops"):
        assert re.search(rf"(?m)^{re.escape(line)}$", text), line
    assert re.search(r"(?m)^After=.*pcscd\.socket", text)


def test_sysusers_creates_the_user_and_role_groups(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    result = run("systemd-sysusers", f"--root={tmp_path}", str(SYSTEMD / "cardapd.sysusers"))
    assert result.returncode == 0, result.stderr
    passwd = (tmp_path / "etc/passwd").read_text()
    group = (tmp_path / "etc/group").read_text()
    assert re.search(r"(?m)^cardapd:x:\d+:\d+:.*:/var/lib/cardapd:", passwd)
    for role in ("kiosk", "gate", "ops"):
        assert re.search(rf"(?m)^cardap-{role}:x:\d+:cardapd$", group), group


def test_tmpfiles_creates_the_directories(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        machine_lacks("root (systemd-tmpfiles --create sets ownership)")
    (tmp_path / "etc").mkdir()
    assert run("systemd-sysusers", f"--root={tmp_path}",
               str(SYSTEMD / "cardapd.sysusers")).returncode == 0
    result = run("systemd-tmpfiles", f"--root={tmp_path}", "--create",
                 str(SYSTEMD / "cardapd.tmpfiles"))
    assert result.returncode == 0, result.stderr
    state = (tmp_path / "var/lib/cardapd").stat()
    assert oct(state.st_mode & 0o777) == oct(0o750)
    assert oct((tmp_path / "etc/cardapd").stat().st_mode & 0o777) == oct(0o750)


def test_open_file_limit_holds_every_socket_at_its_maximum() -> None:
    """LimitNOFILE is set (systemd's default soft limit is 1024 and the seccomp filter
    keeps the daemon from raising it) and holds all three role sockets at the highest
    max_connections the schema allows, plus the other descriptors."""
    import msgspec

    from cardapd.api.server import FD_RESERVE
    from cardapd.config.schema import ROLES, SocketConfig

    text = (SYSTEMD / "cardapd.service").read_text()
    found = re.search(r"(?m)^LimitNOFILE=(\d+)$", text)
    assert found, "LimitNOFILE= missing"
    info = msgspec.inspect.type_info(SocketConfig)
    assert isinstance(info, msgspec.inspect.StructType)
    field = next(f for f in info.fields if f.name == "max_connections")
    bounds = field.type.type if isinstance(field.type, msgspec.inspect.Metadata) else field.type
    assert isinstance(bounds, msgspec.inspect.IntType)
    assert bounds.le is not None
    assert int(found[1]) >= len(ROLES) * bounds.le + FD_RESERVE
    assert re.search(r"(?m)^SystemCallFilter=~.*@resources", text)
