"""cardapctl: the command line of cardapd, for operations staff and scripts.

Commands: status, readers, watch, read-id, diagnose, metrics, loadable, aps, load,
delete, login, logout, operators, enroll, rights, presets, audit, report, completion.
What `cardapctl --help` says is DESCRIPTION, in the user's language; exit codes: see
`cardap.exitcodes` (the one table) and the operations guide.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import argcomplete
import grpc
from argcomplete import shell_integration

from cardap import __version__, cli_ops, cli_rights, clibase, clihelp, exitcodes, reasons
from cardap.cli_cards import (
    cmd_aps,
    cmd_delete,
    cmd_diagnose,
    cmd_load,
    cmd_loadable,
    cmd_read_id,
    cmd_readers,
    cmd_status,
    reader_completer,
)
from cardap.cli_watch import cmd_metrics, cmd_watch
from cardap.clibase import (
    EXIT_FAIL,
    CliError,
    as_dict,  # noqa: F401  (re-exported: cardap.cli.as_dict)
    dumps,
    lang,
    positive_int,
    quiet_broken_pipe,
    seconds,
)
from cardap.client import CardapClient, CardapClientError, default_socket
from cardap.i18n import DEFAULT, N_, tr

CODE_EXIT = exitcodes.CODE_EXIT  # kept for scripts importing it; the table is exitcodes
DEFAULT_TIMEOUT_S = 15.0
LONG_TIMEOUT_S = 300.0
DEFAULT_ROLE = {"status": "ops", "readers": "ops", "watch": "gate", "read-id": "gate",
                "diagnose": "kiosk", "metrics": "ops", "loadable": "kiosk", "aps": "kiosk",
                "load": "kiosk", "delete": "kiosk", **cli_ops.DEFAULT_ROLE,
                **cli_rights.DEFAULT_ROLE}
WITHOUT_SESSION = {"diagnose": "ops", "aps": "ops"}
"""Card commands the kiosk socket serves only with an operator session (issue 16): without
one, the ops socket, where operations staff troubleshoot without a counter session."""
STREAMS = ("watch", "metrics", "login", "enroll", "audit export")
"""Commands that wait for events: no deadline unless --timeout is given."""
LONG = ("load", "audit verify", "report")
"""Commands whose one call may take minutes: LONG_TIMEOUT_S unless --timeout is given."""
ENDED_BY_CTRL_C = ("watch", "metrics")

Command = Callable[[CardapClient, argparse.Namespace], int]
COMMANDS: dict[str, Command] = {
    "status": cmd_status, "readers": cmd_readers, "watch": cmd_watch,
    "read-id": cmd_read_id, "diagnose": cmd_diagnose, "metrics": cmd_metrics,
    "loadable": cmd_loadable, "aps": cmd_aps, "load": cmd_load, "delete": cmd_delete,
    **cli_ops.COMMANDS, **cli_rights.COMMANDS,
}


DESCRIPTION = N_("""\
The command line of cardapd, for operations staff and scripts.

