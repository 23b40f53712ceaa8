"""`cardapctl`: the command line of cardapd (status, readers, watch, read-id, diagnose,
metrics, load; operators: login, logout, operators, enroll, audit, report).

Every command takes `--json` for machine output. Exit codes (stable, for scripts):
  0 success                      1 other failure             2 usage or invalid argument
  3 no reader / no card / wrong card / unknown operator (FAILED_PRECONDITION, NOT_FOUND)
  4 permission denied (wrong socket role), no or bad operator session, login refused
  5 daemon or PC/SC unavailable  6 not implemented yet
  7 card removed, operation aborted, login or enrolment cancelled
  8 already exists (load, operators add)           9 card full / resource exhausted
  diagnose only: 10 warning, 11 card fault, 12 reader fault, 13 no card
  audit verify and report: 10 the audit chain does not verify
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from cardap import cli_ops
from cardap.clibase import (
    EXIT_ABORTED,
    EXIT_DENIED,
    EXIT_FAIL,
    EXIT_OK,
    EXIT_PRECONDITION,
    EXIT_UNAVAILABLE,
    EXIT_UNIMPLEMENTED,
    EXIT_USAGE,
    as_dict,  # noqa: F401  (re-exported: cardap.cli.as_dict)
    emit,
    enum_name,
)
from cardap.client import CardapClient, CardapClientError, default_socket
from cardap.v1 import cards_pb2, terminal_pb2

VERDICT_EXIT = {
    terminal_pb2.VERDICT_OK: 0, terminal_pb2.VERDICT_WARNING: 10,
    terminal_pb2.VERDICT_CARD_FAULT: 11, terminal_pb2.VERDICT_READER_FAULT: 12,
    terminal_pb2.VERDICT_NO_CARD: 13,
}
CODE_EXIT = {
    grpc.StatusCode.INVALID_ARGUMENT: EXIT_USAGE,
    grpc.StatusCode.FAILED_PRECONDITION: EXIT_PRECONDITION,
    grpc.StatusCode.NOT_FOUND: EXIT_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED: EXIT_DENIED,
    grpc.StatusCode.UNAVAILABLE: EXIT_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: EXIT_UNAVAILABLE,
    grpc.StatusCode.UNIMPLEMENTED: EXIT_UNIMPLEMENTED,
    grpc.StatusCode.ABORTED: EXIT_ABORTED,
    grpc.StatusCode.ALREADY_EXISTS: 8,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 9,
    grpc.StatusCode.UNAUTHENTICATED: EXIT_DENIED,
}
DEFAULT_ROLE = {"status": "ops", "readers": "ops", "watch": "gate", "read-id": "gate",
                "diagnose": "kiosk", "metrics": "ops", "loadable": "kiosk", "aps": "kiosk",
                "load": "kiosk", "delete": "kiosk", **cli_ops.DEFAULT_ROLE}


def fmt_reader(r: cards_pb2.Reader) -> str:
    state = enum_name(cards_pb2.ReaderState, r.state, "READER_STATE_")
    line = f"{r.name}: {state}"
    if r.HasField("card"):
        c = r.card
        kind = enum_name(cards_pb2.CardKind, c.kind, "CARD_KIND_")
        line += f" — {kind} {c.card_id} ({c.profile})"
        for t in c.tap:
            line += f"\n    Type C {t.aid}: " + (t.user_id or f"unreadable ({t.reason})")
    return line


def _when(ts: Timestamp) -> str:
    """A timestamp in local time, or "-" when unset."""
    if not ts.seconds and not ts.nanos:
        return "-"
    return ts.ToDatetime(UTC).astimezone().strftime("%Y-%m-%d %H:%M %Z")


def fmt_service(s: terminal_pb2.GetStatusResponse) -> str:
    """The loading service, revocation feeds and fingerprint device lines of `status`."""
    svc = s.loading_service
    link = enum_name(terminal_pb2.LinkState, svc.link, "LINK_STATE_")
    lines = [f"  loading service: link {link.replace('_', ' ')}"]
    if svc.link != terminal_pb2.LINK_STATE_NOT_CONFIGURED:
        avail = enum_name(terminal_pb2.ServiceAvailability, svc.availability,
                          "SERVICE_AVAILABILITY_")
        if svc.availability == terminal_pb2.SERVICE_AVAILABILITY_OPEN:
            avail += f" until {_when(svc.next_closing)}"
        elif svc.availability != terminal_pb2.SERVICE_AVAILABILITY_UNKNOWN:
            avail += f", opens {_when(svc.next_opening)}"
        lines.append(f"    now: {avail}")
        if svc.HasField("next_maintenance"):
            m = svc.next_maintenance
            lines.append(f"    next maintenance: {_when(m.start)} to {_when(m.end)}"
                         f" ({m.description})")
        else:
            lines.append("    next maintenance: none announced")
        if svc.HasField("schedule_fetched_at"):
            lines.append(f"    schedule fetched {_when(svc.schedule_fetched_at)}; clock "
                         f"offset {svc.clock_offset_s:+.1f} s")
    for f in s.revocation_feeds:
        age = "never pulled" if f.age_s < 0 else f"{f.age_s} s old"
        lines.append(f"  revocation feed {f.organisation}: {age}"
                     f"{' (STALE)' if f.stale else ''}")
    lines.append(f"  fingerprint device: {s.fingerprint_device.replace('_', ' ')}")
    return "\n".join(lines)


def cmd_status(client: CardapClient, args: argparse.Namespace) -> int:
    st = client.status()
    emit(args, st, lambda s: (
        f"cardapd {s.version} (socket role {s.role})\n"
        f"  PC/SC: {'available' if s.pcsc_available else 'UNAVAILABLE'}\n"
        f"  readers: {s.readers}, cards: {s.cards}\n"
        f"  audit rows: {s.audit_head_seq}\n"
        f"{fmt_service(s)}\n"
        f"  capabilities: {', '.join(s.capabilities)}"))
    return EXIT_OK


def cmd_readers(client: CardapClient, args: argparse.Namespace) -> int:
    resp = client.readers()
    emit(args, resp, lambda r: "\n".join(fmt_reader(x) for x in r.readers) or "no readers")
    return EXIT_OK if resp.pcsc_available else EXIT_UNAVAILABLE


def cmd_watch(client: CardapClient, args: argparse.Namespace) -> int:
    for count, ev in enumerate(client.watch(args.reader or (), timeout=args.duration), 1):
        emit(args, ev, fmt_event)
        if args.count and count >= args.count:
            break
    return EXIT_OK


def fmt_event(e: cards_pb2.CardEvent) -> str:
    """One card event as a line."""
    kind = enum_name(cards_pb2.CardEventKind, e.kind, "CARD_EVENT_KIND_")
    return f"#{e.seq} {kind}" + (f" {fmt_reader(e.reader)}" if e.HasField("reader") else "") + (
        f" ({e.detail})" if e.detail else "")


def cmd_read_id(client: CardapClient, args: argparse.Namespace) -> int:
    resp = client.read_user_id(args.reader, args.aid, fresh=args.fresh)
    emit(args, resp, lambda r: f"{r.user_id}  (card {r.card_id}, reader {r.reader!r}, "
         f"AP {r.aid}, {'cached tap read' if r.cached else 'read now'})")
    return EXIT_OK


def fmt_diagnosis(resp: terminal_pb2.DiagnoseResponse) -> str:
    lines = []
    for d in resp.readers:
        verdict = enum_name(terminal_pb2.Verdict, d.verdict, "VERDICT_")
        lines.append(f"{d.reader.name or '(no reader)'}: {verdict.upper()}")
        for c in d.checks:
            lines.append(f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
        for ap in d.aps:
            lines.append(f"  AP {ap.name} {ap.aid}: {'answers' if ap.present else 'absent'}")
        lines.append(f"  → {d.next_action}")
    return "\n".join(lines)


def cmd_diagnose(client: CardapClient, args: argparse.Namespace) -> int:
    resp = client.diagnose(args.reader)
    emit(args, resp, fmt_diagnosis)
    return VERDICT_EXIT.get(resp.verdict, EXIT_FAIL)


def cmd_metrics(client: CardapClient, args: argparse.Namespace) -> int:
    for count, snap in enumerate(client.metrics(args.interval, args.prefix or ()), 1):
        emit(args, snap, lambda s: "\n".join(
            f"{x.name}{{{','.join(f'{k}={v!r}' for k, v in sorted(x.labels.items()))}}} {x.value:g}"
            for x in s.samples))
        if count >= args.count:
            break
    return EXIT_OK


def cmd_loadable(client: CardapClient, args: argparse.Namespace) -> int:
    resp = client.loadable_aps()
    emit(args, resp, lambda r: "\n".join(
        [f"{a.ap_id}: {a.display_name} (type {enum_name(cards_pb2.APType, a.type, 'AP_TYPE_')},"
         f" {a.area} area, instance {a.instance_aid})" for a in r.aps]
        + [f"preset {p.name}: {', '.join(p.ap_ids)}" for p in r.presets]) or "nothing")
    return EXIT_OK


def cmd_aps(client: CardapClient, args: argparse.Namespace) -> int:
    resp = client.card_aps(args.reader)
    emit(args, resp, lambda r: "\n".join(
        [f"{a.aid}: type {enum_name(cards_pb2.APType, a.type, 'AP_TYPE_')}, {a.area} area, "
         f"{a.lifecycle}" for a in r.aps]
        + [f"free {area}: {n} bytes" for area, n in sorted(r.free_bytes.items())]))
    return EXIT_OK


def cmd_load(client: CardapClient, args: argparse.Namespace) -> int:
    failed = False
    for ev in client.load_ap(args.ap or "", preset=args.preset or "", reader=args.reader,
                             custom_user_id=args.custom_user_id):
        if ev.WhichOneof("event") == "progress":
            if args.json:
                emit(args, ev, str)
            elif not args.quiet:
                p = ev.progress
                print(f"  {p.ap_id}: {enum_name(terminal_pb2.LoadPhase, p.phase, 'LOAD_PHASE_')}"
                      f" {p.percent}%", flush=True)
            continue
        r = ev.result
        failed = failed or not r.ok
        emit(args, ev, lambda e: (
            f"{e.result.ap_id}: loaded as {e.result.aid}, user ID {e.result.user_id}, "
            f"{e.result.free_bytes} bytes free" if e.result.ok
            else f"{e.result.ap_id}: FAILED {e.result.reason}: {e.result.message}"))
    return EXIT_FAIL if failed else EXIT_OK


def cmd_delete(client: CardapClient, args: argparse.Namespace) -> int:
    resp = client.delete_ap(args.aid, args.reader, reason=args.reason,
                            reason_detail=args.reason_detail)
    emit(args, resp, lambda r: f"{r.outcome.lower()}; {r.free_bytes} bytes free")
    return EXIT_OK


COMMANDS: dict[str, Callable[[CardapClient, argparse.Namespace], int]] = {
    "status": cmd_status, "readers": cmd_readers, "watch": cmd_watch,
    "read-id": cmd_read_id, "diagnose": cmd_diagnose, "metrics": cmd_metrics,
    "loadable": cmd_loadable, "aps": cmd_aps, "load": cmd_load, "delete": cmd_delete,
    **cli_ops.COMMANDS,
}


def parser() -> argparse.ArgumentParser:
    """The argument parser."""
    p = argparse.ArgumentParser(prog="cardapctl", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--socket", type=Path, help="daemon socket (default: by --role)")
    p.add_argument("--role", choices=["kiosk", "gate", "ops"],
                   help="which role's socket to use (default depends on the command)")
    p.add_argument("--socket-dir", type=Path,
                   help="directory of the role sockets ($CARDAPD_SOCKET_DIR, /run/cardapd)")
    p.add_argument("--json", action="store_true", help="JSON output (one object per line)")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds per call")
    p.add_argument("--session", default=os.environ.get("CARDAPD_SESSION"),
                   help="operator session token for load/delete and the roster "
                   "($CARDAPD_SESSION; visible in ps: prefer --session-file)")
    p.add_argument("--session-file", type=Path,
                   default=os.environ.get("CARDAPD_SESSION_FILE") or None,
                   help="file holding the session token, as written by login --token-file "
                   "($CARDAPD_SESSION_FILE)")
    # --json is accepted after the subcommand too (`cardapctl read-id --json`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="JSON output (one object per line)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="daemon status", parents=[common])
    sub.add_parser("readers", help="readers and cards", parents=[common])
    w = sub.add_parser("watch", help="card events (snapshot, then live)", parents=[common])
    w.add_argument("--reader", action="append", help="only this reader (repeatable)")
    w.add_argument("--count", type=int, default=0, help="stop after N events")
    w.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    r = sub.add_parser("read-id", help="read the user ID (Type C)", parents=[common])
    r.add_argument("--reader", default="", help="reader name (default: the one with a card)")
    r.add_argument("--aid", default="", help="Type C AP AID in hex (default: configured)")
    r.add_argument("--fresh", action="store_true", help="read the card now, not the tap cache")
    d = sub.add_parser("diagnose", help="card fault isolation", parents=[common])
    d.add_argument("--reader", default="", help="reader name (default: every reader)")
    sub.add_parser("loadable", help="APs the operator's organisation may load (kiosk)",
                   parents=[common])
    a = sub.add_parser("aps", help="APs on the card and free space (kiosk)", parents=[common])
    a.add_argument("--reader", default="")
    ld = sub.add_parser("load", help="load an AP or a preset set (kiosk, operator session)",
                        parents=[common])
    what = ld.add_mutually_exclusive_group(required=True)
    what.add_argument("--ap", help="catalogue AP id")
    what.add_argument("--preset", help="preset set name")
    ld.add_argument("--reader", default="")
    ld.add_argument("--custom-user-id", default="", help="for custom APs: the 13-char user ID")
    ld.add_argument("--quiet", action="store_true", help="no progress lines")
    de = sub.add_parser("delete", help="delete an AP (kiosk, operator session)",
                        parents=[common])
    de.add_argument("--aid", required=True, help="instance AID in hex")
    de.add_argument("--reason", required=True,
                    choices=["holder_request", "card_renewal", "other"],
                    help="why: the holder asked, the card is renewed, or other "
                    "(with --reason-detail); kept in the audit log")
    de.add_argument("--reason-detail", default="", help="free text (required with other)")
    de.add_argument("--reader", default="")
    m = sub.add_parser("metrics", help="metric snapshots", parents=[common])
    m.add_argument("--interval", type=int, default=5)
    m.add_argument("--count", type=int, default=1)
    m.add_argument("--prefix", action="append", help="only metrics starting with this")
    cli_ops.add_parsers(sub, common)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    args = parser().parse_args(argv)
    socket = args.socket or default_socket(args.role or DEFAULT_ROLE[args.command],
                                           args.socket_dir)
    try:
        if args.session_file and not args.session:
            args.session = cli_ops.read_token(Path(args.session_file))
        with CardapClient(socket, timeout=args.timeout, session=args.session) as client:
            return COMMANDS[args.command](client, args)
    except (cli_ops.CliError, OSError) as err:
        code = err.code if isinstance(err, cli_ops.CliError) else EXIT_FAIL
        if args.json:
            print(json.dumps({"error": {"code": "CLIENT", "reason": "CLIENT_ERROR",
                                        "message": str(err), "metadata": {}}},
                             ensure_ascii=False), file=sys.stderr)
        else:
            print(f"cardapctl: {err}", file=sys.stderr)
        return code
    except CardapClientError as err:
        if args.json:
            print(json.dumps({"error": {"code": err.code.name, "reason": err.reason,
                                        "message": err.message, "metadata": err.metadata}},
                             ensure_ascii=False), file=sys.stderr)
        else:
            hint = f" (is cardapd running? socket {socket})" if \
                err.reason == "DAEMON_UNREACHABLE" else ""
            print(f"cardapctl: {err.reason}: {err.message}{hint}", file=sys.stderr)
        return CODE_EXIT.get(err.code, EXIT_FAIL)
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
