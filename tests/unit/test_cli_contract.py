"""cardapctl's contract with people and scripts, checked without a daemon: every option
documented (what `make man` renders), every reason the daemon can send in the one reason
registry (and so in the exit-code table), every audit operation name the daemon writes
known to ExportAudit."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

from cardap import exitcodes, reasons
from cardap.cli import build_parser
from cardapd.domain import AUDIT_OPERATIONS
from cardapd.errors import tries_left
from cardlib.apdu import describe_sw

ROOT = Path(__file__).resolve().parents[2]
DAEMON = ROOT / "daemon" / "cardapd"
CARDLIB = ROOT / "lib" / "cardlib"
UPPER_SNAKE = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$")
UPPER_WORD = re.compile(r"^[A-Z][A-Z0-9_]+$")  # where it must be a reason: INTERNAL too
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
    """Every stable reason the daemon's code (and the card library it relays) can raise:
    `reason=` arguments, `reason` class attributes, the values of reason/error tables (name
    has REASON or ERROR), reason constants (`LOGIN_REFUSED = "LOGIN_REFUSED"`), reasons
    compared against (`reason == "AID_FORBIDDEN"`, `said == …`), and the first item of a
    `(reason, text)` a `*_problem` function returns."""
    found: dict[str, str] = {}

    def add(value: object, where: Path, pattern: re.Pattern[str] = UPPER_SNAKE) -> None:
        if isinstance(value, str) and pattern.match(value):
            found.setdefault(value, str(where.relative_to(ROOT)))

    def name_of(node: ast.AST) -> str:
        return node.id if isinstance(node, ast.Name) else \
            node.attr if isinstance(node, ast.Attribute) else ""

    for path in [*DAEMON.rglob("*.py"), *CARDLIB.rglob("*.py")]:
        tree = ast.parse(path.read_text())
        constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                     and isinstance(n.value, ast.Constant) for t in n.targets
                     if isinstance(t, ast.Name)}

        def value_of(node: ast.AST, constants: dict[str, object] = constants) -> object:
            if isinstance(node, ast.Constant):
                return node.value
            return constants.get(node.id) if isinstance(node, ast.Name) else None

        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "reason":
                add(value_of(node.value), path, UPPER_WORD)
            elif isinstance(node, ast.Call) and "audit" in name_of(node.func):
                for arg in node.args:  # an audit row's reason: `("error", "RELOAD_FAILED")`
                    add(value_of(arg), path)
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [name_of(t) for t in targets]
                if "reason" in names and node.value is not None:
                    add(value_of(node.value), path, UPPER_WORD)
                if any(re.search("REASON|ERROR", n) for n in names) \
                        and isinstance(node.value, ast.Dict):
                    for v in node.value.values:
                        for c in ast.walk(v):
                            if isinstance(c, ast.Constant):
                                add(c.value, path)
            elif isinstance(node, ast.Compare) and name_of(node.left) in ("reason", "said"):
                for c in node.comparators:
                    if isinstance(c, ast.Constant):
                        add(c.value, path)
            elif isinstance(node, ast.FunctionDef) and node.name.endswith("_problem"):
                for ret in ast.walk(node):
                    if isinstance(ret, ast.Return) and isinstance(ret.value, ast.Tuple) \
                            and isinstance(ret.value.elts[0], ast.Constant):
                        add(ret.value.elts[0].value, path)
    return found


def test_every_daemon_reason_is_registered_with_its_exit_code() -> None:
    found = daemon_reasons()
    assert len(found) > 80, "the scan found too few reasons: it no longer works"
    assert {"AID_BUILT_IN", "LOGIN_REFUSED", "ORGANISATION_NOT_ALLOWED",
            "SECURE_CHANNEL_ERROR"} <= set(found), "the scan misses a kind of raise"
    missing = {r: where for r, where in found.items()
               if r not in reasons.BY_CODE and r not in NOT_CLIENT_REASONS}
    assert not missing, ("register these reasons in clients/cardap/reasons.py (then make "
                         f"docs, make i18n-extract): {missing}")
    assert set(exitcodes.REASON_EXIT) == set(reasons.BY_CODE)
    assert exitcodes.REASON_EXIT["BIOMETRIC_TIMEOUT"] == exitcodes.TIMEOUT


def test_every_registered_daemon_reason_is_one_the_daemon_raises() -> None:
    """No stale entry: a reason the registry says the daemon sends is in its code."""
    found = daemon_reasons()
    stale = [r.code for r in reasons.REASONS
             if r.source in ("daemon", "audit") and r.code not in found]
    assert not stale, f"registered, but the daemon never raises them: {stale}"


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
