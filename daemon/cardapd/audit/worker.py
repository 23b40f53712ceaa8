"""The verification worker: `python -m cardapd.audit.worker verify …`, a child of the
daemon.

Walking the chain is pure Python (a canonical JSON and a SHA-256 per row): run in one of
the daemon's threads it holds the interpreter lock for seconds and slows every gate read
meanwhile (the issue measured p99 1.7× while verifying). In a child process it shares
nothing with the event loop but the CPU, and it runs at nice 19: the gate's work comes
first, yet a busy machine still lets it finish (SCHED_IDLE could starve it for hours). The
daily run verifies and exports in one process (`verify --export-dir`). It reads the
database read-only and answers one JSON object on stdout; the daemon records the outcome
through its own writer (docs/decisions.md D32).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cardapd.audit.archive import export_segment
from cardapd.audit.log import Segment
from cardapd.audit.schema import AUDIT_SCHEMA
from cardapd.audit.verify import Mode, load_segments, verify
from cardapd.errors import CardapError, StoreError
from cardapd.storage import open_database

NICE = 19


def background_priority() -> int:
    """Yield the CPU to the daemon and its clients; the niceness obtained."""
    try:
        return os.nice(NICE)
    except OSError:  # a seccomp filter without setpriority: harmless
        return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cardapd.audit.worker")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="verify the chain; prints the result as JSON")
    v.add_argument("--db", type=Path, required=True)
    v.add_argument("--head", type=Path)
    v.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.FULL.value)
    v.add_argument("--export-dir", type=Path,
                   help="then export every verified segment not exported yet (--terminal)")
    v.add_argument("--terminal", default="")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one job; 0 with its JSON answer, 2 with {"error": …} when the store fails."""
    args = _parser().parse_args(argv)
    background_priority()
    try:
        result = verify(args.db, head_path=args.head, mode=Mode(args.mode))
        answer = json.loads(result.to_json())
        if args.export_dir is not None:
            walked = set(result.walked_segments)
            try:  # the verification stands whatever becomes of the export
                answer["files"] = _export(args.db, args.export_dir, args.terminal, [
                    s.segment for s in _segments(args.db).values()
                    if (s.verified_us is not None or s.segment in walked)
                    and s.exported_us is None and not s.dropped])
            except StoreError as exc:
                answer["export_error"] = exc.message
        print(json.dumps(answer), flush=True)
        return 0
    except CardapError as exc:
        print(json.dumps({"error": exc.message, "reason": exc.reason}), flush=True)
        return 2


def _segments(db: Path) -> dict[int, Segment]:
    conn = open_database(db, AUDIT_SCHEMA, readonly=True).conn
    try:
        return {s.segment: s for s in load_segments(conn)}
    finally:
        conn.close()


def _export(db: Path, directory: Path, terminal: str, numbers: list[int]
            ) -> list[dict[str, object]]:
    """Export these sealed segments; the files and their SHA-256."""
    segments = _segments(db)
    files: list[dict[str, object]] = []
    for number in numbers:
        seg = segments.get(number)
        if seg is None or seg.dropped:
            raise StoreError(f"segment {number} is not kept in {db}")
        path, digest = export_segment(db, seg, directory, terminal)
        files.append({"segment": number, "file": str(path), "sha256": digest})
    return files


if __name__ == "__main__":
    sys.exit(main())
