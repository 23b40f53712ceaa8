"""The reference loading service keeps every checkpoint of a terminal, pages them back,
and flags one that contradicts what it kept."""

from __future__ import annotations

from cardap_sim.loadsvc.checkpoints import CheckpointStore


def test_kept_paged_and_divergence_flagged() -> None:
    store = CheckpointStore()
    try:
        for seq in range(1, 12):
            kept, diverged = store.record("kiosk-01", "kiosk-01", seq, f"{seq:064x}", seq,
                                          "daily", 0, 0)
            assert (kept, diverged) == (seq, False)
        assert store.record("kiosk-01", "kiosk-01", 5, f"{5:064x}", 5, "session", 0, 0) == (
            12, False)  # the same row again: agrees
        assert store.record("kiosk-01", "kiosk-01", 7, "ab" * 32, 7, "start", 0, 1)[1]
        assert store.record("kiosk-01", "kiosk-01", 9, "cd" * 32, 9, "start", 0, 1)[1]
        store.record("gate-02", "gate-02", 3, f"{3:064x}", 3, "daily", 0, 0)
        first, cursor = store.page("kiosk-01", 0, 0, 5)
        assert [k.seq for k in first] == [1, 2, 3, 4, 5]
        assert cursor
        rest: list[int] = []
        while cursor:
            page, cursor = store.page("kiosk-01", 0, cursor, 5)
            rest += [k.seq for k in page]
        assert rest == [6, 7, 8, 9, 10, 11, 5, 7, 9]
        every = store.for_terminal("kiosk-01")
        assert [k.diverged for k in every][-2:] == [True, True]
        assert [k.seq for k in store.for_terminal("kiosk-01", after_seq=9)] == [10, 11]
    finally:
        store.close()
