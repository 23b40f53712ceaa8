"""`cardapctl` commands for operators, the roster, enrolment, the audit trail and the report.

login/logout use the kiosk socket; operators, enroll, audit and report the ops socket.
A session is valid only on the socket it was opened on, so an administrator logs in on
the ops socket (`cardapctl --role ops login ... --token-file F`) and passes the token to
the roster commands (`cardapctl --session-file F operators ...`).
Passwords are read with getpass (or one line of stdin with `--password-stdin`), never
taken from argv, echoed or logged.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import getpass
import io
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import IO, Any

from cardap import cli_audit, clibase
from cardap.clibase import (
    EXIT_ABORTED,
    EXIT_AUDIT_BROKEN,
    EXIT_FAIL,
    EXIT_OK,
    CliError,
    Msg,
    as_dict,
    dumps,
    emit,
    enum_name,
    lang,
)
from cardap.client import CardapClient, right_value
from cardap.i18n import N_, tr
from cardap.v1 import audit_pb2, operators_pb2, terminal_pb2

DEFAULT_ROLE = {"login": "kiosk", "logout": "kiosk", "operators": "ops", "enroll": "ops",
                "audit": "ops", "report": "ops"}
FINGERS = tuple(f"{side}-{finger}-finger" for side in ("left", "right")
                for finger in ("thumb", "index", "middle", "ring", "little"))
AUDIT_FIELDS = ("seq", "time", "request_id", "actor", "operation", "reader", "card_id",
                "result", "reason", "detail_json", "hash")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


# ---------------------------------------------------------------- argument types

def parse_rights(text: str) -> list[operators_pb2.Right.ValueType]:
    """`load,delete,diagnose` → Right values (argparse type)."""
    names = [n for n in (part.strip() for part in text.split(",")) if n]
    try:
        rights = [right_value(n) for n in names]
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"{err}; rights are load, delete, diagnose, administer") from None
    if operators_pb2.RIGHT_UNSPECIFIED in rights:
        raise argparse.ArgumentTypeError("unknown right 'unspecified'")
    return list(dict.fromkeys(rights))


def local_datetime(text: str, *, end_of_day: bool = False) -> datetime:
    """An ISO date or date-time; naive means local time, a bare date its start (or end)."""
    try:
        if len(text.strip()) == 10:
            day = date.fromisoformat(text.strip())
            when = datetime.combine(day + timedelta(days=1) if end_of_day else day, time())
        else:
            when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO date (2026-03-31) or date-time") from None
    return when if when.tzinfo is not None else when.astimezone()


def start_time(text: str) -> datetime:
    """`--since`: a date means its first instant (argparse type)."""
    return local_datetime(text)


def end_time(text: str) -> datetime:
    """`--until`/`--expires`: a date means through the end of that day (argparse type)."""
    return local_datetime(text, end_of_day=True)


def year(text: str) -> int:
    """A calendar year 2000..9999 (argparse type)."""
    if not text.isdigit() or not 2000 <= int(text) <= 9999:
        raise argparse.ArgumentTypeError(f"{text!r} is not a year")
    return int(text)


# ---------------------------------------------------------------- passwords and files

def read_password(args: argparse.Namespace, prompt: str = N_("Password: "),
                  confirm: bool = False) -> str:
    """A password from the terminal (no echo) or one line of stdin; never from argv.
    `prompt` is a message id, asked in the user's language."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(tr(lang(), prompt))
        if confirm and getpass.getpass(tr(lang(), "Repeat password: ")) != password:
            raise CliError(Msg("the passwords do not match"))
    if not password:
        raise CliError(Msg("empty password"))
    return password


