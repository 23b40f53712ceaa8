"""The Debian package, proven by installing it: built with `make deb`'s script (lintian
clean), installed with `apt-get install ./cardapd_….deb` in a Debian 12 chroot made with
mmdebstrap, the daemon started as its service user the way the unit starts it against a
private stack's pcscd and virtual card, the packaged cardapctl reading a user ID and
diagnosing; `dpkg -L` exactly the expected files; an upgrade from the first packaged
version (tag v1.0.0) keeping the edited configuration and migrating the stores; removal
keeping the state and purge leaving nothing behind.

The machine is not changed (tests/integration/debpkg.py says how): everything happens in
a chroot under the test's directory, mounts in private namespaces, the daemon in a
private network namespace. The first run builds the two packages and the base system
(a few minutes); later runs reuse them from build/.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from testenv import need

from cardap.client import CardapClient
from cardap.i18n import DOMAINS
from cardap.v1 import cards_pb2
from cardap_sim.stack import Stack, demo_user_id
from cardapd.audit.schema import AUDIT_SCHEMA
from cardapd.loading.journal import JOURNAL_SCHEMA
from cardapd.operators.roster.schema import ROSTER_SCHEMA
from cardapd.reads.revocation_store import REVOCATION_SCHEMA
from release.changelog import debian_version

from .debpkg import (
    FIRST_PACKAGED,
    ROOT,
    UNIT,
    Chroot,
    Deb,
    UnitRun,
    build_head,
    build_tag,
    gone,
    run,
    store_query,
    tag_commit,
    version_of,
)

pytestmark = [pytest.mark.timeout(1800), pytest.mark.package]

VENV = "/opt/venvs/cardapd"
SITE = f"{VENV}/lib/python3.11/site-packages"
OPERATOR = "kiosk-admin"  # a person in the three role groups, who runs cardapctl
STORES = {"audit.db": AUDIT_SCHEMA, "roster.db": ROSTER_SCHEMA, "journal.db": JOURNAL_SCHEMA,
          "revocation.db": REVOCATION_SCHEMA}


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    for tool in ("mmdebstrap", "dpkg-buildpackage", "dh_virtualenv", "lintian", "unshare",
                 "nsenter", "chroot", "setpriv", "promtool"):
        need(tool)


@pytest.fixture(scope="module")
def head_deb() -> Deb:
    """The package of the working tree."""
    return build_head()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A private pcscd with the virtual card's reader, and the simulator (no daemon)."""
    s = Stack(tmp_path_factory.mktemp("pkg") / "stack")
    try:
        s.start(daemon=False)
        yield s
    finally:
        s.stop()


def new_chroot(path: Path) -> Chroot:
    """A fresh Debian 12 system with an operator account (member of the role groups once
    the package has created them)."""
    chroot = Chroot.create(path)
    chroot.run("useradd", "--create-home", OPERATOR)
    return chroot


def join_role_groups(chroot: Chroot) -> None:
    """usermod -aG for the three role groups (docs/operations.md section 2)."""
    chroot.run("usermod", "-aG", "cardap-kiosk,cardap-gate,cardap-ops", OPERATOR)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, head_deb: Deb) -> Iterator[Chroot]:
    """A chroot with the working tree's package installed."""
    chroot = new_chroot(tmp_path_factory.mktemp("installed") / "root")
    try:
        chroot.apt_install(head_deb)
        join_role_groups(chroot)
        yield chroot
    finally:
        chroot.destroy()


@pytest.fixture
def daemon(installed: Chroot, stack: Stack, tmp_path: Path) -> Iterator[UnitRun]:
    """The installed daemon, not started yet (each test writes its configuration)."""
    unit = UnitRun(installed, stack.pcscd_socket, tmp_path / "cardapd.log")
    try:
        yield unit
    finally:
        unit.kill()
        stack.control.remove(0)


