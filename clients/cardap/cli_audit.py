"""`cardapctl audit verify` and `cardapctl audit acknowledge`: what the audit trail proves.

`audit verify` asks the daemon (ops socket) to verify its chain — incrementally, or every
kept row with `--full` — and to hold it against checkpoints kept off the terminal:
`--checkpoints FILE` (JSON lines: terminal_id, seq, hash), `--checkpoints from-service`
(those the loading service kept), `--journal-dir DIR` (a journal forwarded off the
terminal, read with journalctl). `--segments DIR` verifies exported segments offline,
without the daemon (with `--checkpoints FILE` / `--journal-dir`, against those too).
Exit 0 when everything agrees, 10 when anything does not (the problem is named:
truncated, emptied, rewritten, replaced, anchor_reset, changed, …).

`audit acknowledge --reset SEQ --reason TEXT` records an administrator's acknowledgement of
an anchor reset (e.g. after a restore from a backup); until then every verification fails.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cardap.auditfiles import (
    EvidenceError,
    compare_offline,
    journal_checkpoints,
    read_checkpoint_file,
    verify_segments,
)
from cardap.clibase import EXIT_AUDIT_BROKEN, EXIT_OK, CliError, Msg, as_dict, lang
from cardap.client import CardapClient
from cardap.i18n import N_, tr
from cardap.v1 import audit_pb2, terminal_pb2

FROM_SERVICE = "from-service"


def fmt_verify(v: terminal_pb2.VerifyAuditResponse) -> str:
    """The verification, for people: the verdict line, then findings and resets."""
    la = lang()
    if v.ok:
        lines = [tr(la, "audit chain verifies: {rows} rows checked", rows=v.rows_checked)
                 + (f" ({v.summary})" if v.summary else "")]
    else:
        lines = [tr(la, "audit chain does NOT verify: {problem} at row {seq} ({rows} rows "
                    "checked)", problem=v.problem or "broken", seq=v.first_bad_seq,
                    rows=v.rows_checked)
                 + (f"\n  {v.summary}" if v.summary else "")]
    for f in v.findings:
        lines.append(f"  {f.problem}: {f.message}")
    for r in v.resets:
        if r.acknowledged:
            lines.append(tr(la, "  anchor reset at row {seq} ({kind}) acknowledged at row "
                            "{ack_seq} by {by}: {reason}", seq=r.seq, kind=r.kind,
                            ack_seq=r.acknowledged_seq, by=r.acknowledged_by,
                            reason=r.reason))
        else:
            lines.append(tr(la, "  anchor reset at row {seq} ({kind}: {problem}) NOT "
                            "acknowledged: once the cause is known, an administrator runs "
                            "cardapctl audit acknowledge --reset {seq} --reason '…'",
                            seq=r.seq, kind=r.kind, problem=r.problem))
    if v.head_seq:
        lines.append(tr(la, "  terminal {terminal}: head row {seq} sha256 {hash}",
                        terminal=v.terminal_id or "-", seq=v.head_seq, hash=v.head_hash))
    return "\n".join(lines)


def _proto(cp: dict[str, Any]) -> audit_pb2.AuditCheckpoint:
    msg = audit_pb2.AuditCheckpoint(terminal_id=cp["terminal_id"], seq=cp["seq"],
                                    hash=cp["hash"], kind=cp["kind"])
    msg.row_time.FromMicroseconds(cp["row_time_us"])
    return msg


def _collected(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Checkpoints from --checkpoints FILE and --journal-dir DIR."""
    found: list[dict[str, Any]] = []
    try:
        for source in args.checkpoints or ():
            if source != FROM_SERVICE:
                found += read_checkpoint_file(Path(source))
        for directory in args.journal_dir or ():
            found += journal_checkpoints(Path(directory))
    except EvidenceError as exc:
        raise CliError(str(exc)) from None
    return found


def verify(client: CardapClient, args: argparse.Namespace) -> int:
    """`cardapctl audit verify …`."""
    checkpoints = _collected(args)
    if args.segments is not None:
        return _offline(args, checkpoints)
    from_service = FROM_SERVICE in (args.checkpoints or ())
    v = client.verify_audit(timeout=args.call_timeout, full=args.full,
                            checkpoints=[_proto(c) for c in checkpoints],
                            from_service=from_service)
    if args.json:
        print(json.dumps(as_dict(v), ensure_ascii=False), flush=True)
    else:
        print(fmt_verify(v), flush=True)
    return EXIT_OK if v.ok else EXIT_AUDIT_BROKEN