def write_private(path: Path, data: str) -> None:
    """Write a file atomically with mode 0600 (replacing any file of another mode)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent or Path("."), prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def output(out: Path | None, private: bool = False) -> Iterator[IO[str]]:
    """stdout, or a file written atomically (only when the body succeeds)."""
    if out is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    buffer = io.StringIO()
    yield buffer
    if private:
        write_private(out, buffer.getvalue())
    else:
        out.write_text(buffer.getvalue(), encoding="utf-8")


def read_token(path: Path) -> str:
    """The session token in a token file (warns when others may read it)."""
    if path.stat().st_mode & 0o077:
        print("cardapctl: " + tr(lang(), "warning: {file} is readable by others (chmod 600 "
                                 "it)", file=path), file=sys.stderr)
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise CliError(Msg("{file} holds no session token", file=path))
    return token


# ---------------------------------------------------------------- formatting

def fmt_time(ts: Any) -> str:
    """A Timestamp as RFC 3339 (empty when unset)."""
    return "" if ts.seconds == 0 and ts.nanos == 0 else str(ts.ToJsonString())


def fmt_operator(op: operators_pb2.Operator) -> str:
    """One roster line."""
    la = lang()
    rights = ",".join(enum_name(operators_pb2.Right, r, "RIGHT_") for r in op.rights) or "-"
    who = f"{op.organisation}/{op.operator_id}" + (f" ({op.display_name})"
                                                   if op.display_name else "")
    if op.removed:
        return tr(la, "{operator}: REMOVED {when} by {by} (id never reused)", operator=who,
                  when=fmt_time(op.removed_at), by=op.removed_by or "?")
    flags = [tr(la, "enabled") if op.enabled else tr(la, "DISABLED")]
    if op.administrator:
        flags.append(tr(la, "administrator"))
    if op.locked:
        flags.append(tr(la, "LOCKED"))
    if op.HasField("password_approval"):
        a = op.password_approval
        flags.append(tr(la, "password until {when} (by {by}: {reason})",
                        when=fmt_time(a.expires_at), by=a.approved_by, reason=a.reason))
    fingers = ", ".join(op.enrolled_fingers) or tr(la, "no finger enrolled")
    return tr(la, "{operator}: rights {rights}; {flags}; {fingers}", operator=who,
              rights=rights, flags="; ".join(flags), fingers=fingers)


def fmt_prompt(prompt: terminal_pb2.Prompt) -> str:
    """A prompt for the operator."""
    return f"[{prompt.code}] {prompt.message}" if prompt.message else f"[{prompt.code}]"


fmt_verify = cli_audit.fmt_verify


def audit_row(rec: audit_pb2.AuditRecord) -> dict[str, Any]:
    """An audit record as a flat dict in AUDIT_FIELDS order (seq an int, time RFC 3339)."""
    row: dict[str, Any] = {name: getattr(rec, name) for name in AUDIT_FIELDS}
    row["seq"] = int(rec.seq)
    row["time"] = fmt_time(rec.time)
    return row


def csv_cell(value: Any) -> str:
    """A CSV cell, prefixed with ' when a spreadsheet would read it as a formula."""
    text = str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


# ---------------------------------------------------------------- commands

