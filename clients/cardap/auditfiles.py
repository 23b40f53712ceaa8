"""Audit evidence kept off the terminal, read and checked without the daemon.

* **Exported segments** (`audit-segment-NNNNNNNN.jsonl.gz`, written by the daemon's
  daily maintenance into `[audit] export_dir`): `verify_segments` recomputes every row's
  SHA-256 chain hash, follows the chain inside each file and from one file to the next,
  and names gaps (a segment file missing), rows missing or changed, and files that do
  not belong to the same terminal.
* **Checkpoints** (terminal id, seq, hash): from a file of JSON lines
  (`read_checkpoint_file`; `cardap-loadsvc checkpoints` writes one) or from a journal
  forwarded off the terminal (`journal_checkpoints`, through `journalctl --directory`).

This is deliberately code of the client library, sharing nothing with the daemon's
(docs/decisions.md D32): a verifier that runs the daemon's code would share its mistakes.
`tests/unit/test_audit_offline.py` holds both to the same hash.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

GENESIS = "00" * 32
SEGMENT_FORMAT = "cardapd-audit-segment/1"
SEAL_OPERATION = "audit_segment_sealed"
CHECKPOINT_MESSAGE_ID = "a3375ed245a243c481b2d69094f8bbb8"
_FILE = re.compile(r"audit-segment-(\d{8})\.jsonl(\.gz)?")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class EvidenceError(Exception):
    """A file or journal that cannot be read as audit evidence."""


def canonical_json(value: object) -> str:
    """Sorted keys, no spaces, ASCII only: the form the chain hashes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def chain_hash(prev_hash: str, row: dict[str, Any]) -> str:
    """sha256(prev_hash || canonical JSON of the row's fields, seq and ts included), hex."""
    body = canonical_json({
        "seq": row["seq"], "ts_us": row["ts_us"], "actor": row["actor"],
        "operation": row["operation"], "card_id": row["card_id"], "reader": row["reader"],
        "result": row["result"], "reason": row["reason"], "request_id": row["request_id"],
        "detail": row["detail_json"]})
    return hashlib.sha256(bytes.fromhex(prev_hash) + body.encode("ascii")).hexdigest()


@dataclass
class SegmentsReport:
    """What `verify_segments` found."""

    directory: Path
    files: int = 0
    rows: int = 0
    segments: list[int] = field(default_factory=list)
    terminal_id: str = ""
    first_seq: int = 0
    last_seq: int = 0
    last_hash: str = ""
    problems: list[str] = field(default_factory=list)
    hashes: dict[int, str] = field(default_factory=dict)  # of the seqs asked for

    @property
    def ok(self) -> bool:
        """Every file verifies and the files form one chain."""
        return self.files > 0 and not self.problems


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def segment_files(directory: Path) -> list[tuple[int, Path]]:
    """The segment files in `directory`, by segment number."""
    found = []
    for path in directory.iterdir():
        m = _FILE.fullmatch(path.name)
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


def verify_segments(directory: Path, wanted: Iterable[int] = ()) -> SegmentsReport:
    """Verify every exported segment in `directory` and their chain; keep the hashes of
    the seqs in `wanted` (to compare with checkpoints)."""
    report = SegmentsReport(directory)
    want = set(wanted)
    if not directory.is_dir():
        raise EvidenceError(f"{directory} is not a directory")
    files = segment_files(directory)
    if not files:
        report.problems.append(f"no audit-segment-*.jsonl.gz file in {directory}")
        return report
    prev: dict[str, Any] | None = None
    for number, path in files:
        try:
            header = _verify_file(path, number, report, want)
        except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
            report.problems.append(f"{path.name}: unreadable ({exc})")
            prev = None
            continue
        if header is None:
            prev = None
            continue
        report.files += 1
        report.segments.append(number)
        if not report.terminal_id:
            report.terminal_id = header["terminal_id"]
        elif header["terminal_id"] != report.terminal_id:
            report.problems.append(f"{path.name}: terminal {header['terminal_id']!r}, the "
                                   f"others are {report.terminal_id!r}")
        if prev is None:
            if report.files == 1:
                report.first_seq = header["first_seq"]
            elif not report.problems:
                report.problems.append(f"{path.name}: follows an unreadable segment")
        else:
            if number != prev["segment"] + 1:
                missing = ", ".join(str(n) for n in range(prev["segment"] + 1, number))
                report.problems.append(f"segment(s) {missing} missing between "
                                       f"{prev['segment']} and {number}")
            elif (header["first_seq"] != prev["last_seq"] + 1
                  or header["prev_hash"] != prev["last_hash"]):
                report.problems.append(f"segment {number} does not start where segment "
                                       f"{prev['segment']} ended (rows "
                                       f"{prev['last_seq'] + 1}-{header['first_seq'] - 1} or "
                                       "the chain between them changed)")
        report.last_seq, report.last_hash = header["last_seq"], header["last_hash"]
        prev = header
    if files and files[0][0] == 1 and report.first_seq not in (0, 1):
        report.problems.append("segment 1 does not start at row 1")
    return report