Every option may come before or after the command (`cardapctl --json status` =
`cardapctl status --json`); --json prints one JSON object per line, integers as
numbers. A reader is named by its index in `cardapctl readers` (0, 1, ..., as
pcsc_scan and gp number them), its full name or a unique part of it. Texts for
people follow LANGUAGE, LC_ALL, LC_MESSAGES or LANG (Japanese or English); --json
output and the first line of an error are the same in every language. Scripts can
rely on the exit codes below.""")
"""The top parser's description (`--help`, the manual page): a message id, its line
breaks kept (RawDescriptionHelpFormatter)."""


def global_options(la: str, *, suppress: bool) -> argparse.ArgumentParser:
    """The options every command takes, before or after its name (help in language `la`).

    On the top-level parser they carry the defaults; on each command's parser they are
    SUPPRESSed, so that one given after the command overrides and an absent one does not
    reset what was given before it."""
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    g = argparse.ArgumentParser(add_help=False)
    opts = g.add_argument_group(tr(la, "global options (before or after the command)"))
    opts.add_argument("--json", action="store_true", default=default(False),
                      help=tr(la, "machine output: one JSON object per line on stdout (errors "
                              "as {error_json} on stderr); integers are numbers",
                              error_json='{"error": ...}'))
    opts.add_argument("--timeout", type=seconds, default=default(None), metavar="SECONDS",
                      help=tr(la, "give up on a call after SECONDS (default {default}; {long} "
                              "for load, audit verify and report; none for watch, metrics, "
                              "login, enroll and audit export); exit 14 when it expires",
                              default=f"{DEFAULT_TIMEOUT_S:g}", long=f"{LONG_TIMEOUT_S:g}"))
    opts.add_argument("--role", choices=["kiosk", "gate", "ops"], default=default(None),
                      help=tr(la, "use this role's socket (default: the command's own, e.g. "
                              "gate for watch and read-id, kiosk for load, ops for status)"))
    opts.add_argument("--socket", type=Path, default=default(None), metavar="PATH",
                      help=tr(la, "the daemon socket to use (overrides --role and "
                              "--socket-dir)"))
    opts.add_argument("--socket-dir", type=Path, default=default(None), metavar="DIR",
                      help=tr(la, "directory of the role sockets (default "
                              "$CARDAPD_SOCKET_DIR, else /run/cardapd)"))
    opts.add_argument("--session", default=default(os.environ.get("CARDAPD_SESSION")),
                      metavar="TOKEN",
                      help=tr(la, "operator session token for load, delete and the roster "
                              "(default $CARDAPD_SESSION; visible in ps: prefer "
                              "--session-file)"))
    opts.add_argument("--session-file", type=Path, metavar="FILE",
                      default=default(os.environ.get("CARDAPD_SESSION_FILE") or None),
                      help=tr(la, "file holding the session token, as written by `login "
                              "--token-file` (default $CARDAPD_SESSION_FILE)"))
    opts.add_argument("--request-id", default=default(None), metavar="ID",
                      help=tr(la, "request id sent to the daemon (x-request-id: 1-64 of A-Z "
                              "a-z 0-9 . _ -); it names the call in the daemon's log and "
                              "audit rows"))
    return g


def reader_option(p: argparse.ArgumentParser, la: str, what: str) -> None:
    """`--reader`: by index, full name or a unique part of the name (`what`: a message
    id, said in `la`)."""
    action = p.add_argument(
        "--reader", default="", metavar="READER",
        help=tr(la, "{what}: its index in `cardapctl readers` (0, 1, ...), its name, or a "
                "unique part of its name", what=tr(la, what)))
    action.completer = reader_completer  # type: ignore[attr-defined]


HOLDING = N_("the reader holding the card (default: the one with a card)")


def exit_codes(la: str) -> str:
    """The epilog of `cardapctl --help`: the exit codes table in `la`, each meaning wrapped
    to 79 columns (the same on every terminal, as the manual page needs)."""
    indent = " " * 20
    return tr(la, "Exit codes:") + "\n" + "\n".join(
        f"  {e.code:>3} {e.name:<13} " + f"\n{indent}".join(clihelp.wrap(tr(la, e.meaning),
                                                                        79 - len(indent)))
        for e in exitcodes.EXITS)


def build_parser(language: str | None = None) -> argparse.ArgumentParser:
    """cardapctl's argument parser, its help in `language` (default: the user's, `lang()`;
    `manual_parser` forces English for the manual page)."""
    la = lang() if language is None else language
    common = global_options(la, suppress=True)
    p = argparse.ArgumentParser(
        prog="cardapctl", description=tr(la, DESCRIPTION),
        parents=[global_options(la, suppress=False)],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=exit_codes(la))
    p.add_argument("--version", action="version", version=f"cardapctl {__version__}",
                   help=tr(la, "print cardapctl's version and exit"))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_id: str) -> argparse.ArgumentParser:
        return clibase.command(sub, name, help_id, [common], la)

    command("status", N_("daemon status: version, PC/SC, readers, cards, audit head (ops)"))
    command("readers", N_("readers with their index, and the card in each (ops)"))
    w = command("watch", N_("card events with their time: the current state of every "
                            "reader, then live events (gate)"))
    w.add_argument("--reader", action="append", default=[], metavar="READER",
                   help=tr(la, "only this reader (index, name or part of the name; "
                           "repeatable)")
                   ).completer = reader_completer  # type: ignore[attr-defined]
    w.add_argument("--count", type=positive_int, default=0, metavar="N",
                   help=tr(la, "stop after N events (the snapshot included)"))
    w.add_argument("--duration", type=seconds, default=None, metavar="SECONDS",
                   help=tr(la, "stop after SECONDS (exit 0)"))
    w.add_argument("--follow", "-f", action="store_true",
                   help=tr(la, "when the daemon stops or restarts, wait for it and reconnect "
                           "(the snapshot is sent again) instead of exiting 5"))
    r = command("read-id", N_("read the user ID of a Type C AP (gate)"))
    reader_option(r, la, N_("the reader to read (default: the one with a card)"))
    r.add_argument("--aid", default="", metavar="AID",
                   help=tr(la, "the Type C AP's AID in hex (default: the first configured "
                           "one)"))
    r.add_argument("--fresh", action="store_true",
                   help=tr(la, "read the card now instead of answering from the tap cache"))
    d = command("diagnose", N_("card fault isolation: checks, a verdict and the next action "
                               "per reader; exit 0/10/11/12/13 by the worst verdict (kiosk)"))
    reader_option(d, la, N_("only this reader (default: every reader)"))
    m = command("metrics", N_("metric snapshots from the daemon's WatchMetrics stream (ops)"))
    m.add_argument("--interval", type=positive_int, default=5, metavar="SECONDS",
                   help=tr(la, "seconds between snapshots (default 5)"))
    m.add_argument("--count", type=positive_int, default=1, metavar="N",
                   help=tr(la, "stop after N snapshots (default 1)"))
    m.add_argument("--prefix", action="append", default=[], metavar="NAME",
                   help=tr(la, "only metrics whose name starts with NAME (repeatable)"))
    command("loadable", N_("the APs the operator's organisation may load and the preset "
                           "sets (kiosk, operator session)"))
    a = command("aps", N_("the APs on the card and the free space per area (kiosk)"))
    reader_option(a, la, HOLDING)
    ld = command("load", N_("load an AP or a preset set onto the card, with a progress bar "
                            "(kiosk, operator session)"))
    what = ld.add_mutually_exclusive_group(required=True)
    what.add_argument("--ap", metavar="AP_ID",
                      help=tr(la, "the catalogue id of the AP to load (see `cardapctl "
                              "loadable`)"))
    what.add_argument("--preset", metavar="NAME",
                      help=tr(la, "a preset set to load, AP by AP in its order (see "
                              "`cardapctl loadable`)"))
    what.add_argument("--default-preset", action="store_true",
                      help=tr(la, "the organisation's default preset (APs already on the "
                              "card are skipped)"))
    reader_option(ld, la, HOLDING)
    ld.add_argument("--custom-user-id", default="", metavar="ID",
                    help=tr(la, "for custom APs only: the 13-character user ID the "
                            "organisation assigned"))
    ld.add_argument("--quiet", "-q", action="store_true",
                    help=tr(la, "no progress bar, only the result of each AP"))
    de = command("delete", N_("delete an AP from the card, after a confirmation; says what "
                              "it deleted (kiosk, operator session)"))
    de.add_argument("--aid", required=True, metavar="AID",
                    help=tr(la, "the instance AID of the AP to delete, in hex (see "
                            "`cardapctl aps`)"))
    reader_option(de, la, HOLDING)
    de.add_argument("--yes", "-y", action="store_true",
                    help=tr(la, "do not ask for confirmation (needed when stdin is not a "
                            "terminal)"))
    de.add_argument("--reason", required=True,
                    choices=["holder_request", "card_renewal", "other"],
                    help=tr(la, "why: the holder asked, the card is renewed, or other (with "
                            "--reason-detail); kept in the audit log and sent to the "
                            "loading service"))
    de.add_argument("--reason-detail", default="", metavar="TEXT",
                    help=tr(la, "what the other reason is (required with --reason other)"))
    cli_ops.add_parsers(sub, common, la)
    cli_rights.add_parsers(sub, common, la)
    co = command("completion", N_("print the shell completion script: eval \"$(cardapctl "
                                  "completion bash)\", or install it as "
                                  "/usr/share/bash-completion/completions/cardapctl"))
    co.add_argument("shell", nargs="?", choices=["bash", "zsh", "fish"], default="bash",
                    help=tr(la, "the shell (default bash)"))
    return clihelp.localize(p, la)


def parser() -> argparse.ArgumentParser:
    """The argument parser in the user's language (the name older callers use)."""
    return build_parser()


