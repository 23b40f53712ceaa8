"""User ID reads of Type A, Type D and custom APs on the reader's thread, through one PinGuard.

The AP must be configured ([[read.aps]]): its access key, where its PIN comes from and, for
custom APs, where the user ID is. Every read (success or failure) is audited without the
PIN; a successful one carries the revocation status and the feed's age.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cardapd.config import ApKind, ReadApConfig
from cardapd.engine.model import CardKind, OpContext, UserIdRead
from cardapd.engine.revocation import StatusView
from cardapd.engine.revocation_store import IdStatus
from cardapd.errors import (
    CardapError,
    CardRemoved,
    InvalidArgument,
    NotMyNumberCard,
    PinError,
)
from cardapd.myna.custom import CustomApSession
from cardapd.myna.pin_guard import PinGuard
from cardapd.myna.typea import TypeASession
from cardapd.myna.typed import TypeDSession
from cardlib.protocol import ApduProtocol

if TYPE_CHECKING:
    from cardapd.engine.engine import Engine

NO_STATUS = StatusView(IdStatus.UNKNOWN, 0, False)


class ApNotConfigured(CardapError):
    """The AID is not in [[read.aps]]: the gate holds no key or layout for it."""

    reason = "AP_NOT_CONFIGURED"


class SecureReads:
    """The configured APs, the one PinGuard every AP PIN goes through, and the read flow."""

    def __init__(self, engine: Engine, aps: Sequence[ReadApConfig], floor: int) -> None:
        self.engine = engine
        self.aps: dict[bytes, ReadApConfig] = {ap.aid: ap for ap in aps}
        self.guard = PinGuard(floor)

    def config_for(self, aid: bytes) -> ReadApConfig | None:
        """The configuration of `aid` (any type), if any."""
        return self.aps.get(aid)

    def resolve(self, kind: ApKind, aid: bytes | None) -> ReadApConfig:
        """The configured AP to read: by AID, or the only one of `kind`."""
        if aid is None:
            of_kind = [ap for ap in self.aps.values() if ap.type == kind]
            if len(of_kind) != 1:
                raise InvalidArgument(f"aid: name the Type {kind} AP to read "
                                      f"({len(of_kind)} configured)", reason="AID_REQUIRED",
                                      metadata={"field": "aid"})
            return of_kind[0]
        ap = self.aps.get(aid)
        if ap is None:
            raise ApNotConfigured(f"AP {aid.hex().upper()} is not configured for reading "
                                  "([[read.aps]])", metadata={"aid": aid.hex().upper()})
        if ap.type != kind:
            raise InvalidArgument(f"type: AP {aid.hex().upper()} is configured as Type "
                                  f"{ap.type}, not {kind}", reason="AP_TYPE_MISMATCH",
                                  metadata={"field": "type"})
        return ap

    @staticmethod
    def pin_for(ap: ReadApConfig, caller_pin: bytes) -> bytes:
        """The PIN to present: the configured system PIN, or the caller's."""
        if ap.pin == "caller":
            if not caller_pin:
                raise InvalidArgument("pin: this AP's PIN is the caller's; send it",
                                      reason="PIN_REQUIRED", metadata={"field": "pin"})
            return caller_pin
        if caller_pin:
            raise InvalidArgument("pin: this AP is read without a caller PIN; send none",
                                  metadata={"field": "pin"})
        return ap.pin_secret.value if ap.pin_secret is not None else b""

    def on_card(self, proto: ApduProtocol, ap: ReadApConfig, pin: bytes,
                cancel: threading.Event | None) -> tuple[str, tuple[bytes, ...]]:
        """The card session (reader thread): (user ID, info fields)."""
        if ap.type == "custom":
            assert ap.locator is not None
            return CustomApSession(proto).read(ap.aid, ap.locator, cancel).user_id, ()
        assert ap.access_key is not None
        session = TypeASession(proto) if ap.type == "A" else TypeDSession(proto)
        rec = session.read(ap.aid, ap.access_key.value, pin, self.guard, cancel)
        return rec.user_id, (rec.info1, rec.info2)

    async def status(self, aid: bytes, user_id: str) -> StatusView:
        """The revocation status of a read (NO_STATUS when the AID has no organisation)."""
        ap = self.aps.get(aid)
        rev = self.engine.revocation
        if ap is None or rev is None:
            return NO_STATUS
        return await rev.status(ap.organisation, aid, user_id)

    async def read(self, ctx: OpContext, *, reader: str, kind: ApKind, aid: bytes | None,
                   pin: bytes, cancel: threading.Event | None) -> UserIdRead:
        """Read a Type A/D/custom user ID now, with its revocation status (audited)."""
        engine = self.engine
        start = time.perf_counter()
        operation = f"read_user_id_{kind.lower()}"
        detail: dict[str, object] = {"aid": (aid or b"").hex().upper(), "type": kind}
        card_id, reader_name = "", reader
        try:
            ap = self.resolve(kind, aid)
            detail["aid"] = ap.aid.hex().upper()
            the_pin = self.pin_for(ap, pin)
            if engine.revocation is not None:
                await engine.revocation.precheck(ap.organisation)
            await engine.settle(reader)
            owner, view = engine.reader_with_card(reader)
            reader_name = owner.name
            assert view.card is not None
            card_id = view.card.card_id
            if view.card.kind is not CardKind.MY_NUMBER_CARD:
                raise NotMyNumberCard(f"the card in {owner.name!r} is not a My Number Card")
            generation = owner.generation
            user_id, info = await owner.run(lambda p: self.on_card(p, ap, the_pin, cancel))
            if owner.generation != generation:
                raise CardRemoved(f"the card left {owner.name!r} during the read")
            st = await self.status(ap.aid, user_id)
        except CardapError as exc:
            if isinstance(exc, PinError) and exc.tries_left is not None:
                detail["tries_left"] = exc.tries_left
            await engine.finish(ctx, operation, start, exc, reader=reader_name,
                                card_id=card_id, detail=detail)
            raise
        detail.update(status=st.status.value, feed_age_s=st.feed_age_s, stale=st.stale)
        await engine.finish(ctx, operation, start, None, reader=reader_name, card_id=card_id,
                            detail=detail)
        return UserIdRead(user_id, info, card_id, reader_name, ap.aid, cached=False,
                          status=st.status, feed_age_s=st.feed_age_s, feed_stale=st.stale,
                          warning=st.warning)
