"""The Debian package under test: built with `make deb`'s script, installed with apt in a
Debian 12 chroot (mmdebstrap), and the daemon started there the way cardapd.service
starts it.

Nothing here changes the machine: the package, its user and groups, /etc/cardapd and
/var/lib/cardapd exist only inside a chroot under the test's own directory; every mount
is made in a private mount namespace (`unshare --mount`) and vanishes with it; the
daemon runs in a private network namespace (its metrics port 9750 cannot clash with
anything), tied to its `unshare` (`--kill-child`). What is cached lives in the
repository's build/ directory, each cache filled under a file lock, so that parallel
test workers (pytest-xdist) wait for one build instead of making two:

- build/deb/…            the package of the working tree (release/debbuild.py's cache)
- build/deb-tags/<commit> the package of the first packaged tag, built once per commit
                          from a clone, with that tag's own release/debbuild.py
- build/chroot/*.tar     a Debian 12 base with what the package depends on, made once
                          per package list, apt sources and mmdebstrap version

How the daemon is started (`UnitRun`), compared with systemd: the unit file is read from
the chroot and its ExecStart, User, Group, SupplementaryGroups, UMask, LimitNOFILE
(prlimit), the StateDirectory/RuntimeDirectory/ConfigurationDirectory, Type=notify and
WatchdogSec are honoured; its environment is what systemd 252 gives a system service
(PATH, HOME, USER, LOGNAME, SHELL, INVOCATION_ID, NOTIFY_SOCKET, WATCHDOG_PID/USEC, the
*_DIRECTORY variables). Of the sandbox, these are reproduced: NoNewPrivileges, an empty
capability bounding set, ProtectSystem=strict (everything read-only except the state and runtime
directories), PrivateTmp, ProtectProc=invisible + ProcSubset=pid (a proc instance with
hidepid=invisible,subset=pid), MemoryDenyWriteExecute (prctl PR_SET_MDWE) and, beyond
IPAddressDeny=any, no network at all but loopback. What systemd would add on top and this
does not: the seccomp filters (SystemCallFilter, SystemCallArchitectures,
RestrictAddressFamilies, RestrictNamespaces, RestrictRealtime, LockPersonality), the
private /dev (PrivateDevices, DevicePolicy), ProtectKernel*/ProtectControlGroups/
ProtectClock/ProtectHostname, KeyringMode, RemoveIPC, the cgroup (kill of the whole
group at stop), the watchdog's enforcement, journald's stream (JOURNAL_STREAM) and
Restart=on-failure. tests/unit/test_systemd_unit.py checks those settings offline
(`systemd-analyze verify` and `security`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from release import tags
from release.debbuild import locked

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
PYTHON = "/usr/bin/python3.11"
FIRST_PACKAGED = "v1.0.0"
"""The tag of the first packaged version: every upgrade is tested from it."""
BASE_PACKAGES = ("systemd", "pcscd", "libpcsclite1", "libccid", "python3.11", "fprintd",
                 "sqlite3")
"""What the chroot starts with: the package's Depends and Recommends (so that
`apt-get install ./cardapd_….deb` needs no download) and sqlite3 for the backups."""
APT_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
UNIT = "lib/systemd/system/cardapd.service"


def run(cmd: list[str], *, cwd: Path | None = None, timeout: float = 900,
        env: dict[str, str] | None = None, check: bool = True,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure the assertion shows its output."""
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env=env, check=False, input=input)
    if check:
        assert result.returncode == 0, (f"{' '.join(cmd)} exited {result.returncode}:\n"
                                        f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


# ---------------------------------------------------------------------- the packages


@dataclass(frozen=True)
class Deb:
    """A built package."""

    path: Path

    @property
    def version(self) -> str:
        """Its Debian version."""
        return run(["dpkg-deb", "-f", str(self.path), "Version"]).stdout.strip()

    def directories(self) -> set[str]:
        """The directories it ships (as `dpkg -L` names them)."""
        import tarfile
        with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(self.path)],
                              stdout=subprocess.PIPE) as proc:
            assert proc.stdout is not None
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                return {"/" + m.name.lstrip("./").rstrip("/") for m in tar
                        if m.isdir() and m.name.strip("./")}


