"""The virtual card through the real stack: isolated pcscd + vpcd + `cardap-sim serve` + pyscard."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cardap_sim.stack import free_port_pair
from cardap_sim.vcard.card import TypeCSpec, VirtualCard
from cardap_sim.vcard.control import SimControl
from cardap_sim.vcard.identity import make_user_id

VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
PCSCD = shutil.which("pcscd") or "/usr/sbin/pcscd"
REPO = Path(__file__).resolve().parents[2]
TYPE_C = bytes.fromhex("D392F00043010001")
USER_ID = make_user_id("K7Q2M9X4B1C8")
INFOS = (bytes.fromhex("00000001"), bytes.fromhex("20261123"), bytes.fromhex("DEADBEEF"))

pytestmark = [
    pytest.mark.stack,
]

# Runs in a child process: pcsc-lite caches PCSCLITE_CSOCK_NAME on first use per process.
CLIENT = r'''
import json, sys, time
from smartcard.System import readers
from smartcard.Exceptions import CardConnectionException, NoCardException
mode, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
def connect():
    rs = [r for r in readers() if r.name.endswith(" 00 00")]
    if not rs:
        return None
    c = rs[0].createConnection()
    try:
        c.connect()
    except (NoCardException, CardConnectionException):
        return None
    return c
def tx(c, h):
    d, s1, s2 = c.transmit(list(bytes.fromhex(h)))
    return bytes(d + [s1, s2]).hex().upper()
while True:
    c = connect()
    if (c is not None) == (mode == "read") or time.monotonic() > deadline:
        break
    if c is not None:
        c.disconnect()
    time.sleep(0.1)
if mode == "absent":
    print(json.dumps({"present": c is not None}))
    sys.exit(0)
if c is None:
    print(json.dumps({"present": False}))
    sys.exit(0)
out = {"present": True, "atr": bytes(c.getATR()).hex().upper(),
       "select": tx(c, "00A4040C08D392F00043010001"), "read": tx(c, "00B0000021")}
n = 500
t = time.perf_counter()
for _ in range(n):
    tx(c, "00B0000021")
out["ms_per_apdu"] = (time.perf_counter() - t) / n * 1000
c.disconnect()
print(json.dumps(out))
'''


# systemd socket activation without touching fd 3 of the test process: the child moves the
# listening socket to fd 3, names itself in LISTEN_PID, and execs pcscd (same pid).
SOCKET_ACTIVATE = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); os.environ['LISTEN_PID'] = str(os.getpid()); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate one child we started, then kill it if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@dataclass
class Stack:
    """An isolated pcscd and a simulator process wired to it."""

    csock: Path
    control: SimControl
    env: dict[str, str]

    def client(self, mode: str, wait: float) -> dict[str, object]:
        env = dict(self.env, PCSCLITE_CSOCK_NAME=str(self.csock))
        done = subprocess.run([sys.executable, "-c", CLIENT, mode, str(wait)], env=env,
                              capture_output=True, timeout=60, check=True)
        result: dict[str, object] = json.loads(done.stdout)
        return result


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    port = free_port_pair()
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "vpcd").write_text(
        f'FRIENDLYNAME "Virtual PCD"\nDEVICENAME   /dev/null:0x{port:04X}\n'
        f"LIBPATH      {VPCD_DRIVER}\nCHANNELID    0x{port:04X}\n")
    csock = tmp_path / "pcscd.comm"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        str(REPO / d) for d in ("lib", "daemon", "clients", "dev")))
    procs: list[subprocess.Popen[bytes]] = []
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(csock))
        listener.listen(16)
        with (tmp_path / "pcscd.log").open("wb") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-c", SOCKET_ACTIVATE, str(listener.fileno()), PCSCD, "-f",
                 "-c", str(conf)],
                pass_fds=(listener.fileno(),), env=dict(os.environ, LISTEN_FDS="1"),
                stdout=log, stderr=log))
        control = tmp_path / "sim.sock"
        with (tmp_path / "sim.log").open("wb") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "cardap_sim.vcard", "-v", "serve", "--vpcd-port",
                 str(port), "--slots", "2", "--control", str(control)],
                env=env, stdout=log, stderr=log))
        deadline = time.monotonic() + 10
        while not control.exists():
            assert all(p.poll() is None for p in procs), "pcscd or the simulator died"
            assert time.monotonic() < deadline, "simulator control socket never appeared"
            time.sleep(0.05)
        yield Stack(csock, SimControl(control), env)
    finally:
        listener.close()
        for proc in reversed(procs):
            _stop(proc)


def test_type_c_read_through_pcscd_then_remove(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    VirtualCard.create(profile="vendor-a", path=path,
                       type_c=[TypeCSpec(TYPE_C, USER_ID, INFOS)])
    stack.control.insert(0, path)
    got = stack.client("read", wait=10)
    assert got["present"] is True
    assert got["atr"] == "3BC5FF8131FB458073C6010000"
    assert got["select"] == "9000"
    expected = (b"\xc1\x0d" + USER_ID.encode() + b"\xc2\x04" + INFOS[0] + b"\xc3\x04"
                + INFOS[1] + b"\xc4\x04" + INFOS[2] + b"\x90\x00")
    assert got["read"] == expected.hex().upper()
    print(f"per-APDU round trip through pcscd+vpcd: {got['ms_per_apdu']:.3f} ms")
    assert isinstance(got["ms_per_apdu"], float)
    assert got["ms_per_apdu"] < 5
    assert stack.control.selects(0)[0] == TYPE_C
    stack.control.remove(0)
    assert stack.client("absent", wait=5) == {"present": False}
