"""The audit log's daily care: seal, verify what is new, export, drop what retention
allows, and send the head off the terminal (docs/decisions.md D32).

At start and every `[audit] verify_interval_s`:

1. **seal** the open segment when it began on an earlier day (Japan time) than today,
   or holds `SEGMENT_MAX_ROWS` rows: an `audit_segment_sealed` row closes it;
2. **verify** incrementally in the worker process (what follows the last verified
   segment, plus one older segment in rotation); the outcome sets the chain metrics;
3. mark the segments walked as verified, **export** each sealed, verified segment not yet
   exported to `[audit] export_dir` (one gzip JSON Lines file each, fsynced);
4. **drop** (only after a verification that passed) the oldest segments that are sealed,
   verified and exported, whose export file still has its recorded SHA-256, whose last
   row is older than `[retention] audit_days`, and whose every year (Japan time) is
   covered by a yearly report made after that year ended (the seal row, written after
   midnight, counts for no year) — in order, so the kept chain
   always starts where the dropped one ended; a few thousand rows per transaction;
5. send a **checkpoint** of the durable head to the journal and the loading service
   (at start the checkpoint leaves first, before anything slow can be cut short by a
   stop: it names the start row and any anchor reset).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cardapd.audit.checkpoints import CheckpointSender
from cardapd.audit.head import head_path_for
from cardapd.audit.log import AuditLog, Segment, now_us
from cardapd.audit.offload import run_worker
from cardapd.audit.report import JST
from cardapd.audit.schema import MARKS_SQL, YEARLY_REPORT
from cardapd.audit.verify import Mode, VerifyResult
from cardapd.audit.writer import AsyncAuditLog
from cardapd.errors import Cancelled, StoreError
from cardapd.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

SEGMENT_MAX_ROWS = 1_000_000
"""A segment is sealed at the next run once it holds this many rows, whatever the day."""
US_PER_DAY = 86_400_000_000


@dataclass(frozen=True)
class Retention:
    """What the maintenance may do: where exports go, how long rows stay."""

    terminal_id: str
    export_dir: Path
    audit_days: float = 0.0  # 0: never drop


@dataclass
class Outcome:
    """What one run did."""

    sealed: Segment | None = None
    result: VerifyResult | None = None
    exported: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    held_by_report: int | None = None  # the year whose final report retention waits for


def jst_year(ts_us: int) -> int:
    """The calendar year (Japan time) of a row time."""
    return datetime.fromtimestamp(ts_us / 1_000_000, JST).year


def jst_day(ts_us: int) -> tuple[int, int, int]:
    """The calendar day (Japan time) of a row time."""
    d = datetime.fromtimestamp(ts_us / 1_000_000, JST)
    return d.year, d.month, d.day


def final_report_years(audit: AuditLog) -> set[int]:
    """Years whose yearly report was made after the year ended with a verifying chain."""
    rows = audit.read(f"SELECT ts_us, detail FROM audit WHERE operation IN "  # noqa: S608
                      f"({MARKS_SQL}) AND operation = ?", (YEARLY_REPORT,))
    years = set()
    for ts_us, detail_json in rows:
        try:
            detail = json.loads(detail_json)
        except ValueError:
            continue
        year = detail.get("year") if isinstance(detail, dict) else None
        if isinstance(year, int) and detail.get("audit_ok") is True and jst_year(ts_us) > year:
            years.add(year)
    return years


def sha256_of(path: Path) -> str | None:
    """The file's SHA-256 (hex), None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


