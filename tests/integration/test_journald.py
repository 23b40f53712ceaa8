"""A real systemd-journald receives the daemon's entries with indexable CARDAPD_* fields.

journald runs standalone, as root, in private mount, PID and network namespaces: /run,
/etc/systemd and /var/log/journal are covered by tmpfs inside them, its socket and journal
directories are bind mounts of this test's directories, /dev/kmsg is /dev/null and its
configuration forwards nowhere (no kmsg, syslog, wall or console), so nothing outside the
test is touched; a PID namespace also keeps it from changing the kernel's audit settings.
The daemon reaches it through CARDAPD_JOURNAL_SOCKET and picks the journal by itself, as
under systemd, because JOURNAL_STREAM names its stderr. Entries are read back with
`journalctl --directory`, filtered on the fields.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from testenv import machine_lacks, need

from cardap.client import CardapClient, CardapClientError
from cardap_sim.stack import Stack
from cardapd.telemetry.journald import SOCKET_ENV, JournalSender, encode

from .conftest import insert_and_wait

CONF = """[Journal]
Storage=volatile
ReadKMsg=no
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
RateLimitIntervalSec=0
RateLimitBurst=0
"""
# Runs as PID 1 of the new namespaces; journald's own messages go to its stderr.
SCRIPT = """set -e
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/systemd/journal /run/log/journal
mount --bind "$1/sock" /run/systemd/journal
mount --bind "$1/log" /run/log/journal
if [ -d /var/log/journal ]; then mount -t tmpfs tmpfs /var/log/journal; fi
mount -t tmpfs -o mode=0755 tmpfs /etc/systemd
cp "$1/journald.conf" /etc/systemd/journald.conf
if [ -e /dev/kmsg ]; then mount --bind /dev/null /dev/kmsg; fi
SYSTEMD_LOG_TARGET=console "$2" &
wait
"""


@dataclass
class Journald:
    """A private journald: where clients send, where its journal is."""

    socket: Path
    directory: Path
    log: Path

    def query(self, *matches: str) -> list[dict[str, str]]:
        """Entries matching every `FIELD=value` (journalctl's AND of different fields)."""
        out = subprocess.run(
            ["journalctl", "--directory", str(self.directory), "-o", "json", "--all",
             "--no-pager",
             *matches], capture_output=True, text=True, timeout=30,
            check=False)
        assert out.returncode in (0, 1), out.stderr  # 1: no entries (older journalctl)
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    def wait_for(self, *matches: str, count: int = 1, timeout: float = 10) -> list[dict[str, str]]:
        """Poll until at least `count` entries match (journald writes asynchronously)."""
        deadline = time.monotonic() + timeout
        while True:
            entries = self.query(*matches)
            if len(entries) >= count or time.monotonic() > deadline:
                return entries
            time.sleep(0.1)


def _check_machine() -> None:
    """journald runs in private mount/PID namespaces: root, and the tools make setup installs."""
    if os.geteuid() != 0:
        machine_lacks("root (a private journald needs its own mount and PID namespaces)")
    for tool in ("systemd-journald", "unshare", "journalctl", "mount"):
        need(tool)


@pytest.fixture
def journald(tmp_path: Path) -> Iterator[Journald]:
    """A standalone systemd-journald private to this test."""
    _check_machine()
    base = tmp_path / "jd"
    (base / "sock").mkdir(parents=True)
    (base / "log").mkdir()
    (base / "journald.conf").write_text(CONF)
    (base / "run.sh").write_text(SCRIPT)
    log = base / "journald.log"
    machine_id = Path("/etc/machine-id").read_text().strip()
    jd = Journald(base / "sock" / "socket", base / "log" / machine_id, log)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["unshare", "--mount", "--pid", "--net", "--fork", "--kill-child",
             "--propagation", "private", "sh", str(base / "run.sh"), str(base),
             need("systemd-journald")],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not (jd.socket.exists() and (jd.directory / "system.journal").exists()):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"journald did not start: {log.read_text(errors='replace')}")
            time.sleep(0.05)
        yield jd
    finally:
        # unshare ignores SIGTERM while it waits; SIGKILL it and --kill-child takes the
        # namespace's PID 1, hence journald, with it.
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        deadline = time.monotonic() + 5
        try:
            while time.monotonic() < deadline:
                try:
                    probe.sendto(b"MESSAGE=probe\n", str(jd.socket))
                except (ConnectionRefusedError, FileNotFoundError):
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the test's journald is still running")
        finally:
            probe.close()


