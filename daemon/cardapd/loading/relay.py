"""Run one ApduBatch of the loading service on the card (on the reader's thread).

APDUs run in order; the batch stops at the first status word not in `expect_sw`. APDUs
marked `sensitive` never reach the traffic log. The relay refuses, before sending it, a
plain SELECT that could reach an AP the daemon never selects (the text input assist AP),
whatever the service asks.
"""

from __future__ import annotations

import logging
import threading

from cardapd.errors import Cancelled, CardapError
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


def run_batch(proto: ApduProtocol, batch: ApduBatch,
              cancel: threading.Event | None = None) -> BatchResult:
    """Send the batch's APDUs; return the raw responses (the failing one last)."""
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
        except CardapError as exc:
            log.info("batch %d (%s) stopped: %s", batch.batch_id, batch.step, exc.reason)
            return BatchResult(batch.batch_id, tuple(responses), complete=False,
                               transport_error=exc.reason)
        responses.append(resp)
        sw = int.from_bytes(resp[-2:], "big") if len(resp) >= 2 else -1
        if sw not in apdu.expect_sw:
            return BatchResult(batch.batch_id, tuple(responses), complete=False)
    return BatchResult(batch.batch_id, tuple(responses), complete=True)