class AuditMaintenance:
    """The daily job over the daemon's one `AsyncAuditLog`."""

    def __init__(self, audit_log: AsyncAuditLog, retention: Retention,
                 checkpoints: CheckpointSender, metrics: Metrics, *,
                 clock: Callable[[], int] = now_us) -> None:
        self.log = audit_log
        self.path = audit_log.path
        self.head_path = head_path_for(audit_log.path)
        self.retention = retention
        self.checkpoints = checkpoints
        self.metrics = metrics
        self.clock = clock
        self.lock = asyncio.Lock()  # one run at a time
        self.exported: list[int] = []  # by the last verification that exported

    async def verify(self, mode: Mode, cancel: threading.Event | None = None, *,
                     export: bool = False) -> VerifyResult:
        """Verify in the worker process (and, with `export`, export the verified segments
        not exported yet in the same process); the outcome goes to the metrics and the
        checkpoints' reset count; segments walked sound are marked verified, exports
        recorded."""
        args = ["verify", "--db", str(self.path), "--head", str(self.head_path), "--mode",
                mode.value]
        if export:
            args += ["--export-dir", str(self.retention.export_dir), "--terminal",
                     self.retention.terminal_id]
        try:
            answer = await run_worker(args, cancel)
            files = answer.pop("files", [])
            export_error = answer.pop("export_error", None)
            result = VerifyResult.from_json(json_text(answer))
        except StoreError:
            self.metrics.audit_chain(False)
            raise
        self.metrics.audit_chain(result.ok)
        self.metrics.audit_resets_open.set(len(result.unacknowledged))
        self.checkpoints.unacknowledged = len(result.unacknowledged)
        if result.walked_segments:
            walked, at = list(result.walked_segments), self.clock()
            await self.log.call(lambda a: a.mark_verified(walked, at))
        self.exported = []
        for item in files:
            number, path, digest = int(item["segment"]), str(item["file"]), str(item["sha256"])
            await self.log.call(_marker(number, path, digest, self.clock()))
            self.exported.append(number)
        if self.exported:
            log.info("audit segments %s exported to %s", ", ".join(map(str, self.exported)),
                     self.retention.export_dir)
        if export_error:
            log.error("audit segments could not be exported (retention keeps them until "
                      "they are): %s", export_error)
        return result

    async def run(self, kind: str = "daily", cancel: threading.Event | None = None
                  ) -> Outcome:
        """One run (see the module docstring); `kind` names its checkpoint ("": none)."""
        async with self.lock:
            out = Outcome()
            now = self.clock()
            out.sealed = await self.log.call(lambda a: self._seal_if_due(a, now))
            out.result = await self.verify(Mode.INCREMENTAL, cancel, export=True)
            out.exported = list(self.exported)
            segments = await self.log.call(lambda a: a.segments())
            if segments:
                self.checkpoints.segment = segments[-1].segment
            if out.result.ok and self.retention.audit_days > 0:
                await self._drop(out, cancel)
            segments = await self.log.call(lambda a: a.segments())
            self._count(segments)
            if kind:
                await self.checkpoints.emit(kind)
            return out

    def _seal_if_due(self, audit: AuditLog, now: int) -> Segment | None:
        opened = audit.open_segment()
        if opened is None:
            return None
        if jst_day(opened.first_ts_us) < jst_day(now) or opened.rows >= SEGMENT_MAX_ROWS:
            sealed = audit.seal(now)
            if sealed is not None:
                self.checkpoints.segment = sealed.segment
            return sealed
        return None

    async def _drop(self, out: Outcome, cancel: threading.Event | None) -> None:
        """Drop what retention allows, oldest first, a chunk per transaction."""
        now = self.clock()
        cutoff = now - int(self.retention.audit_days * US_PER_DAY)
        years = await self.log.call(final_report_years)
        segments = await self.log.call(lambda a: a.segments())
        for seg in segments:
            if seg.dropped:
                continue
            if not seg.droppable or seg.last_ts_us >= cutoff:
                break
            needed = [y for y in await self.log.call(_years_of(seg)) if y not in years]
            if needed:
                out.held_by_report = needed[0]
                log.warning("audit retention waits for the yearly report of %d (made after "
                            "the year ended): segment %d and later are kept until then "
                            "(cardapctl report --year %d)", needed[0], seg.segment, needed[0])
                break
            recorded = seg.export_sha256
            actual = await asyncio.to_thread(sha256_of, Path(seg.export_file or ""))
            if actual is None or actual != recorded:
                log.error("audit segment %d is not dropped: its export %s is %s", seg.segment,
                          seg.export_file, "missing" if actual is None else "altered")
                break
            while True:
                if cancel is not None and cancel.is_set():
                    raise Cancelled("audit retention cancelled")
                deleted = await self.log.call(_dropper(seg.segment, self.clock()))
                if deleted == 0:
                    break
                await asyncio.sleep(0)  # let appends in between
            out.dropped.append(seg.segment)
        if out.dropped:
            log.info("audit segments %s dropped by retention (exports in %s)",
                     ", ".join(map(str, out.dropped)), self.retention.export_dir)

    def _count(self, segments: list[Segment]) -> None:
        dropped = sum(1 for s in segments if s.dropped)
        exported = sum(1 for s in segments if s.exported_us is not None)
        self.metrics.audit_segments.labels("kept").set(len(segments) - dropped)
        self.metrics.audit_segments.labels("exported").set(exported)
        self.metrics.audit_segments.labels("dropped").set(dropped)


def _years_of(seg: Segment) -> Callable[[AuditLog], list[int]]:
    """The years (Japan time) of a segment's rows before its seal: what the yearly reports
    count (the seal row, written after midnight, belongs to no report)."""
    def years(audit: AuditLog) -> list[int]:
        if seg.rows <= 1:
            return []
        row = audit.read("SELECT ts_us FROM audit WHERE seq = ?", (seg.last_seq - 1,))
        last = int(row[0][0]) if row else seg.last_ts_us
        return list(range(jst_year(seg.first_ts_us), jst_year(last) + 1))
    return years


def _marker(segment: int, path: str, digest: str, at: int) -> Callable[[AuditLog], None]:
    return lambda a: a.mark_exported(segment, path, digest, at)


def _dropper(segment: int, at: int) -> Callable[[AuditLog], int]:
    return lambda a: a.drop_rows(segment, at)


def json_text(answer: dict[str, object]) -> str:
    """The worker's verify answer back as the JSON `VerifyResult.from_json` reads."""
    return json.dumps(answer)
