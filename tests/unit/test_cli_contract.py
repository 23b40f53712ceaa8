"""cardapctl's contract with people and scripts, checked without a daemon: every option
documented (what `make man` renders), every reason the daemon can send in the one
exit-code table, every audit operation name the daemon writes known to ExportAudit."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

from cardap import exitcodes
from cardap.cli import build_parser
from cardapd.domain import AUDIT_OPERATIONS
from cardapd.errors import tries_left
from cardlib.apdu import describe_sw

ROOT = Path(__file__).resolve().parents[2]
DAEMON = ROOT / "daemon" / "cardapd"
UPPER_SNAKE = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$")
NOT_CLIENT_REASONS = {
    # /healthz reasons (the HTTP endpoint, not the API)
    "STARTING", "SHUTTING_DOWN", "READER_MONITOR_STOPPED", "PCSC_UNAVAILABLE",
    "AUDIT_CHAIN_BROKEN", "HEALTH_CHECK_FAILED",
}


def parsers(p: argparse.ArgumentParser, path: str = "cardapctl"
            ) -> list[tuple[str, argparse.ArgumentParser]]:
    """The parser and every command's parser, with the command as typed."""
    out = [(path, p)]
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                out += parsers(child, f"{path} {name}")
    return out


def test_every_option_and_command_has_help_text() -> None:
    missing = []
    for path, p in parsers(build_parser()):
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{path} {c.dest}" for c in action._choices_actions
                            if not c.help]
                continue
            if not action.help or action.help == argparse.SUPPRESS or len(action.help) < 10:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
        if path != "cardapctl" and not p.description:
            missing.append(f"{path} (description)")
    assert not missing, "without help text: " + ", ".join(missing)


def test_global_options_are_accepted_by_every_command() -> None:
    for path, p in parsers(build_parser()):
        options = {s for a in p._actions for s in a.option_strings}
        assert {"--json", "--timeout", "--role", "--socket", "--session", "--session-file",
                "--socket-dir", "--request-id"} <= options, path


def daemon_reasons() -> dict[str, str]:
    """Every stable reason the daemon's code can raise: `reason=` arguments, `reason`
    class attributes, and the values of reason/error tables (name has REASON or ERROR)."""
    found: dict[str, str] = {}

    def add(value: object, where: Path) -> None:
        if isinstance(value, str) and UPPER_SNAKE.match(value):
            found.setdefault(value, str(where.relative_to(ROOT)))

    for path in DAEMON.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "reason" \
                    and isinstance(node.value, ast.Constant):
                add(node.value.value, path)
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id if isinstance(t, ast.Name) else
                         t.attr if isinstance(t, ast.Attribute) else "" for t in targets]
                if "reason" in names and isinstance(node.value, ast.Constant):
                    add(node.value.value, path)
                if any(re.search("REASON|ERROR", n) for n in names) \
                        and isinstance(node.value, ast.Dict):
                    for v in node.value.values:
                        for c in ast.walk(v):
                            if isinstance(c, ast.Constant):
                                add(c.value, path)
    return found


def test_every_daemon_reason_is_in_the_one_exit_code_table() -> None:
    reasons = daemon_reasons()
    assert len(reasons) > 80, "the scan found too few reasons: it no longer works"
    missing = {r: where for r, where in reasons.items()
               if r not in exitcodes.REASON_EXIT and r not in NOT_CLIENT_REASONS}
    assert not missing, ("add these reasons to clients/cardap/exitcodes.py (and run the "
                         f"docs test): {missing}")
    assert exitcodes.REASON_EXIT["BIOMETRIC_TIMEOUT"] == exitcodes.TIMEOUT


def test_unknown_reasons_fall_back_on_the_grpc_code() -> None:
    import grpc
    assert exitcodes.for_reason("SOMETHING_NEW", grpc.StatusCode.UNAVAILABLE) == 5
    assert exitcodes.for_reason("SOMETHING_NEW", grpc.StatusCode.DEADLINE_EXCEEDED) == 14
    assert exitcodes.for_reason("SOMETHING_NEW") == exitcodes.FAIL


OPERATION_CALLS = re.compile(
    r"(?:record|finish|quietly|audit_end|_audit_step|_write|_finish|_update)\(\s*"
    r"[\w.()=, ]*?\"([a-z][a-z_]+)\"", re.S)
ROSTER_CHANGES = re.compile(r"RosterChange\([^,]*,\s*\"([a-z_]+)\"")


def test_every_audit_operation_the_daemon_writes_is_known_to_export() -> None:
    written: dict[str, str] = {}
    for path in DAEMON.rglob("*.py"):
        text = path.read_text()
        for rx in (OPERATION_CALLS, ROSTER_CHANGES):
            for name in rx.findall(text):
                written.setdefault(name, str(path.relative_to(ROOT)))
    written = {k: v for k, v in written.items() if k not in ("ok", "error")}
    assert {"load", "delete", "read_user_id", "operator_login", "roster_unlock"} <= set(written)
    missing = {k: v for k, v in written.items() if k not in AUDIT_OPERATIONS}
    assert not missing, f"add to cardapd.domain.AUDIT_OPERATIONS: {missing}"


def test_tries_are_counted_in_good_english() -> None:
    assert tries_left(1) == "1 try left"
    assert tries_left(0) == "0 tries left"
    assert tries_left(3) == "3 tries left"
    assert describe_sw(0x63C1).endswith("1 try left")
    assert describe_sw(0x63C2).endswith("2 tries left")