def _offline(args: argparse.Namespace, checkpoints: list[dict[str, Any]]) -> int:
    if FROM_SERVICE in (args.checkpoints or ()):
        raise CliError(Msg("--segments verifies files offline: give --checkpoints FILE "
                                "or --journal-dir DIR, not from-service"))
    try:
        report = verify_segments(Path(args.segments), [c["seq"] for c in checkpoints])
    except EvidenceError as exc:
        raise CliError(str(exc)) from None
    problems = list(report.problems)
    agree = outside = 0
    if report.files:
        found, agree, outside = compare_offline(report, checkpoints)
        problems += found
    ok = report.ok and not problems
    if args.json:
        print(json.dumps({"ok": ok, "directory": str(report.directory), "files": report.files,
                          "segments": report.segments, "rows": report.rows,
                          "terminal_id": report.terminal_id, "first_seq": report.first_seq,
                          "last_seq": report.last_seq, "last_hash": report.last_hash,
                          "checkpoints_matched": agree, "checkpoints_not_covered": outside,
                          "problems": problems}, ensure_ascii=False), flush=True)
    else:
        la = lang()
        span = (tr(la, "segments {first}-{last}, rows {first_seq}-{last_seq}",
                   first=report.segments[0], last=report.segments[-1],
                   first_seq=report.first_seq, last_seq=report.last_seq)
                if report.segments else tr(la, "no segment"))
        figures = {"files": report.files, "span": span, "rows": report.rows,
                   "agree": agree, "outside": outside}
        print(tr(la, "exported audit segments verify: {files} file(s), {span}, {rows} rows; "
                 "{agree} checkpoint(s) agree, {outside} not covered", **figures) if ok else
              tr(la, "exported audit segments do NOT verify: {files} file(s), {span}, {rows} "
                 "rows; {agree} checkpoint(s) agree, {outside} not covered", **figures),
              flush=True)
        for problem in problems:
            print(f"  {problem}", flush=True)
    return EXIT_OK if ok else EXIT_AUDIT_BROKEN


def acknowledge(client: CardapClient, args: argparse.Namespace) -> int:
    """`cardapctl audit acknowledge --reset SEQ --reason TEXT`."""
    out = client.acknowledge_audit_reset(args.reset, args.reason)
    if args.json:
        print(json.dumps(as_dict(out)), flush=True)
    else:
        print(tr(lang(), "anchor reset at row {seq} acknowledged (audit row {ack_seq})",
                 seq=args.reset, ack_seq=out.acknowledgement_seq), flush=True)
    return EXIT_OK


def add_parsers(asub: Any, common: argparse.ArgumentParser,
                command: Callable[[Any, str, str, list[argparse.ArgumentParser]],
                                  argparse.ArgumentParser], la: str) -> None:
    """`audit verify` and `audit acknowledge` (`command` makes a parser with its help, a
    message id; the options' help is said in language `la`)."""
    ve = command(asub, "verify", N_("verify the hash chain and its head anchor, and against "
                                    "checkpoints kept elsewhere; exit 10 when anything "
                                    "disagrees"), [common])
    ve.add_argument("--full", action="store_true",
                    help=tr(la, "walk every row kept (default: what is new since the last check)"))
    ve.add_argument("--checkpoints", action="append", metavar=f"FILE|{FROM_SERVICE}",
                    help=tr(la, "compare with checkpoints: a file of JSON lines (terminal_id, "
                            "seq, hash), or '{service}' for those the loading service kept "
                            "(repeatable)", service=FROM_SERVICE))
    ve.add_argument("--journal-dir", action="append", metavar="DIR",
                    help=tr(la, "compare with the checkpoints in a journal forwarded off the "
                            "terminal (journalctl --directory DIR; repeatable)"))
    ve.add_argument("--segments", metavar="DIR",
                    help=tr(la, "verify exported segment files offline (no daemon needed)"))
    ack = command(asub, "acknowledge", N_("acknowledge an anchor reset with its reason "
                                          "(administrator session)"), [common])
    ack.add_argument("--reset", type=int, required=True, metavar="SEQ",
                     help=tr(la, "the row of the anchor reset (audit verify lists them)"))
    ack.add_argument("--reason", required=True,
                     help=tr(la, "why the reset is expected, e.g. 'restored from the backup of "
                             "2026-11-20 after a disk failure'"))
