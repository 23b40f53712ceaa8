"""Logging never stalls the daemon: with its stderr a pipe nobody reads (full after 64 KiB)
and every APDU logged (`traffic`), reads are still answered, the daemon still stops at
once, and the lines come out in order once the pipe is read."""

from __future__ import annotations

import fcntl
import json
import os
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from cardap.client import CardapClient
from cardap_sim.procs import tied
from cardap_sim.stack import Stack

from .conftest import insert_and_wait, serving, wait_until

PIPE_FULL = 60_000  # Linux pipes hold 64 KiB by default


def waiting(fd: int) -> int:
    """Bytes waiting in the pipe."""
    return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0])


def test_a_stderr_nobody_reads_never_stalls_the_daemon(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "stack", log_level="traffic")
    read_end, write_end = os.pipe()
    try:
        stack.start(daemon=False)
        stack.write_config()
        stack.daemon = subprocess.Popen(
            tied([sys.executable, "-m", "cardapd.main", "--config", str(stack.config_path)]),
            env=stack.env, stdout=write_end, stderr=write_end, start_new_session=True)
        os.close(write_end)
        wait_until(lambda: serving(stack), 20, "cardapd to serve")
        insert_and_wait(stack, 0, stack.demo_card())
        with CardapClient(stack.socket("gate"), timeout=10) as gate:
            for _ in range(300):  # each logs its APDUs, its line, its context
                gate.read_user_id(fresh=True)
        assert waiting(read_end) >= PIPE_FULL, "the pipe never filled: the test proves nothing"
        with CardapClient(stack.socket("ops"), timeout=5) as ops:
            assert ops.status().pcsc_available  # still answering, with the pipe full
        started = time.monotonic()
        assert stack.stop_daemon() == 0
        assert time.monotonic() - started < 10, "a full log pipe held up the stop"
    finally:
        stack.stop()
    os.set_blocking(read_end, False)
    data = b""
    while True:
        try:
            chunk = os.read(read_end, 1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    os.close(read_end)
    lines = [json.loads(line) for line in data.decode().splitlines() if line.startswith("{")]
    assert any(e["logger"] == "cardapd.traffic" for e in lines)
    assert any(e["logger"] == "cardapd.operations" and e.get("audit_operation")
               == "read_user_id" for e in lines)
    assert [e["time"] for e in lines] == sorted(e["time"] for e in lines)
