"""Holding the chain against checkpoints: each way it can disagree is named."""

from __future__ import annotations

from cardapd.audit.checkpoints import ChainView, Checkpoint, compare
from cardapd.audit.verify import Problem, Reset

T = "kiosk-01"


def h(n: int, chain: str = "a") -> bytes:
    return bytes([n % 256]) * 16 + chain.encode() * 16


def view(last: int, first: int = 1, chain: dict[int, str] | None = None,
         resets: tuple[Reset, ...] = (), tombstones: dict[int, bytes] | None = None
         ) -> ChainView:
    which = chain or {}
    return ChainView(first, last, lambda seq: h(seq, which.get(seq, "a"))
                     if first <= seq <= last else None, tombstones or {}, resets)


def cp(seq: int, chain: str = "a", ts: int = 0, terminal: str = T) -> tuple[Checkpoint, str]:
    return Checkpoint(terminal, seq, h(seq, chain).hex(), ts, "daily"), "service"


def test_agreeing_checkpoints_and_the_ones_set_aside() -> None:
    c = compare(view(50, first=11, tombstones={10: h(10)}),
                [cp(10), cp(20), cp(50), cp(5), cp(30, terminal="gate-2")], T)
    assert (c.problem, c.matched, c.before_kept, c.other_terminal) == (None, 3, 1, 1)


def test_rows_gone_from_the_end_are_truncated() -> None:
    c = compare(view(22), [cp(10), cp(27)], T)
    assert (c.problem, c.first_bad_seq, c.matched) == (Problem.TRUNCATED, 27, 1)
    assert "past the end of the chain (row 22)" in c.findings[0].message


def test_a_cut_chain_continued_after_an_anchor_reset_is_truncated() -> None:
    reset = Reset(23, ts_us=500, kind="truncated", problem="")
    c = compare(view(30, chain={s: "b" for s in range(23, 31)}, resets=(reset,)),
                [cp(10, ts=100), cp(25, ts=200)], T)
    assert (c.problem, c.first_bad_seq) == (Problem.TRUNCATED, 25)


def test_an_emptied_database_is_emptied() -> None:
    reset = Reset(1, ts_us=500, kind="emptied", problem="")
    c = compare(view(5, chain={s: "b" for s in range(1, 6)}, resets=(reset,)),
                [cp(3, ts=100), cp(20, ts=200)], T)
    assert c.problem is Problem.EMPTIED
    assert compare(view(0), [cp(3)], T).problem is Problem.EMPTIED


def test_a_recomputed_history_is_rewritten_and_another_database_replaced() -> None:
    rewritten = view(40, chain={s: "b" for s in range(15, 41)})
    c = compare(rewritten, [cp(10), cp(20), cp(40)], T)
    assert (c.problem, c.first_bad_seq, c.matched) == (Problem.REWRITTEN, 20, 1)
    assert {f.problem for f in c.findings} == {Problem.REWRITTEN}
    replaced = view(40, chain={s: "b" for s in range(1, 41)})
    assert compare(replaced, [cp(10), cp(20)], T).problem is Problem.REPLACED


def test_an_acknowledged_reset_supersedes_the_chain_it_gave_up() -> None:
    reset = Reset(23, ts_us=500, kind="truncated", problem="", acknowledged_seq=24,
                  acknowledged_by="org-a/admin-1", reason="restored")
    v = view(30, chain={s: "b" for s in range(23, 31)}, resets=(reset,))
    c = compare(v, [cp(10, ts=100), cp(25, ts=200), cp(28, chain="b", ts=900)], T)
    assert (c.problem, c.matched, c.superseded) == (None, 2, 1)
    # a checkpoint taken after the reset that disagrees is not excused
    late = compare(v, [cp(29, chain="c", ts=900)], T)
    assert late.problem is not None
