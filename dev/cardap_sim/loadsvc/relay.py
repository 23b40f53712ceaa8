"""Terminal side of a card session, minimal: run a batch, stop at the first unexpected SW.

The daemon has its own relay (issue 4, `cardapd.loading`); this one serves tests, the
benchmark and the reference client. It never logs APDU payloads.
"""

from __future__ import annotations

from collections.abc import Callable

from cardap_sim.loadsvc.session import Batch, BatchAnswer, CardSession, Done
from cardapd.errors import CardapError

Transmit = Callable[[bytes], bytes]


def run_batch(transmit: Transmit, batch: Batch) -> BatchAnswer:
    """Send the batch's APDUs in order; stop after the first answer with an unexpected SW."""
    out: list[bytes] = []
    try:
        for apdu in batch.apdus:
            resp = transmit(apdu.command)
            out.append(resp)
            sw = int.from_bytes(resp[-2:], "big") if len(resp) >= 2 else -1
            if sw not in apdu.expect_sw:
                return BatchAnswer(batch.batch_id, tuple(out), complete=False)
    except CardapError as exc:
        return BatchAnswer(batch.batch_id, tuple(out), complete=False,
                           transport_error=exc.reason)
    return BatchAnswer(batch.batch_id, tuple(out), complete=True)


def drive(session: CardSession, transmit: Transmit) -> Done:
    """Run a whole session in-process against `transmit` (tests, benchmarks)."""
    step = session.start()
    while isinstance(step, Batch):
        step = session.answer(run_batch(transmit, step))
    return step