def manual_parser() -> argparse.ArgumentParser:
    """The parser of the English manual page cardapctl(1): English whatever the locale of
    the machine that builds it (`make man`, the Debian build)."""
    return build_parser("en")


def command_path(args: argparse.Namespace) -> str:
    """`audit verify`, `operators list`, `load`: the command as typed."""
    sub = getattr(args, "audit_command", None) or getattr(args, "op_command", None)
    return f"{args.command} {sub}" if sub else str(args.command)


def call_timeout(args: argparse.Namespace) -> float | None:
    """The deadline of the command's calls: --timeout, else the command's default."""
    if args.timeout is not None:
        return float(args.timeout)
    path = command_path(args)
    if path in STREAMS:
        return None
    return LONG_TIMEOUT_S if path in LONG else DEFAULT_TIMEOUT_S


def print_error(args: argparse.Namespace, code: str, reason: str, message: str,
                metadata: dict[str, str], hint: str = "", localized: str = "") -> None:
    """A failure on stderr: `cardapctl: REASON: message` (English, the same in every
    locale, for scripts and logs), then what it means and what to do next in the user's
    language (`localized`, else the reason registry's text); JSON with --json."""
    language = lang()
    if not localized:
        localized = reasons.localized(reason, language, metadata)
    if getattr(args, "json", False):
        print(dumps({"error": {"code": code, "reason": reason, "message": message,
                               "metadata": metadata, "localized": localized,
                               "locale": language}}), file=sys.stderr)
    else:
        print(f"cardapctl: {reason}: {message}{hint}", file=sys.stderr)
        if localized:
            print(f"cardapctl: {localized}", file=sys.stderr)