def build_head() -> Deb:
    """The package of the working tree, as `make deb` builds it (lintian included)."""
    out = run([PYTHON, "-m", "release.debbuild", "--out", str(BUILD / "deb"),
               "--cache", str(BUILD / "cache")], cwd=ROOT)
    return Deb(Path(out.stdout.strip().splitlines()[-1]))


def tag_commit(tag: str = FIRST_PACKAGED) -> str:
    """The commit `tag` names, as release/tags.toml records it (a clone without tags has
    it too); fails (never skips) when the clone lacks that commit."""
    commit = tags.commit_of(tag)
    result = run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=ROOT, check=False)
    assert result.returncode == 0, (
        f"the commit {commit} of {tag} (the first packaged version) is not in this clone: "
        f"the upgrade test builds it. A shallow clone? git fetch --unshallow")
    return commit


def build_tag(tag: str = FIRST_PACKAGED) -> Deb:
    """The package of `tag`, built from a clone with the tag's own build script (once per
    commit; the pip cache and the build tools are shared with the working tree's)."""
    commit = tag_commit(tag)
    out = BUILD / "deb-tags" / commit
    with locked(BUILD / "deb-tags.lock"):
        found = sorted(out.glob("cardapd_*.deb"))
        if found:
            return Deb(found[0])
        with tempfile.TemporaryDirectory(dir=BUILD, prefix="tag-src-") as tmp:
            src = Path(tmp) / "src"
            run(["git", "clone", "--quiet", "--no-checkout", str(ROOT), str(src)])
            run(["git", "-c", "advice.detachedHead=false", "checkout", "--quiet", commit],
                cwd=src)
            # the version setuptools-scm gives that build is the tag's, so the clone has it
            # whether or not this one had it yet
            run(["git", "tag", "-f", tag, commit], cwd=src)
            built = run([PYTHON, "-m", "release.debbuild", "--out", str(out / "tmp"),
                         "--cache", str(BUILD / "cache"), "--no-lintian"], cwd=src)
            deb = Path(built.stdout.strip().splitlines()[-1])
            shutil.copy2(deb, out / deb.name)
            shutil.rmtree(out / "tmp")
        return Deb(out / deb.name)


# ---------------------------------------------------------------------- the chroot


def base_tarball() -> Path:
    """A Debian 12 root file system with BASE_PACKAGES (mmdebstrap, once per inputs)."""
    version = run(["mmdebstrap", "--version"]).stdout.strip()
    sources = APT_SOURCES.read_text()
    key = hashlib.sha256("\n".join([version, sources, *BASE_PACKAGES]).encode()
                         ).hexdigest()[:16]
    target = BUILD / "chroot" / f"bookworm-{key}.tar"
    with locked(BUILD / "chroot.lock"):
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            for old in target.parent.glob("bookworm-*.tar"):
                old.unlink()
            partial = target.with_name(target.stem + ".partial.tar")
            run(["mmdebstrap", "--quiet", "--variant=apt", "--mode=root",
                 f"--include={','.join(BASE_PACKAGES)}",
                 "--aptopt=Acquire::Check-Valid-Until \"false\"",
                 "bookworm", str(partial), str(APT_SOURCES)], timeout=1200)
            partial.rename(target)
    return target


# Run a command chrooted, with /proc mounted, in a private mount namespace: the mount goes
# away with the namespace.
_IN_CHROOT = 'R=$1; shift; mount -t proc proc "$R/proc" && exec chroot "$R" "$@"'