def _verify_file(path: Path, number: int, report: SegmentsReport, want: set[int]
                 ) -> dict[str, Any] | None:
    """Check one file; its header when it verifies (problems go to `report`)."""
    with _open(path) as f:
        header = json.loads(f.readline())
        if header.get("format") != SEGMENT_FORMAT or header.get("segment") != number:
            report.problems.append(f"{path.name}: not a cardapd audit segment {number}")
            return None
        expected_seq, prev = header["first_seq"], header["prev_hash"]
        last: dict[str, Any] | None = None
        count = 0
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            if row["seq"] != expected_seq:
                report.problems.append(f"{path.name}: row {expected_seq} is missing")
                return None
            if row["prev_hash"] != prev or chain_hash(prev, row) != row["hash"]:
                report.problems.append(f"{path.name}: row {row['seq']} was changed (its hash "
                                       "does not follow from its content and the row before)")
                return None
            if row["seq"] in want:
                report.hashes[row["seq"]] = row["hash"]
            prev, expected_seq, last, count = row["hash"], expected_seq + 1, row, count + 1
        report.rows += count
    if (last is None or last["seq"] != header["last_seq"] or prev != header["last_hash"]
            or count != header["rows"] or last["operation"] != SEAL_OPERATION):
        report.problems.append(f"{path.name}: rows {expected_seq}-{header['last_seq']} are "
                               "missing or the segment does not end in its seal row")
        return None
    return dict(header)


# ---------------------------------------------------------------- checkpoints

def checkpoint(terminal_id: str, seq: int, digest: str, row_time_us: int = 0,
               kind: str = "") -> dict[str, Any]:
    """One checkpoint as a plain dict (validated)."""
    digest = str(digest).lower()
    if not isinstance(seq, int) or seq < 1 or not _HEX64.fullmatch(digest):
        raise EvidenceError(f"not a checkpoint: seq {seq!r}, hash {digest!r}")
    return {"terminal_id": str(terminal_id), "seq": seq, "hash": digest,
            "row_time_us": int(row_time_us), "kind": str(kind)}


def read_checkpoint_file(path: Path) -> list[dict[str, Any]]:
    """Checkpoints from a file of JSON lines: terminal_id, seq, hash (row_time_us, kind
    optional), or checkpoint entries as `journalctl -o json` prints them.
    `cardap-loadsvc checkpoints` writes the first kind."""
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                    if "CARDAPD_AUDIT_SEQ" in item:  # `journalctl -o json` of an entry
                        out.append(_entry(item))
                        continue
                    out.append(checkpoint(item["terminal_id"], item["seq"], item["hash"],
                                          item.get("row_time_us", 0), item.get("kind", "")))
                except (ValueError, KeyError, TypeError, EvidenceError) as exc:
                    raise EvidenceError(f"{path}:{number}: {exc}") from None
    except OSError as exc:
        raise EvidenceError(f"cannot read {path}: {exc.strerror or exc}") from None
    return out


def journal_checkpoints(directory: Path, journalctl: str | None = None
                        ) -> list[dict[str, Any]]:
    """Checkpoints from a journal directory (e.g. what systemd-journal-remote writes),
    read with `journalctl --directory`."""
    exe = journalctl or shutil.which("journalctl")
    if exe is None:
        raise EvidenceError("journalctl is not installed (apt-get install systemd)")
    if not directory.is_dir():
        raise EvidenceError(f"{directory} is not a directory")
    proc = subprocess.run([exe, "--directory", str(directory), "-o", "json", "--all",
                           "--no-pager", f"MESSAGE_ID={CHECKPOINT_MESSAGE_ID}"],
                          capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode not in (0, 1):
        raise EvidenceError(f"journalctl --directory {directory}: {proc.stderr.strip()}")
    return list(_entries(proc.stdout.splitlines()))


def _entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint from a journal entry's fields."""
    return checkpoint(entry["CARDAPD_AUDIT_TERMINAL"], int(entry["CARDAPD_AUDIT_SEQ"]),
                      entry["CARDAPD_AUDIT_HASH"],
                      int(entry.get("CARDAPD_AUDIT_ROW_TIME_US", 0)),
                      entry.get("CARDAPD_AUDIT_CHECKPOINT", ""))


def _entries(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if not line.strip():
            continue
        try:
            yield _entry(json.loads(line))
        except (ValueError, KeyError, TypeError, EvidenceError):
            continue  # an entry of that id without our fields: not ours


def compare_offline(report: SegmentsReport, checkpoints: Iterable[dict[str, Any]]
                    ) -> tuple[list[str], int, int]:
    """Hold exported segments against checkpoints: (problems, agreeing, not covered)."""
    agree, outside, bad = 0, 0, []
    for cp in checkpoints:
        if report.terminal_id and cp["terminal_id"] != report.terminal_id:
            outside += 1
            continue
        found = report.hashes.get(cp["seq"])
        if found is None:
            outside += 1
        elif found == cp["hash"]:
            agree += 1
        else:
            bad.append(cp)
    if not bad:
        return [], agree, outside
    name = "rewritten" if agree else "replaced"
    return [f"{name}: row {cp['seq']} of the exported segments has hash "
            f"{report.hashes[cp['seq']]}, the checkpoint ({cp['kind'] or 'checkpoint'}) says "
            f"{cp['hash']}" for cp in bad], agree, outside
