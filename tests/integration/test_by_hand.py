"""The operator flows tried by hand, as `make run`'s "try this" list says, with no Python:
cardapctl in one terminal, `cardap-sim finger` on the virtual fingerprint sensor in another.

The stack runs real fprintd on a private bus with libfprint's virtual_image sensor; the
commands run as subprocesses with the environment `make run` prints ($CARDAPD_SOCKET_DIR,
$CARDAP_SIM_CONTROL, $FP_VIRTUAL_IMAGE), never with --control or --sensor.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from cardap import exitcodes
from cardap_sim.stack import Stack

from .conftest import LOCALE_VARIABLES

ORG = "org-a"
PASSWORD = "correct-horse-battery-9"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def bstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("byhand") / "s", loading=True, biometric=True)
    try:
        s.start()
        yield s
    finally:
        s.stop()


def env(stack: Stack, lang: str = "C.UTF-8") -> dict[str, str]:
    """What `make run` tells a person to export, in the locale `lang` (English unless a
    test asks, whatever the machine's own locale)."""
    out = {k: v for k, v in os.environ.items()
           if k not in ("CARDAPD_SESSION", "CARDAPD_SESSION_FILE", *LOCALE_VARIABLES)}
    out.update(LANG=lang, CARDAPD_SOCKET_DIR=str(stack.socket_dir),
               CARDAP_SIM_CONTROL=str(stack.control_path),
               FP_VIRTUAL_IMAGE=str(stack.bio.fprintd.sensor_path))
    return out


def run(stack: Stack, tool: str, *args: str, stdin: str = "",
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / tool), *args], env=env(stack), input=stdin,
                          capture_output=True, text=True, timeout=timeout, check=False)


