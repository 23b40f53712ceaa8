"""The verification worker: `python -m cardapd.audit.worker verify|export …`, a child of
the daemon.

Walking the chain is pure Python (a canonical JSON and a SHA-256 per row): run in one of
the daemon's threads it holds the interpreter lock for seconds and slows every gate read
meanwhile (the issue measured p99 1.7× while verifying). In a child process it shares
nothing with the event loop but the CPU, and it takes that only when nothing else wants
it: it puts itself under SCHED_IDLE (and nice 19 where that is refused), so on a
two-core gate a read is never queued behind it. It reads the database read-only and
answers one JSON object on stdout; the daemon records the outcome through its own writer
(docs/decisions.md D28).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cardapd.audit.archive import export_segment
from cardapd.audit.schema import AUDIT_SCHEMA
from cardapd.audit.verify import Mode, load_segments, verify
from cardapd.errors import CardapError, StoreError
from cardapd.storage import open_database

NICE = 19


def background_priority() -> str:
    """Run only when the CPU is otherwise idle; the policy obtained."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return "idle"
    except (OSError, AttributeError):
        pass
    try:
        os.nice(NICE)
        return "nice"
    except OSError:
        return "normal"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cardapd.audit.worker")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="verify the chain; prints the result as JSON")
    v.add_argument("--db", type=Path, required=True)
    v.add_argument("--head", type=Path)
    v.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.FULL.value)
    e = sub.add_parser("export", help="export sealed segments; prints the files as JSON")
    e.add_argument("--db", type=Path, required=True)
    e.add_argument("--dir", type=Path, required=True)
    e.add_argument("--terminal", required=True)
    e.add_argument("--segment", type=int, action="append", required=True)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one job; 0 with its JSON answer, 2 with {"error": …} when the store fails."""
    args = _parser().parse_args(argv)
    background_priority()
    try:
        if args.command == "verify":
            result = verify(args.db, head_path=args.head, mode=Mode(args.mode))
            print(result.to_json(), flush=True)
            return 0
        conn = open_database(args.db, AUDIT_SCHEMA, readonly=True).conn
        try:
            segments = {s.segment: s for s in load_segments(conn)}
        finally:
            conn.close()
        files = []
        for number in args.segment:
            seg = segments.get(number)
            if seg is None or seg.dropped:
                raise StoreError(f"segment {number} is not kept in {args.db}")
            path, digest = export_segment(args.db, seg, args.dir, args.terminal)
            files.append({"segment": number, "file": str(path), "sha256": digest})
        print(json.dumps({"files": files}), flush=True)
        return 0
    except CardapError as exc:
        print(json.dumps({"error": exc.message, "reason": exc.reason}), flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
