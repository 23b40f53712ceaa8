"""Type D (binary) instances: Type A's authentication, then ISO 7816-4 secure messaging only."""

from __future__ import annotations

from typing import ClassVar

from . import apdu
from .apdu import Command, SwError
from .applet import CardContext, Reply
from .files import BinaryFile
from .sm import SM_CLA, SmError
from .typea import INS_READ_RECORD, PIN_REFERENCE, TypeAApplet

TYPE_D_MODULE_AID = bytes.fromhex("D392F0004F44")
SW_SM_ERROR = 0x6988


class TypeDApplet(TypeAApplet):
    """A Type D instance: `D1 0D uid` `D2 len info1` `D3 len info2` read by SM READ BINARY."""

    type_code: ClassVar[str] = "D"
    module_aid: ClassVar[bytes] = TYPE_D_MODULE_AID
    install_type: ClassVar[int] = 0x44
    user_tags: ClassVar[tuple[int, int, int]] = (0xD1, 0xD2, 0xD3)

    def _layout(self) -> None:
        """The binary file (needs the AP PIN) once personalised."""
        self.default_file = (BinaryFile(b"".join(self.records()), needs_pin=PIN_REFERENCE)
                             if self.personalised and self.user_id is not None else None)

    def _close(self) -> None:
        """End the SM session (wrong MAC, plain command)."""
        self.session = None
        self.verified.clear()

    def process(self, cmd: Command, ctx: CardContext) -> Reply:
        """Before MUTUAL AUTHENTICATE as Type A; after it only SM commands (else 6988)."""
        session = self.session
        if session is None:
            if cmd.cla == SM_CLA:
                raise SwError(SW_SM_ERROR)
            if cmd.ins == INS_READ_RECORD:
                raise SwError(apdu.SW_INS_NOT_SUPPORTED)
            if cmd.ins in (apdu.INS_VERIFY, apdu.INS_READ_BINARY) and cmd.cla == 0x00:
                self.require_personalised()
                raise SwError(apdu.SW_SECURITY_NOT_SATISFIED)
            return super().process(cmd, ctx)
        if cmd.cla != SM_CLA:
            self._close()
            raise SwError(SW_SM_ERROR)
        try:
            inner = session.unwrap(cmd)
        except SmError:
            self._close()
            raise SwError(SW_SM_ERROR) from None
        try:
            reply = self._inner(inner, ctx)
            data, sw = reply.data, reply.sw
        except SwError as exc:
            data, sw = b"", exc.sw
        return Reply(session.wrap(data, sw), sw)

    def _inner(self, cmd: Command, ctx: CardContext) -> Reply:
        """The unwrapped command: VERIFY P2 81 or READ BINARY; anything else 6D00."""
        if cmd.ins == apdu.INS_VERIFY:
            return self.verify(cmd, ctx)
        if cmd.ins == apdu.INS_READ_BINARY:
            return self.read_binary(cmd, ctx)
        raise SwError(apdu.SW_INS_NOT_SUPPORTED)
