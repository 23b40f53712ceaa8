"""The audit log as a service: export (paged), verification (incremental, full, against
checkpoints), the acknowledgement of anchor resets and the yearly report, each audited;
the daily maintenance and the checkpoints at start and stop. Every verification sets the
audit chain metrics (`cardapd_audit_chain_*`). Knows no gRPC: `cardapd.api` converts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from cardapd.audit.checkpoints import (
    Checkpoint,
    CheckpointSender,
    Comparison,
    chain_view,
    compare,
)
from cardapd.audit.export import AuditFilter, query
from cardapd.audit.log import AuditLog, AuditRecord
from cardapd.audit.maintenance import AuditMaintenance
from cardapd.audit.report import JST, YearlyReport, build_report, period
from cardapd.audit.schema import RESET_ACKNOWLEDGED
from cardapd.audit.verify import Mode, Problem, Reset, VerifyResult, load_resets
from cardapd.domain import AuditSink, OpContext
from cardapd.errors import (
    AlreadyExists,
    Cancelled,
    InvalidArgument,
    NotFound,
    ServiceUnavailable,
    StoreError,
)
from cardapd.telemetry.metrics import Check, Metrics

log = logging.getLogger(__name__)

PAGE = 500
REASON_MAX = 256
MAX_CHECKPOINTS = 100_000


@dataclass(frozen=True)
class Verification:
    """A verification: the chain's own check and its comparison with checkpoints."""

    result: VerifyResult
    comparison: Comparison
    terminal_id: str

    @property
    def ok(self) -> bool:
        """The chain verifies, no reset is unacknowledged, every checkpoint agrees."""
        return self.result.ok and not self.comparison.findings

    @property
    def problem(self) -> Problem | None:
        """What is wrong: what the checkpoints name first, else the chain's own problem."""
        return self.comparison.problem or self.result.problem

    @property
    def first_bad_seq(self) -> int:
        """Where (0: nowhere)."""
        if self.comparison.findings:
            return self.comparison.first_bad_seq
        return self.result.first_bad_seq or 0

    def summary(self) -> str:
        """One sentence: what was checked and found."""
        r, c = self.result, self.comparison
        what = (f"{r.mode} check of rows {r.first_seq}-{r.last_seq}: {r.rows_checked} rows "
                "walked")
        if c.findings:
            return (f"{what}; the chain disagrees with {len(c.findings)} checkpoint(s): "
                    f"{c.problem} ({c.findings[0].message})")
        if not r.ok:
            return f"{what}; {r.problem}: {r.detail}"
        acked = [x for x in r.resets if x.acknowledged]
        tail = ""
        if acked:
            tail = ("; " + "; ".join(
                f"anchor reset at row {x.seq} ({x.kind}) acknowledged by {x.acknowledged_by}:"
                f" {x.reason}" for x in acked)
                + " — rows before a reset are vouched for only by checkpoints kept off the "
                "terminal")
        checked = f"; {c.matched} checkpoint(s) agree" if c.matched else ""
        return f"{what}; the chain verifies{checked}{tail}"


