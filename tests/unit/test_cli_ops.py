"""cardapctl's operator, roster, enrolment, audit and report commands, at the client boundary.

`CardapClient` is replaced by a recording stand-in, so these tests cover what the command
line itself owns: argument parsing, the socket chosen, text/JSON/CSV output, passwords
kept out of argv and output, the token file's mode, and exit codes. The commands against
the real daemon are covered by the integration tests once the daemon serves them.
"""

from __future__ import annotations

import csv
import getpass
import io
import json
import logging
import stat
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from cardap import cli, cli_ops, clibase, exitcodes, reasons
from cardap.client import CardapClientError
from cardap.v1 import audit_pb2, operators_pb2, terminal_pb2

SECRET = "s3cret-Passw0rd!"
TOKEN = "tok-abcdefghijklmnopqrstuvwxyz0123456789"


def operator(**kw: Any) -> operators_pb2.Operator:
    base: dict[str, Any] = {"organisation": "city", "operator_id": "op1",
                            "display_name": "Op One", "rights": [operators_pb2.RIGHT_LOAD],
                            "enabled": True}
    base.update(kw)
    return operators_pb2.Operator(**base)


class FakeClient:
    """Stands in for CardapClient: records calls, answers from its attributes."""

    instances: ClassVar[list[FakeClient]] = []
    configure: Any = None  # set per test through the `fake` fixture

    def __init__(self, socket: Path, *, timeout: float, session: str | None,
                 language: str) -> None:
        self.socket, self.timeout, self.session = Path(socket), timeout, session
        self.language = language  # cardapctl sends its environment's language
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.prompts = [terminal_pb2.Prompt(code="PLACE_FINGER", message="Place a finger")]
        self.error: BaseException | None = None
        self.verify = terminal_pb2.VerifyAuditResponse(ok=True, rows_checked=42)
        self.records: list[audit_pb2.AuditRecord] = []
        self.enroll_events = [terminal_pb2.EnrollEvent(prompt=terminal_pb2.Prompt(
            code="PLACE_FINGER", message="Place")), terminal_pb2.EnrollEvent(completed=True)]
        self.report = terminal_pb2.YearlyReport(
            year=2026, document="Yearly report 2026\ncity: 3 loads, 30 yen\n",
            organisations=[terminal_pb2.OrganisationLoads(organisation="city", loads=3,
                                                          charge_yen=30)],
            audit=terminal_pb2.VerifyAuditResponse(ok=True, rows_checked=9))
        FakeClient.instances.append(self)
        if FakeClient.configure is not None:
            FakeClient.configure(self)

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _record(self, name: str, *args: Any, **kw: Any) -> None:
        self.calls.append((name, args, kw))
        if self.error is not None:
            raise self.error

    def authenticate(self, org: str, op: str, method: str, provider: Any,
                     timeout_s: int, replace_session: bool = False) -> Iterator[Any]:
        self._record("authenticate", org, op, method, timeout_s)
        yield from self.prompts
        if method == "password":
            yield terminal_pb2.Prompt(code="ENTER_PASSWORD", message="Enter your password")
            self.calls.append(("password", (provider(),), {}))
        yield terminal_pb2.OperatorSession(
            token=TOKEN, operator=operator(), idle_timeout_s=300,
            expires_at=Timestamp(seconds=1_900_000_000))

    def end_session(self, token: str) -> terminal_pb2.EndOperatorSessionResponse:
        self._record("end_session", token)
        return terminal_pb2.EndOperatorSessionResponse()

    def list_operators(self, org: str) -> terminal_pb2.ListOperatorsResponse:
        self._record("list_operators", org)
        approval = operators_pb2.PasswordApproval(approved_by="boss", reason="injury",
                                                  expires_at=Timestamp(seconds=1_900_000_000))
        return terminal_pb2.ListOperatorsResponse(operators=[
            operator(), operator(operator_id="op2", enabled=False, locked=True,
                                 administrator=True, password_approval=approval,
                                 enrolled_fingers=["right-index-finger"])])

    def add_operator(self, *a: Any) -> operators_pb2.Operator:
        self._record("add_operator", *a)
        return operator()

    def set_operator_enabled(self, *a: Any) -> operators_pb2.Operator:
        self._record("set_operator_enabled", *a)
        return operator(enabled=a[2])

    def appoint_administrator(self, *a: Any) -> operators_pb2.Operator:
        self._record("appoint_administrator", *a)
        return operator(administrator=True)

    def unlock_operator(self, *a: Any) -> operators_pb2.Operator:
        self._record("unlock_operator", *a)
        return operator()

    def grant_password_fallback(self, *a: Any, **kw: Any) -> operators_pb2.Operator:
        self._record("grant_password_fallback", *a, **kw)
        return operator()

    def enroll_finger(self, *a: Any, **kw: Any) -> Iterator[terminal_pb2.EnrollEvent]:
        self._record("enroll_finger", *a)
        yield from self.enroll_events

    def verify_audit(self, timeout: float | None = None, **kw: Any
                     ) -> terminal_pb2.VerifyAuditResponse:
        self._record("verify_audit", *sorted(kw.items()))
        return self.verify

    def export_audit(self, *a: Any, **kw: Any) -> Iterator[audit_pb2.AuditRecord]:
        self._record("export_audit", *a)
        yield from self.records

    def yearly_report(self, year: int, timeout: float | None = None) -> terminal_pb2.YearlyReport:
        self._record("yearly_report", year)
        return self.report


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[Any], None]:
    """Install FakeClient; yields a setter for per-instance configuration."""
    FakeClient.instances = []
    monkeypatch.setattr(cli, "CardapClient", FakeClient)
    monkeypatch.setenv("CARDAPD_SOCKET_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("CARDAPD_SESSION", raising=False)
    monkeypatch.delenv("CARDAPD_SESSION_FILE", raising=False)

    monkeypatch.setattr(FakeClient, "configure", None)

    def configure(fn: Any) -> None:
        monkeypatch.setattr(FakeClient, "configure", staticmethod(fn))

    return configure


def last() -> FakeClient:
    return FakeClient.instances[-1]


def run(*argv: str) -> int:
    return cli.main(list(argv))


# ---------------------------------------------------------------- sockets and parsing

@pytest.mark.parametrize(("argv", "role"), [
    (["login", "--org", "c", "--operator", "o"], "kiosk"),
    (["--session", "t", "logout"], "kiosk"),
    (["operators", "list"], "ops"),
    (["enroll", "--org", "c", "--operator", "o"], "ops"),
    (["audit", "verify"], "ops"),
    (["audit", "export"], "ops"),
    (["report", "--year", "2026"], "ops"),
])
def test_default_sockets(fake: Any, tmp_path: Path, argv: list[str], role: str,
                         capsys: pytest.CaptureFixture[str]) -> None:
    assert run(*argv) == 0
    assert last().socket == tmp_path / "run" / f"{role}.sock"


def test_existing_commands_keep_their_roles() -> None:
    assert {k: cli.DEFAULT_ROLE[k] for k in ("status", "watch", "diagnose", "load")} == {
        "status": "ops", "watch": "gate", "diagnose": "kiosk", "load": "kiosk"}


@pytest.mark.parametrize("argv", [
    ["operators", "add", "--org", "c", "--operator", "o", "--rights", "load,fly"],
    ["operators", "grant-password", "--org", "c", "--operator", "o", "--reason", "r",
     "--expires", "next week"],
    ["audit", "export", "--format", "xml"],
    ["audit", "export", "--since", "yesterday"],
    ["report", "--year", "26"],
    ["enroll", "--org", "c", "--operator", "o", "--finger", "nose"],
    ["operators", "frobnicate"],
    ["login", "--org", "c"],
])
def test_bad_arguments_exit_2(fake: Any, argv: list[str],
                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        run(*argv)
    assert exc.value.code == 2
    assert not FakeClient.instances


def test_rights_parse_names_and_deduplicate() -> None:
    assert cli_ops.parse_rights("load, DELETE,diagnose,load") == [
        operators_pb2.RIGHT_LOAD, operators_pb2.RIGHT_DELETE, operators_pb2.RIGHT_DIAGNOSE]


def test_dates_are_local_and_a_bare_date_ends_with_its_day() -> None:
    until = cli_ops.end_time("2026-12-31")
    assert until.tzinfo is not None
    assert until == datetime(2027, 1, 1).astimezone()
    assert cli_ops.start_time("2026-12-31") == datetime(2026, 12, 31).astimezone()
    assert cli_ops.end_time("2026-12-31T10:00:00+09:00").utcoffset() == timedelta(hours=9)


# ---------------------------------------------------------------- login / logout

def test_login_prints_prompts_to_stderr_and_the_token_to_stdout(
        fake: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("login", "--org", "city", "--operator", "op1", "--wait", "20") == 0
    out, err = capsys.readouterr()
    assert out == TOKEN + "\n"
    assert "[PLACE_FINGER] Place a finger" in err
    assert last().calls[0] == ("authenticate", ("city", "op1", "fingerprint", 20), {})


def test_login_json_has_prompts_then_the_session(
        fake: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("login", "--org", "city", "--operator", "op1", "--json") == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[0] == {"prompt": {"code": "PLACE_FINGER", "message": "Place a finger",
                                   "stage": 0, "stages": 0, "scan_result": ""}}
    assert lines[-1]["session"]["token"] == TOKEN
    assert lines[-1]["session"]["operator"]["operator_id"] == "op1"


def test_password_login_reads_getpass_and_never_shows_the_password(
        fake: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    asked: list[str] = []

    def ask(prompt: str = "") -> str:
        asked.append(prompt)
        return SECRET
    monkeypatch.setattr(getpass, "getpass", ask)
    caplog.set_level(logging.DEBUG)
    argv = ["login", "--org", "city", "--operator", "op1", "--password", "--json"]
    assert run(*argv) == 0
    assert asked == ["Password: "]
    assert ("password", (SECRET,), {}) in last().calls
    out, err = capsys.readouterr()
    assert SECRET not in out + err + caplog.text
    assert SECRET not in argv
    assert "ENTER_PASSWORD" in out


def test_password_is_never_an_argument(fake: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        run("login", "--org", "c", "--operator", "o", "--password", SECRET)
    assert exc.value.code == 2
    assert not FakeClient.instances
    commands: Any = cli.parser()._subparsers._group_actions[0]  # type: ignore[union-attr]
    nested: Any = commands.choices["operators"]._subparsers._group_actions[0]
    for sub in (commands.choices["login"], nested.choices["grant-password"]):
        flags = [a for a in sub._actions if "password" in a.dest]
        assert flags
        for action in flags:
            assert action.nargs == 0, action.dest  # flags only, never a value


def test_password_stdin(fake: Any, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(SECRET + "\n"))
    assert run("login", "--org", "c", "--operator", "o", "--password-stdin") == 0
    assert ("password", (SECRET,), {}) in last().calls
    assert last().calls[0][1][2] == "password"
    assert SECRET not in "".join(capsys.readouterr())


def test_token_file_is_0600_and_the_token_is_not_printed(
        fake: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("old")
    token_file.chmod(0o644)
    assert run("login", "--org", "c", "--operator", "o", "--token-file", str(token_file)) == 0
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.read_text() == TOKEN + "\n"
    out, err = capsys.readouterr()
    assert TOKEN not in out + err
    assert "logged in as city/op1" in err
    assert list(tmp_path.iterdir()) == [token_file]  # no temporary file left


def test_token_file_json_leaves_the_token_out(fake: Any, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--json", "login", "--org", "c", "--operator", "o",
               "--token-file", str(tmp_path / "t")) == 0
    assert TOKEN not in capsys.readouterr().out


def test_session_file_is_used_for_later_calls(fake: Any, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    token_file = tmp_path / "t"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    assert run("--session-file", str(token_file), "operators", "list") == 0
    assert last().session == TOKEN
    assert "readable by others" not in capsys.readouterr().err
    token_file.chmod(0o644)
    assert run("--session-file", str(token_file), "operators", "list") == 0
    assert "readable by others" in capsys.readouterr().err


def test_missing_session_file_is_a_clear_failure(fake: Any, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--session-file", str(tmp_path / "nope"), "operators", "list") == 1
    assert "nope" in capsys.readouterr().err


def test_login_ctrl_c_is_aborted(fake: Any, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    def interrupt(prompt: str = "") -> str:
        raise KeyboardInterrupt
    monkeypatch.setattr(getpass, "getpass", interrupt)
    assert run("login", "--org", "c", "--operator", "o", "--password") == 7
    assert "cancelled" in capsys.readouterr().err


def test_logout_ends_the_session_and_removes_the_token_file(
        fake: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token_file = tmp_path / "t"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    assert run("logout", "--token-file", str(token_file)) == 0
    assert ("end_session", (TOKEN,), {}) in last().calls
    assert not token_file.exists()
    assert run("logout") == 2
    assert "no session" in capsys.readouterr().err


# ---------------------------------------------------------------- roster and enrolment

def test_operators_list_text(fake: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("operators", "list", "--org", "city") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "city/op1 (Op One): rights load; enabled; no finger enrolled"
    assert out[1].startswith("city/op2 (Op One): rights load; DISABLED; administrator; "
                             "LOCKED; password until 2030-03-17T17:46:40Z (by boss: injury)")
    assert out[1].endswith("; right-index-finger")
    assert last().calls == [("list_operators", ("city",), {})]


@pytest.mark.parametrize(("argv", "call"), [
    (["add", "--org", "c", "--operator", "o", "--name", "N", "--rights", "load,delete"],
     ("add_operator", ("c", "o", "N", [operators_pb2.RIGHT_LOAD, operators_pb2.RIGHT_DELETE]))),
    (["add", "--org", "c", "--operator", "o"],  # the display name defaults to the id
     ("add_operator", ("c", "o", "o", [operators_pb2.RIGHT_LOAD]))),
    (["disable", "--org", "c", "--operator", "o"], ("set_operator_enabled", ("c", "o", False))),
    (["enable", "--org", "c", "--operator", "o"], ("set_operator_enabled", ("c", "o", True))),
    (["appoint-admin", "--org", "c", "--operator", "o"], ("appoint_administrator", ("c", "o"))),
    (["unlock", "--org", "c", "--operator", "o"], ("unlock_operator", ("c", "o"))),
])
def test_roster_changes(fake: Any, argv: list[str], call: tuple[str, tuple[Any, ...]],
                        capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--json", "operators", *argv) == 0
    assert last().calls == [(*call, {})]
    assert json.loads(capsys.readouterr().out)["operator_id"] == "op1"


def test_grant_password_asks_twice_and_sends_an_aware_expiry(
        fake: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    answers = iter([SECRET, SECRET])
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(answers))
    caplog.set_level(logging.DEBUG)
    expires = (datetime.now() + timedelta(days=30)).date().isoformat()
    assert run("operators", "grant-password", "--org", "c", "--operator", "o",
               "--reason", "burns on both hands", "--expires", expires) == 0
    name, args, kw = last().calls[0]
    assert (name, args) == ("grant_password_fallback", ("c", "o"))
    assert kw["reason"] == "burns on both hands"
    assert kw["password"] == SECRET
    assert kw["expires_at"].tzinfo is not None
    out, err = capsys.readouterr()
    assert SECRET not in out + err + caplog.text


def test_grant_password_mismatch_and_past_expiry_exit_2(
        fake: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    answers = iter([SECRET, SECRET + "x"])
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(answers))
    future = (datetime.now() + timedelta(days=3)).date().isoformat()
    base = ["operators", "grant-password", "--org", "c", "--operator", "o", "--reason", "r"]
    assert run(*base, "--expires", future) == 2
    assert "do not match" in capsys.readouterr().err
    assert run(*base, "--expires", "2020-01-01") == 2
    assert "in the past" in capsys.readouterr().err
    assert all(c[0] != "grant_password_fallback" for i in FakeClient.instances for c in i.calls)


def test_enroll_prints_prompts_and_completion(fake: Any,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert run("enroll", "--org", "c", "--operator", "o", "--finger", "left-thumb-finger") == 0
    out = capsys.readouterr().out
    assert "[PLACE_FINGER] Place" in out
    assert "left-thumb-finger enrolled for c/o" in out
    assert last().calls == [("enroll_finger", ("c", "o", "left-thumb-finger"), {})]


def test_enroll_without_completion_fails(fake: Any, capsys: pytest.CaptureFixture[str]) -> None:
    fake(lambda c: setattr(c, "enroll_events", c.enroll_events[:1]))
    assert run("--json", "enroll", "--org", "c", "--operator", "o") == 1


# ---------------------------------------------------------------- audit and report

def test_audit_verify_ok_and_broken(fake: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("audit", "verify") == 0
    assert "verifies: 42 rows" in capsys.readouterr().out
    fake(lambda c: setattr(c, "verify", terminal_pb2.VerifyAuditResponse(
        ok=False, rows_checked=17, first_bad_seq=12, problem="deleted")))
    assert run("audit", "verify") == 10
    assert "does NOT verify: deleted at row 12" in capsys.readouterr().out
    assert run("audit", "verify", "--json") == 10
    out = json.loads(capsys.readouterr().out)
    assert {k: out[k] for k in ("ok", "rows_checked", "first_bad_seq", "problem")} == {
        "ok": False, "rows_checked": 17, "first_bad_seq": 12, "problem": "deleted"}


def records() -> list[audit_pb2.AuditRecord]:
    when = Timestamp(seconds=1_767_225_600)
    return [
        audit_pb2.AuditRecord(seq=1, time=when, actor="kiosk:city/op1",
                              operation="operator_login", result="ok", hash="ab" * 32),
        audit_pb2.AuditRecord(seq=2, time=when, actor="=HYPERLINK(\"http://x\")",
                              operation="+load_ap", reader="-reader", card_id="@card",
                              result="error", reason="\tTAB", detail_json='{"a": 1}'),
    ]


def test_audit_export_csv_escapes_formulas(fake: Any, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    fake(lambda c: setattr(c, "records", records()))
    out = tmp_path / "audit.csv"
    assert run("audit", "export", "--format", "csv", "--out", str(out),
               "--since", "2026-01-01", "--until", "2026-01-31",
               "--operation", "load_ap,delete_ap", "--operation", "operator_login") == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    rows = list(csv.DictReader(out.open(newline="")))
    assert [r["seq"] for r in rows] == ["1", "2"]
    assert rows[0]["actor"] == "kiosk:city/op1"
    assert rows[0]["time"] == "2026-01-01T00:00:00Z"
    assert rows[1]["actor"] == "'=HYPERLINK(\"http://x\")"
    assert (rows[1]["operation"], rows[1]["reader"], rows[1]["card_id"], rows[1]["reason"]) \
        == ("'+load_ap", "'-reader", "'@card", "'\tTAB")
    assert rows[1]["detail_json"] == '{"a": 1}'
    _, args, _ = last().calls[0]
    assert args[0] == datetime(2026, 1, 1).astimezone()
    assert args[1] == datetime(2026, 2, 1).astimezone()
    assert args[2] == ["load_ap", "delete_ap", "operator_login"]
    assert "2 audit rows written" in capsys.readouterr().err


def test_audit_export_jsonl_to_stdout_is_unescaped(fake: Any,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    fake(lambda c: setattr(c, "records", records()))
    assert run("audit", "export") == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["seq"] for x in lines] == [1, 2]
    assert lines[1]["actor"] == "=HYPERLINK(\"http://x\")"
    assert list(lines[0]) == list(cli_ops.AUDIT_FIELDS)
    assert last().calls[0][1] == (None, None, [])


def test_failed_export_leaves_no_file(fake: Any, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    def broken(c: FakeClient) -> None:
        def export(*a: Any, **kw: Any) -> Iterator[audit_pb2.AuditRecord]:
            yield records()[0]
            raise CardapClientError(grpc.StatusCode.UNAVAILABLE, "STORE_ERROR", "disk", {})
        c.export_audit = export  # type: ignore[method-assign]
    fake(broken)
    out = tmp_path / "a.jsonl"
    assert run("audit", "export", "--out", str(out)) == 5
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_report_writes_the_document(fake: Any, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report-2026.txt"
    assert run("report", "--year", "2026", "--out", str(out)) == 0
    assert out.read_text() == "Yearly report 2026\ncity: 3 loads, 30 yen\n"
    err = capsys.readouterr().err
    assert "city: 3 loads, 30 yen" in err
    assert "verifies" in err
    assert run("report", "--year", "2026") == 0
    assert capsys.readouterr().out.startswith("Yearly report 2026")


def test_report_exits_10_when_the_audit_fails(fake: Any,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    def broken(c: FakeClient) -> None:
        c.report.audit.CopyFrom(terminal_pb2.VerifyAuditResponse(ok=False, first_bad_seq=3,
                                                                 problem="changed"))
    fake(broken)
    assert run("--json", "report", "--year", "2026") == 10
    report = json.loads(capsys.readouterr().out)
    assert report["audit"]["problem"] == "changed"


# ---------------------------------------------------------------- errors and exit codes

@pytest.mark.parametrize(("code", "reason", "exit_code"), [
    (grpc.StatusCode.UNAUTHENTICATED, "NOT_MATCHED", 4),
    (grpc.StatusCode.UNAUTHENTICATED, "NO_OPERATOR_SESSION", 4),
    (grpc.StatusCode.PERMISSION_DENIED, "PASSWORD_NOT_APPROVED", 4),
    (grpc.StatusCode.NOT_FOUND, "UNKNOWN_OPERATOR", 3),
    (grpc.StatusCode.FAILED_PRECONDITION, "NO_ENROLLED_FINGER", 3),
    (grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS", 8),
    (grpc.StatusCode.UNAVAILABLE, "BIOMETRIC_UNAVAILABLE", 5),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "LOCKED", 9),
    (grpc.StatusCode.UNIMPLEMENTED, "NOT_IMPLEMENTED", 6),
    (grpc.StatusCode.INVALID_ARGUMENT, "PASSWORD_REQUIRED", 2),
    (grpc.StatusCode.UNKNOWN, "LOGIN_INCOMPLETE", 1),
])
def test_daemon_errors_map_to_exit_codes(fake: Any, code: grpc.StatusCode, reason: str,
                                         exit_code: int, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LANGUAGE", "en")
    fake(lambda c: setattr(c, "error", CardapClientError(code, reason, "msg", {"k": "v"})))
    assert run("login", "--org", "c", "--operator", "o") == exit_code
    assert f"cardapctl: {reason}: msg" in capsys.readouterr().err
    assert run("--json", "operators", "list") == exit_code
    error = json.loads(capsys.readouterr().err)["error"]
    assert error == {"code": code.name, "reason": reason, "message": "msg",
                     "metadata": {"k": "v"}, "locale": "en",
                     "localized": reasons.localized(reason, "en", {"k": "v"})}


def test_errors_are_explained_in_the_users_language(
        fake: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """cardapctl asks the daemon for its environment's language and prints the daemon's
    LocalizedMessage when it is in that language; else the registry's own text."""
    monkeypatch.delenv("LANGUAGE", raising=False)
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LC_MESSAGES", raising=False)
    monkeypatch.setenv("LANG", "ja_JP.UTF-8")
    wrong = CardapClientError(grpc.StatusCode.UNAUTHENTICATED, "PIN_WRONG",
                              "wrong PIN, 2 tries left", {"tries_left": "2"},
                              "暗証番号が違います（デーモンから）", "ja")
    fake(lambda c: setattr(c, "error", wrong))
    assert run("operators", "list") == exitcodes.DENIED
    assert FakeClient.instances[-1].language == "ja"
    err = capsys.readouterr().err.splitlines()
    assert err == ["cardapctl: PIN_WRONG: wrong PIN, 2 tries left",
                   "cardapctl: 暗証番号が違います（デーモンから）"]
    english = CardapClientError(grpc.StatusCode.UNAUTHENTICATED, "PIN_WRONG", "wrong PIN",
                                {"tries_left": "1"}, "The PIN was wrong", "en")
    fake(lambda c: setattr(c, "error", english))  # not the user's language: the registry's
    assert run("operators", "list") == exitcodes.DENIED
    second = capsys.readouterr().err.splitlines()[1]
    assert second.startswith("cardapctl: 暗証番号が違います。残りの試行回数は1回です。"), second
    assert "市区町村" in second


def test_new_exit_codes_stay_within_the_documented_set() -> None:
    """Every gRPC code maps into the one table: 10 is reused for a broken audit chain,
    14 is a timeout (docs list them)."""
    assert set(cli.CODE_EXIT.values()) == {2, 3, 4, 5, 6, 7, 8, 9, 14}
    assert clibase.EXIT_AUDIT_BROKEN == 10
    assert (clibase.EXIT_ABORTED, clibase.EXIT_USAGE, clibase.EXIT_FAIL) == (7, 2, 1)
