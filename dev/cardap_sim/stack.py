"""Bring up the real stack on this machine: pcscd + vpcd + virtual cards + cardapd.

Each stack is private: its own pcscd (socket-activated on a socket in the stack's
directory, so it never touches /run/pcscd), its own vpcd port pair, its own simulator,
daemon sockets, audit database and metrics port. The integration tests start one per test
(or module), and `make run` (`python -m cardap_sim.demo`) starts one for a person to try.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cardap_sim import hotplug, procs
from cardap_sim.procs import tied
from cardap_sim.vcard.card import TypeCSpec, VirtualCard
from cardap_sim.vcard.control import SimControl
from cardap_sim.vcard.identity import check_char

VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
DEMO_TYPE_C_AID = bytes.fromhex("D392F00043010001")
DEMO_USER_ID = "A1B2C3D4E5F6"  # + check character, computed below
SERVICE_OPEN_AT = "2026-11-24T10:00:00+09:00"  # a Tuesday inside service hours


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range of ports for outgoing connections (Linux's default if unknown)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port_pair() -> int:
    """A port P with P and P+1 free on all interfaces (vpcd binds 0.0.0.0), taken below the
    kernel's ephemeral range: a port from `bind(0)` is odd, its P+1 even, and Linux gives
    even ports to outgoing connections, so any connection made before pcscd binds could
    take P+1 (slot 1 would then never appear)."""
    low, high = _ephemeral_range()
    outside = [r for r in (range(10000, low - 1), range(high + 1, 65534)) if len(r) > 1000]
    for _ in range(200):
        if outside:
            port = random.choice(random.choice(outside))
        else:  # the whole range is ephemeral: take what bind(0) gives, as before
            with socket.socket() as s:
                s.bind(("0.0.0.0", 0))
                port = int(s.getsockname()[1])
            if port >= 65535:
                continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("0.0.0.0", port))
                b.bind(("0.0.0.0", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for vpcd")


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll `predicate` until true or raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")


def port_open(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port."""
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def demo_user_id() -> str:
    """The demo card's 13-character user ID (12 characters + check character)."""
    return DEMO_USER_ID + check_char(DEMO_USER_ID)


