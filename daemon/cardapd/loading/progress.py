"""Per-command progress of one AP's card session, for the kiosk's progress bar.

The loading service sends its commands in few batches (two round trips per AP whatever the
image size), each with a percent to report once it has run. Within a batch the terminal
sees each command the card acknowledges: the percent moves between the previous hint and
this batch's in proportion to the commands done, the phase follows the command just run
(INSTALL [for load] and LOAD: loading, INSTALL [for install]: installing, STORE DATA:
personalising; GlobalPlatform INS and P1, readable in the clear under SCP03) and each
acknowledged LOAD, one block of the load file, is reported. The percent never goes back
and stays below 100 until the result is known.
"""

from __future__ import annotations

from collections.abc import Callable

from cardapd.loading.ports import PHASES, ApduBatch

INS_LOAD, INS_INSTALL, INS_STORE_DATA = 0xE8, 0xE6, 0xE2
PHASE_OF_INS = {INS_LOAD: "loading", INS_INSTALL: "installing",
                INS_STORE_DATA: "personalising"}


def _gp_ins(command: bytes) -> int:
    """The INS of a GlobalPlatform (proprietary class) command, else -1."""
    return command[1] if len(command) >= 4 and command[0] & 0x80 else -1


def _phase(command: bytes) -> str | None:
    """The phase a command belongs to (None: the batch's hint says)."""
    ins = _gp_ins(command)
    if ins == INS_INSTALL and command[2] & 0x0C == 0:  # INSTALL [for load]: loading starts
        return "loading"
    return PHASE_OF_INS.get(ins)


class BlockProgress:
    """Turns batches and acknowledged commands into progress steps of one AP."""

    def __init__(self, ap_id: str,
                 emit: Callable[[str, str, int, int, int], None]) -> None:
        # emit(ap_id, phase, percent, blocks_done, blocks_total)
        self.ap_id = ap_id
        self._emit = emit
        self.percent = 0
        self.blocks_done = 0
        self.blocks_total = 0
        self._batch = -1
        self._from = 0
        self._last: tuple[str, int, int, int] | None = None

    def _send(self, phase: str, percent: int) -> None:
        self.percent = max(self.percent, min(percent, 99))
        step = (phase, self.percent, self.blocks_done, self.blocks_total)
        if step != self._last:
            self._last = step
            self._emit(self.ap_id, phase, self.percent, self.blocks_done, self.blocks_total)

    def command_done(self, batch: ApduBatch, done: int) -> None:
        """The card acknowledged the `done`-th command (1-based) of `batch`."""
        if batch.batch_id != self._batch:
            self._batch = batch.batch_id
            self._from = self.percent
            self.blocks_total += sum(1 for a in batch.apdus if _gp_ins(a.command) == INS_LOAD)
        count = len(batch.apdus)
        if not 0 < done <= count:
            return
        command = batch.apdus[done - 1].command
        if _gp_ins(command) == INS_LOAD:
            self.blocks_done += 1
        phase = _phase(command) or PHASES.get(batch.phase, "loading")
        target = min(int(batch.percent), 99)
        span = max(target - self._from, 0)
        self._send(phase, self._from + span * done // count)

    def batch_done(self, batch: ApduBatch) -> None:
        """The batch ran to its end: its percent hint."""
        self._send(PHASES.get(batch.phase, "loading"), int(batch.percent))
