"""Fault injection settings of one virtual card (volatile: never written to the card file)."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

from cardap_sim.vcard.apdu import INS_GET_RESPONSE
from cardlib.gp.scp03 import INS_EXTERNAL_AUTHENTICATE

_rng = random.Random()

# INITIALIZE UPDATE, EXTERNAL/MUTUAL AUTHENTICATE, GET CHALLENGE: left alone by default.
HANDSHAKE_INS = frozenset({0x50, 0x82, 0x84})
# EXTERNAL AUTHENTICATE (under SCP03 before any session exists to refuse behind) and GET
# RESPONSE (its data belongs to the command before): the refuse fault never reaches them.
NEVER_REFUSED = frozenset({INS_EXTERNAL_AUTHENTICATE, INS_GET_RESPONSE})


@dataclass
class Faults:
    """What the card does wrong next; the defaults mean a healthy card.

    tear_after: after N more answered APDUs the card vanishes (None: never).
    garbage: answer the next N APDUs with random bytes whose SW1 is impossible (-1: forever).
    truncate: the next N answers are cut to their first byte (-1: forever).
    slow_ms: delay every answer by this many milliseconds.
    mute: never answer (in-process: CardMute; over vpcd: the APDU stalls: a card that keeps
        asking for more time, as ISO 7816-3 waiting time extensions allow without end, in
        a reader that waits as long as the card asks).
    reader_timeout_ms: with `mute`, the reader gives up on the card after this many ms, as
        a CCID reader does (libccid answers IFD_COMMUNICATION_ERROR, pcscd
        SCARD_E_NOT_TRANSACTED; the card stays in the reader). Over vpcd it needs the
        stack's reader shim (`cardap_sim.hotplug`), which turns the simulator's
        READER_TIMEOUT frame into that driver error. 0: the reader waits for ever.
    full_extended_area: the extended area reports no free space and every LOAD into it
        answers 6A84, without loading anything (the card file is untouched).
    tamper: a man in the middle: the next N answers that carry data (more than SW1 SW2) get
        their last data byte flipped (XOR FF) after the card built them (-1: forever). The
        card's own state is untouched. Under Type D secure messaging the last data byte is
        the MAC's, so the terminal's MAC check must fail. Answers of the authentication
        handshakes (GET CHALLENGE 84, MUTUAL/EXTERNAL AUTHENTICATE 82, INITIALIZE UPDATE 50)
        are left alone unless `tamper_ins` names them: tampering with those only looks like a
        wrong key, which has its own tests.
    tamper_ins: only answers to this INS count for `tamper` (None: any but the handshakes).
        Data fetched by GET RESPONSE belongs to the command that produced it.
    refuse_ins: the card refuses one command with this INS (None: none): the `refuse_nth`
        such command from now on (1: the next; counting only those with `refuse_p1` when
        that is set) is answered `refuse_sw` alone and does nothing, as a card answers a
        command it will not carry out (6A84 not enough memory, 6985 conditions of use not
        satisfied, 6581 memory failure). Then the fault is spent (refuse_ins back to None).
        A command under SCP03 is refused by the ISD after its C-MAC was checked, and the
        bare status word goes back without an R-MAC, as GlobalPlatform wants for every
        error status; a plain command before any applet sees it. Commands under the Type D
        secure messaging and GET RESPONSE are never refused (their counters and chaining
        would no longer be those of a real card).
    refuse_p1: with `refuse_ins`, only commands with this P1 count (None: any), e.g. INSTALL
        [for install] (E6, P1 0C) but not INSTALL [for load] (P1 02).
    refuse_sw: the error status word of the refusal: 64xx-6Fxx but not 6Cxx (a card says 6C
        to have the command sent again, not to refuse it).
    refuse_nth: which matching command is refused (1: the next one).

    `update(after=N, …)` holds the other faults of that call until N more commands were
    answered: they then take effect for command N+1 on. A test that needs a fault in the
    middle of an operation names the command instead of racing the card from outside.
    Only answered commands count (not those of a mute or torn card); a later `update`
    without `after` leaves the held faults held; `clear` drops them at once.
    """

    tear_after: int | None = None
    garbage: int = 0
    truncate: int = 0
    slow_ms: int = 0
    mute: bool = False
    reader_timeout_ms: int = 0
    full_extended_area: bool = False
    tamper: int = 0
    tamper_ins: int | None = None
    refuse_ins: int | None = None
    refuse_p1: int | None = None
    refuse_sw: int = 0x6985
    refuse_nth: int = 1
    pending_after: int | None = None
    pending: dict[str, Any] = field(default_factory=dict)

    def clear(self) -> None:
        """Back to a healthy card."""
        self.pending_after, self.pending = None, {}
        self.tear_after, self.garbage, self.truncate, self.slow_ms, self.mute = None, 0, 0, 0, False
        self.reader_timeout_ms = 0
        self.full_extended_area = False
        self.tamper, self.tamper_ins = 0, None
        self._no_refusal()

    def _no_refusal(self) -> None:
        self.refuse_ins, self.refuse_p1, self.refuse_sw, self.refuse_nth = None, None, 0x6985, 1

    def update(self, *, after: int = 0, **kw: Any) -> None:
        """Set the named faults (validated; unknown names are a ValueError), at once or
        once `after` more commands were answered."""
        if not _int(after) or after < 0:
            raise ValueError("after must be a non-negative integer")
        for name, value in kw.items():
            if name == "tear_after":
                if value is not None and (not isinstance(value, int) or value < 0):
                    raise ValueError("tear_after must be a non-negative integer or null")
            elif name in ("tamper_ins", "refuse_ins", "refuse_p1"):
                if value is not None and not _byte(value):
                    raise ValueError(f"{name} must be a byte 0-255 or null")
                if name == "refuse_ins" and value in NEVER_REFUSED:
                    raise ValueError(f"refuse_ins {value:02X}: EXTERNAL AUTHENTICATE and GET "
                                     "RESPONSE are never refused (a fault that cannot fire)")
            elif name == "refuse_sw":
                if not _int(value) or not 0x6400 <= value <= 0x6FFF or value >> 8 == 0x6C:
                    raise ValueError("refuse_sw must be an error status word 64xx-6Fxx "
                                     "(not 6Cxx)")
            elif name == "refuse_nth":
                if not _int(value) or value < 1:
                    raise ValueError("refuse_nth must be a positive integer")
            elif name in ("garbage", "truncate", "slow_ms", "tamper", "reader_timeout_ms"):
                if not _int(value) or value < -1:
                    raise ValueError(f"{name} must be an integer")
                if value == -1 and name in ("slow_ms", "reader_timeout_ms"):
                    raise ValueError(f"{name} must be non-negative")
            elif name in ("mute", "full_extended_area"):
                if not isinstance(value, bool):
                    raise ValueError(f"{name} must be a boolean")
            else:
                raise ValueError(f"unknown fault {name!r}")
        if after:
            if not kw:
                raise ValueError("after needs a fault to hold")
            self.pending_after, self.pending = after, dict(kw)
            return
        for name, value in kw.items():
            setattr(self, name, value)

    def answered(self) -> None:
        """One more command was answered: the held faults take effect after the last of
        their `after` commands."""
        if self.pending_after is None:
            return
        self.pending_after -= 1
        if self.pending_after == 0:
            held, self.pending_after, self.pending = self.pending, None, {}
            for name, value in held.items():
                setattr(self, name, value)

    def to_json(self) -> dict[str, Any]:
        """The current settings, for the control protocol's status.

        `full_extended_area`, `tamper`, `tamper_ins`, `reader_timeout_ms` and the `refuse_*`
        settings appear only when set, so the status of a card without those faults keeps
        its earlier shape.
        """
        out = asdict(self)
        if self.pending_after is None:
            del out["pending_after"], out["pending"]
        if self.refuse_ins is None:
            for name in ("refuse_ins", "refuse_p1", "refuse_sw", "refuse_nth"):
                del out[name]
        if not self.reader_timeout_ms:
            del out["reader_timeout_ms"]
        if not self.full_extended_area:
            del out["full_extended_area"]
        if self.tamper == 0:
            del out["tamper"]
        if self.tamper_ins is None:
            del out["tamper_ins"]
        return out

    def tampered(self, response: bytes, ins: int) -> bytes:
        """Apply the tamper fault to one answer to a command with `ins`, spending its counter."""
        if not self.tamper or len(response) <= 2:
            return response
        if self.tamper_ins is None:
            if ins in HANDSHAKE_INS:
                return response
        elif ins != self.tamper_ins:
            return response
        if self.tamper > 0:
            self.tamper -= 1
        at = len(response) - 3
        return response[:at] + bytes((response[at] ^ 0xFF,)) + response[at + 1:]

    def refusal(self, ins: int, p1: int) -> int | None:
        """The status word refusing this command (INS, P1), spending the refuse fault when
        it fires; None: carry it out."""
        if self.refuse_ins != ins or (self.refuse_p1 is not None and self.refuse_p1 != p1):
            return None
        if self.refuse_nth > 1:
            self.refuse_nth -= 1
            return None
        sw = self.refuse_sw
        self._no_refusal()
        return sw

    def distort(self, response: bytes) -> bytes:
        """Apply the garbage and truncate faults to one answer, spending their counters."""
        if self.garbage:
            if self.garbage > 0:
                self.garbage -= 1
            response = random_garbage()
        if self.truncate:
            if self.truncate > 0:
                self.truncate -= 1
            response = response[:1]
        return response


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _byte(value: object) -> bool:
    return _int(value) and 0 <= value <= 0xFF  # type: ignore[operator]


def random_garbage() -> bytes:
    """2-32 random bytes ending in an SW1 no ISO card may send (not 6x or 9x)."""
    body = _rng.randbytes(_rng.randint(0, 30))
    sw1 = _rng.choice([*range(0x00, 0x60), *range(0xA0, 0x100)])
    return body + bytes([sw1, _rng.randrange(256)])
