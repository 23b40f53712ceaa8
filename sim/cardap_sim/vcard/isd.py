"""The Issuer Security Domain: default-selected AP answering GET DATA (CPLC, 9F65).

SCP03 and card content management (INSTALL/LOAD/DELETE, GET STATUS) belong to issue 4
and are added by overriding `handle` further; until then those INS answer 6D00.
"""

from __future__ import annotations

from . import apdu
from .apdu import Command, SwError
from .applet import Applet, CardContext, Reply

ISD_AID = bytes.fromhex("A000000151000000")

TAG_CPLC = 0x9F7F
TAG_MAX_COMMAND_DATA = 0x9F65


class IsdApplet(Applet):
    """ISD `A0 00 00 01 51 00 00 00`: card identity through GET DATA."""

    def __init__(self, cplc: bytes) -> None:
        super().__init__(ISD_AID)
        self.cplc = cplc

    def handle(self, cmd: Command, ctx: CardContext) -> Reply:
        """GET DATA `80 CA 9F 7F` / `80 CA 9F 65`; other tags answer 6A88."""
        if cmd.ins == apdu.INS_GET_DATA and cmd.cla in (0x00, 0x80):
            if cmd.data:
                raise SwError(apdu.SW_WRONG_LENGTH)
            if cmd.p1p2 == TAG_CPLC:
                return Reply(bytes([0x9F, 0x7F, len(self.cplc)]) + self.cplc)
            if cmd.p1p2 == TAG_MAX_COMMAND_DATA:
                return Reply(bytes([0x9F, 0x65, 0x01, ctx.profile.max_command_data]))
            raise SwError(apdu.SW_REF_NOT_FOUND)
        return super().handle(cmd, ctx)
