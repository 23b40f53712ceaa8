"""The ledger of refused calls: a row at the first of a window, one count at its end,
at most `max_rows_per_window` rows, and counts that add up exactly."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping

from cardapd.domain import OpContext
from cardapd.errors import StoreError
from cardapd.telemetry.refusals import (
    RefusalLedger,
    begin_call,
    mark_audited,
    max_rows_per_window,
)


class Sink:
    def __init__(self, fail: bool = False) -> None:
        self.rows: list[tuple[str, str, str, dict[str, object]]] = []
        self.fail = fail

    async def record(self, ctx: OpContext | None, operation: str, *, result: str,
                     reason: str = "", reader: str = "", card_id: str = "",
                     detail: Mapping[str, object] | None = None,
                     durable: bool = False, started: float | None = None, message: str = "",
                     quiet: bool = False) -> int:
        if self.fail:
            raise StoreError("disk full")
        assert ctx is not None
        self.rows.append((ctx.role, operation, reason, dict(detail or {})))
        return len(self.rows)

    def head(self) -> int:
        return len(self.rows)


def counts(rows: list[tuple[str, str, str, dict[str, object]]]) -> Counter[tuple[str, str, str]]:
    out: Counter[tuple[str, str, str]] = Counter()
    for role, _, reason, detail in rows:
        out[(role, str(detail["method"]), reason)] += int(detail["count"])  # type: ignore[call-overload]
    return out


async def test_first_at_once_then_one_count_per_window() -> None:
    sink = Sink()
    ledger = RefusalLedger(sink, 0.05)
    for i in range(500):
        await ledger.refused("gate", "LoadAP", "WRONG_ROLE", f"r{i}")
    assert len(sink.rows) == 1
    assert sink.rows[0][3]["count"] == 1
    await asyncio.sleep(0.15)
    assert len(sink.rows) == 2
    assert sink.rows[1][3] | {"window_s": 0} == {
        "method": "LoadAP", "count": 499, "summary": True, "window_s": 0,
        "first_request_id": "r0"}
    assert counts(sink.rows) == {("gate", "LoadAP", "WRONG_ROLE"): 500}
    await ledger.close()


async def test_many_keys_stay_within_the_bound_and_exact() -> None:
    sink = Sink()
    ledger = RefusalLedger(sink, 3600)
    sent: Counter[tuple[str, str, str]] = Counter()
    for i in range(5000):
        key = (("kiosk", "gate", "ops")[i % 3], f"Method{i % 97}", f"REASON_{i % 7}")
        sent[key] += 1
        await ledger.refused(*key, f"r{i}")
    await ledger.close()
    assert len(sink.rows) <= max_rows_per_window()
    total = sum(int(d["count"]) for _, _, _, d in sink.rows)  # type: ignore[call-overload]
    assert total == 5000 == ledger.refused_total
    tracked = counts(sink.rows)
    overflow = {k: v for k, v in tracked.items() if k[1] == "*"}
    assert overflow  # beyond 32 keys, counted per role under "*"
    for key, n in tracked.items():
        if key[1] != "*":
            assert n == sent[key]


async def test_a_store_failure_keeps_the_count_for_the_window() -> None:
    sink = Sink(fail=True)
    ledger = RefusalLedger(sink, 3600)
    await ledger.refused("gate", "LoadAP", "WRONG_ROLE", "r1")
    sink.fail = False
    await ledger.refused("gate", "LoadAP", "WRONG_ROLE", "r2")
    await ledger.close()
    assert counts(sink.rows) == {("gate", "LoadAP", "WRONG_ROLE"): 2}


async def test_the_call_mark_follows_tasks_the_call_starts() -> None:
    mark = begin_call()

    async def work() -> None:
        mark_audited()  # e.g. the load task the LoadAP call starts writes a row

    await asyncio.ensure_future(work())
    assert mark.audited