def ctl(chroot: Chroot, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The packaged cardapctl, run by the operator."""
    return chroot.as_user(OPERATOR, "cardapctl", *args, check=check)


def bootstrap_admin(chroot: Chroot, organisation: str, operator: str) -> str:
    """`cardapd bootstrap-admin` as root (no finger: the chroot has no sensor; an open
    session on the ops socket is replaced); the path of the session file, readable by the
    operator who runs cardapctl."""
    path = f"/tmp/{organisation}-{operator}.session"
    chroot.run("cardapd", "bootstrap-admin", "--organisation", organisation, "--operator",
               operator, "--no-enroll", "--replace-session", "--session-file", path)
    chroot.run("chown", OPERATOR, path)
    return path


def insert_demo_card(chroot: Chroot, stack: Stack, socket: str) -> None:
    """Insert the demo card and wait until the daemon identified it."""
    card = stack.demo_card(f"card-{len(list(stack.dir.glob('cards/*')))}")
    with CardapClient(chroot.path(f"/run/cardapd/{socket}.sock"), timeout=20) as client:
        events = client.watch(timeout=30)
        for ev in events:
            if ev.kind == cards_pb2.CARD_EVENT_KIND_SNAPSHOT_END:
                break
        stack.control.insert(0, card)
        for ev in events:
            if ev.kind == cards_pb2.CARD_EVENT_KIND_CARD_INSERTED:
                return
    raise AssertionError("no CARD_INSERTED")


def use_config(chroot: Chroot, text: str) -> None:
    """The site's configuration, as an administrator writes it."""
    chroot.path("/etc/cardapd/cardapd.toml").write_text(text)


def check_metrics(text: str, version: str) -> None:
    """process_* present, no _created series, the version, promtool clean."""
    for name in ("process_start_time_seconds", "process_resident_memory_bytes",
                 "process_cpu_seconds_total", "process_open_fds", "process_max_fds"):
        assert re.search(rf"(?m)^{name} \S+$", text), f"{name} missing"
    assert "_created" not in text
    assert f'cardapd_build_info{{version="{version}"}} 1.0' in text
    result = subprocess.run([need("promtool"), "check", "metrics"], input=text,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------- the build


def test_lintian_reports_no_error_and_every_override_says_why(head_deb: Deb) -> None:
    report = head_deb.path.with_suffix(".lintian").read_text()
    assert not re.search(r"(?m)^E: ", report), report[:3000]
    overrides = (ROOT / "debian" / "cardapd.lintian-overrides").read_text().splitlines()
    previous = ""
    tags = set()
    for line in overrides:
        if line.startswith("cardapd: "):
            assert previous.startswith("#"), f"override without a comment: {line}"
            tags.add(line.split()[1])
        if line.strip():
            previous = line
    assert tags == {"dir-or-file-in-opt", "embedded-library"}
    used = {m.group(1) for m in re.finditer(r"(?m)^O: cardapd: (\S+)", report)}
    assert used == tags  # each override is needed, and nothing else is silenced


def test_the_package_metadata(head_deb: Deb) -> None:
    fields = run(["dpkg-deb", "-f", str(head_deb.path), "Package", "Architecture",
                  "Depends", "Recommends"]).stdout
    assert re.search(r"(?m)^Depends: .*\bpcscd\b", fields)
    assert re.search(r"(?m)^Depends: .*\bpython3\.11\b", fields)
    assert re.search(r"(?m)^Recommends: fprintd$", fields)
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    assert head_deb.path.name == f"cardapd_{head_deb.version}_{arch}.deb"
    # the version is the tree's setuptools-scm version, in Debian's spelling
    scm = run([str(ROOT / ".venv" / "bin" / "python"), "-m", "setuptools_scm"],
              cwd=ROOT).stdout.strip().splitlines()[-1]
    assert head_deb.version == debian_version(scm)
    changelog = run(["sh", "-c", f"dpkg-deb --fsys-tarfile '{head_deb.path}' | tar -xO "
                     "./usr/share/doc/cardapd/changelog.gz | gunzip"]).stdout
    assert changelog.startswith(f"cardapd ({head_deb.version}) ")
    assert "cardapd (1.0.0) stable; urgency=medium" in changelog  # from CHANGELOG.md


# ---------------------------------------------------------------------- installed


def test_install_creates_the_user_and_directories_and_enables_without_starting(
        installed: Chroot) -> None:
    passwd = installed.run("getent", "passwd", "cardapd").stdout.split(":")
    assert passwd[5] == "/var/lib/cardapd"
    assert passwd[6].strip() in ("/usr/sbin/nologin", "/sbin/nologin")
    groups = installed.run("id", "-nG", "cardapd").stdout.split()
    assert {"cardap-kiosk", "cardap-gate", "cardap-ops"} <= set(groups)
    for path, mode, owner in (("/etc/cardapd", "750", "root:cardapd"),
                              ("/var/lib/cardapd", "750", "cardapd:cardapd")):
        out = installed.run("stat", "-c", "%a %U:%G", path).stdout.split()
        assert out == [mode, owner], path
    wants = installed.path("/etc/systemd/system/multi-user.target.wants/cardapd.service")
    assert wants.is_symlink()  # enabled (deb-systemd-helper works without PID 1) ...
    assert not installed.path("/run/cardapd").exists()  # ... and never started
    # The maintainer scripts: enable, never start on a first install; restart on upgrade
    # and stop on removal only where systemd is PID 1.
    info = installed.path("/var/lib/dpkg/info")
    postinst = (info / "cardapd.postinst").read_text()
    prerm = (info / "cardapd.prerm").read_text()
    assert "systemd-sysusers ${DPKG_ROOT:+--root=\"$DPKG_ROOT\"} cardapd.conf" in postinst
    assert "systemd-tmpfiles ${DPKG_ROOT:+--root=\"$DPKG_ROOT\"} --create cardapd.conf" \
        in postinst
    assert "deb-systemd-helper enable 'cardapd.service'" in postinst
    assert re.search(r"\[ -d /run/systemd/system \].*\n(.*\n){0,4}.*"
                     r"deb-systemd-invoke try-restart 'cardapd.service'", postinst)
    assert not re.search(r"deb-systemd-invoke (\$_dh_action|start)", postinst)
    assert re.search(r"remove\)\n.*\[ -d /run/systemd/system \].*\n\s+deb-systemd-invoke "
                     r"stop cardapd\.service", prerm)


def test_dpkg_lists_exactly_the_expected_files(installed: Chroot, head_deb: Deb) -> None:
    listed = [p for p in installed.run("dpkg", "-L", "cardapd").stdout.splitlines()
              if p.strip(os.sep + ".")]  # not the root
    for path in listed:
        assert installed.path(path).exists() or installed.path(path).is_symlink(), path
    directories = head_deb.directories()
    assert directories <= set(listed)
    files = set(listed) - directories
    outside = {p for p in files if not p.startswith(SITE + "/")}
    catalogues = {p.rsplit("/", 1)[1] for p in files
                  if "cardap/locale/ja/LC_MESSAGES/" in p and p.endswith(".mo")}
    assert catalogues == {f"{domain}.mo" for domain in DOMAINS}  # compiled by the build
    protos = {f"/usr/share/cardapd/proto/{p.relative_to(ROOT / 'proto')}"
              for p in (ROOT / "proto").rglob("*.proto")}
    prometheus = {f"/usr/share/doc/cardapd/examples/prometheus/"
                  f"{p.relative_to(ROOT / 'docs' / 'prometheus')}"
                  for p in (ROOT / "docs" / "prometheus").rglob("*") if p.is_file()}
    assert outside == {
        "/etc/cardapd/cardapd.toml", f"/{UNIT}", "/lib/udev/rules.d/60-cardapd-ccid.rules",
        "/usr/bin/cardapd", "/usr/bin/cardapctl", "/usr/lib/sysusers.d/cardapd.conf",
        "/usr/lib/tmpfiles.d/cardapd.conf",
        "/usr/share/polkit-1/rules.d/60-cardapd-pcscd.rules",
        "/usr/share/man/man8/cardapd.8.gz", "/usr/share/man/man1/cardapctl.1.gz",
        "/usr/share/lintian/overrides/cardapd",
        "/usr/share/doc/cardapd/README.md", "/usr/share/doc/cardapd/operations.md",
        "/usr/share/doc/cardapd/configuration.md", "/usr/share/doc/cardapd/changelog.gz",
        "/usr/share/doc/cardapd/copyright",
        "/usr/share/doc/cardapd/examples/kiosk.toml",
        "/usr/share/doc/cardapd/examples/gate.toml",
        "/usr/share/doc/cardapd/examples/config.example.toml",
        f"{VENV}/pyvenv.cfg", f"{VENV}/lib64", f"{VENV}/bin/python", f"{VENV}/bin/python3",
        f"{VENV}/bin/python3.11", f"{VENV}/bin/cardapd", f"{VENV}/bin/cardapctl",
        f"{VENV}/bin/cffi-gen-src", f"{VENV}/bin/activate", f"{VENV}/bin/activate.csh",
        f"{VENV}/bin/activate.fish", f"{VENV}/bin/tqdm",  # the scripts of locked dependencies
        f"{VENV}/bin/register-python-argcomplete",
        f"{VENV}/bin/activate-global-python-argcomplete",
        *protos, *prometheus}
    # The virtualenv holds exactly the locked distributions and cardapd: every file
    # belongs to one of their RECORDs, and every RECORD file is there (no pip, no
    # setuptools, no development distribution, no bytecode in the package).
    locked = {re.sub(r"[-_.]+", "_", m.group(1)).lower() for m in re.finditer(
        r"(?m)^([A-Za-z0-9_.-]+)==", (ROOT / "release" / "requirements.txt").read_text())}
    site = {p[len(SITE) + 1:] for p in files if p.startswith(SITE + "/")}
    dists = {p.split("/")[0] for p in site if ".dist-info/" in p}
    assert {re.sub(r"-[^-]+\.dist-info$", "", d).lower() for d in dists} == locked | {"cardapd"}
    recorded: set[str] = set()
    for dist in dists:
        for row in installed.path(f"{SITE}/{dist}/RECORD").read_text().splitlines():
            name = row.rsplit(",", 2)[0]
            if not name.startswith("..") and "__pycache__" not in name:
                recorded.add(name)
    assert site == recorded
    assert not any(p.startswith(("cardap_sim", "cardapd_testing", "tests/", "pip/",
                                 "setuptools/")) for p in site)
    assert {p.split("/")[0] for p in site if p.startswith("card")} >= {"cardapd", "cardlib",
                                                                        "cardap"}


def test_the_daemon_runs_as_its_unit_on_a_gate(installed: Chroot, stack: Stack,
                                                daemon: UnitRun, head_deb: Deb) -> None:
    use_config(installed, (ROOT / "docs" / "examples" / "gate.toml").read_text())
    version = version_of(installed.run("cardapd", "--version").stdout)
    assert debian_version(version) == head_deb.version
    assert version_of(ctl(installed, "--version").stdout) == version
    daemon.start()
    assert daemon.notify is not None
    assert daemon.notify.wait("STATUS=", 10).startswith("STATUS=serving 2 sockets")
    insert_demo_card(installed, stack, "gate")
    read = ctl(installed, "read-id")
    assert demo_user_id() in read.stdout
    diagnose = ctl(installed, "--role", "ops", "diagnose", "--reader", "Virtual PCD 00 00",
                   check=False)
    assert diagnose.returncode == 0, diagnose.stdout + diagnose.stderr
    assert "Virtual PCD 00 00: OK" in diagnose.stdout
    status = json.loads(ctl(installed, "--json", "status").stdout)
    assert status["version"] == version
    assert status["loading_link"]["state"] == "LOADING_LINK_NOT_CONFIGURED"
    text = daemon.metrics()
    check_metrics(text, version)
    limit = re.findall(r"(?m)^LimitNOFILE=(\d+)$", installed.path(f"/{UNIT}").read_text())
    if limit:  # the unit's limit reaches the daemon (and its process metrics)
        assert f"process_max_fds {float(limit[0])}" in text
    # The daemon writes only where the unit lets it, as its user, with UMask=0077.
    cardapd = installed.uid("cardapd")
    for name in ("audit.db", "audit.head", "roster.db", "journal.db", "revocation.db"):
        st = installed.path(f"/var/lib/cardapd/{name}").stat()
        assert (st.st_uid, st.st_mode & 0o777) == (cardapd, 0o600), name
    notify = daemon.notify
    assert daemon.stop() == 0
    assert "STOPPING=1" in notify.messages


def test_a_kiosk_whose_loading_link_cannot_be_set_up_still_serves_reads(
        installed: Chroot, stack: Stack, daemon: UnitRun) -> None:
    use_config(installed, (ROOT / "docs" / "examples" / "kiosk.toml").read_text())
    check = installed.run("cardapd", "--check-config", check=False)
    assert check.returncode == 3, check.stdout + check.stderr
    for key in ("loading.ca", "loading.cert", "loading.key"):
        assert re.search(rf"{key}: /etc/cardapd/tls/\S+: missing", check.stderr), key
    daemon.start()
    insert_demo_card(installed, stack, "kiosk")
    # The card was read at insertion (the tap read), which the ops socket shows without an
    # operator session (on the kiosk socket card reads need one).
    read = ctl(installed, "--role", "ops", "readers")
    assert demo_user_id() in read.stdout
    status = ctl(installed, "--role", "ops", "status")
    assert "loading service: DOWN: tls_files (loading.example.jp:7443)" in status.stdout
    text = daemon.metrics()
    assert re.search(r"(?m)^cardapd_loading_configured 1\.0$", text)
    assert re.search(r"(?m)^cardapd_loading_link_up 0\.0$", text)
    errors = re.search(r'(?m)^cardapd_loading_link_errors_total\{reason="tls_files"\} (\S+)$',
                       text)
    assert errors, text
    assert float(errors.group(1)) >= 1
    assert daemon.stop() == 0


def test_check_config_reports_tls_files_the_service_user_cannot_read(
        installed: Chroot) -> None:
    from cardap_sim.loadsvc.devca import write_bundle
    tls = installed.path("/etc/cardapd/tls")
    write_bundle(tls, [("kiosk-01", "org-a")])
    for name in ("ca.pem", "kiosk-01.pem", "kiosk-01.key"):
        (tls / name).chmod(0o600)
    use_config(installed, "[loading]\naddress = \"loading.example.jp:7443\"\n"
               "ca = \"/etc/cardapd/tls/ca.pem\"\ncert = \"/etc/cardapd/tls/kiosk-01.pem\"\n"
               "key = \"/etc/cardapd/tls/kiosk-01.key\"\n")
    try:
        denied = installed.run("cardapd", "--check-config", check=False)
        assert denied.returncode == 3
        assert "loading.key: /etc/cardapd/tls/kiosk-01.key: not readable by the service " \
               "user cardapd" in denied.stderr
        installed.run("sh", "-c", "chgrp cardapd /etc/cardapd/tls /etc/cardapd/tls/* && "
                      "chmod 0750 /etc/cardapd/tls && chmod 0640 /etc/cardapd/tls/*")
        ok = installed.run("cardapd", "--check-config", check=False)
        assert ok.returncode == 0, ok.stderr
    finally:
        installed.run("rm", "-rf", "/etc/cardapd/tls")


# ---------------------------------------------------------------------- upgrade, removal


def test_upgrade_from_the_first_packaged_version_keeps_the_config_and_migrates_the_stores(
        tmp_path: Path, stack: Stack, head_deb: Deb) -> None:
    old_deb = build_tag(FIRST_PACKAGED)
    chroot = new_chroot(tmp_path / "root")
    try:
        chroot.apt_install(old_deb)
        join_role_groups(chroot)
        # The gate example as that release shipped it: the configuration an upgrade keeps.
        shipped = subprocess.run(["git", "show", f"{tag_commit()}:docs/examples/gate.toml"],
                                 cwd=ROOT, capture_output=True, text=True, check=True).stdout
        config = shipped + '\n[operators.organisations]\norg-a = "Organisation A"\n'
        use_config(chroot, config)
        old = UnitRun(chroot, stack.pcscd_socket, tmp_path / "old.log")
        try:
            old.start()
            insert_demo_card(chroot, stack, "gate")
            assert demo_user_id() in ctl(chroot, "read-id").stdout
            ctl(chroot, "--role", "ops", "operators", "add", "--org", "org-a",
                "--operator", "alice", "--name", "Alice")
            assert old.stop() == 0
        finally:
            old.kill()
            stack.control.remove(0)
        state = chroot.path("/var/lib/cardapd")
        rows_before = store_query(state / "audit.db", "SELECT count(*) FROM audit")[0][0]

        reinstall = ("--reinstall",) if old_deb.version == head_deb.version else ()
        chroot.apt_install(head_deb, *reinstall)
        assert chroot.path("/etc/cardapd/cardapd.toml").read_text() == config
        for path, mode in (("/etc/cardapd", "750 root:cardapd"),
                           ("/var/lib/cardapd", "750 cardapd:cardapd")):
            assert chroot.run("stat", "-c", "%a %U:%G", path).stdout.strip() == mode, path
        status = chroot.run("dpkg-query", "-W", "-f", "${Version} ${Status}", "cardapd")
        assert status.stdout == f"{head_deb.version} install ok installed"

        new = UnitRun(chroot, stack.pcscd_socket, tmp_path / "new.log")
        try:
            new.start()
            for name, schema in STORES.items():
                (version,) = store_query(state / name, "PRAGMA user_version")[0]
                assert version == schema.latest, name
            listed = ctl(chroot, "--role", "ops", "operators", "list", "--org", "org-a")
            assert "alice" in listed.stdout
            verify = ctl(chroot, "--role", "ops", "audit", "verify", check=False)
            assert verify.returncode == 0, verify.stdout + verify.stderr
            assert new.stop() == 0
        finally:
            new.kill()
        rows_after = store_query(state / "audit.db", "SELECT count(*) FROM audit")[0][0]
        assert rows_after > rows_before
    finally:
        chroot.destroy()


# What dpkg, apt and the account tools keep after a purge: their own records.
BOOKKEEPING = re.compile(r"^/(var/lib/dpkg/|var/log/|var/cache/(apt|debconf)/|var/lib/apt/"
                         r"|etc/(passwd|group|shadow|gshadow|subuid|subgid)-?$"
                         r"|var/lib/systemd/deb-systemd-helper-(enabled|masked)$)")


def test_remove_keeps_the_state_and_purge_leaves_nothing_behind(
        tmp_path: Path, stack: Stack, head_deb: Deb) -> None:
    chroot = new_chroot(tmp_path / "root")
    try:
        before = chroot.files()
        chroot.apt_install(head_deb)
        join_role_groups(chroot)
        use_config(chroot, (ROOT / "docs" / "examples" / "gate.toml").read_text())
        unit = UnitRun(chroot, stack.pcscd_socket, tmp_path / "cardapd.log")
        try:
            unit.start()
            assert unit.stop() == 0
        finally:
            unit.kill()
        chroot.run("rm", "-rf", "/run/cardapd", "/run/systemd/notify")  # tmpfs at boot

        chroot.run("apt-get", "remove", "--yes", "cardapd")
        for name in ("audit.db", "audit.head", "roster.db", "journal.db", "revocation.db"):
            assert chroot.path(f"/var/lib/cardapd/{name}").exists(), name
        assert chroot.path("/etc/cardapd/cardapd.toml").exists()  # a conffile
        assert not chroot.path(VENV).exists()  # no bytecode or directory left behind
        assert not chroot.path("/usr/bin/cardapd").exists()

        chroot.run("apt-get", "purge", "--yes", "cardapd")
        assert chroot.run("dpkg-query", "-W", "cardapd", check=False).returncode != 0
        left = {p for p in chroot.files() - before if not BOOKKEEPING.match(p)}
        assert left == set(), sorted(left)
        assert chroot.owned_by(chroot.uid("cardapd")) == []
        # The account stays (Debian practice; docs/operations.md says how to delete it).
        assert chroot.run("getent", "passwd", "cardapd", check=False).returncode == 0
    finally:
        chroot.destroy()


def test_the_units_documentation_is_installed(installed: Chroot) -> None:
    unit = installed.path(f"/{UNIT}").read_text()
    (line,) = re.findall(r"(?m)^Documentation=(.+)$", unit)
    for uri in line.split():
        if uri.startswith("file://"):
            assert installed.path(uri.removeprefix("file://")).is_file(), uri
        else:
            m = re.fullmatch(r"man:([\w.-]+)\((\d)\)", uri)
            assert m, uri
            page, section = m.groups()
            assert installed.path(f"/usr/share/man/man{section}/{page}.{section}.gz").is_file()


def guide_block(heading: str) -> str:
    """The first sh block after `heading` in the operations guide."""
    after = (ROOT / "docs" / "operations.md").read_text().split(heading, 1)[1]
    m = re.search(r"```sh\n(.*?)```", after, flags=re.S)
    assert m, heading
    return m.group(1)


def test_the_guides_backup_and_restore_of_every_store(installed: Chroot, stack: Stack,
                                                      daemon: UnitRun) -> None:
    """docs/operations.md section 4, run as written (systemctl is a no-op here: the daemon
    is stopped and started by the test, as the unit would)."""
    use_config(installed, (ROOT / "docs" / "examples" / "gate.toml").read_text()
               + '\n[operators.organisations]\norg-a = "Organisation A"\n'
               + 'org-b = "Organisation B"\n')
    daemon.start()
    insert_demo_card(installed, stack, "gate")
    ctl(installed, "read-id")
    bootstrap_admin(installed, "org-a", "backed-up")
    installed.run("bash", "-c", "set -e\n" + guide_block("**Backup while running**"))
    (backup,) = installed.path("/srv/backup/cardapd").iterdir()
    # audit.head is left out on purpose: a restore must not roll the anchor back.
    assert sorted(p.name for p in backup.iterdir()) == [
        "audit.db", "etc-cardapd", "journal.db", "revocation.db", "roster.db"]
    assert (backup / "etc-cardapd" / "cardapd.toml").exists()
    rows = store_query(backup / "audit.db", "SELECT count(*) FROM audit")[0][0]
    # Life goes on after the backup: more rows, another operator.
    ctl(installed, "read-id", "--fresh")
    bootstrap_admin(installed, "org-b", "after-backup")
    assert daemon.stop() == 0
    state = installed.path("/var/lib/cardapd")
    assert store_query(state / "audit.db", "SELECT count(*) FROM audit")[0][0] > rows

    # systemctl and cardapctl are the test's here: it starts the daemon as the unit would.
    stub = ("set -e\nsystemctl() { :; }\ncardapctl() { :; }\n"
            f"B=/srv/backup/cardapd/{backup.name}\n")
    installed.run("bash", "-c", stub + guide_block("**Restore**"))
    assert store_query(state / "audit.db", "SELECT count(*) FROM audit")[0][0] == rows
    cardapd = installed.uid("cardapd")
    for name in ("audit.db", "audit.head", "roster.db", "journal.db", "revocation.db"):
        st = (state / name).stat()
        assert (st.st_uid, st.st_mode & 0o777) == (cardapd, 0o600), name
    daemon.start()
    listed = ctl(installed, "--role", "ops", "operators", "list").stdout
    assert "backed-up" in listed
    assert "after-backup" not in listed
    # The rollback is an anchor reset: verification fails until it is acknowledged.
    verify = ctl(installed, "--role", "ops", "--json", "audit", "verify", check=False)
    assert verify.returncode != 0, verify.stdout
    (reset,) = [r for r in json.loads(verify.stdout.splitlines()[0])["resets"]]
    assert reset["kind"] == "truncated", reset
    # Only an administrator acknowledges it: org-b lost its administrator with the restore,
    # so root appoints one again (section 10.1) and uses that session.
    session = bootstrap_admin(installed, "org-b", "restorer")
    ctl(installed, "--role", "ops", "--session-file", session, "audit", "acknowledge",
        "--reset", str(reset["seq"]), "--reason", "restored from the backup (install test)")
    verify = ctl(installed, "--role", "ops", "audit", "verify", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert daemon.stop() == 0
    installed.run("rm", "-rf", "/srv/backup/cardapd")


def test_the_daemon_does_not_outlive_the_harness(installed: Chroot, daemon: UnitRun) -> None:
    """If the test dies, its daemon goes too: killing its `unshare` kills it."""
    use_config(installed, (ROOT / "docs" / "examples" / "gate.toml").read_text())
    daemon.start()
    pid = daemon.pid
    assert daemon.proc is not None
    daemon.proc.kill()
    assert gone(pid, 10)
