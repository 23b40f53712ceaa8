"""`make run` as a person runs it: through `tee` in a terminal, stopped with Ctrl-C, a
signal, a closed pipe or the death of one of its processes — and nothing is left running.

Every process the stack starts has the stack's directory in its command line or its
environment, so "nothing left" is checked by scanning /proc for that directory.
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
READY = b"Press Ctrl-C to stop."
pytestmark = pytest.mark.timeout(240)


def leftovers(workdir: Path) -> list[str]:
    """Processes that still name `workdir` in their command line or environment."""
    needle = str(workdir).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue  # gone meanwhile, or a kernel thread
        if needle in cmdline or needle in environ:
            words = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name}: {words}")
    return found


def wait_gone(workdir: Path, timeout: float = 20.0) -> list[str]:
    """Leftover processes after at most `timeout` seconds (an empty list is success)."""
    deadline = time.monotonic() + timeout
    while (left := leftovers(workdir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def kill(processes: list[str]) -> None:
    """SIGKILL what a failed test left behind (`leftovers` lines), so it harms no other."""
    for line in processes:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)


def make_run(workdir: Path, *args: str) -> str:
    """The shell command for `make run` in `workdir` (RUN_ARGS from `args`)."""
    extra = f' RUN_ARGS="{" ".join(args)}"' if args else ""
    return f"make --no-print-directory -C {ROOT} run RUN_DIR={workdir}{extra}"


class Pty:
    """A shell command in a new pseudo-terminal (its session leader and foreground group)."""

    def __init__(self, command: str) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # child: bash runs the pipeline in the terminal's foreground group
            os.execvp("bash", ["bash", "-c", command])  # noqa: S606 - the shell is the point
        self.output = b""

    def read_until(self, marker: bytes, timeout: float) -> bool:
        """Read (draining the terminal) until `marker` appears or the command ends."""
        deadline = time.monotonic() + timeout
        while marker not in self.output and time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # EIO: every process of the terminal has closed it
                    return marker in self.output
                if not chunk:
                    return marker in self.output
                self.output += chunk
        return marker in self.output

    def ctrl_c(self) -> None:
        """Type Ctrl-C: the line discipline sends SIGINT to the foreground group."""
        os.write(self.fd, b"\x03")

    def wait(self, timeout: float) -> int:
        """Drain until the command ends; its wait status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.read_until(b"\0never\0", 0.5)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return status
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        os.close(self.fd)
        raise AssertionError(f"the command did not end: {self.text()[-2000:]}")

    def text(self) -> str:
        return self.output.decode(errors="replace")


def test_ctrl_c_through_tee_in_a_terminal_stops_everything(tmp_path: Path) -> None:
    """The full demo through `tee`, a second `make run` refused, Ctrl-C, nothing left."""
    workdir = tmp_path / "run"
    term = Pty(f"{make_run(workdir)} 2>&1 | tee {tmp_path / 'run.log'}")
    try:
        assert term.read_until(READY, 180), term.text()[-3000:]
        text = term.text()
        for step in ("tap-to-ID user ID", "logged in by fingerprint", "LoadAp org-a-staff-c",
                     "ListCardAps", "admin-1's session (ops socket): ",
                     "op-1's session (kiosk socket): ", "Try this:",
                     "export CARDAP_SIM_CONTROL=", "export FP_VIRTUAL_IMAGE=",
                     "export ADMIN_SESSION=", "enroll --org org-a --operator op-2",
                     "cardap-sim finger whorl", "operators grant-password",
                     "load --preset new-staff", "/healthz"):
            assert step in text, text
        tokens = re.findall(r"session \((?:ops|kiosk) socket\): (\S+)", text)
        assert len(tokens) == 2, text
        assert f"export ADMIN_SESSION={tokens[0]}" in text
        assert f"export CARDAPD_SESSION={tokens[1]}" in text
        assert "Traceback" not in text, text

        second = subprocess.run(["bash", "-c", make_run(workdir, "--no-demo")],
                                capture_output=True, text=True, timeout=60, check=False)
        assert second.returncode != 0
        assert "already running" in second.stdout + second.stderr, second
        assert leftovers(workdir), "the first stack must still be up"

        term.ctrl_c()
        term.wait(90)
    finally:
        left = wait_gone(workdir)
        kill(left)

    assert not left, "\n".join(left)
    assert "Traceback" not in term.text(), term.text()[-3000:]


def _supervisor_pid(workdir: Path) -> int:
    """The harness's pid, from the lock file it holds."""
    return int(workdir.with_name(workdir.name + ".lock").read_text().strip())


def _start(workdir: Path, log: Path) -> subprocess.Popen[bytes]:
    """`make run --no-demo` in the background, its output in `log`; waits until it is up."""
    with log.open("wb") as out:
        proc = subprocess.Popen(["bash", "-c", make_run(workdir, "--no-demo")], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while READY not in log.read_bytes():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    return proc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_make_run_stops_everything(tmp_path: Path, sig: signal.Signals) -> None:
    workdir = tmp_path / "run"
    proc = _start(workdir, tmp_path / "run.log")
    os.kill(_supervisor_pid(workdir), sig)
    assert proc.wait(60) == 0, (tmp_path / "run.log").read_text()
    left = wait_gone(workdir)
    kill(left)
    assert not left, "\n".join(left)
    assert "stopped." in (tmp_path / "run.log").read_text()


def test_a_process_dying_under_make_run_stops_the_rest(tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    proc = _start(workdir, tmp_path / "run.log")
    daemon = [line.split(":", 1)[0] for line in leftovers(workdir)
              if re.search(r"-m cardapd\.main --config", line)]
    assert len(daemon) == 1, leftovers(workdir)
    os.kill(int(daemon[0]), signal.SIGKILL)
    assert proc.wait(60) != 0
    text = (tmp_path / "run.log").read_text()
    assert "cardapd stopped unexpectedly (killed by SIGKILL)" in text, text
    left = wait_gone(workdir)
    kill(left)
    assert not left, "\n".join(left)


def test_a_closed_output_pipe_stops_make_run(tmp_path: Path) -> None:
    """`make run | head -n 1`: once nobody reads the output, the stack stops."""
    workdir = tmp_path / "run"
    result = subprocess.run(["bash", "-c", f"{make_run(workdir, '--no-demo')} | head -n 1"],
                            capture_output=True, text=True, timeout=180, check=False)
    assert result.stdout.count("\n") == 1, result
    left = wait_gone(workdir)
    kill(left)
    assert not left, "\n".join(left)
