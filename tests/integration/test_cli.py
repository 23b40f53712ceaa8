"""cardapctl as operations people use it, against the real stack (pcscd, vpcd, the virtual
card, the loading service over mTLS, cardapd): options anywhere, --version, help, one
validated --timeout, the exit-code table for every command, JSON numbers, a closed pipe,
readers by index, watch with times and --follow across a restart, delete confirmed and
explained, the load progress bar in a terminal, the aps table, bash completion.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import shlex
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import completion
import pytest

from cardap import exitcodes
from cardap.cli import build_parser
from cardap.client import CardapClient
from cardap_sim.stack import demo_user_id

from .conftest import (
    LOCALE_VARIABLES,
    cardapctl,
    insert_and_wait,
    reader_name,
    restart_daemon,
    wait_until,
)
from .test_load_faults import AIDS, AP_C, AP_D, LoadStack, load_stack

SESSION = "test:org-a:op-1:load,delete,diagnose"
CTL = Path(sys.executable).parent / "cardapctl"


@pytest.fixture(scope="module")
def ls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadStack]:
    """One loading stack for the module; tests leave slot 0 with a demo card."""
    with load_stack(tmp_path_factory.mktemp("cli") / "stack") as s:
        insert_and_wait(s, 0, s.demo_card("cli-0"))
        yield s


def ctl(stack: LoadStack, *args: str, timeout: float = 60, stdin: str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """cardapctl against `stack` with op-1's (test) session in the environment (and `env`:
    a locale variable given there replaces the machine's)."""
    base = os.environ if not env else {k: v for k, v in os.environ.items()
                                       if k not in LOCALE_VARIABLES}
    env = dict(base, CARDAPD_SOCKET_DIR=str(stack.socket_dir), CARDAPD_SESSION=SESSION,
               **(env or {}))
    return subprocess.run([str(CTL), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False, input=stdin or "")


def leaf_commands() -> list[list[str]]:
    """Every command as typed (`status`, `audit verify`, ...)."""
    out: list[list[str]] = []

    def walk(p: object, prefix: list[str]) -> None:
        import argparse
        assert isinstance(p, argparse.ArgumentParser)
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            out.append(prefix)
            return
        for name, child in subs[0].choices.items():
            walk(child, [*prefix, name])
    walk(build_parser(), [])
    return out


REQUIRED = {  # the least each command needs to get as far as calling the daemon
    "load": ["--ap", AP_C],
    "delete": ["--aid", AIDS[AP_C], "--yes", "--reason", "holder_request"],
    "login": ["--org", "org-a", "--operator", "op-9"], "report": ["--year", "2026"],
    "enroll": ["--org", "org-a", "--operator", "op-9"],
    "operators add": ["--org", "org-a", "--operator", "op-9"],
    "operators disable": ["--org", "org-a", "--operator", "op-9"],
    "operators enable": ["--org", "org-a", "--operator", "op-9"],
    "operators appoint-admin": ["--org", "org-a", "--operator", "op-9"],
    "operators unlock": ["--org", "org-a", "--operator", "op-9"],
    "operators grant-password": ["--org", "org-a", "--operator", "op-9", "--reason", "r",
                                 "--expires", "2099-01-01", "--password-stdin"],
    "operators remove": ["--org", "org-a", "--operator", "op-9"],
    "operators set-rights": ["--org", "org-a", "--operator", "op-9", "--rights", "load"],
    "rights show": ["--org", "org-a"], "rights set": ["--org", "org-a", "--unrestricted"],
    "presets list": ["--org", "org-a"],
    "presets set": ["--org", "org-a", "--name", "p", "--aps", AP_C],
    "presets delete": ["--org", "org-a", "--name", "p"],
    "presets default": ["--org", "org-a", "--none"],
    "audit acknowledge": ["--reset", "1", "--reason", "restored"],
    "watch": ["--count", "1"],
}


# ---------------------------------------------------------------- version, options, help

def test_version_is_the_installed_distribution_version(tmp_path: Path) -> None:
    proc = cardapctl(tmp_path, "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"cardapctl {metadata.version('cardapd')}"


def test_global_options_before_or_after_the_command(ls: LoadStack, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(SESSION + "\n")
    token.chmod(0o600)
    before = ctl(ls, "--json", "--session-file", str(token), "aps")
    after = ctl(ls, "aps", "--session-file", str(token), "--json")
    assert before.returncode == after.returncode == 0, before.stderr + after.stderr
    assert json.loads(before.stdout) == json.loads(after.stdout)
    # the role after the command: readers on the gate socket
    gate = ctl(ls, "status", "--role", "gate", "--json")
    assert gate.returncode == 0, gate.stderr
    assert json.loads(gate.stdout)["role"] == "gate"
    # nested commands too: `audit export --json --operation load`
    nested = ctl(ls, "audit", "--json", "export", "--operation", "daemon_started")
    assert nested.returncode == 0, nested.stderr
    assert all(json.loads(x)["operation"] == "daemon_started"
               for x in nested.stdout.splitlines())


@pytest.mark.parametrize("command", leaf_commands(), ids=" ".join)
def test_every_command_refuses_a_bad_timeout_as_a_usage_error(tmp_path: Path,
                                                              command: list[str]) -> None:
    for bad in ("-1", "0", "soon"):
        proc = cardapctl(tmp_path, *command, *REQUIRED.get(" ".join(command), []),
                         "--timeout", bad)
        assert proc.returncode == exitcodes.USAGE, (bad, proc.stdout, proc.stderr)
        assert "--timeout" in proc.stderr, proc.stderr


@pytest.mark.parametrize("command", [c for c in leaf_commands() if c != ["completion"]],
                         ids=" ".join)
def test_every_command_without_the_daemon_exits_unavailable(tmp_path: Path,
                                                            command: list[str]) -> None:
    """Exit 5 and the reason DAEMON_UNREACHABLE, in text and in JSON, for each command."""
    args = [*command, *REQUIRED.get(" ".join(command), [])]
    proc = subprocess.run(
        [str(CTL), *args, "--timeout", "5"], capture_output=True, text=True, timeout=60,
        env=dict(os.environ, CARDAPD_SOCKET_DIR=str(tmp_path), CARDAPD_SESSION=SESSION),
        input="Passw0rd-long-enough\n", check=False)
    assert proc.returncode == exitcodes.UNAVAILABLE, proc.stdout + proc.stderr
    assert "DAEMON_UNREACHABLE" in proc.stderr
    assert str(tmp_path) in proc.stderr
    proc = subprocess.run(
        [str(CTL), *args, "--json", "--timeout", "5"], capture_output=True, text=True,
        env=dict(os.environ, CARDAPD_SOCKET_DIR=str(tmp_path), CARDAPD_SESSION=SESSION),
        timeout=60, input="Passw0rd-long-enough\n", check=False)
    assert proc.returncode == exitcodes.UNAVAILABLE
    error = json.loads(proc.stderr.strip().splitlines()[-1])["error"]
    assert (error["code"], error["reason"]) == ("UNAVAILABLE", "DAEMON_UNREACHABLE")


# ---------------------------------------------------------------- exit codes from the daemon

def test_daemon_reasons_end_with_their_table_exit_code(ls: LoadStack) -> None:
    """A failure of each kind through the real daemon, for the commands that meet it."""
    cases: list[tuple[list[str], str]] = [
        (["read-id", "--reader", "1"], "NO_CARD"),
        (["aps", "--reader", "1"], "NO_CARD"),
        (["load", "--ap", AP_C, "--reader", "1"], "NO_CARD"),
        (["delete", "--aid", AIDS[AP_C],
            "--reason", "holder_request", "--reader", "1", "--yes"], "NO_CARD"),
        (["--role", "gate", "diagnose"], "WRONG_ROLE"),
        (["--role", "gate", "metrics"], "WRONG_ROLE"),
        (["--role", "kiosk", "audit", "verify"], "WRONG_ROLE"),
        (["--role", "kiosk", "report", "--year", "2026"], "WRONG_ROLE"),
        (["--role", "gate", "operators", "list"], "WRONG_ROLE"),
        (["load", "--ap", "org-b-door-c"], "UNKNOWN_AP"),
        (["load", "--preset", "nope"], "PRESET_NOT_FOUND"),
        (["--session", "", "loadable"], "NO_OPERATOR_SESSION"),
        (["audit", "export", "--operation", "bogus"], "UNKNOWN_OPERATION"),
        (["read-id", "--aid", "D3"], "INVALID_ARGUMENT"),
        (["watch", "--timeout", "1"], "DEADLINE_EXCEEDED"),  # nothing happens within 1 s
    ]
    for args, reason in cases:
        proc = ctl(ls, "--json", *args)
        assert proc.stderr.strip(), (args, proc.returncode, proc.stdout)
        error = json.loads(proc.stderr.strip().splitlines()[-1])["error"]
        assert error["reason"] == reason, (args, proc.stderr)
        assert proc.returncode == exitcodes.REASON_EXIT[reason], (args, proc.stderr)


def test_diagnose_exit_is_the_verdict(ls: LoadStack) -> None:
    assert ctl(ls, "diagnose", "--reader", "0").returncode == exitcodes.OK
    assert ctl(ls, "diagnose", "--reader", "1").returncode == exitcodes.NO_CARD


def test_unknown_operation_is_refused_and_a_known_one_filters(ls: LoadStack) -> None:
    bad = ctl(ls, "audit", "export", "--operation", "load,bogus")
    assert bad.returncode == exitcodes.USAGE
    assert "UNKNOWN_OPERATION" in bad.stderr
    assert "'bogus'" in bad.stderr
    good = ctl(ls, "audit", "export", "--operation", "card_inserted")
    assert good.returncode == 0, good.stderr
    rows = [json.loads(x) for x in good.stdout.splitlines()]
    assert rows
    assert {r["operation"] for r in rows} == {"card_inserted"}


# ---------------------------------------------------------------- JSON and pipes

def test_json_numbers_are_numbers(ls: LoadStack) -> None:
    verify = json.loads(ctl(ls, "--json", "audit", "verify").stdout)
    assert isinstance(verify["rows_checked"], int)
    assert verify["rows_checked"] > 0
    status = json.loads(ctl(ls, "status", "--json").stdout)
    assert isinstance(status["audit_head_seq"], int)
    events = [json.loads(x) for x in ctl(ls, "watch", "--count", "2", "--json").stdout
              .splitlines()]
    assert all(isinstance(e["seq"], int) for e in events)
    rows = [json.loads(x) for x in ctl(ls, "audit", "export").stdout.splitlines()]
    assert all(isinstance(r["seq"], int) for r in rows)


def piped(stack: LoadStack, command: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CARDAPD_SOCKET_DIR=str(stack.socket_dir), CARDAPD_SESSION=SESSION)
    return subprocess.run(["bash", "-c", f"set -o pipefail; {command}"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_a_closed_pipe_ends_quietly(ls: LoadStack) -> None:
    with CardapClient(ls.socket("gate")) as gate:  # more rows than a pipe holds
        for _ in range(400):
            gate.read_user_id()
    export = piped(ls, f"{shlex.quote(str(CTL))} audit export | head -n 1")
    assert export.stdout.count("\n") == 1
    assert export.stderr == "", export.stderr
    assert export.returncode == exitcodes.OUTPUT_CLOSED
    metrics = piped(ls, f"{shlex.quote(str(CTL))} metrics --interval 1 --count 3 | head -n 1")
    assert metrics.stderr == "", metrics.stderr
    assert metrics.returncode == exitcodes.OUTPUT_CLOSED


# ---------------------------------------------------------------- readers by index

def test_readers_by_index_name_or_part(ls: LoadStack) -> None:
    listing = ctl(ls, "readers")
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert lines[0].startswith(f"0  {reader_name(ls, 0)}")
    assert "My Number Card" in lines[0]
    assert any(line.startswith(f"1  {reader_name(ls, 1)}") and "empty" in line
               for line in lines)
    for name in ("0", reader_name(ls, 0), "PCD 00 00", "pcd 00 00"):
        proc = ctl(ls, "--json", "read-id", "--reader", name)
        assert proc.returncode == 0, (name, proc.stderr)
        assert json.loads(proc.stdout)["reader"] == reader_name(ls, 0)
        assert json.loads(proc.stdout)["user_id"] == demo_user_id()
    beyond = ctl(ls, "read-id", "--reader", "7")
    assert beyond.returncode == exitcodes.USAGE
    assert "no reader 7" in beyond.stderr
    ambiguous = ctl(ls, "read-id", "--reader", "Virtual")
    assert ambiguous.returncode == exitcodes.USAGE
    assert "2 readers" in ambiguous.stderr


# ---------------------------------------------------------------- watch

TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}"


def test_watch_lines_have_a_time_and_clean_text(ls: LoadStack) -> None:
    env = dict(os.environ, CARDAPD_SOCKET_DIR=str(ls.socket_dir))
    proc = subprocess.Popen([str(CTL), "watch", "--reader", "1", "--count", "4"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = [proc.stdout.readline(), proc.stdout.readline()]  # snapshot, its end
        ls.control.insert(1, ls.demo_card("watch-1"))
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        ls.control.remove(1)
    lines = first + out.splitlines()
    assert proc.returncode == 0, err
    assert all(re.match(TIME + r"  #\d+", line) for line in lines), lines
    assert f"reader '{reader_name(ls, 1)}': empty" in lines[0]
    assert "DETECTED" in lines[2]
    assert f"card detected in '{reader_name(ls, 1)}', identifying" \
        in lines[2]
    assert "INSERTED" in lines[3]
    assert "My Number Card" in lines[3]
    assert demo_user_id() in "".join(lines)
    assert not any("unknown ()" in line or "unspecified" in line.lower() for line in lines)


def test_watch_follow_reconnects_after_a_restart_and_replays_the_snapshot(
        ls: LoadStack) -> None:
    env = dict(os.environ, CARDAPD_SOCKET_DIR=str(ls.socket_dir))
    follow = subprocess.Popen([str(CTL), "watch", "--follow", "--json"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    plain = subprocess.Popen([str(CTL), "watch"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert follow.stdout is not None
        kinds = []
        while "CARD_EVENT_KIND_SNAPSHOT_END" not in kinds:
            kinds.append(json.loads(follow.stdout.readline())["kind"])
        ls.stop_daemon()
        _, plain_err = plain.communicate(timeout=30)
        assert plain.returncode == exitcodes.UNAVAILABLE, plain_err
        restart_daemon(ls)
        again = []
        while "CARD_EVENT_KIND_SNAPSHOT_END" not in again:
            again.append(json.loads(follow.stdout.readline())["kind"])
        assert again.count("CARD_EVENT_KIND_SNAPSHOT") == 2, again
        assert follow.poll() is None
    finally:
        follow.send_signal(signal.SIGINT)
        _, err = follow.communicate(timeout=20)
        plain.kill()
        plain.wait(10)
    assert follow.returncode == 0, err
    assert "reconnecting" in err
    assert "reconnected" in err
    assert "Traceback" not in err
    wait_until(lambda: ctl(ls, "status").returncode == 0, 20, "the daemon back")
    insert_again(ls)


def insert_again(stack: LoadStack) -> None:
    """After a restart the daemon finds the card in slot 0 again: wait for its tap read."""
    wait_until(lambda: ctl(stack, "read-id").returncode == 0, 20, "the card identified")


# ---------------------------------------------------------------- load and delete

class Terminal:
    """A command in a pseudo-terminal (stdin, stdout and stderr are the terminal)."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execve(argv[0], argv, env)  # noqa: S606 - the command under test
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        self.output = b""

    def read_until(self, marker: bytes, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while marker not in self.output and time.monotonic() < deadline:
            if select.select([self.fd], [], [], 0.2)[0]:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                self.output += chunk
        return marker in self.output

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def wait(self, timeout: float) -> int:
        self.read_until(b"\0never\0", timeout)
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)


def tty(stack: LoadStack, *args: str, lang: str | None = None) -> Terminal:
    env = dict(os.environ, CARDAPD_SOCKET_DIR=str(stack.socket_dir), CARDAPD_SESSION=SESSION,
               COLUMNS="100", TERM="xterm")
    if lang is not None:
        env = {k: v for k, v in env.items() if k not in LOCALE_VARIABLES} | {"LANG": lang}
    return Terminal([str(CTL), *args], env)


def test_load_draws_a_progress_bar_from_per_block_progress(ls: LoadStack) -> None:
    term = tty(ls, "load", "--ap", AP_D)
    assert term.wait(120) == 0, term.output.decode(errors="replace")
    text = term.output.decode(errors="replace")
    blocks = [(int(a), int(b)) for a, b in re.findall(r"block (\d+)/(\d+)", text)]
    assert len(blocks) >= 3, text
    total = blocks[-1][1]
    assert total > 1
    assert all(b == total for _, b in blocks)
    done = [a for a, _ in blocks]
    assert done == sorted(done)
    assert done[-1] == total
    assert len(set(done)) >= min(total, 3)
    percents = [int(p) for p in re.findall(rf"{AP_D}:\s+(\d+)%\|", text)]
    assert percents == sorted(percents), percents
    assert percents[-1] == 100
    assert f"{AP_D}: loaded as {AIDS[AP_D]}" in text

    # --json: one progress event per acknowledged block, in order
    assert ctl(ls, "delete", "--aid", AIDS[AP_D],
        "--reason", "holder_request", "--yes").returncode == 0
    proc = ctl(ls, "--json", "load", "--ap", AP_D, timeout=120)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(x) for x in proc.stdout.splitlines()]
    progress = [e["progress"] for e in events if "progress" in e]
    done_seen = [p["blocks_done"] for p in progress if p["blocks_total"]]
    assert done_seen == sorted(done_seen)
    assert sorted(set(done_seen)) == list(range(total + 1)), done_seen  # every block
    assert progress[-1]["blocks_total"] == total
    assert progress[-1]["percent"] == 100
    assert events[-1]["result"]["ok"] is True
    assert ctl(ls, "delete", "--aid", AIDS[AP_D],
        "--reason", "holder_request", "--yes").returncode == 0


def test_loadable_load_progress_and_delete_in_japanese(ls: LoadStack) -> None:
    """Under LANG=ja_JP.UTF-8 the catalogue, the bar's phase and blocks, the result line,
    the confirmation and the answer are Japanese; the AP ids, AIDs and codes stay."""
    ja = {"LANG": "ja_JP.UTF-8"}
    loadable = ctl(ls, "loadable", env=ja)
    assert loadable.returncode == 0, loadable.stderr
    line = next(x for x in loadable.stdout.splitlines() if x.startswith(f"{AP_D}: "))
    assert "（種別 D、領域 " in line, line
    assert "、インスタンス " in line, line
    english = ctl(ls, "loadable").stdout
    assert f"{AP_D}: " in english
    assert "(type D, " in english

    term = tty(ls, "load", "--ap", AP_D, lang="ja_JP.UTF-8")
    assert term.wait(120) == 0, term.output.decode(errors="replace")
    text = term.output.decode(errors="replace")
    assert re.search(r"(搭載中|インストール中|個別化中|完了)、ブロック \d+/\d+", text), text
    assert "block " not in text
    assert f"{AP_D}: {AIDS[AP_D]} として搭載しました。利用者ID " in text, text

    term = tty(ls, "delete", "--aid", AIDS[AP_D], "--reason", "holder_request",
               lang="ja_JP.UTF-8")
    assert term.read_until(b"[y/N]", 30), term.output
    question = term.output.decode(errors="replace")
    assert "のカード " in question, question
    assert f"のAP {AIDS[AP_D]}（種別 D" in question, question
    assert "を削除しますか? [y/N]" in question, question
    term.type("はい\n")
    assert term.wait(60) == 0, term.output.decode(errors="replace")
    said = term.output.decode(errors="replace")
    assert f"から{AP_D} (AP {AIDS[AP_D]})を削除しました。空き容量 " in said, said
    assert AIDS[AP_D] not in ctl(ls, "aps").stdout


def test_delete_asks_first_and_says_what_it_deleted(ls: LoadStack) -> None:
    assert ctl(ls, "load", "--ap", AP_C, "--quiet").returncode == 0
    # no terminal and no --yes: refused, nothing deleted
    refused = ctl(ls, "delete", "--aid", AIDS[AP_C], "--reason", "holder_request")
    assert refused.returncode == exitcodes.USAGE
    assert "--yes" in refused.stderr
    assert AIDS[AP_C] in ctl(ls, "aps").stdout
    # a terminal: the question names the AP, "n" keeps it
    term = tty(ls, "delete", "--aid", AIDS[AP_C], "--reason", "holder_request")
    assert term.read_until(b"[y/N]", 30), term.output
    question = term.output.decode(errors="replace")
    assert f"Delete AP {AIDS[AP_C]} (type C" in question
    assert reader_name(ls, 0) in question
    term.type("n\n")
    assert term.wait(30) == exitcodes.ABORTED
    assert AIDS[AP_C] in ctl(ls, "aps").stdout
    # "y" deletes, and the answer says what, from which card, in which reader
    term = tty(ls, "delete", "--aid", AIDS[AP_C], "--reason", "holder_request")
    assert term.read_until(b"[y/N]", 30)
    term.type("y\n")
    assert term.wait(60) == 0
    said = term.output.decode(errors="replace")
    card_id = json.loads(ctl(ls, "--json", "read-id").stdout)["card_id"]
    assert f"deleted {AP_C} (AP {AIDS[AP_C]}) from card {card_id} in " \
        f"'{reader_name(ls, 0)}'" in said, said
    again = ctl(ls, "delete", "--aid", AIDS[AP_C], "--reason", "holder_request", "-y")
    assert again.returncode == 0
    assert "nothing deleted" in again.stdout


def test_aps_is_a_clean_table(ls: LoadStack) -> None:
    assert ctl(ls, "load", "--ap", AP_C, "--quiet").returncode == 0
    try:
        out = ctl(ls, "aps").stdout.splitlines()
        assert re.match(r"AID\s+TYPE\s+AREA\s+STATE$", out[0]), out
        row = next(line for line in out if line.startswith(AIDS[AP_C]))
        assert row.split()[1] == "C"
        assert not any(",  area" in line or "type c," in line for line in out)
        assert out[-1].startswith("free: ")
    finally:
        ctl(ls, "delete", "--aid", AIDS[AP_C], "--reason", "holder_request", "-y")


# ---------------------------------------------------------------- completion

def complete(stack: LoadStack, line: str) -> list[str]:
    """What bash offers for `line` (TAB at its end), through cardapctl's completion script."""
    env = dict(os.environ, CARDAPD_SOCKET_DIR=str(stack.socket_dir),
               PATH=f"{CTL.parent}:{os.environ['PATH']}")
    return completion.complete(CTL, line, env)


def test_bash_completion(ls: LoadStack) -> None:
    assert "delete" in complete(ls, "cardapctl de")
    assert complete(ls, "cardapctl load --pre") == ["--preset"]
    assert "--follow" in complete(ls, "cardapctl watch --fo")
    assert "verify" in complete(ls, "cardapctl audit ")
    readers = complete(ls, "cardapctl read-id --reader ")
    assert any(reader_name(ls, 0).replace(" ", "\\ ") in r or reader_name(ls, 0) in r
               for r in readers), readers
