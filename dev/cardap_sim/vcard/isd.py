"""The Issuer Security Domain: GET DATA (CPLC, 9F65, FF21), SCP03 and content management.

SCP03 runs on `cardlib.gp.scp03.Scp03CardSession` (shared, vector-tested crypto); the
state machine, status words and areas are the card's own (gp_content.py).
"""

from __future__ import annotations

from cardlib.apdu import CommandApdu, ResponseApdu
from cardlib.errors import CommandRejected
from cardlib.gp.scp03 import (
    INS_EXTERNAL_AUTHENTICATE,
    INS_INITIALIZE_UPDATE,
    Scp03CardSession,
)

from . import apdu
from .apdu import Command, SwError
from .applet import Applet, CardContext, Reply
from .areas import EXTENDED_AREA_AID, REGIONAL_AREA_AID
from .cardkeys import kdd_from_cplc
from .gp_content import CONTENT_INS, CardServices, ContentManager
from .gp_status import areas_ff21

ISD_AID = bytes.fromhex("A000000151000000")

TAG_CPLC = 0x9F7F
TAG_MAX_COMMAND_DATA = 0x9F65
TAG_AREAS = 0xFF21
CLA_GP = 0x80
CLA_GP_SECURE = 0x84


class IsdApplet(Applet):
    """ISD `A0 00 00 01 51 00 00 00`: identity, SCP03 and card content management."""

    def __init__(self, cplc: bytes, card: CardServices) -> None:
        super().__init__(ISD_AID)
        self.cplc = cplc
        self.card = card
        self.content = ContentManager(card, ISD_AID)
        self.scp: Scp03CardSession | None = None

    def reset(self) -> None:
        """SELECT or a power cycle closes the secure channel and drops the load context."""
        super().reset()
        self.scp = None
        self.content.reset()

    @property
    def secure(self) -> bool:
        """True while an SCP03 session is authenticated."""
        return self.scp is not None and self.scp.authenticated

    def handle(self, cmd: Command, ctx: CardContext) -> Reply:
        """GET DATA in the clear; SCP03 commands; content management only under SCP03."""
        if cmd.ins == apdu.INS_GET_DATA and cmd.cla in (0x00, CLA_GP):
            return self.get_data(cmd, ctx)
        if cmd.ins == INS_INITIALIZE_UPDATE and cmd.cla == CLA_GP:
            return self.initialize_update(cmd)
        if cmd.ins == INS_EXTERNAL_AUTHENTICATE and cmd.cla in (CLA_GP, CLA_GP_SECURE):
            return self.external_authenticate(cmd)
        if cmd.cla == CLA_GP_SECURE:
            return self.secure_command(cmd, ctx)
        if cmd.ins in CONTENT_INS:
            if cmd.cla != CLA_GP:
                raise SwError(apdu.SW_CLA_NOT_SUPPORTED)
            if self.scp is not None:
                self.scp.reset()  # a plain command inside a session ends it
            raise SwError(apdu.SW_SECURITY_NOT_SATISFIED)
        return super().handle(cmd, ctx)

    def get_data(self, cmd: Command, ctx: CardContext) -> Reply:
        """GET DATA `9F7F` CPLC, `9F65` max command data, `FF21` areas; others 6A88."""
        if cmd.data:
            raise SwError(apdu.SW_WRONG_LENGTH)
        if cmd.p1p2 == TAG_CPLC:
            if self.card.contactless:  # the model of a card whose CPLC is not readable
                raise SwError(apdu.SW_REF_NOT_FOUND)
            return Reply(bytes([0x9F, 0x7F, len(self.cplc)]) + self.cplc)
        if cmd.p1p2 == TAG_MAX_COMMAND_DATA:
            return Reply(bytes([0x9F, 0x65, 0x01, ctx.profile.max_command_data]))
        if cmd.p1p2 == TAG_AREAS:
            return Reply(areas_ff21(self.area_usage()))
        raise SwError(apdu.SW_REF_NOT_FOUND)

    def area_usage(self) -> list[tuple[bytes, int, int]]:
        """(AID, capacity, used) of the extended then the regional area (faults applied)."""
        state = self.card.state
        out = []
        for aid in (EXTENDED_AREA_AID, REGIONAL_AREA_AID):
            cap = state.area_capacity(aid)
            used = state.area_used(aid)
            if aid == EXTENDED_AREA_AID and self.card.faults.full_extended_area:
                used = cap
            out.append((aid, cap, min(used, cap)))
        return out

    def initialize_update(self, cmd: Command) -> Reply:
        """INITIALIZE UPDATE: a new session; the pseudo-random challenge bumps the counter."""
        state = self.card.state
        self.content.reset()
        self.scp = Scp03CardSession(state.static_keys, kdd=kdd_from_cplc(state.cplc),
                                    isd_aid=ISD_AID, sequence_counter=state.sequence_counter)
        resp = self.scp.initialize_update(_iso(cmd))
        if self.scp.sequence_counter != state.sequence_counter:
            state.sequence_counter = self.scp.sequence_counter
            self.card.save()
        return Reply(resp.data, resp.sw)

    def external_authenticate(self, cmd: Command) -> Reply:
        """EXTERNAL AUTHENTICATE: any level the library supports (01, 03, 11, 13, 33)."""
        if self.scp is None:
            raise SwError(apdu.SW_CONDITIONS_NOT_SATISFIED)
        resp = self.scp.external_authenticate(_iso(cmd))
        return Reply(resp.data, resp.sw)

    def secure_command(self, cmd: Command, ctx: CardContext) -> Reply:
        """Unwrap (6982 and session closed on a bad C-MAC), run (or refuse, the refuse
        fault), wrap the answer (an error status goes back bare)."""
        scp = self.scp
        if scp is None or not scp.authenticated:
            raise SwError(apdu.SW_SECURITY_NOT_SATISFIED)
        try:
            plain = scp.unwrap(_iso(cmd))
        except CommandRejected as exc:
            self.content.reset()
            raise SwError(exc.sw) from None
        inner = Command(plain.cla, plain.ins, plain.p1, plain.p2, plain.data, plain.le)
        refused = self.card.faults.refusal(inner.ins, inner.p1)
        try:
            if refused is not None:  # the refuse fault: nothing done, a load or
                self.content.reset()  # STORE DATA sequence in progress is abandoned
                raise SwError(refused)
            if inner.ins == apdu.INS_GET_DATA:
                reply = self.get_data(inner, ctx)
            elif inner.ins in CONTENT_INS:
                reply = self.content.dispatch(inner)
            else:
                raise SwError(apdu.SW_INS_NOT_SUPPORTED)
        except SwError as exc:
            reply = Reply(b"", exc.sw)
        wrapped = scp.wrap(ResponseApdu(reply.data, reply.sw))
        return Reply(wrapped.data, wrapped.sw)


def _iso(cmd: Command) -> CommandApdu:
    """The sim's parsed command as the GP library's CommandApdu."""
    return CommandApdu(cmd.cla, cmd.ins, cmd.p1, cmd.p2, cmd.data, cmd.le)