def finger_at_each_prompt(stack: Stack, args: list[str], print_name: str,
                          prompts_on: str = "stdout", timeout: float = 90,
                          lift_first: bool = False, lang: str = "C.UTF-8") -> tuple[int, str]:
    """Run cardapctl `args` in the locale `lang`; at each PLACE_FINGER prompt run
    `cardap-sim finger PRINT` (after `cardap-sim finger --lift` at the first one, with
    `lift_first`)."""
    proc = subprocess.Popen([str(BIN / "cardapctl"), *args], env=env(stack, lang), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stream = proc.stdout if prompts_on == "stdout" else proc.stderr
    assert stream is not None
    seen, deadline = [], time.monotonic() + timeout
    try:
        for line in stream:
            seen.append(line)
            if "[PLACE_FINGER]" in line:
                if lift_first:
                    lifted = run(stack, "cardap-sim", "finger", "--lift")
                    assert lifted.returncode == 0, lifted.stderr
                    assert lifted.stdout.startswith("finger lifted from the sensor")
                    lift_first = False
                placed = run(stack, "cardap-sim", "finger", print_name)
                assert placed.stdout.startswith(f"finger placed: print {print_name}")
                assert placed.returncode == 0, placed.stderr
            assert time.monotonic() < deadline, seen
        proc.wait(timeout)
    finally:
        proc.kill()
    rest = (proc.stderr if prompts_on == "stdout" else proc.stdout)
    return proc.returncode, "".join(seen) + (rest.read() if rest else "")


def test_sim_cli_human_by_default_json_on_request_control_from_the_environment(
        bstack: Stack) -> None:
    card = bstack.new_card("by-hand")
    inserted = run(bstack, "cardap-sim", "insert", "--slot", "1", str(card))
    assert inserted.returncode == 0, inserted.stderr
    assert inserted.stdout.startswith("inserted card ")
    assert "slot 1" in inserted.stdout
    status = run(bstack, "cardap-sim", "status")
    assert status.returncode == 0
    assert "slot 1 (vpcd port" in status.stdout
    assert "{" not in status.stdout  # words, not JSON
    data = json.loads(run(bstack, "cardap-sim", "status", "--json").stdout)
    assert [s["slot"] for s in data["slots"]] == [0, 1]
    removed = run(bstack, "cardap-sim", "remove", "--slot", "1")
    assert removed.stdout.strip() == "removed the card from slot 1"
    idle = run(bstack, "cardap-sim", "finger", "arch")  # no enrolment or login running
    assert idle.returncode == 1
    assert "only listens while fprintd uses it" in idle.stderr
    assert run(bstack, "cardap-sim", "finger").returncode == 2  # neither PRINT nor --lift


def test_enrol_and_log_in_by_hand_then_approve_a_password(bstack: Stack,
                                                         tmp_path: Path) -> None:
    # the first administrator is appointed by root (`cardapd bootstrap-admin`) and enrols
    # a finger with that session; in Japanese (LANG=ja_JP.UTF-8: cardapctl asks with
    # accept-language ja), fprintd's stages as the daemon's Japanese prompts, codes kept
    boot = bstack.bootstrap_admin("admin-1", rights="load,delete")
    code, out = finger_at_each_prompt(bstack, ["--session", boot, "enroll", "--org", ORG,
                                               "--operator", "admin-1"], "arch",
                                      lang="ja_JP.UTF-8")
    assert code == 0, out
    assert "[PLACE_FINGER] 指をセンサーに置いてください" in out, out
    assert re.search(r"^\[ENROLL_STAGE\] 読み取りました。同じ指をもう一度置いてください "
                     r"\(1/\d+\)$", out, re.M), out
    assert "org-a/admin-1 の right-index-finger を登録しました" in out
    assert "Place your finger" not in out

    # the administrator logs in on the ops socket with the finger, in Japanese
    code, out = finger_at_each_prompt(bstack, ["--role", "ops", "login", "--org", ORG,
                                               "--operator", "admin-1", "--token-file",
                                               str(tmp_path / "ja.token")], "arch",
                                      prompts_on="stderr", lang="ja_JP.UTF-8")
    assert code == 0, out
    assert "[PLACE_FINGER] 指をセンサーに置いてください" in out, out
    assert "[MATCHED] 指紋を認識しました" in out, out
    assert "としてログインしました" in out, out

    # again in English (accept-language en), after a scan fprintd could not use (no
    # finger on the sensor); this session replaces the first one
    token = tmp_path / "admin.token"
    code, out = finger_at_each_prompt(bstack, ["--role", "ops", "login", "--org", ORG,
                                               "--operator", "admin-1", "--token-file",
                                               str(token)], "arch", prompts_on="stderr",
                                      lift_first=True)
    assert code == 0, out
    assert "[PLACE_FINGER] Place your finger on the sensor" in out, out
    assert "[MATCHED] Finger recognised" in out, out
    assert not re.search(r"[\u3040-\u30ff]", out), out  # no kana in the English run
    assert token.stat().st_mode & 0o777 == 0o600

    # nobody at the sensor: BIOMETRIC_TIMEOUT, exit 14 (the table's TIMEOUT)
    timed_out = run(bstack, "cardapctl", "--role", "ops", "login", "--org", ORG,
                    "--operator", "admin-1", "--wait", "2")
    assert timed_out.returncode == exitcodes.TIMEOUT == 14, timed_out.stderr
    assert "BIOMETRIC_TIMEOUT" in timed_out.stderr

    # an operator who cannot use the fingerprint: approval, then ID + password
    session = ["--session-file", str(token)]
    added = run(bstack, "cardapctl", *session, "operators", "add", "--org", ORG,
                "--operator", "op-2", "--rights", "load")
    assert added.returncode == 0, added.stderr
    expires = (date.today() + timedelta(days=7)).isoformat()
    granted = run(bstack, "cardapctl", *session, "operators", "grant-password", "--org", ORG,
                  "--operator", "op-2", "--reason", "injured finger", "--expires", expires,
                  "--password-stdin", stdin=PASSWORD + "\n")
    assert granted.returncode == 0, granted.stderr
    assert "password until" in granted.stdout
    login = run(bstack, "cardapctl", "login", "--org", ORG, "--operator", "op-2",
                "--password", "--password-stdin", stdin=PASSWORD + "\n")
    assert login.returncode == 0, login.stderr
    assert login.stdout.strip()  # the session token
    wrong = run(bstack, "cardapctl", "login", "--org", ORG, "--operator", "op-2",
                "--password", "--password-stdin", stdin="not-the-password-1\n")
    assert wrong.returncode == exitcodes.DENIED, wrong.stderr
    # the counter learns only that the login was refused, whatever the cause (D40)
    assert "LOGIN_REFUSED" in wrong.stderr, wrong.stderr
    for _ in range(3):
        wrong = run(bstack, "cardapctl", "login", "--org", ORG, "--operator", "op-2",
                    "--password", "--password-stdin", stdin="not-the-password-1\n")
        assert "LOGIN_REFUSED" in wrong.stderr, wrong.stderr
    locked = run(bstack, "cardapctl", "--json", "login", "--org", ORG, "--operator", "op-2",
                 "--password", "--password-stdin", stdin="not-the-password-1\n")
    assert locked.returncode == exitcodes.DENIED
    reason = json.loads(locked.stderr.strip().splitlines()[-1])["error"]["reason"]
    assert reason == "LOGIN_REFUSED"
    # locked now: even the right password is refused, in the same words
    right = run(bstack, "cardapctl", "login", "--org", ORG, "--operator", "op-2",
                "--password", "--password-stdin", stdin=PASSWORD + "\n")
    assert right.returncode == exitcodes.DENIED, right.stderr
    assert "LOGIN_REFUSED" in right.stderr

    # each of these is one line of the daemon's log, the lockout at warning with its reason
    def login_lines() -> list[dict[str, str]]:
        lines = [json.loads(x) for x in (bstack.dir / "cardapd.log").read_text().splitlines()
                 if x.startswith("{")]
        return [e for e in lines if e.get("audit_operation") == "operator_login"]
    deadline = time.monotonic() + 10
    while not any(e.get("reason") == "OPERATOR_LOCKED" for e in login_lines()):
        assert time.monotonic() < deadline, login_lines()
        time.sleep(0.1)
    lines = login_lines()
    lockout = next(e for e in lines if e.get("reason") == "OPERATOR_LOCKED")
    assert lockout["level"] == "warning"
    assert lockout["message"].startswith("operator_login org-a/op-2 (password): error "
                                         "OPERATOR_LOCKED")
    assert sum(e.get("reason") == "PASSWORD_WRONG" for e in lines) == 4
    assert any(e["result"] == "ok" and e.get("operator") == "org-a/admin-1" for e in lines)