def test_real_journald_stores_binary_safe_and_memfd_entries(journald: Journald) -> None:
    sender = JournalSender(str(journald.socket))
    message = "first line\nsecond line\nCARDAPD_READER=not a field"
    sender.send(encode({"MESSAGE": message, "SYSLOG_IDENTIFIER": "cardapd",
                        "CARDAPD_OPERATION": "binary_safe", "PRIORITY": "6"}))
    big = "y" * (4 << 20)  # larger than a datagram may be: goes as a sealed memfd
    sender.send(encode({"MESSAGE": big, "SYSLOG_IDENTIFIER": "cardapd",
                        "CARDAPD_OPERATION": "memfd"}))
    sender.close()
    (entry,) = journald.wait_for("CARDAPD_OPERATION=binary_safe")
    assert entry["MESSAGE"] == message
    assert "CARDAPD_READER" not in entry
    assert entry["SYSLOG_IDENTIFIER"] == "cardapd"
    (entry,) = journald.wait_for("CARDAPD_OPERATION=memfd")
    assert entry["MESSAGE"] == big
    assert entry["_TRANSPORT"] == "journal"


def test_daemon_requests_are_indexed_in_the_journal(tmp_path: Path, journald: Journald) -> None:
    stack = Stack(tmp_path / "stack", log_level="traffic")
    try:
        stack.start(daemon=False)
        # As under systemd: JOURNAL_STREAM names the daemon's stderr (its log file here).
        log = stack.dir / "cardapd.log"
        log.touch()
        st = log.stat()
        stack.start_daemon(extra_env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
                                      SOCKET_ENV: str(journald.socket)})
        reader = insert_and_wait(stack, 0, stack.demo_card()).name
        with CardapClient(stack.socket("gate"), request_id="jrnl-read-1") as gate:
            assert gate.read_user_id(fresh=True).user_id
        with CardapClient(stack.socket("ops"), request_id="jrnl-diag-1") as kiosk:
            kiosk.diagnose(reader)
    finally:
        stack.stop()

    diag = journald.wait_for("CARDAPD_REQUEST_ID=jrnl-diag-1")
    assert diag, journald.log.read_text(errors="replace")
    for entry in diag:
        assert entry["CARDAPD_OPERATION"] == "diagnose"
        assert entry["CARDAPD_ROLE"] == "ops"
        assert entry["SYSLOG_IDENTIFIER"] == "cardapd"
        assert entry["_TRANSPORT"] == "journal"
        assert {"PRIORITY", "CODE_FILE", "CODE_LINE", "CODE_FUNC", "LOGGER"} <= set(entry)
    on_reader = [e for e in diag if e.get("CARDAPD_READER") == reader]
    assert on_reader, "no entry of the diagnose came from the reader's thread"
    assert any(e["LOGGER"] == "cardapd.traffic" and e["PRIORITY"] == "7" for e in on_reader)

    # several fields at once, as an operator would filter
    reads = journald.wait_for("CARDAPD_OPERATION=read_user_id", f"CARDAPD_READER={reader}")
    assert reads
    assert {e["CARDAPD_REQUEST_ID"] for e in reads} == {"jrnl-read-1"}
    assert {e["CARDAPD_ROLE"] for e in reads} == {"gate"}

    # the daemon's own start and stop are there too, without request fields
    assert journald.query("SYSLOG_IDENTIFIER=cardapd", "LOGGER=cardapd.api.server")
    # and nothing went to stderr as JSON lines: the journal was chosen
    lines = log.read_text(errors="replace").splitlines()
    assert not [line for line in lines if line.startswith('{"time"')], lines[:5]


