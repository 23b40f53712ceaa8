"""The common applet interface: SELECT EF, READ BINARY, VERIFY over a table of EFs.

Every AP on the card (built-in or loaded) is an `Applet`; the card keeps them in a dict
keyed by AID and routes every command other than SELECT-by-AID and GET RESPONSE to the
selected one. Subclasses add commands by overriding `handle` (GlobalPlatform, Types A/D).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from . import apdu
from .apdu import Command, SwError
from .files import BinaryFile, ElementaryFile, PinFile
from .profiles import Profile


class CardContext(Protocol):
    """What an applet may ask of the card: its profile, and to persist changed state."""

    @property
    def profile(self) -> Profile:
        """The card's vendor profile (quirks are data)."""
        ...

    def state_changed(self) -> None:
        """Write the card file now (called after a persistent change)."""
        ...


@dataclass(frozen=True, slots=True)
class Reply:
    """An applet's answer; with `apply_le` the card applies the 61xx/6Cxx Le rules to `data`."""

    data: bytes = b""
    sw: int = apdu.SW_OK
    apply_le: bool = True


def fci(aid: bytes) -> bytes:
    """The FCI returned by SELECT with P2 00: `6F` template holding tag `84` = the AID."""
    inner = bytes([0x84, len(aid)]) + aid
    return bytes([0x6F, len(inner)]) + inner


class Applet:
    """Base AP: EFs by FID, an optional default binary file, per-selection state."""

    redact_responses: ClassVar[bool] = False  # True: responses never appear in logs

    def __init__(self, aid: bytes) -> None:
        self.aid = aid
        self.files: dict[int, ElementaryFile] = {}
        self.default_file: BinaryFile | None = None
        self.current: ElementaryFile | None = None
        self.verified: set[int] = set()

    def reset(self) -> None:
        """Forget the selected EF and any verified PIN (on select, deselect, power-off)."""
        self.current = None
        self.verified.clear()

    def process(self, cmd: Command, ctx: CardContext) -> Reply:
        """Handle one command routed to this AP (raise SwError for error status words)."""
        iso = {apdu.INS_SELECT, apdu.INS_READ_BINARY, apdu.INS_VERIFY}
        if cmd.ins in iso and cmd.cla != 0x00:
            raise SwError(apdu.SW_CLA_NOT_SUPPORTED)
        if cmd.ins == apdu.INS_SELECT:
            return self.select_ef(cmd)
        if cmd.ins == apdu.INS_READ_BINARY:
            return self.read_binary(cmd, ctx)
        if cmd.ins == apdu.INS_VERIFY:
            return self.verify(cmd, ctx)
        return self.handle(cmd, ctx)

    def handle(self, cmd: Command, ctx: CardContext) -> Reply:
        """Commands beyond the ISO file basics; GET DATA finds nothing, others are unknown."""
        if cmd.ins == apdu.INS_GET_DATA and cmd.cla in (0x00, 0x80):
            raise SwError(apdu.SW_REF_NOT_FOUND)
        raise SwError(apdu.SW_INS_NOT_SUPPORTED)

    def select_ef(self, cmd: Command) -> Reply:
        """SELECT EF `00 A4 02 0C 02 FID` within this AP (the card handles P1 04)."""
        if cmd.p1 != 0x02 or cmd.p2 != 0x0C:
            raise SwError(apdu.SW_WRONG_P1P2)
        if len(cmd.data) != 2:
            raise SwError(apdu.SW_WRONG_LENGTH)
        ef = self.files.get(int.from_bytes(cmd.data, "big"))
        if ef is None:
            raise SwError(apdu.SW_NOT_FOUND)
        self.current = ef
        return Reply()

    def read_binary(self, cmd: Command, ctx: CardContext) -> Reply:
        """READ BINARY at offset P1P2 with the profile's end-of-file behaviour."""
        if cmd.p1 & 0x80:
            raise SwError(apdu.SW_WRONG_P1P2)  # short-EF addressing is not modelled
        if cmd.data or cmd.le is None:
            raise SwError(apdu.SW_WRONG_LENGTH)
        ef = self.current if self.current is not None else self.default_file
        if ef is None:
            raise SwError(apdu.SW_NO_CURRENT_EF)
        if not isinstance(ef, BinaryFile):
            raise SwError(apdu.SW_INCOMPATIBLE_FILE)
        if ef.needs_pin is not None and ef.needs_pin not in self.verified:
            raise SwError(apdu.SW_SECURITY_NOT_SATISFIED)
        offset = cmd.p1p2
        if offset >= len(ef.content):
            raise SwError(apdu.SW_OFFSET_OUT_OF_RANGE)
        rest = ef.content[offset:]
        if cmd.le <= len(rest):
            return Reply(rest[:cmd.le], apply_le=False)
        if ctx.profile.read_binary_eof == "6282":
            return Reply(rest, apdu.SW_EOF_BEFORE_LE, apply_le=False)
        return Reply(b"", 0x6C00 | len(rest), apply_le=False)

    def verify(self, cmd: Command, ctx: CardContext) -> Reply:
        """VERIFY `00 20 00 80`: no data queries the counter, data spends a try."""
        if cmd.p1 != 0x00 or cmd.p2 != 0x80:
            raise SwError(apdu.SW_WRONG_P1P2)
        if cmd.le is not None:
            raise SwError(apdu.SW_WRONG_LENGTH)
        ef = self.current
        if not isinstance(ef, PinFile):
            raise SwError(apdu.SW_NO_CURRENT_EF)
        pin = ef.pin
        fid = next(f for f, e in self.files.items() if e is ef)
        if not cmd.data:
            if pin.tries == 0:
                raise SwError(apdu.SW_PIN_BLOCKED)
            return Reply(sw=0x63C0 | pin.tries)
        if pin.tries == 0:
            raise SwError(apdu.SW_PIN_BLOCKED_VERIFY)
        if hmac.compare_digest(cmd.data, pin.value.encode()):
            if pin.tries != pin.max_tries:
                pin.tries = pin.max_tries
                ctx.state_changed()
            self.verified.add(fid)
            return Reply()
        pin.tries -= 1
        self.verified.discard(fid)
        ctx.state_changed()
        return Reply(sw=0x63C0 | pin.tries)


class LoadedApplet(Applet):
    """An instance installed on the card after issuance; serialised in the card file's `aps`."""

    type_code: ClassVar[str] = "?"

    def to_json(self) -> dict[str, Any]:
        """The `aps` entry for this instance (must include `type` and `aid`)."""
        raise NotImplementedError

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LoadedApplet:
        """Rebuild an instance from its `aps` entry."""
        raise NotImplementedError
