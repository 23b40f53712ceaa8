"""Type A (record) instances: GET CHALLENGE, MUTUAL AUTHENTICATE, VERIFY P2 81, READ RECORD."""

from __future__ import annotations

import hmac
import secrets
from typing import Any, ClassVar

from . import apdu
from .apdu import Command, SwError
from .applet import CardContext, Reply
from .files import PinState
from .loaded import (
    DGI_ACCESS_KEY,
    DGI_PIN,
    DGI_PIN_TRY_LIMIT,
    DGI_USER_DATA,
    LC_PERSONALISED,
    GpInfo,
    GpInstance,
    parse_user_data,
    require_only,
)
from .sm import CHALLENGE_LEN, SmSession, mutual_authenticate

TYPE_A_MODULE_AID = bytes.fromhex("D392F0004F41")
INS_GET_CHALLENGE = 0x84
INS_MUTUAL_AUTHENTICATE = 0x82
INS_READ_RECORD = 0xB2
PIN_REFERENCE = 0x81
INFO_MAX = 118
DEFAULT_PIN_TRIES = 3
SW_AUTH_FAILED = 0x6300
SW_RECORD_NOT_FOUND = 0x6A83


class TypeAApplet(GpInstance):
    """A Type A instance: authenticated, PIN-protected records (user ID, info 1, info 2)."""

    type_code: ClassVar[str] = "A"
    module_aid: ClassVar[bytes] = TYPE_A_MODULE_AID
    install_type: ClassVar[int] = 0x41
    user_tags: ClassVar[tuple[int, int, int]] = (0xC1, 0xC2, 0xC3)

    def __init__(self, aid: bytes, gp: GpInfo, *, user_id: str | None = None,
                 info: tuple[bytes, ...] = (), access_key: bytes | None = None,
                 pin: PinState | None = None) -> None:
        super().__init__(aid)
        self.gp = gp
        self.user_id = user_id
        self.info = info
        self.access_key = access_key
        self.pin = pin
        self.challenge: bytes | None = None
        self.session: SmSession | None = None
        self._layout()

    def _layout(self) -> None:
        """Hook for subclasses that expose the data as a file (Type D)."""

    def reset(self) -> None:
        """Forget the challenge, the session and the verified PIN."""
        super().reset()
        self.challenge = None
        self.session = None

    # --- personalisation and persistence ---------------------------------------------------

    def personalise(self, dgis: dict[int, bytes]) -> None:
        """DGIs 0101 (C1/C2/C3), 8101 access key, 8102 PIN, optional 0103 try limit."""
        require_only(dgis, {DGI_USER_DATA, DGI_ACCESS_KEY, DGI_PIN, DGI_PIN_TRY_LIMIT},
                     {DGI_USER_DATA, DGI_ACCESS_KEY, DGI_PIN})
        uid, infos = parse_user_data(dgis[DGI_USER_DATA], (0xC2, 0xC3), INFO_MAX)
        key = dgis[DGI_ACCESS_KEY]
        pin = dgis[DGI_PIN]
        limit = dgis.get(DGI_PIN_TRY_LIMIT, bytes((DEFAULT_PIN_TRIES,)))
        if (len(key) not in (16, 32) or not 4 <= len(pin) <= 16
                or not all(0x20 < c < 0x7F for c in pin) or len(limit) != 1
                or not 1 <= limit[0] <= 15):
            raise SwError(apdu.SW_WRONG_DATA)
        self.user_id, self.info, self.access_key = uid, infos, key
        self.pin = PinState(pin.decode("ascii"), limit[0], limit[0])
        self.gp.lifecycle = LC_PERSONALISED
        self._layout()

    def to_json(self) -> dict[str, Any]:
        """Type, AID, user ID, info (hex), access key, PIN and counter, GP registry data."""
        return {"type": self.type_code, "aid": self.aid.hex().upper(), "user_id": self.user_id,
                "info": [i.hex().upper() for i in self.info],
                "access_key": None if self.access_key is None else self.access_key.hex().upper(),
                "pin": None if self.pin is None else self.pin.to_json(), **self.gp.to_json()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TypeAApplet:
        """Inverse of to_json."""
        key = d.get("access_key")
        pin = d.get("pin")
        uid = d.get("user_id")
        return cls(bytes.fromhex(d["aid"]), GpInfo.from_json(d),
                   user_id=None if uid is None else str(uid),
                   info=tuple(bytes.fromhex(x) for x in d.get("info") or ()),
                   access_key=None if key is None else bytes.fromhex(key),
                   pin=None if pin is None else PinState.from_json(pin))

    # --- commands ---------------------------------------------------------------------------

    def handle(self, cmd: Command, ctx: CardContext) -> Reply:
        """GET CHALLENGE, MUTUAL AUTHENTICATE, READ RECORD; the rest as any AP."""
        if cmd.ins in (INS_GET_CHALLENGE, INS_MUTUAL_AUTHENTICATE, INS_READ_RECORD):
            if cmd.cla != 0x00:
                raise SwError(apdu.SW_CLA_NOT_SUPPORTED)
            if cmd.ins == INS_GET_CHALLENGE:
                return self.get_challenge(cmd)
            if cmd.ins == INS_MUTUAL_AUTHENTICATE:
                return self.mutual_authenticate(cmd)
            return self.read_record(cmd)
        return super().handle(cmd, ctx)

    def get_challenge(self, cmd: Command) -> Reply:
        """`00 84 00 00 08` → RND.ICC (8 bytes)."""
        if cmd.p1p2 != 0:
            raise SwError(apdu.SW_WRONG_P1P2)
        if cmd.data or cmd.le != CHALLENGE_LEN:
            raise SwError(apdu.SW_WRONG_LENGTH)
        self.require_personalised()
        self.session = None
        self.verified.clear()
        self.challenge = secrets.token_bytes(CHALLENGE_LEN)
        return Reply(self.challenge)

    def mutual_authenticate(self, cmd: Command) -> Reply:
        """`00 82 00 81 20 <cryptogram>` → card cryptogram; 6300 on a wrong key (no counter)."""
        if cmd.p1 != 0x00 or cmd.p2 != 0x81:
            raise SwError(apdu.SW_WRONG_P1P2)
        if len(cmd.data) != 32:
            raise SwError(apdu.SW_WRONG_LENGTH)
        self.require_personalised()
        challenge, self.challenge = self.challenge, None
        self.session = None
        self.verified.clear()
        if challenge is None or self.access_key is None:
            raise SwError(apdu.SW_CONDITIONS_NOT_SATISFIED)
        result = mutual_authenticate(self.access_key, challenge, cmd.data)
        if result is None:
            raise SwError(SW_AUTH_FAILED)
        answer, self.session = result
        return Reply(answer)

    def verify(self, cmd: Command, ctx: CardContext) -> Reply:
        """VERIFY `00 20 00 81` (AP PIN), only after MUTUAL AUTHENTICATE."""
        if cmd.p1 != 0x00 or cmd.p2 != PIN_REFERENCE:
            raise SwError(apdu.SW_WRONG_P1P2)
        if cmd.le is not None:
            raise SwError(apdu.SW_WRONG_LENGTH)
        self.require_personalised()
        if self.session is None or self.pin is None:
            raise SwError(apdu.SW_SECURITY_NOT_SATISFIED)
        return Reply(sw=self.check_pin(cmd.data, ctx))

    def check_pin(self, data: bytes, ctx: CardContext) -> int:
        """The JPKI PIN rules on this instance's PIN; returns the status word."""
        pin = self.pin
        assert pin is not None
        if not data:
            return apdu.SW_PIN_BLOCKED if pin.tries == 0 else 0x63C0 | pin.tries
        if pin.tries == 0:
            return apdu.SW_PIN_BLOCKED_VERIFY
        if hmac.compare_digest(data, pin.value.encode("ascii")):
            if pin.tries != pin.max_tries:
                pin.tries = pin.max_tries
                ctx.state_changed()
            self.verified.add(PIN_REFERENCE)
            return apdu.SW_OK
        pin.tries -= 1
        self.verified.discard(PIN_REFERENCE)
        ctx.state_changed()
        return 0x63C0 | pin.tries

    def records(self) -> list[bytes]:
        """Records 1-3: `C1 0D uid`, `C2 len info1`, `C3 len info2`."""
        values = [(self.user_id or "").encode("ascii"), *self.info]
        return [bytes((tag, len(v))) + v for tag, v in zip(self.user_tags, values, strict=True)]

    def read_record(self, cmd: Command) -> Reply:
        """`00 B2 0n 04 00`: n = 1 user ID, 2 info 1, 3 info 2; 6982 before the PIN."""
        if cmd.p2 != 0x04:
            raise SwError(apdu.SW_WRONG_P1P2)
        if cmd.data:
            raise SwError(apdu.SW_WRONG_LENGTH)
        self.require_personalised()
        if self.session is None or PIN_REFERENCE not in self.verified:
            raise SwError(apdu.SW_SECURITY_NOT_SATISFIED)
        if not 1 <= cmd.p1 <= 3:
            raise SwError(SW_RECORD_NOT_FOUND)
        return Reply(self.records()[cmd.p1 - 1])