class AuditService:
    """Reads of the audit database (a read-only connection per call, beside the writer)
    and the verifications, run in the worker process."""

    def __init__(self, path: Path, audit: AuditSink, metrics: Metrics,
                 maintenance: AuditMaintenance, checkpoints: CheckpointSender) -> None:
        self.path = path
        self.audit = audit
        self.metrics = metrics
        self.maintenance = maintenance
        self.checkpoints = checkpoints

    @property
    def terminal_id(self) -> str:
        """This terminal's id in checkpoints and exports."""
        return self.checkpoints.terminal_id

    async def export(self, ctx: OpContext, flt: AuditFilter) -> AsyncIterator[AuditRecord]:
        """The matching rows in seq order, a page at a time off the event loop; the export
        itself is audited (durably) before the first row goes out."""
        await self.audit.record(ctx, "audit_export", result="ok", detail={
            "operations": sorted(flt.operations or ())}, durable=True)
        after = 0
        while True:
            rows = await asyncio.to_thread(self._page, replace(flt, after_seq=after,
                                                               limit=PAGE))
            for rec in rows:
                yield rec
            if len(rows) < PAGE:
                return
            after = rows[-1].seq

    def _page(self, flt: AuditFilter) -> list[AuditRecord]:
        """One page of rows (a snapshot per page)."""
        return list(query(self.path, flt))

    async def verify(self, ctx: OpContext, *, full: bool = False,
                     checkpoints: Sequence[Checkpoint] = (),
                     from_service: bool = False) -> Verification:
        """VerifyAudit: check the chain now (incremental unless `full`) and compare it with
        the checkpoints given and, if asked, those the loading service kept; audited
        durably. Any disagreement fails the chain metric too."""
        if len(checkpoints) > MAX_CHECKPOINTS:
            raise InvalidArgument(f"at most {MAX_CHECKPOINTS} checkpoints per call",
                                  metadata={"field": "checkpoints"})
        pairs = [(c, "request") for c in checkpoints]
        if from_service:
            uplink = self.checkpoints.uplink
            if uplink is None or not uplink.configured:
                raise ServiceUnavailable("no loading service is configured to hold "
                                         "checkpoints ([loading] address)",
                                         reason="LOADING_SERVICE_NOT_CONFIGURED")
            pairs += [(c, "service") for c in await uplink.list_checkpoints()]
        result = await self.maintenance.verify(Mode.FULL if full else Mode.INCREMENTAL,
                                               ctx.cancel)
        comparison = (await asyncio.to_thread(self._compare, result.resets, pairs)
                      if pairs else Comparison())
        done = Verification(result, comparison, self.terminal_id)
        if comparison.findings:
            self.metrics.audit_chain(False)
        await self.audit.record(ctx, "audit_verify", result="ok", detail={
            "ok": done.ok, "mode": result.mode.value, "rows_checked": result.rows_checked,
            "first_bad_seq": done.first_bad_seq,
            "problem": str(done.problem) if done.problem is not None else "",
            "checkpoints": len(pairs), "checkpoints_matched": comparison.matched,
            "findings": len(comparison.findings)}, durable=True)
        if comparison.findings:
            log.error("audit chain disagrees with checkpoints kept off the terminal: %s",
                      done.summary())
        return done

    def _compare(self, resets: Sequence[Reset], pairs: list[tuple[Checkpoint, str]]
                 ) -> Comparison:
        view, conn = chain_view(self.path, resets)
        try:
            return compare(view, pairs, self.terminal_id)
        finally:
            conn.close()

    async def acknowledge(self, ctx: OpContext, by: str, reset_seq: int, reason: str) -> int:
        """An administrator (`by`, their actor) acknowledges the anchor
        reset at `reset_seq` with a reason; audited durably, then the chain is verified
        again and a checkpoint leaves the terminal. Returns the acknowledgement's seq."""
        why = " ".join(reason.split())
        if not why or len(why) > REASON_MAX:
            raise InvalidArgument(f"reason: say why the reset is expected (1-{REASON_MAX} "
                                  "characters)", reason="REASON_REQUIRED",
                                  metadata={"field": "reason"})
        resets = await self.maintenance.log.call(_resets)
        reset = next((r for r in resets if r.seq == reset_seq), None)
        if reset is None:
            raise NotFound(f"row {reset_seq} is not an anchor reset kept in the audit log",
                           reason="RESET_NOT_FOUND", metadata={"reset_seq": str(reset_seq)})
        if reset.acknowledged:
            raise AlreadyExists(f"the anchor reset at row {reset_seq} was acknowledged at "
                                f"row {reset.acknowledged_seq} by {reset.acknowledged_by}",
                                reason="RESET_ALREADY_ACKNOWLEDGED",
                                metadata={"reset_seq": str(reset_seq)})
        seq = await self.audit.record(ctx, RESET_ACKNOWLEDGED, result="ok", detail={
            "reset_seq": reset_seq, "kind": reset.kind, "reason": why,
            "administrator": by}, durable=True)
        log.warning("audit anchor reset at row %d (%s) acknowledged by %s: %s", reset_seq,
                    reset.kind, by, why)
        try:
            await self.maintenance.verify(Mode.INCREMENTAL, ctx.cancel)
        except (StoreError, Cancelled) as exc:
            log.error("the audit chain could not be verified after the acknowledgement: %s",
                      exc.message)
        await self.checkpoints.emit("acknowledge")
        return seq

    async def yearly(self, ctx: OpContext, year: int, lang: str = "en") -> YearlyReport:
        """The year's report (year 0: the current year in Japan time; its text in `lang`);
        it rests on a full check of the chain kept, so the chain metrics follow. Audited
        durably; a report made after its year ended is what lets retention drop that
        year's rows."""
        if year == 0:
            year = datetime.now(JST).year
        if not 2000 <= year <= 9999:
            raise InvalidArgument("year: 2000-9999", metadata={"field": "year"})
        result = await self.maintenance.verify(Mode.FULL, ctx.cancel)
        now = datetime.fromtimestamp(self.maintenance.clock() / 1_000_000, UTC)
        rep = await asyncio.to_thread(build_report, self.path, year, result=result,
                                      terminal=self.terminal_id, now=now, lang=lang)
        await self.audit.record(ctx, "yearly_report", result="ok", detail={
            "year": rep.year, "audit_ok": rep.audit.ok,
            "final": now >= period(year)[1]}, durable=True)
        return rep

    def chain_check(self, interval_s: float) -> Check:
        """The background maintenance (see `Metrics.watch`): at start, then every
        `interval_s` (0: only at start; VerifyAudit still verifies on demand)."""
        first = True

        async def maintain_audit_log() -> float | None:
            nonlocal first
            kind = "daily"
            if first:  # the start checkpoint leaves at once (the run may be cut short)
                first, kind = False, ""
                try:
                    resets = await self.maintenance.log.call(_resets)
                except StoreError as exc:
                    log.error("the audit log's resets could not be read: %s", exc.message)
                else:
                    self.checkpoints.unacknowledged = sum(not r.acknowledged for r in resets)
                await self.checkpoints.emit("start")
            try:
                out = await self.maintenance.run(kind, cancel=self.metrics.stopping)
            except Cancelled:
                return None
            except StoreError as exc:
                log.error("the audit log could not be verified: %s", exc.message)
                if kind:
                    await self.checkpoints.emit(kind)
            else:
                result = out.result
                if result is not None and result.ok:
                    log.info("audit chain verified (%s): %d rows walked", result.mode,
                             result.rows_checked)
                elif result is not None:
                    log.error("audit chain verification FAILED: %s at seq %s: %s (cardapctl "
                              "audit verify)", result.problem, result.first_bad_seq,
                              result.detail)
            return interval_s if interval_s > 0 else None

        return maintain_audit_log

    async def stopping(self) -> None:
        """The last checkpoint, after the daemon's stop row: to the journal only (the
        link may already be gone)."""
        await self.checkpoints.emit("stop", service=False)


def _resets(audit: AuditLog) -> list[Reset]:
    """The anchor resets on the writer's connection (one snapshot)."""
    return load_resets(audit.connection)