class Chroot:
    """A Debian 12 system under `root`, made from the base tarball."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def create(cls, root: Path) -> Chroot:
        """Unpack the base tarball into `root`."""
        tarball = base_tarball()
        root.mkdir(parents=True)
        run(["tar", "-xf", str(tarball), "-C", str(root)])
        return cls(root)

    def destroy(self) -> None:
        """Delete the whole tree (nothing is mounted in this mount namespace)."""
        run(["rm", "-rf", "--one-file-system", str(self.root)])

    def run(self, *cmd: str, check: bool = True, timeout: float = 300,
            input: str | None = None, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        """`cmd` inside the chroot, as root."""
        environment = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                       "DEBIAN_FRONTEND": "noninteractive", **(env or {})}
        return run(["unshare", "--mount", "--propagation", "private", "--fork",
                    "--kill-child", "--", "sh", "-c", _IN_CHROOT, "sh", str(self.root),
                    *cmd], check=check, timeout=timeout, input=input, env=environment)

    def as_user(self, user: str, *cmd: str, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`cmd` inside the chroot as `user` with its groups (how an operator runs it)."""
        return self.run("setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups",
                        "--", *cmd, check=check, timeout=timeout)

    def apt_install(self, deb: Deb, *extra: str) -> subprocess.CompletedProcess[str]:
        """`apt-get install ./cardapd_….deb` (the changed configuration kept, as an
        unattended upgrade does: --force-confold)."""
        name = deb.path.name
        shutil.copy2(deb.path, self.root / "tmp" / name)
        try:
            return self.run("apt-get", "install", "--yes", "-o",
                            "Dpkg::Options::=--force-confdef", "-o",
                            "Dpkg::Options::=--force-confold", *extra, f"/tmp/{name}")
        finally:
            (self.root / "tmp" / name).unlink()

    def path(self, inside: str) -> Path:
        """A path of the chroot, seen from outside."""
        return self.root / inside.lstrip("/")

    def files(self) -> set[str]:
        """Every path of the chroot's file system (for before/after comparisons)."""
        out: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel = os.path.normpath(os.path.join(os.sep, os.path.relpath(dirpath, self.root)))
            if rel in ("/proc", "/sys", "/dev", "/tmp", "/run"):
                dirnames[:] = []
                continue
            for name in dirnames + filenames:
                out.add(os.path.normpath(f"{rel}/{name}"))
        return out

    def owned_by(self, uid: int) -> list[str]:
        """Paths owned by `uid` (outside /proc, /sys, /dev)."""
        found = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel = os.path.relpath(dirpath, self.root)
            if rel.split(os.sep)[0] in ("proc", "sys", "dev"):
                dirnames[:] = []
                continue
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                if os.lstat(path).st_uid == uid:
                    found.append("/" + os.path.relpath(path, self.root))
        return found

    def uid(self, user: str) -> int:
        """`user`'s uid in the chroot."""
        return int(self.run("id", "-u", user).stdout.strip())


# ---------------------------------------------------------------------- the unit


@dataclass
class Unit:
    """The [Service] settings of a unit file (a key given twice keeps every value)."""

    settings: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Unit:
        """Read the [Service] section."""
        unit = cls()
        section = ""
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            if section == "Service" and "=" in line:
                key, value = line.split("=", 1)
                unit.settings.setdefault(key.strip(), []).append(value.strip())
        return unit

    def one(self, key: str, default: str = "") -> str:
        """The last value of `key`."""
        values = self.settings.get(key)
        return values[-1] if values else default

    def words(self, key: str) -> list[str]:
        """Every word of every value of `key`."""
        return [w for v in self.settings.get(key, []) for w in v.split()]


class Notifications:
    """systemd's notify socket, as seen by the daemon: READY=1, STATUS=, WATCHDOG=1, …"""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o777)  # noqa: S103 - systemd's notify socket is world-writable
        self.sock.settimeout(0.1)
        self.messages: list[str] = []
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        """Collect datagrams; once closing, until none is left."""
        while True:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                if self._closing.is_set():
                    return
                continue
            except OSError:
                return
            with self._changed:
                self.messages.extend(data.decode(errors="replace").splitlines())
                self._changed.notify_all()

    def wait(self, line: str, timeout: float, alive: object = None) -> str:
        """Wait until the daemon sent `line` (or a line starting with it, for one ending
        in "="); fails when `alive()` turns false. Returns the line."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [m for m in self.messages
                         if m == line or (line.endswith("=") and m.startswith(line))]
                if found:
                    return found[0]
                if callable(alive) and not alive():
                    raise AssertionError(f"the daemon exited before sending {line}")
                left = deadline - time.monotonic()
                assert left > 0, f"no {line} within {timeout} s (got {self.messages})"
                self._changed.wait(min(left, 0.2))

    def close(self) -> None:
        """Stop listening (what was sent before is still collected)."""
        self._closing.set()
        self._thread.join(5)
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


# The daemon's start, run by `unshare --mount --net --fork --kill-child`: the sandbox the
# unit asks for (as far as it is reproduced here, see the module docstring), then the
# unit's ExecStart as its user. $1: the chroot; $2: pcscd's socket; the rest: the command.
_START = r"""
set -e
R=$1; PCSCD=$2; shift 2
ip link set lo up
mkdir -p "$R/run/pcscd"
: > "$R/run/pcscd/pcscd.comm"
# ProtectSystem=strict: all read-only but StateDirectory= and RuntimeDirectory= (first:
# a bind mount of the root does not carry the mounts below it)
mount --bind "$R" "$R"
mount -o remount,bind,ro "$R"
for d in var/lib/cardapd run/cardapd; do
  mount --bind "$R/$d" "$R/$d"
  mount -o remount,bind,rw "$R/$d"