def documented_queries() -> list[list[str]]:
    """The `journalctl` lines of operations.md section 7, as argument lists."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    section = text.split("## 7. Logs", 1)[1].split("\n## ", 1)[0]
    lines = [line.split("  #", 1)[0].strip() for block in section.split("```sh")[1:]
             for line in block.split("```", 1)[0].splitlines()]
    return [shlex.split(line) for line in lines if line.startswith("journalctl ")]


def test_one_line_per_operation_and_the_documented_queries(tmp_path: Path,
                                                          journald: Journald) -> None:
    """A load, a delete, failures and a diagnose; then every query operations.md shows,
    run with journalctl against the journal (`-u cardapd` becomes the identifier match:
    this journald runs no units)."""
    stack = Stack(tmp_path / "stack", loading=True, test_sessions=True)
    try:
        stack.start(daemon=False)
        log = stack.dir / "cardapd.log"
        log.touch()
        st = log.stat()
        stack.start_daemon(extra_env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
                                      SOCKET_ENV: str(journald.socket)})
        reader = insert_and_wait(stack, 0, stack.demo_card()).name
        with CardapClient(stack.socket("kiosk"), request_id="jrnl-load-1",
                          session="test:org-a:op-1:load,delete,diagnose", timeout=60) as kiosk:
            assert [e.result.ok for e in kiosk.load_ap("org-a-staff-c")
                    if e.WhichOneof("event") == "result"] == [True]
        with CardapClient(stack.socket("kiosk"), request_id="jrnl-del-1",
                          session="test:org-a:op-1:load,delete,diagnose", timeout=60) as kiosk:
            assert kiosk.delete_ap("D392F000430A0001", reason="holder_request").outcome == "DELETED"
            kiosk.diagnose(reader)
        with CardapClient(stack.socket("gate"), request_id="jrnl-nocard-1") as gate, \
                pytest.raises(CardapClientError):
            gate.read_user_id("Virtual PCD 00 01")
        with CardapClient(stack.socket("kiosk"), request_id="jrnl-nosession-1") as kiosk, \
                pytest.raises(CardapClientError):
            kiosk.loadable_aps()
    finally:
        stack.stop()

    (load,) = [e for e in journald.wait_for("CARDAPD_REQUEST_ID=jrnl-load-1",
                                            "LOGGER=cardapd.operations")]
    assert load["CARDAPD_OPERATION"] == "load_ap"
    assert load["CARDAPD_AUDIT_OPERATION"] == "load"
    assert load["CARDAPD_RESULT"] == "ok"
    assert load["CARDAPD_READER"] == reader
    assert load["CARDAPD_CARD_ID"]
    assert load["CARDAPD_OPERATOR"] == "org-a/op-1"
    assert int(load["CARDAPD_DURATION_MS"]) >= 0
    assert int(load["CARDAPD_AUDIT_SEQ"]) > 0
    assert load["PRIORITY"] == "6"
    assert load["MESSAGE"].startswith("load org-a-staff-c for org-a: ok in ")
    (nocard,) = journald.wait_for("CARDAPD_REQUEST_ID=jrnl-nocard-1",
                                  "LOGGER=cardapd.operations")
    assert (nocard["CARDAPD_RESULT"], nocard["CARDAPD_REASON"], nocard["PRIORITY"]) == (
        "error", "NO_CARD", "4")
    (refused,) = journald.wait_for("CARDAPD_REQUEST_ID=jrnl-nosession-1",
                                   "LOGGER=cardapd.operations")
    assert refused["CARDAPD_REASON"] == "NO_OPERATOR_SESSION"
    assert "log in first" in refused["MESSAGE"]

    expect = {  # what each documented query must find (by request id or value)
        "CARDAPD_OPERATION=load_ap": {"jrnl-load-1"},
        "CARDAPD_AUDIT_OPERATION=delete": {"jrnl-del-1"},
        "CARDAPD_RESULT=error": {"jrnl-nocard-1", "jrnl-nosession-1"},
        "CARDAPD_REASON=NO_CARD": {"jrnl-nocard-1"},
        "CARDAPD_OPERATOR=org-a/op-1": {"jrnl-load-1", "jrnl-del-1"},
        "CARDAPD_REQUEST_ID=REQ-ID": {"jrnl-load-1"},
        f"CARDAPD_READER={reader}": {"jrnl-load-1", "jrnl-del-1"},
        "CARDAPD_OPERATION=diagnose": {"jrnl-del-1"},
    }
    queries = documented_queries()
    assert len(queries) >= 8, queries
    for argv in queries:
        key = next((a for a in argv if a.startswith("CARDAPD_")), "")
        argv = [a.replace("REQ-ID", "jrnl-load-1") for a in argv]
        if "-u" in argv:
            at = argv.index("-u")
            # -F takes no match here (the private journal holds the daemon's entries only)
            argv[at:at + 2] = [] if "-F" in argv else ["SYSLOG_IDENTIFIER=cardapd"]
        argv[1:1] = ["--directory", str(journald.directory), "--no-pager", "--all"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        assert out.returncode == 0, (argv, out.stderr)
        if "-F" in argv:
            assert {"load_ap", "delete_ap", "read_user_id", "diagnose"} <= set(
                out.stdout.split()), out.stdout
            continue
        assert key in expect, f"operations.md has a query this test does not check: {argv}"
        got = out.stdout
        for rid in expect[key]:
            assert rid in got, (argv, got[-2000:])
        if "-p" in argv:  # warning and worse only
            assert "jrnl-load-1" not in got
