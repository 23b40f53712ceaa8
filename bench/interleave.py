"""Interleaved timing: every kind of call measured in rotating rounds, so noise hits all."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from cardap.client import CardapClientError


def measure_interleaved(kinds: Sequence[tuple[str, Callable[[], object]]],
                        samples: dict[str, list[float]], errors: dict[str, dict[str, int]],
                        *, n: int, batch: int, warmup: int,
                        tolerated: frozenset[str]) -> int:
    """Time `n` calls of each kind (ms) in rounds of `batch`, the order rotated each round.

    A failed call with a reason in `tolerated` is counted in `errors`, not timed, and
    replaced by another call; any other failure, or too many, stops the benchmark.
    Returns the number of rounds.
    """
    for name, _ in kinds:
        samples.setdefault(name, [])
        errors.setdefault(name, {})

    def note(name: str, err: CardapClientError) -> None:
        if err.reason not in tolerated:
            raise err
        errs = errors[name]
        errs[err.reason] = errs.get(err.reason, 0) + 1
        if sum(errs.values()) > max(10, n // 100):
            raise RuntimeError(f"too many failed {name} calls: {errs}") from err

    for name, fn in kinds:  # warm up: connections, caches, code paths
        for _ in range(warmup):
            try:
                fn()
            except CardapClientError as err:
                note(name, err)
    perf = time.perf_counter_ns
    rounds = -(-n // batch)
    for r in range(rounds):
        order = [*kinds[r % len(kinds):], *kinds[:r % len(kinds)]]
        count = min(batch, n - r * batch)
        for name, fn in order:
            out = samples[name]
            done = 0
            while done < count:
                t = perf()
                try:
                    fn()
                except CardapClientError as err:
                    note(name, err)
                    continue
                out.append((perf() - t) / 1e6)
                done += 1
    return rounds