def cmd_login(client: CardapClient, args: argparse.Namespace) -> int:
    method = "password" if args.password or args.password_stdin else "fingerprint"

    def provider() -> str:
        return read_password(args)

    session: terminal_pb2.OperatorSession | None = None
    try:
        for item in client.authenticate(args.org, args.operator, method, provider,
                                        args.wait, replace_session=args.replace_session):
            if isinstance(item, terminal_pb2.OperatorSession):
                session = item
            elif args.json:
                print(json.dumps({"prompt": as_dict(item)}, ensure_ascii=False), flush=True)
            else:
                print(fmt_prompt(item), file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("cardapctl: " + tr(lang(), "login cancelled"), file=sys.stderr)
        return EXIT_ABORTED
    if session is None:  # the client raises LOGIN_INCOMPLETE first; defensive
        return EXIT_FAIL
    if args.token_file:
        write_private(args.token_file, session.token + "\n")
    if args.json:
        data = as_dict(session)
        if args.token_file:
            data["token"] = ""  # in the file only
        print(json.dumps({"session": data}, ensure_ascii=False), flush=True)
    elif args.token_file:
        print(tr(lang(), "logged in as {operator} until {until}; token in {file}",
                 operator=f"{session.operator.organisation}/{session.operator.operator_id}",
                 until=fmt_time(session.expires_at), file=args.token_file), file=sys.stderr)
    else:
        print(session.token, flush=True)
    return EXIT_OK


def cmd_logout(client: CardapClient, args: argparse.Namespace) -> int:
    token = read_token(args.token_file) if args.token_file else args.session
    if not token:
        raise CliError(Msg("no session to end: give --token-file, --session-file or "
                           "--session"))
    client.end_session(token)
    if args.token_file:
        args.token_file.unlink(missing_ok=True)
    if args.json:
        print(json.dumps({"ended": True}), flush=True)
    else:
        print(tr(lang(), "session ended"), file=sys.stderr)
    return EXIT_OK


def cmd_operators(client: CardapClient, args: argparse.Namespace) -> int:
    op_cmd = args.op_command
    if op_cmd == "list":
        resp = client.list_operators(args.org or "")
        emit(args, resp, lambda r: "\n".join(fmt_operator(o) for o in r.operators)
             or tr(lang(), "no operators"))
        return EXIT_OK
    if op_cmd == "add":
        result = client.add_operator(args.org, args.operator, args.name or args.operator,
                                     args.rights)
    elif op_cmd in ("enable", "disable"):
        result = client.set_operator_enabled(args.org, args.operator, op_cmd == "enable")
    elif op_cmd == "appoint-admin":
        result = client.appoint_administrator(args.org, args.operator)
    elif op_cmd == "unlock":
        result = client.unlock_operator(args.org, args.operator)
    elif op_cmd == "remove":
        result = client.remove_operator(args.org, args.operator)
    elif op_cmd == "set-rights":
        result = client.set_operator_rights(args.org, args.operator, args.rights)
    else:  # grant-password
        if args.expires <= datetime.now().astimezone():
            raise CliError(Msg("--expires {when} is in the past",
                               when=args.expires.isoformat()))
        password = read_password(args, N_("Initial password: "), confirm=True)
        result = client.grant_password_fallback(args.org, args.operator, reason=args.reason,
                                                 expires_at=args.expires, password=password)
    emit(args, result, fmt_operator)
    return EXIT_OK


def cmd_enroll(client: CardapClient, args: argparse.Namespace) -> int:
    try:
        for ev in client.enroll_finger(args.org, args.operator, args.finger,
                                       timeout=args.call_timeout):
            if args.json:
                emit(args, ev, str)
            elif ev.WhichOneof("event") == "prompt":
                print(fmt_prompt(ev.prompt), flush=True)
            if ev.WhichOneof("event") == "completed" and ev.completed:
                if not args.json:
                    print(tr(lang(), "{finger} enrolled for {operator}", finger=args.finger,
                             operator=f"{args.org}/{args.operator}"), flush=True)
                return EXIT_OK
    except KeyboardInterrupt:
        print("cardapctl: " + tr(lang(), "enrolment cancelled"), file=sys.stderr)
        return EXIT_ABORTED
    print("cardapctl: " + tr(lang(), "the daemon ended the enrolment without completing it"),
          file=sys.stderr)
    return EXIT_FAIL


def cmd_audit(client: CardapClient, args: argparse.Namespace) -> int:
    if args.audit_command == "verify":
        return cli_audit.verify(client, args)
    if args.audit_command == "acknowledge":
        return cli_audit.acknowledge(client, args)
    operations = [o for part in args.operation or () for o in part.split(",") if o]
    records = client.export_audit(args.since, args.until, operations,
                                  timeout=args.call_timeout)
    count = 0
    with output(args.out, private=True) as out:
        if args.format == "csv":
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(AUDIT_FIELDS)
            for rec in records:
                writer.writerow([csv_cell(v) for v in audit_row(rec).values()])
                count += 1
        else:
            for rec in records:
                out.write(dumps(audit_row(rec)) + "\n")
                count += 1
    if args.out:
        print(tr(lang(), "{count} audit rows written to {file}", count=count, file=args.out),
              file=sys.stderr)
    return EXIT_OK


def cmd_report(client: CardapClient, args: argparse.Namespace) -> int:
    rep = client.yearly_report(args.year, timeout=args.call_timeout)
    if args.out is not None or not args.json:
        with output(args.out) as out:
            out.write(rep.document if rep.document.endswith("\n") or not rep.document
                      else rep.document + "\n")
    if args.json:
        emit(args, rep, str)
    else:
        la = lang()
        summary = "; ".join(tr(la, "{organisation}: {loads} loads, {yen} yen",
                               organisation=o.organisation, loads=o.loads, yen=o.charge_yen)
                            for o in rep.organisations) or tr(la, "no loads")
        print(tr(la, "report {year}: {summary}; {verification}", year=rep.year,
                 summary=summary, verification=fmt_verify(rep.audit))
              + (tr(la, "; written to {file}", file=args.out) if args.out else ""),
              file=sys.stderr)
    return EXIT_OK if rep.audit.ok else EXIT_AUDIT_BROKEN


COMMANDS: dict[str, Callable[[CardapClient, argparse.Namespace], int]] = {
    "login": cmd_login, "logout": cmd_logout, "operators": cmd_operators,
    "enroll": cmd_enroll, "audit": cmd_audit, "report": cmd_report,
}


# ---------------------------------------------------------------- parsers

def add_parsers(sub: Any, common: argparse.ArgumentParser, la: str) -> None:
    """Add the operator, roster, audit and report commands to cardapctl's subparsers, their
    help in language `la`."""
    def command(parent: Any, name: str, help_id: str,
                parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
        return clibase.command(parent, name, help_id, parents, la)

    password = argparse.ArgumentParser(add_help=False)
    password.add_argument("--password-stdin", action="store_true",
                          help=tr(la, "read the password as one line of stdin (not the "
                                  "terminal)"))

    li = command(sub, "login", N_("operator login, by fingerprint or (when an administrator "
                                  "approved it) --password; prints the session token (kiosk; "
                                  "--role ops for the roster)"), [common, password])
    li.add_argument("--org", required=True, metavar="ORG",
                    help=tr(la, "the operator's organisation"))
    li.add_argument("--operator", required=True, metavar="ID", help=tr(la, "the operator's ID"))
    li.add_argument("--password", action="store_true",
                    help=tr(la, "log in with the approved password (asked for, never echoed)"))
    li.add_argument("--wait", type=int, default=0, metavar="SECONDS",
                    help=tr(la, "seconds to wait for the finger or the password (default: the "
                            "daemon's [operators] verify_timeout_s); exit 14 when nothing "
                            "came"))
    li.add_argument("--token-file", type=Path, metavar="FILE",
                    help=tr(la, "write the token to FILE (mode 0600) instead of stdout; pass it "
                            "later with --session-file"))
    li.add_argument("--replace-session", action="store_true",
                    help=tr(la, "end another operator's session on this socket (refused "
                            "otherwise)"))
    lo = command(sub, "logout", N_("end an operator session at once (kiosk)"), [common])
    lo.add_argument("--token-file", type=Path, metavar="FILE",
                    help=tr(la, "the token file written by login (removed after logout)"))

    ops = sub.add_parser(
        "operators", parents=[common],
        help=tr(la, "the roster: list, add, disable, enable, appoint-admin, grant-password, "
                "unlock (ops, administrator session)"),
        description=tr(la, "The roster of operators (ops socket; changes need an "
                       "administrator's session)."))
    osub = ops.add_subparsers(dest="op_command", required=True, metavar="ACTION")
    ls = command(osub, "list", N_("list operators with their rights, state and fingers"),
                 [common])
    ls.add_argument("--org", default="", metavar="ORG",
                    help=tr(la, "only this organisation (default: all)"))
    who = argparse.ArgumentParser(add_help=False, parents=[common])
    who.add_argument("--org", required=True, metavar="ORG", help=tr(la, "the organisation"))
    who.add_argument("--operator", required=True, metavar="ID", help=tr(la, "the operator's ID"))
    add = command(osub, "add", N_("add an operator"), [who])
    add.add_argument("--name", default="", metavar="TEXT",
                     help=tr(la, "display name (default: the operator ID)"))
    add.add_argument("--rights", type=parse_rights, default=[operators_pb2.RIGHT_LOAD],
                     metavar="RIGHTS",
                     help=tr(la, "comma-separated: load,delete,diagnose (default: load)"))
    command(osub, "disable", N_("disable an operator (their session ends at once)"), [who])
    command(osub, "enable", N_("enable an operator again"), [who])
    command(osub, "appoint-admin", N_("appoint an operator administrator of their "
                                      "organisation"), [who])
    command(osub, "unlock", N_("unlock an operator locked after too many wrong passwords"),
            [who])
    sr = command(osub, "set-rights", N_("replace an operator's rights"), [who])
    sr.add_argument("--rights", type=parse_rights, required=True, metavar="LIST",
                    help=tr(la, "comma-separated: load,delete,diagnose (empty: none)"))
    command(osub, "remove", N_("remove an operator (kept as removed, the id never used again; "
                               "their prints are deleted)"), [who])
    gp = command(osub, "grant-password", N_("approve ID + password login for an operator who "
                                            "cannot use the fingerprint (the initial password is "
                                            "asked for)"), [who, password])
    gp.add_argument("--reason", required=True, metavar="TEXT",
                    help=tr(la, "why the fingerprint cannot be used (kept in the audit log)"))
    gp.add_argument("--expires", required=True, type=end_time, metavar="WHEN",
                    help=tr(la, "end of the approval: an ISO date (valid through that day) or "
                            "date-time"))

    en = command(sub, "enroll", N_("enrol an operator's finger on the fingerprint sensor; "
                                   "prompts follow (ops, administrator session)"), [common])
    en.add_argument("--org", required=True, metavar="ORG",
                    help=tr(la, "the operator's organisation"))
    en.add_argument("--operator", required=True, metavar="ID", help=tr(la, "the operator's ID"))
    en.add_argument("--finger", default="right-index-finger", choices=FINGERS,
                    metavar="FINGER",
                    help=tr(la, "which finger (default right-index-finger; one of {fingers})",
                            fingers=", ".join(FINGERS)))

    au = sub.add_parser("audit", help=tr(la, "the audit trail: verify, export (ops)"),
                        description=tr(la, "The hash-chained audit trail (ops socket)."),
                        parents=[common])
    asub = au.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    cli_audit.add_parsers(asub, common, command, la)
    ex = command(asub, "export", N_("export audit rows as JSON Lines or CSV"), [common])
    ex.add_argument("--format", choices=["jsonl", "csv"], default="jsonl",
                    help=tr(la, "JSON Lines (default) or CSV (cells that a spreadsheet would run "
                            "as a formula are prefixed with ')"))
    ex.add_argument("--since", type=start_time, metavar="WHEN",
                    help=tr(la, "rows from this ISO date or date-time (local time if no offset)"))
    ex.add_argument("--until", type=end_time, metavar="WHEN",
                    help=tr(la, "rows before this date-time, or through this ISO date"))
    ex.add_argument("--operation", action="append", metavar="NAME",
                    help=tr(la, "only these operations (comma-separated, repeatable; e.g. "
                            "load,delete); an unknown name is refused"))
    ex.add_argument("--out", type=Path, metavar="FILE",
                    help=tr(la, "write to FILE (mode 0600, only if the export succeeds) instead "
                            "of stdout"))

    rp = command(sub, "report", N_("the yearly report: loads and charge per organisation; exit "
                                   "10 if the audit chain does not verify (ops)"), [common])
    rp.add_argument("--year", required=True, type=year, metavar="YEAR",
                    help=tr(la, "the calendar year (2000-9999)"))
    rp.add_argument("--out", type=Path, metavar="FILE",
                    help=tr(la, "write the document to FILE instead of stdout"))