done
# pcscd of the test's private stack stands where the package expects it
mount --bind "$PCSCD" "$R/run/pcscd/pcscd.comm"
# PrivateTmp=yes
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/tmp"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/var/tmp"
# ProtectProc=invisible, ProcSubset=pid
mount -t proc -o hidepid=invisible,subset=pid proc "$R/proc"
export WATCHDOG_PID=$$ SYSTEMD_EXEC_PID=$$
exec chroot "$R" "$@"
"""

# MemoryDenyWriteExecute=yes: PR_SET_MDWE(PR_MDWE_REFUSE_EXEC_GAIN), kept across execve.
_MDWE = ("import ctypes, os, sys\n"
         "libc = ctypes.CDLL(None, use_errno=True)\n"
         "if libc.prctl(65, 1, 0, 0, 0) != 0:\n"
         "    raise SystemExit('PR_SET_MDWE: ' + os.strerror(ctypes.get_errno()))\n"
         "os.execv(sys.argv[1], sys.argv[1:])\n")


class UnitRun:
    """cardapd started inside `chroot` the way cardapd.service starts it (see the module
    docstring for what is reproduced), against the stack's pcscd."""

    def __init__(self, chroot: Chroot, pcscd_socket: Path, log: Path) -> None:
        self.chroot = chroot
        self.pcscd_socket = pcscd_socket
        self.log = log
        self.unit = Unit.parse(chroot.path(UNIT).read_text())
        self.proc: subprocess.Popen[bytes] | None = None
        self.notify: Notifications | None = None

    def environment(self) -> dict[str, str]:
        """What systemd 252 puts in a system service's environment for this unit."""
        u = self.unit
        user = u.one("User")
        home = self.chroot.run("getent", "passwd", user).stdout.split(":")
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME": home[5], "USER": user, "LOGNAME": user,
               "SHELL": home[6].strip(), "INVOCATION_ID": secrets.token_hex(16),
               "RUNTIME_DIRECTORY": f"/run/{u.one('RuntimeDirectory')}",
               "STATE_DIRECTORY": f"/var/lib/{u.one('StateDirectory')}",
               "CONFIGURATION_DIRECTORY": f"/etc/{u.one('ConfigurationDirectory')}"}
        for assignment in u.words("Environment"):
            key, _, value = assignment.partition("=")
            env[key] = value
        if u.one("Type") == "notify":
            env["NOTIFY_SOCKET"] = "/run/systemd/notify"
        watchdog = u.one("WatchdogSec")
        if watchdog:
            env["WATCHDOG_USEC"] = str(int(float(watchdog.rstrip("s")) * 1_000_000))
        return env

    def command(self) -> list[str]:
        """ExecStart, run with the unit's credentials, umask and privilege limits."""
        u = self.unit
        for key, expected in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                              ("PrivateTmp", "yes"), ("ProtectProc", "invisible"),
                              ("ProcSubset", "pid"), ("MemoryDenyWriteExecute", "yes"),
                              ("CapabilityBoundingSet", ""), ("AmbientCapabilities", "")):
            assert u.one(key) == expected, (
                f"the unit's {key}= changed ({u.one(key)!r}): update UnitRun, which "
                f"reproduces {key}={expected}")
        exec_start = u.one("ExecStart").split()
        groups = ",".join(u.words("SupplementaryGroups"))
        # --pdeathsig: not the unit's, the harness's tie to `unshare` (a parent-death
        # signal set before the change of user would be cleared by it).
        setpriv = ["setpriv", f"--reuid={u.one('User')}", f"--regid={u.one('Group')}",
                   f"--groups={groups}", "--inh-caps=-all", "--bounding-set=-all",
                   "--no-new-privs", "--pdeathsig=KILL", "--"]
        umask = u.one("UMask", "0022")
        limits = []
        if u.one("LimitNOFILE"):
            n = u.one("LimitNOFILE")
            limits = ["/usr/bin/prlimit", f"--nofile={n}:{n}", "--"]
        return ["/bin/sh", "-c", f'umask {umask} && exec "$@"', "sh", *limits,
                "/usr/bin/python3.11", "-c", _MDWE, "/usr/bin/setpriv", *setpriv[1:],
                *exec_start]

    def prepare(self) -> None:
        """What systemd does before ExecStart: RuntimeDirectory= (fresh, owned by the
        user, with its mode), StateDirectory= (owned by the user)."""
        u = self.unit
        user = u.one("User")
        runtime = f"/run/{u.one('RuntimeDirectory')}"
        self.chroot.run("sh", "-c", f"rm -rf {runtime} && install -d -o {user} -g {user} "
                        f"-m {u.one('RuntimeDirectoryMode', '0755')} {runtime}")
        state = f"/var/lib/{u.one('StateDirectory')}"
        self.chroot.run("sh", "-c", f"install -d -m {u.one('StateDirectoryMode', '0755')} "
                        f"{state} && chown -R {user}:{user} {state}")

    def start(self, timeout: float = 60) -> None:
        """Start and wait for READY=1 (Type=notify), as systemd does."""
        self.prepare()
        self.notify = Notifications(self.chroot.path("/run/systemd/notify"))
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "--net", "--fork",
                 "--kill-child", "--", "sh", "-c", _START, "sh", str(self.chroot.root),
                 str(self.pcscd_socket), *self.command()],
                env=self.environment(), stdout=log, stderr=subprocess.STDOUT)
        self.notify.wait("READY=1", timeout, alive=lambda: self.proc is not None
                         and self.proc.poll() is None)

    @property
    def pid(self) -> int:
        """The daemon's pid (the child of `unshare`)."""
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return int(children.split()[0])

    def metrics(self) -> str:
        """GET /metrics inside the daemon's network namespace."""
        u = (f"http://127.0.0.1:{self.metrics_port}/metrics")
        return run(["nsenter", f"--net=/proc/{self.pid}/ns/net", sys.executable, "-c",
                    f"import urllib.request; print(urllib.request.urlopen({u!r}, "
                    "timeout=10).read().decode(), end='')"], timeout=30).stdout

    metrics_port = 9750

    def stop(self, timeout: float = 35) -> int:
        """SIGTERM (KillSignal=), SIGKILL after TimeoutStopSec=; returns the exit status."""
        assert self.proc is not None
        proc, self.proc = self.proc, None
        with contextlib.suppress(FileNotFoundError, IndexError, ValueError):
            os.kill(int(Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text()
                        .split()[0]), signal.SIGTERM)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(10)
        if self.notify is not None:
            self.notify.close()
        return code

    def kill(self) -> None:
        """Make sure nothing of this run is left: SIGKILL to the daemon, then to its
        `unshare` (which would also take the daemon with it, --pdeathsig)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(FileNotFoundError, IndexError, ValueError,
                                     ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
        if self.notify is not None:
            self.notify.close()


def gone(pid: int, timeout: float) -> bool:
    """Whether `pid` has exited (or is a zombie) within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def store_query(db: Path, sql: str) -> list[tuple[object, ...]]:
    """Rows of `sql` on a copy of a store (with its WAL): nothing is written beside the
    daemon's files, and committed rows still in the WAL count."""
    import sqlite3
    with tempfile.TemporaryDirectory() as tmp:
        for suffix in ("", "-wal"):
            src = db.with_name(db.name + suffix)
            if src.exists():
                shutil.copy2(src, Path(tmp) / src.name)
        conn = sqlite3.connect(Path(tmp) / db.name)
        try:
            return list(conn.execute(sql))
        finally:
            conn.close()


def version_of(text: str) -> str:
    """The version in `cardapd X` / `cardapctl X`."""
    m = re.fullmatch(r"\S+ (\S+)\s*", text)
    assert m, text
    return m.group(1)
