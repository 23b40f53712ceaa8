"""`cardapd bootstrap-admin`: appoint the first administrator of an organisation, a local act.

Run as root on the terminal (docs/operations.md, "The first administrator"): it reads the
configuration for the state directory and the ops socket, writes a one-time secret into the
state directory (which only root and the daemon's user can write), and presents it to the
running daemon (`BootstrapAdministrator`), which appoints the administrator — adding them
when new — and opens their session on the ops socket. By default the administrator's
finger is then enrolled at the terminal's sensor with that session, which ends when the
command does; `--session-file` keeps it and writes its token for further setup
(`cardapctl --role ops --session-file FILE …`). See `cardapd.operators.bootstrap`.

Exit codes: 0 done, 2 usage or invalid configuration, 4 refused (the organisation has an
administrator, a secret problem, another operator's session on the ops socket), 5 the
daemon cannot be reached, 1 anything else.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from cardap.client import CardapClient, CardapClientError
from cardap.clihelp import localize
from cardap.i18n import from_environment, tr
from cardapd.config import load_config
from cardapd.errors import CardapError, ConfigError
from cardapd.operators.bootstrap import write_secret

DEFAULT_CONFIG = Path("/etc/cardapd/cardapd.toml")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_UNAVAILABLE = 0, 1, 2, 4, 5
RIGHTS = ("load", "delete", "diagnose")
FINGER = "right-index-finger"


def build_parser(language: str | None = None) -> argparse.ArgumentParser:
    """The argument parser, its help in `language` (default: the user's, from LANGUAGE,
    LC_ALL, LC_MESSAGES, LANG)."""
    la = from_environment() if language is None else language
    p = argparse.ArgumentParser(
        prog="cardapd bootstrap-admin",
        description=tr(la, "Appoint the first administrator of an organisation (a local act: "
                       "run as root on the terminal, with cardapd running)."))
    p.add_argument("--config", type=Path, default=None,
                   help=tr(la, "configuration file (default {path} if it exists)",
                           path=DEFAULT_CONFIG))
    p.add_argument("--organisation", required=True,
                   help=tr(la, "organisation id (configured in [operators.organisations])"))
    p.add_argument("--operator", required=True,
                   help=tr(la, "the administrator's operator id (an operator of the "
                           "organisation, or a new one)"))
    p.add_argument("--name", default="",
                   help=tr(la, "display name of a new operator (default: the operator id)"))
    p.add_argument("--rights", default=",".join(RIGHTS),
                   help=tr(la, "rights besides administering, comma-separated (default "
                           "{rights})", rights=",".join(RIGHTS)))
    p.add_argument("--enroll", default=FINGER, metavar="FINGER",
                   help=tr(la, "enrol this finger at the terminal's sensor now (default "
                           "{finger})", finger=FINGER))
    p.add_argument("--no-enroll", action="store_true",
                   help=tr(la, "do not enrol a finger now (enrol before the session ends, or "
                           "the administrator cannot log in)"))
    p.add_argument("--replace-session", action="store_true",
                   help=tr(la, "end another operator's live session on the ops socket"))
    p.add_argument("--session-file", type=Path, default=None,
                   help=tr(la, "keep the administrator's session and write its token here "
                           "(0600)"))
    p.add_argument("--socket", type=Path, default=None,
                   help=tr(la, "the ops socket (default: from the configuration)"))
    return localize(p, la)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line arguments."""
    return build_parser().parse_args(argv)


def _rights(text: str) -> list[str]:
    out = [r.strip().lower() for r in text.split(",") if r.strip()]
    unknown = [r for r in out if r not in RIGHTS]
    if unknown:
        raise ValueError(f"unknown right(s): {', '.join(unknown)} (known: {', '.join(RIGHTS)})")
    return out


def _write_token(path: Path, token: str) -> None:
    """The session token into a new 0600 file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    tmp.replace(path)


def _exit_code(err: CardapClientError) -> int:
    if err.reason == "DAEMON_UNREACHABLE" or err.code.name == "UNAVAILABLE":
        return EXIT_UNAVAILABLE
    if err.code.name in ("PERMISSION_DENIED", "FAILED_PRECONDITION", "ALREADY_EXISTS"):
        return EXIT_REFUSED
    if err.code.name == "INVALID_ARGUMENT":
        return EXIT_USAGE
    return EXIT_FAILED


def _enrol(client: CardapClient, args: argparse.Namespace) -> None:
    """Enrol the administrator's finger, printing the sensor's prompts."""
    print(f"enrolling {args.enroll} of {args.organisation}/{args.operator} at the "
          "terminal's fingerprint sensor", flush=True)
    for event in client.enroll_finger(args.organisation, args.operator, args.enroll,
                                      timeout=600):
        if event.WhichOneof("event") == "prompt":
            print(f"  {event.prompt.message}", flush=True)
        elif event.completed:
            print("  finger enrolled", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the bootstrap; the exit code."""
    args = parse_args(argv)
    try:
        rights = _rights(args.rights)
    except ValueError as exc:
        print(f"cardapd bootstrap-admin: {exc}", file=sys.stderr)
        return EXIT_USAGE
    path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print(f"cardapd bootstrap-admin: invalid configuration: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    socket = args.socket or cfg.sockets.ops.path
    state_dir = Path(cfg.daemon.state_dir)
    try:
        secret_file, secret = write_secret(state_dir)
    except PermissionError:
        print(f"cardapd bootstrap-admin: cannot write {state_dir}: run it as root on the "
              "terminal (appointing a first administrator is a local act)", file=sys.stderr)
        return EXIT_REFUSED
    except (OSError, CardapError) as exc:
        print(f"cardapd bootstrap-admin: {exc}", file=sys.stderr)
        return EXIT_REFUSED if isinstance(exc, CardapError) else EXIT_FAILED
    try:
        with CardapClient(socket, timeout=30) as ops:
            opened = ops.bootstrap_administrator(
                args.organisation, args.operator, secret=secret,
                display_name=args.name or args.operator, rights=rights,
                replace_session=args.replace_session)
    except CardapClientError as err:
        print(f"cardapd bootstrap-admin: refused: {err.reason}: {err.message}",
              file=sys.stderr)
        return _exit_code(err)
    finally:
        with contextlib.suppress(FileNotFoundError):
            secret_file.unlink()  # the daemon deletes it once used; never leave one behind
    token = opened.token
    print(f"{args.organisation}/{args.operator} is an administrator of {args.organisation}; "
          f"session on the ops socket until {opened.expires_at.ToDatetime():%Y-%m-%d %H:%M} "
          "UTC", flush=True)
    keep = args.session_file is not None
    try:
        with CardapClient(socket, timeout=30, session=token) as ops:
            if not args.no_enroll:
                _enrol(ops, args)
            if keep:
                _write_token(args.session_file, token)
                print(f"session token written to {args.session_file}", flush=True)
            else:
                ops.end_session(token)
    except CardapClientError as err:
        print(f"cardapd bootstrap-admin: {err.reason}: {err.message}", file=sys.stderr)
        if not keep:
            with contextlib.suppress(CardapClientError), \
                    CardapClient(socket, timeout=10, session=token) as ops:
                ops.end_session(token)
        return _exit_code(err)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