class Stack:
    """One private pcscd + vpcd + simulator (+ optionally cardapd) under `workdir`."""

    def __init__(self, workdir: Path, *, type_c_aids: tuple[bytes, ...] = (DEMO_TYPE_C_AID,),
                 extra_config: str = "", log_level: str = "info", loading: bool = False,
                 test_sessions: bool = False, organisation: str = "org-a",
                 fake_now: str | None = SERVICE_OPEN_AT,
                 biometric: bool = False, unpluggable: bool = False,
                 hotplug: str = "auto", reader_shim: bool = False,
                 audit_config: str = "",
                 organisations: Mapping[str, str] | None = None,
                 loadsvc_args: tuple[str, ...] = (), loading_config: str = "",
                 loading_timeout_s: float = 20.0, language: str = "en") -> None:
        # loading: also run the loading service (mTLS, dev CA) and write [loading];
        # test_sessions: run the daemon through the TEST-ONLY cardapd_testing.main
        # (operator tokens test:<org>:<operator>); fake_now: the service clock's start
        # (None: the real time); language: [daemon] language (English unless a test asks
        # for "ja", the shipped default).
        self.dir = workdir
        self.language = language
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pcscd_socket = self.dir / "pcscd.comm"
        self.control_path = self.dir / "sim.sock"
        self.socket_dir = self.dir / "sockets"
        self.config_path = self.dir / "cardapd.toml"
        self.type_c_aids = type_c_aids
        self.extra_config = extra_config
        self.log_level = log_level
        self.vpcd_port = free_port_pair()
        self.metrics_port = free_port()
        self.pcscd: subprocess.Popen[bytes] | None = None
        self.sim: subprocess.Popen[bytes] | None = None
        self.daemon: subprocess.Popen[bytes] | None = None
        self._control: SimControl | None = None
        self.loading = loading
        self.test_sessions = test_sessions
        self.biometric = biometric  # private bus + real fprintd + virtual sensor
        self.bio: Any = None  # the running BiometricStack
        self._bio_cm: Any = None
        self.organisation = organisation
        # [operators.organisations]: the organisations working on this terminal
        self.organisations = dict(organisations or {organisation: "Organisation A"})
        self.ca: Any = None  # the dev CA (cardap_sim.loadsvc.devca.DevCa) once written
        self.fake_now = fake_now
        self.certs_dir = self.dir / "certs"
        self.loadsvc: subprocess.Popen[bytes] | None = None
        self.loadsvc_port: int | None = None
        self.revocations: Path | None = None  # the service's feed file (None: the dev feed)
        # unpluggable: the vpcd reader sits behind cardap_sim.hotplug's driver, so
        # unplug_reader()/replug_reader() can pull it the way a USB reader is pulled.
        self.unpluggable = unpluggable
        self.hotplug = hotplug  # the daemon's [pcsc] hotplug (udev: follow udev events)
        self.unplug_flag = self.dir / "reader-unplugged"
        # reader_shim: load the reader shim even when the reader need not be pulled: it also
        # turns the simulator's READER_TIMEOUT frames (fault reader_timeout_ms) into the
        # error a CCID driver returns when the reader gives up on a mute card.
        self.reader_shim = reader_shim or unpluggable
        self.catalogue: Path | None = None  # the service's catalogue (None: the dev one)
        self.audit_config = audit_config  # more [audit] keys ("key = value" lines)
        # extra `cardap-loadsvc serve` options, e.g. ("--maintenance", "START/END")
        self.loadsvc_args = tuple(loadsvc_args)
        self.loading_config = loading_config  # more [loading] keys, one "key = value" a line
        self.loading_timeout_s = loading_timeout_s  # [loading] timeout_s

    # ------------------------------------------------------------------ environment

    @property
    def env(self) -> dict[str, str]:
        """Environment for PC/SC clients of this stack (the daemon, pyscard scripts)."""
        env = dict(os.environ)
        env["PCSCLITE_CSOCK_NAME"] = str(self.pcscd_socket)
        env["CARDAPD_SOCKET_DIR"] = str(self.socket_dir)
        return env

    def socket(self, role: str) -> Path:
        """The daemon socket of `role`."""
        return self.socket_dir / f"{role}.sock"

    @property
    def control(self) -> SimControl:
        """The simulator's control client."""
        if self._control is None:
            self._control = SimControl(self.control_path)
        return self._control

    # ------------------------------------------------------------------ pcscd

    def start_pcscd(self) -> None:
        """Start a private pcscd (socket activation) with one vpcd reader (2 slots)."""
        if not VPCD_DRIVER.exists():
            raise RuntimeError(f"{VPCD_DRIVER} missing: apt-get install vsmartcard-vpcd")
        conf = self.dir / "reader.conf.d"
        conf.mkdir(exist_ok=True)
        driver = VPCD_DRIVER
        env = dict(os.environ, LISTEN_FDS="1")
        if self.reader_shim:
            driver = hotplug.build_driver(self.dir / "drivers")
            env[hotplug.DRIVER_ENV] = str(VPCD_DRIVER)
            env[hotplug.FLAG_ENV] = str(self.unplug_flag)
        (conf / "vpcd").write_text(
            'FRIENDLYNAME "Virtual PCD"\n'
            f"DEVICENAME   /dev/null:0x{self.vpcd_port:04X}\n"
            f"LIBPATH      {driver}\n"
            f"CHANNELID    0x{self.vpcd_port:04X}\n")
        with contextlib.suppress(FileNotFoundError):
            self.pcscd_socket.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.pcscd_socket))
        listener.listen(64)
        os.chmod(self.pcscd_socket, 0o666)  # noqa: S103 - like /run/pcscd/pcscd.comm
        pcscd = shutil.which("pcscd") or "/usr/sbin/pcscd"
        log = (self.dir / "pcscd.log").open("ab")
        fd = listener.fileno()
        move = "" if fd == 3 else f"3<&{fd} {fd}<&-"
        # pcscd takes its socket as fd 3 (socket activation). subprocess closes every fd not
        # in pass_fds *after* preexec_fn, so let the shell move it to 3 at exec time.
        self.pcscd = subprocess.Popen(
            tied(["bash", "-c", f'LISTEN_PID=$$ exec "{pcscd}" -f -c "{conf}" {move}']),
            env=env, stdout=log, stderr=subprocess.STDOUT,
            pass_fds=(fd,), start_new_session=True)
        listener.close()
        log.close()
        wait_for(lambda: port_open(self.vpcd_port), 10, "vpcd to listen")

    def kill_pcscd(self) -> None:
        """SIGKILL pcscd (as a crash would)."""
        if self.pcscd is not None:
            self.pcscd.kill()
            self.pcscd.wait(5)
            self.pcscd = None

    def unplug_reader(self) -> None:
        """Pull the vpcd reader out, as a USB reader is pulled (needs `unpluggable=True`)."""
        if not self.unpluggable:
            raise RuntimeError("start the stack with unpluggable=True to unplug its reader")
        self.unplug_flag.touch()

    def replug_reader(self) -> None:
        """Plug the reader back in; SIGUSR1 is what `pcscd --hotplug` sends after udev."""
        self.unplug_flag.unlink(missing_ok=True)
        if self.pcscd is not None:
            self.pcscd.send_signal(signal.SIGUSR1)

    def restart_pcscd(self) -> None:
        """Start pcscd again on the same socket and port."""
        self.kill_pcscd()
        self.start_pcscd()

    # ------------------------------------------------------------------ simulator

    def start_sim(self) -> None:
        """Start `cardap-sim serve` on this stack's vpcd port."""
        log = (self.dir / "sim.log").open("ab")
        self.sim = subprocess.Popen(
            tied([sys.executable, "-m", "cardap_sim.vcard", "serve", "--vpcd-port",
                  str(self.vpcd_port), "--slots", "2", "--control", str(self.control_path)]),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_for(self.control_path.exists, 10, "the simulator's control socket")

    def new_card(self, name: str, *, profile: str = "vendor-a",
                 type_c: list[TypeCSpec] | None = None, serial: int | None = None,
                 certificates: bool = True) -> Path:
        """Create a card file in the stack directory; returns its path (`certificates`
        False: a holder without JPKI certificates)."""
        path = self.dir / "cards" / f"{name}.json"
        path.parent.mkdir(exist_ok=True)
        VirtualCard.create(profile=profile, path=path, serial=serial,
                           type_c=type_c if type_c is not None else [],
                           certificates=certificates)
        return path

    def demo_card(self, name: str = "demo", profile: str = "vendor-a") -> Path:
        """A My Number Card with the demo Type C AP pre-personalised."""
        return self.new_card(name, profile=profile, type_c=[TypeCSpec(
            aid=DEMO_TYPE_C_AID, user_id=demo_user_id(),
            info=(b"\x00\x00\x00\x01", b"\x20\x26\x11\x23", b"\xca\xfe\x00\x00"))])

    # ------------------------------------------------------------------ loading service

    def write_certs(self) -> None:
        """Dev CA, service certificate and this terminal's certificate (kiosk-01)."""
        from cardap_sim.loadsvc.devca import write_bundle
        from cardap_sim.loadsvc.keystore import write_dev_key_file
        if not (self.certs_dir / "ca.pem").exists():
            self.ca = write_bundle(self.certs_dir, [("kiosk-01", self.organisation)])
        keys = self.certs_dir / "card-keys.json"
        if not keys.exists():
            write_dev_key_file(keys)

    def install_terminal_cert(self, *, not_before: Any = None, not_after: Any = None,
                              key_only: bool = False, cert_only: bool = False) -> None:
        """Replace this terminal's certificate and key (kiosk-01.pem/.key) with a new pair
        from the dev CA, as an operator renews it (`key_only`/`cert_only`: half a
        rotation, a pair that does not belong together)."""
        from cardap_sim.loadsvc.devca import write_private
        if self.ca is None:
            raise RuntimeError("the dev CA of this stack was not written by it")
        issued = self.ca.terminal_cert("kiosk-01", self.organisation, not_before=not_before,
                                       not_after=not_after)
        if not key_only:
            tmp = self.certs_dir / "kiosk-01.pem.new"
            tmp.write_bytes(issued.cert_pem)
            tmp.replace(self.certs_dir / "kiosk-01.pem")
        if not cert_only:
            write_private(self.certs_dir / "kiosk-01.key", issued.key_pem)

    def start_loadsvc(self, port: int = 0, fake_now: str | None = None) -> int:
        """Start `python -m cardap_sim.loadsvc serve`; returns its port (READY line)."""
        self.write_certs()
        c = self.certs_dir
        now = fake_now if fake_now is not None else self.fake_now
        cmd = [sys.executable, "-m", "cardap_sim.loadsvc", "serve",
               "--listen", f"127.0.0.1:{port or self.loadsvc_port or 0}",
               "--cert", str(c / "service.pem"), "--key", str(c / "service.key"),
               "--client-ca", str(c / "ca.pem"), "--keys", str(c / "card-keys.json"),
               "--data-dir", str(self.dir / "loadsvc")]
        if now:
            cmd += ["--fake-now", now]
        if self.revocations is not None:
            cmd += ["--revocations", str(self.revocations)]
        if self.catalogue is not None:
            cmd += ["--catalogue", str(self.catalogue)]
        cmd += list(self.loadsvc_args)
        log = (self.dir / "loadsvc.log").open("ab")
        proc = subprocess.Popen(tied(cmd), stdout=subprocess.PIPE, stderr=log,
                                start_new_session=True)
        log.close()
        assert proc.stdout is not None
        line = proc.stdout.readline().decode(errors="replace").strip()
        if not line.startswith("READY port="):
            proc.kill()
            proc.wait(5)
            raise RuntimeError(f"the loading service did not start ({line!r}); see "
                               f"{self.dir / 'loadsvc.log'}")
        self.loadsvc = proc
        self.loadsvc_port = int(line.split("=", 1)[1])
        return self.loadsvc_port

    def stop_loadsvc(self) -> None:
        """Stop the loading service (the daemon then finds it unreachable)."""
        proc, self.loadsvc = self.loadsvc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def _loading_config(self) -> str:
        """The [loading] section for this stack."""
        if not self.loading:
            return ""
        if self.loadsvc_port is None:
            self.loadsvc_port = free_port()
        c = self.certs_dir
        return (f'[loading]\naddress = "127.0.0.1:{self.loadsvc_port}"\n'
                f'ca = "{c / "ca.pem"}"\ncert = "{c / "kiosk-01.pem"}"\n'
                f'key = "{c / "kiosk-01.key"}"\ntimeout_s = {self.loading_timeout_s:g}\n'
                f'{self.loading_config}\n')

    # ------------------------------------------------------------------ daemon

    def write_config(self) -> None:
        """Write the daemon configuration of this stack."""
        aids = ", ".join(f'"{a.hex().upper()}"' for a in self.type_c_aids)
        state = self.dir / "state"
        self.config_path.write_text(
            f'[daemon]\nstate_dir = "{state}"\nruntime_dir = "{self.dir / "runtime"}"\n'
            f'log_level = "{self.log_level}"\nlog_format = "json"\nshutdown_grace_s = 5\n'
            f'language = "{self.language}"\n\n'
            f'[sockets]\ndir = "{self.socket_dir}"\n\n'
            f'[pcsc]\nreconnect_interval_s = 0.2\nhotplug = "{self.hotplug}"\n\n'
            f"[tap]\ntype_c_aids = [{aids}]\n\n"
            f'[metrics]\nlisten = "127.0.0.1:{self.metrics_port}"\n\n'
            f'[audit]\npath = "{state / "audit.db"}"\n{self.audit_config}\n'
            + self._loading_config()
            + "[operators.organisations]\n" + "".join(
                f"{org} = {json.dumps(name)}\n" for org, name in self.organisations.items())
            + "\n" + self.extra_config)

    def start_daemon(self, extra_env: Mapping[str, str] | None = None) -> None:
        """Start cardapd against this stack and wait until its sockets answer."""
        if not self.config_path.exists():
            self.write_config()
        for role in ("kiosk", "gate", "ops"):  # a killed daemon leaves its sockets behind
            with contextlib.suppress(FileNotFoundError):
                self.socket(role).unlink()
        log = (self.dir / "cardapd.log").open("ab")
        env = self.env
        env.update(extra_env or {})
        if self.bio is not None:
            env["DBUS_SYSTEM_BUS_ADDRESS"] = self.bio.bus_address
        entry = "cardapd_testing.main" if self.test_sessions else "cardapd.main"
        self.daemon = subprocess.Popen(
            tied([sys.executable, "-m", entry, "--config", str(self.config_path)]),
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_for(lambda: all(self.socket(r).exists() for r in ("kiosk", "gate", "ops"))
                 or self.daemon is None or self.daemon.poll() is not None, 20,
                 "cardapd's sockets")
        if self.daemon.poll() is not None:
            raise RuntimeError(f"cardapd exited with {self.daemon.returncode}; see "
                               f"{self.dir / 'cardapd.log'}")
        wait_for(lambda: self._answers("ops"), 10, "cardapd to answer on its ops socket")

    def bootstrap_admin(self, operator_id: str = "admin-1", organisation: str = "", *,
                        name: str = "", rights: str = "load,delete,diagnose",
                        replace_session: bool = False) -> str:
        """Appoint an organisation's first administrator the way root does on a terminal
        (`cardapd bootstrap-admin`, without enrolling a finger); their ops session token."""
        org = organisation or self.organisation
        token_file = self.dir / f"bootstrap-{org}-{operator_id}.token"
        cmd = [sys.executable, "-m", "cardapd.main", "bootstrap-admin",
               "--config", str(self.config_path), "--organisation", org,
               "--operator", operator_id, "--name", name or operator_id, "--rights", rights,
               "--no-enroll", "--session-file", str(token_file)]
        if replace_session:
            cmd.append("--replace-session")
        result = subprocess.run(cmd, env=self.env, capture_output=True, text=True,
                                timeout=60, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"cardapd bootstrap-admin failed ({result.returncode}): "
                               f"{result.stderr.strip()}")
        token = token_file.read_text().strip()
        token_file.unlink()
        return token

    def _answers(self, role: str) -> bool:
        """Whether the daemon accepts a connection on `role`'s socket."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            return s.connect_ex(str(self.socket(role))) == 0

    def stop_daemon(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        """Stop cardapd with `sig`; returns its exit code."""
        if self.daemon is None:
            return None
        proc, self.daemon = self.daemon, None
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(5)

    # ------------------------------------------------------------------ whole stack

    def start(self, *, daemon: bool = True) -> Stack:
        """pcscd, the simulator, the loading service (if asked) and (by default) the daemon."""
        self.start_pcscd()
        self.start_sim()
        if self.biometric:
            from cardap_sim.biometric import biometric_stack
            (self.dir / "fp").mkdir(exist_ok=True)
            self._bio_cm = biometric_stack(self.dir / "fp")
            self.bio = self._bio_cm.__enter__()
        if self.loading:
            self.start_loadsvc()
        if daemon:
            self.start_daemon()
        return self

    def processes(self) -> dict[str, subprocess.Popen[bytes]]:
        """The processes this stack started and holds, by name."""
        found = {"pcscd": self.pcscd, "simulator": self.sim, "loading service": self.loadsvc,
                 "cardapd": self.daemon}
        if self.bio is not None:
            found.update(self.bio.processes())
        return {name: p for name, p in found.items() if p is not None}

    def stop(self) -> None:
        """Stop everything this stack started (daemon first, pcscd last)."""
        self.stop_daemon()
        self.stop_loadsvc()
        for proc in (self.sim, self.pcscd):
            procs.stop(proc)
        self.sim = self.pcscd = None
        if self._bio_cm is not None:
            cm, self._bio_cm, self.bio = self._bio_cm, None, None
            cm.__exit__(None, None, None)
        if self._control is not None:
            self._control = None

    def logs(self) -> dict[str, str]:
        """Every log file of the stack, by name (for tests that scan them)."""
        return {p.name: p.read_text(errors="replace") for p in self.dir.glob("*.log")}


@contextlib.contextmanager
def running_stack(workdir: Path, **kw: Any) -> Iterator[Stack]:
    """A started stack, stopped on exit."""
    stack = Stack(workdir, **kw)
    try:
        yield stack.start()
    finally:
        stack.stop()