def completion(shell: str) -> int:
    """Print argcomplete's completion script for `cardapctl`."""
    sys.stdout.write(shell_integration.shellcode(["cardapctl"], shell=shell))
    return exitcodes.OK


def role_for(args: argparse.Namespace) -> str:
    """The socket role of a command (--role wins)."""
    if args.role:
        return str(args.role)
    if args.command in WITHOUT_SESSION and not (args.session or args.session_file):
        return WITHOUT_SESSION[args.command]
    return DEFAULT_ROLE[args.command]


def run(args: argparse.Namespace) -> int:
    """Run the parsed command; failures are turned into exit codes by `main`."""
    if args.command == "completion":
        return completion(args.shell)
    if args.session_file and not args.session:
        args.session = cli_ops.read_token(Path(args.session_file))
    socket = args.socket or default_socket(role_for(args), args.socket_dir)
    args.socket_path = socket
    timeout = call_timeout(args)
    args.call_timeout = timeout

    def connect() -> CardapClient:
        kw: dict[str, Any] = {"timeout": timeout or DEFAULT_TIMEOUT_S,
                              "session": args.session, "language": lang()}
        if args.request_id:
            kw["request_id"] = args.request_id
        return CardapClient(socket, **kw)

    args.connect = connect
    with connect() as client:
        return COMMANDS[args.command](client, args)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    p = build_parser()
    argcomplete.autocomplete(p)
    args = p.parse_args(argv)
    try:
        return run(args)
    except BrokenPipeError:
        return quiet_broken_pipe()
    except CliError as err:
        language = lang()
        print_error(args, "CLIENT", "CLIENT_ERROR", str(err), {},
                    localized=err.localized(language) if language != DEFAULT else "")
        return err.code
    except OSError as err:
        print_error(args, "CLIENT", "CLIENT_ERROR", str(err), {})
        return EXIT_FAIL
    except CardapClientError as err:
        hint = ""
        if err.reason == "DAEMON_UNREACHABLE":
            hint = f" (is cardapd running? socket {getattr(args, 'socket_path', '?')})"
        elif err.code == grpc.StatusCode.DEADLINE_EXCEEDED and call_timeout(args):
            hint = f" (no answer within {call_timeout(args):g} s; see --timeout)"
        try:
            print_error(args, err.code.name, err.reason, err.message, err.metadata, hint,
                        err.localized if err.locale == lang() else "")
        except BrokenPipeError:
            return quiet_broken_pipe()
        return exitcodes.for_reason(err.reason, err.code)
    except KeyboardInterrupt:
        if args.command in ENDED_BY_CTRL_C:
            return exitcodes.OK
        print("cardapctl: " + tr(lang(), "interrupted"), file=sys.stderr)
        return exitcodes.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
