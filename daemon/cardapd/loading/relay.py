"""Run one ApduBatch of the loading service on the card (on the reader's thread).

APDUs run in order; the batch stops at the first status word not in `expect_sw`. APDUs
marked `sensitive` never reach the traffic log. The relay refuses, before sending it, a
plain SELECT that could reach an AP the daemon never selects (the text input assist AP),
whatever the service asks. An answer no ISO 7816 card may give (shorter than a status
word, or a status word whose SW1 is not 6x/9x) stops the batch as a card protocol error:
the terminal names it (CARD_PROTOCOL_ERROR) instead of letting the service guess from
garbage.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from cardapd.errors import Cancelled, CardapError, CardProtocolError
from cardapd.loading.ports import ApduBatch, BatchResult
from cardapd.myna.aids import check_aid
from cardlib.protocol import ApduProtocol

log = logging.getLogger(__name__)


def _check_allowed(command: bytes) -> None:
    """Refuse a plain SELECT by AID of a denied AP (a rogue service cannot reach it)."""
    if len(command) >= 5 and command[1] == 0xA4 and command[2] == 0x04 \
            and command[0] & 0x0C == 0:
        # The one AID check; built-in APs stay allowed (the ISD is selected in every session).
        check_aid(command[5:5 + command[4]], "the loading service's SELECT", card_ap=False)


def _check_answer(resp: bytes) -> None:
    """Refuse an answer no card may give (garbage, truncated)."""
    if len(resp) < 2:
        raise CardProtocolError(f"the card answered {len(resp)} byte(s), not even a status "
                                "word")
    sw1 = resp[-2]
    if not (0x61 <= sw1 <= 0x6F or 0x90 <= sw1 <= 0x9F):
        raise CardProtocolError(f"the card answered malformed data (impossible status word "
                                f"{resp[-2]:02X}{resp[-1]:02X})")


def run_batch(proto: ApduProtocol, batch: ApduBatch,
              cancel: threading.Event | None = None,
              acknowledged: Callable[[int], None] | None = None) -> BatchResult:
    """Send the batch's APDUs; return the raw responses (the failing one last).

    `acknowledged(n)` is called (on this thread) once the n-th command got an expected
    status word: the per-block progress of a load."""
    responses: list[bytes] = []
    conn = proto.connection
    for apdu in batch.apdus:
        command = apdu.command
        try:
            if cancel is not None and cancel.is_set():
                raise Cancelled("the operation was cancelled")
            _check_allowed(command)
            if apdu.sensitive:
                with proto.sensitive():
                    resp = conn.transmit(command)
            else:
                resp = conn.transmit(command)
            _check_answer(resp)
        except CardapError as exc:
            log.info("batch %d (%s) stopped: %s", batch.batch_id, batch.step, exc.reason)
            return BatchResult(batch.batch_id, tuple(responses), complete=False,
                               transport_error=exc.reason, error=exc)
        responses.append(resp)
        sw = int.from_bytes(resp[-2:], "big") if len(resp) >= 2 else -1
        if sw not in apdu.expect_sw:
            return BatchResult(batch.batch_id, tuple(responses), complete=False)
        if acknowledged is not None:
            acknowledged(len(responses))
    return BatchResult(batch.batch_id, tuple(responses), complete=True)
