# ruff: noqa: S608
"""A rewrite of the audit database while the daemon is stopped is caught and named.

The attacker of the threat model (docs/decisions.md D32) holds the service user's or
root's rights: with the daemon stopped they edit `state/audit.db` (and, the careful one,
`audit.head`) with sqlite3, then start it again. Each attack below runs through the real
stack — the daemon, the reference loading service keeping checkpoints over mutual TLS, a
real journald receiving the checkpoint entries — and `cardapctl` as a subprocess:

* truncate the tail (the issue's exact command), delete every row, replace the database:
  the daemon's anchor reset fails every local verification until an administrator
  acknowledges it, and the checkpoints name what happened (truncated, emptied, replaced);
* recompute the whole chain after changing a row, head anchor included: nothing on the
  terminal can tell, the checkpoints kept off it name it (rewritten).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from testenv import need

from cardap.client import CardapClient
from cardap_sim.stack import Stack, free_port, port_open, wait_for
from cardapd.audit import AuditEntry, AuditLog, Durability
from cardapd.audit.head import HeadWriter, head_path_for
from cardapd.audit.log import AuditRecord, chain_hash
from cardapd.audit.report import JST
from cardapd.telemetry.journald import SOCKET_ENV

from .conftest import cardapctl, insert_and_wait, metric
from .test_journald import Journald, journald  # noqa: F401 - the fixture
from .test_load_basic import STAFF_C, load

EXIT_OK, EXIT_BROKEN = 0, 10


@pytest.fixture
def tstack(tmp_path: Path, journald: Journald) -> Iterator[Stack]:  # noqa: F811
    """A stack with the loading service (it keeps checkpoints) and a private journald."""
    s = Stack(tmp_path / "stack", loading=True, test_sessions=True)
    s.journal_env = {SOCKET_ENV: str(journald.socket)}  # type: ignore[attr-defined]
    try:
        s.start(daemon=False)
        s.start_daemon(extra_env=s.journal_env)  # type: ignore[attr-defined]
        yield s
    finally:
        s.stop()


def db(stack: Stack) -> Path:
    return stack.dir / "state" / "audit.db"


def restart(stack: Stack) -> None:
    """Stop the daemon gracefully and start it again (the start sends a checkpoint)."""
    stack.stop_daemon()
    stack.start_daemon(extra_env=stack.journal_env)  # type: ignore[attr-defined]


def some_history(stack: Stack, reads: int = 12) -> None:
    """Reads at the gate, then a restart: the start checkpoint covers them."""
    wait_for_start_checkpoint(stack, 1)
    insert_and_wait(stack, 0, stack.demo_card())
    with CardapClient(stack.socket("gate")) as gate:
        for _ in range(reads):
            gate.read_user_id()
    restart(stack)


def service_checkpoints(stack: Stack) -> list[dict[str, object]]:
    """What the reference loading service kept, via its own CLI."""
    out = subprocess.run([sys.executable, "-m", "cardap_sim.loadsvc", "checkpoints", "--data-dir",
                          str(stack.dir / "loadsvc"), "--terminal", "kiosk-01"],
                         capture_output=True, text=True, check=True, timeout=30)
    return [json.loads(line) for line in out.stdout.splitlines()]


def wait_for_start_checkpoint(stack: Stack, count: int) -> None:
    """The start checkpoint is sent by the background maintenance: wait for it."""
    deadline = time.monotonic() + 20
    while len(service_checkpoints(stack)) < count:
        assert time.monotonic() < deadline, "no start checkpoint reached the service"
        time.sleep(0.1)


def forwarded(jd: Journald, where: Path) -> Path:
    """The terminal's journal forwarded off it, as operations do (operations.md 9.3):
    systemd-journal-upload to a systemd-journal-remote, whose output directory is what
    `cardapctl audit verify --journal-dir` reads on the other side."""
    out = where / "remote"
    out.mkdir(parents=True)
    port = free_port()
    log = (where / "journal-remote.log").open("wb")
    remote = subprocess.Popen([need("systemd-journal-remote"), f"--listen-http=127.0.0.1:{port}",
                               f"--output={out}/"], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        wait_for(lambda: port_open(port), 10, "systemd-journal-remote to listen")
        subprocess.run([need("systemd-journal-upload"), f"--url=http://127.0.0.1:{port}",
                        f"--directory={jd.directory}", "--follow=no",
                        f"--save-state={where / 'upload.state'}"], check=True, timeout=60,
                       capture_output=True)
    finally:
        remote.terminate()
        remote.wait(10)
    assert list(out.glob("*.journal")), (where / "journal-remote.log").read_text()
    return out


def verify(stack: Stack, *args: str) -> tuple[int, dict[str, object]]:
    proc = cardapctl(stack.socket_dir, "--json", "audit", "verify", *args)
    assert proc.returncode in (EXIT_OK, EXIT_BROKEN), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def attack(stack: Stack, sql: str) -> None:
    """sqlite3 on the file, as root has it, daemon stopped; triggers dropped first."""
    conn = sqlite3.connect(db(stack), isolation_level=None)
    try:
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"
                                    ).fetchall():
            conn.execute(f"DROP TRIGGER {name}")
        conn.executescript(sql)
    finally:
        conn.close()


def test_truncation_fails_until_acknowledged_and_is_named_truncated(tstack: Stack,
                                                                    journald: Journald  # noqa: F811
                                                                    ) -> None:
    some_history(tstack)
    wait_for_start_checkpoint(tstack, 2)
    tstack.stop_daemon()
    # The command, as run by an attacker with the daemon stopped.
    attack(tstack, "DELETE FROM audit WHERE seq > (SELECT max(seq) - 5 FROM audit)")
    tstack.start_daemon(extra_env=tstack.journal_env)  # type: ignore[attr-defined]

    code, v = verify(tstack)  # the terminal alone: the reset is a failure
    assert code == EXIT_BROKEN
    assert v["problem"] == "anchor_reset"
    (reset,) = v["resets"]
    assert (reset["kind"], reset["acknowledged"]) == ("truncated", False)
    assert v["first_bad_seq"] == reset["seq"]
    assert metric(tstack, "cardapd_audit_chain_verified") == 0
    assert metric(tstack, "cardapd_audit_anchor_resets_unacknowledged") == 1
    year = str(datetime.now(JST).year)
    report = cardapctl(tstack.socket_dir, "report", "--year", year)
    assert report.returncode == EXIT_BROKEN, report.stderr
    assert "anchor_reset" in report.stdout + report.stderr
    assert "NOT ACKNOWLEDGED" in report.stdout

    code, v = verify(tstack, "--checkpoints", "from-service")  # off the terminal: named
    assert code == EXIT_BROKEN
    assert v["problem"] == "truncated"
    assert {f["problem"] for f in v["findings"]} == {"truncated"}
    code, v = verify(tstack, "--journal-dir", str(journald.directory))
    assert (code, v["problem"]) == (EXIT_BROKEN, "truncated")
    # The service flagged the terminal the moment the cut chain's start checkpoint came
    # in below the newest one it kept.
    wait_for_start_checkpoint(tstack, 3)
    assert [c["diverged"] for c in service_checkpoints(tstack)] == [False, False, True]

    # Nobody may explain it away without an administrator (none on this roster yet: root
    # appoints the first with `cardapd bootstrap-admin`) and a reason.
    nobody = cardapctl(tstack.socket_dir, "audit", "acknowledge", "--reset",
                       str(reset["seq"]), "--reason", "no session")
    assert nobody.returncode == 4, nobody.stderr
    assert "NO_OPERATOR_SESSION" in nobody.stderr
    admin = tstack.bootstrap_admin("admin-1")
    bad = cardapctl(tstack.socket_dir, "--session", admin, "audit", "acknowledge", "--reset",
                    str(reset["seq"]), "--reason", " ")
    assert bad.returncode == 2, bad.stderr
    assert "REASON_REQUIRED" in bad.stderr
    ok = cardapctl(tstack.socket_dir, "--session", admin, "audit", "acknowledge", "--reset",
                   str(reset["seq"]), "--reason",
                   "restored from the backup of last night after a disk failure")
    assert ok.returncode == 0, ok.stderr
    again = cardapctl(tstack.socket_dir, "--session", admin, "audit", "acknowledge",
                      "--reset", str(reset["seq"]), "--reason", "twice")
    assert again.returncode == 8, again.stderr  # ALREADY_EXISTS
    assert "RESET_ALREADY_ACKNOWLEDGED" in again.stderr
    nothing = cardapctl(tstack.socket_dir, "--session", admin, "audit", "acknowledge",
                        "--reset", str(reset["seq"] - 1), "--reason", "no such reset")
    assert nothing.returncode == 3, nothing.stderr  # NOT_FOUND: a precondition
    assert "RESET_NOT_FOUND" in nothing.stderr

    code, v = verify(tstack)
    assert code == EXIT_OK, v
    (reset,) = v["resets"]
    assert reset["acknowledged"]
    assert reset["acknowledged_by"].endswith("admin-1"), reset
    assert "acknowledged" in str(v["summary"])
    code, v = verify(tstack, "--checkpoints", "from-service", "--full")
    assert code == EXIT_OK, v
    assert int(v["checkpoints_superseded"]) >= 1  # the chain the reset gave up
    assert metric(tstack, "cardapd_audit_anchor_resets_unacknowledged") == 0
    conn = sqlite3.connect(f"file:{db(tstack)}?mode=ro", uri=True)
    try:
        actor, detail = conn.execute("SELECT actor, detail FROM audit WHERE operation = "
                                     "'audit_reset_acknowledged'").fetchone()
    finally:
        conn.close()
    assert actor.startswith("ops"), actor
    assert "admin-1" in actor, actor
    assert json.loads(detail)["reason"].startswith("restored from the backup")


def test_every_row_deleted_is_named_emptied(tstack: Stack) -> None:
    some_history(tstack)
    wait_for_start_checkpoint(tstack, 2)
    tstack.stop_daemon()
    attack(tstack, "DELETE FROM audit")
    tstack.start_daemon(extra_env=tstack.journal_env)  # type: ignore[attr-defined]
    code, v = verify(tstack)
    assert (code, v["problem"]) == (EXIT_BROKEN, "anchor_reset")
    assert [r["kind"] for r in v["resets"]] == ["emptied"]
    code, v = verify(tstack, "--checkpoints", "from-service")
    assert (code, v["problem"]) == (EXIT_BROKEN, "emptied")


def test_a_replaced_database_is_named_replaced(tstack: Stack, tmp_path: Path) -> None:
    some_history(tstack)
    wait_for_start_checkpoint(tstack, 2)
    tstack.stop_daemon()
    other = tmp_path / "other" / "audit.db"  # another terminal's log, longer than ours
    with AuditLog(other) as log:
        for i in range(60):
            log.append(AuditEntry("read_user_id", "ok", actor="gate", detail={"i": i}),
                       Durability.PROCESS)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db(tstack)}{suffix}").unlink(missing_ok=True)
    shutil.copy2(other, db(tstack))
    tstack.start_daemon(extra_env=tstack.journal_env)  # type: ignore[attr-defined]
    code, v = verify(tstack)
    assert (code, v["problem"]) == (EXIT_BROKEN, "anchor_reset")
    assert [r["kind"] for r in v["resets"]] == ["rewritten"]
    code, v = verify(tstack, "--checkpoints", "from-service")
    assert (code, v["problem"]) == (EXIT_BROKEN, "replaced")


def test_a_whole_chain_recomputed_passes_locally_and_is_named_rewritten(
        tstack: Stack, journald: Journald, tmp_path: Path) -> None:  # noqa: F811
    some_history(tstack)
    wait_for_start_checkpoint(tstack, 2)
    tstack.stop_daemon()
    conn = sqlite3.connect(db(tstack), isolation_level=None)
    try:
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"
                                    ).fetchall():
            conn.execute(f"DROP TRIGGER {name}")
        rows = [AuditRecord.from_row(r) for r in conn.execute(
            f"SELECT {AuditRecord.COLUMNS} FROM audit ORDER BY seq")]
        victim = next(r for r in rows if r.operation == "read_user_id")
        conn.execute("UPDATE audit SET actor = 'kiosk' WHERE seq = ?", (victim.seq,))
        prev = rows[victim.seq - 2].hash
        for r in rows[victim.seq - 1:]:  # the careful attacker recomputes everything after
            actor = "kiosk" if r.seq == victim.seq else r.actor
            digest = chain_hash(prev, r.seq, r.ts_us, actor, r.operation, r.card_id, r.reader,
                                r.result, r.reason, r.request_id, r.detail_json)
            conn.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?",
                         (prev, digest, r.seq))
            prev = digest
        last = rows[-1].seq
    finally:
        conn.close()
    writer = HeadWriter(head_path_for(db(tstack)))
    for _ in range(2):  # ...and the head anchor, both slots
        writer.write(last, prev)
    writer.close()
    tstack.start_daemon(extra_env=tstack.journal_env)  # type: ignore[attr-defined]

    code, v = verify(tstack, "--full")
    assert code == EXIT_OK, v  # the terminal alone cannot tell: that is the threat model
    assert v["resets"] == []
    code, v = verify(tstack, "--checkpoints", "from-service")
    assert (code, v["problem"]) == (EXIT_BROKEN, "rewritten")
    assert int(v["checkpoints_matched"]) >= 1  # the start of the first run still agrees
    elsewhere = forwarded(journald, tmp_path / "collector")  # as forwarded off the box
    code, v = verify(tstack, "--journal-dir", str(elsewhere))
    assert (code, v["problem"]) == (EXIT_BROKEN, "rewritten")
    assert all(f["source"] == "request" for f in v["findings"])


def test_checkpoints_leave_with_start_stop_and_sessions_as_journal_entries(
        tstack: Stack, journald: Journald) -> None:  # noqa: F811
    wait_for_start_checkpoint(tstack, 1)
    insert_and_wait(tstack, 0, tstack.demo_card())
    events = load(tstack, STAFF_C)  # a card session: its SessionOpen carries the head
    assert events[-1].result.ok, events[-1]
    restart(tstack)
    entries = journald.wait_for("MESSAGE_ID=a3375ed245a243c481b2d69094f8bbb8", count=4)
    kinds = [e["CARDAPD_AUDIT_CHECKPOINT"] for e in entries]
    assert kinds[:4] == ["start", "session", "stop", "start"], kinds
    for e in entries:
        assert e["CARDAPD_AUDIT_TERMINAL"] == "kiosk-01"
        assert len(e["CARDAPD_AUDIT_HASH"]) == 64
        assert e["SYSLOG_IDENTIFIER"] == "cardapd"
        assert e["_TRANSPORT"] == "journal"
    conn = sqlite3.connect(f"file:{db(tstack)}?mode=ro", uri=True)
    try:
        for e in entries:
            (digest,) = conn.execute("SELECT hash FROM audit WHERE seq = ?",
                                     (int(e["CARDAPD_AUDIT_SEQ"]),)).fetchone()
            assert digest.hex() == e["CARDAPD_AUDIT_HASH"]
    finally:
        conn.close()
    wait_for_start_checkpoint(tstack, 3)
    kept = service_checkpoints(tstack)
    assert [c["kind"] for c in kept] == ["start", "session", "start"]  # stop: journal only
    session = kept[1]
    assert session["seq"] == int(entries[1]["CARDAPD_AUDIT_SEQ"])
    assert not any(c["diverged"] for c in kept)


def test_only_an_administrators_session_acknowledges(tstack: Stack) -> None:
    wait_for_start_checkpoint(tstack, 1)
    tstack.stop_daemon()
    head_path_for(db(tstack)).unlink()  # the anchor lost (say, with a disk)
    tstack.start_daemon(extra_env=tstack.journal_env)  # type: ignore[attr-defined]
    code, v = verify(tstack)
    assert (code, v["problem"]) == (EXIT_BROKEN, "anchor_reset")
    (reset,) = v["resets"]
    assert reset["kind"] == "head_missing"
    admin = tstack.bootstrap_admin("admin-1")
    refused = cardapctl(tstack.socket_dir, "audit", "acknowledge", "--reset",
                        str(reset["seq"]), "--reason", "the disk was replaced")
    assert refused.returncode == 4, refused.stderr
    assert "NO_OPERATOR_SESSION" in refused.stderr
    forged = cardapctl(tstack.socket_dir, "--session", "not-a-session", "audit",
                       "acknowledge", "--reset", str(reset["seq"]), "--reason", "x")
    assert forged.returncode == 4, forged.stderr
    code, v = verify(tstack)
    assert (code, v["problem"]) == (EXIT_BROKEN, "anchor_reset")  # still not acknowledged
    text = cardapctl(tstack.socket_dir, "audit", "verify")
    assert "NOT acknowledged" in text.stdout
    assert f"cardapctl audit acknowledge --reset {reset['seq']}" in text.stdout
    done = cardapctl(tstack.socket_dir, "--session", admin, "audit", "acknowledge",
                     "--reset", str(reset["seq"]), "--reason", "the disk was replaced")
    assert done.returncode == 0, done.stderr
    code, v = verify(tstack)
    assert code == EXIT_OK, v
