"""User ID reads: Type C from the tap cache or the card, Type A/D/custom on the card
through the daemon's one PIN guard, each with its revocation status, every one audited.

A Type A, D or custom AP must be configured ([[read.aps]]): its access key, where its PIN
comes from and, for custom APs, where the user ID is. A Type C AP is read without any key;
when it is listed in [[read.aps]] too, the read carries its organisation's revocation
status. No read's audit row holds a PIN or the user ID (D8).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Protocol

from cardapd.config import ApKind, ReadApConfig
from cardapd.domain import IdStatus, OpContext
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
from cardapd.myna.typec import TypeCSession
from cardapd.myna.typed import TypeDSession
from cardapd.myna.userid import DEFAULT_RULE, UserIdRule
from cardapd.mynumber import aid_text
from cardapd.readers.model import CardKind, ReaderView, TapResult
from cardapd.readers.owner import ReaderOwner
from cardapd.reads.model import UserIdRead
from cardapd.reads.revocation import Revocation, StatusView
from cardapd.telemetry.recorder import Recorder
from cardlib.protocol import ApduProtocol

NO_STATUS = StatusView(IdStatus.UNKNOWN, 0, False)
KIND_NAMES = (("A", "type_a"), ("D", "type_d"), ("custom", "custom"))


class ApNotConfigured(CardapError):
    """The AID is not in [[read.aps]]: the gate holds no key or layout for it."""

    reason = "AP_NOT_CONFIGURED"


class Cards(Protocol):
    """What reads need of the readers."""

    async def settle(self, reader: str) -> None:
        """Wait (bounded) for an identification in progress."""
        ...

    def reader_with_card(self, reader: str) -> tuple[ReaderOwner, ReaderView]:
        """The owner and view of the reader holding a card."""
        ...

    def default_type_c(self) -> bytes:
        """The first Type C AID of [tap]."""
        ...

    def remember_tap(self, reader: str, generation: int, tap: TapResult) -> None:
        """Cache a fresh Type C read."""
        ...

    def device_name(self, reader: str) -> str:
        """`reader` as PC/SC named it when it is connected (not free text in audit rows)."""
        ...

    @property
    def tap_aids(self) -> tuple[bytes, ...]:
        """The Type C AIDs read at insertion ([tap] type_c_aids)."""
        ...


class UserIdReads:
    """The configured APs, the one PinGuard every AP PIN goes through, and the reads."""

    def __init__(self, cards: Cards, revocation: Revocation, recorder: Recorder,
                 aps: Sequence[ReadApConfig], floor: int,
                 rules: Mapping[bytes, UserIdRule] | None = None) -> None:
        self.cards = cards
        self.revocation = revocation
        self.recorder = recorder
        self.aps: dict[bytes, ReadApConfig] = {}
        self.rules: dict[bytes, UserIdRule] = {}
        self.guard = PinGuard(floor)
        self.reconfigure(aps, floor, rules)

    def reconfigure(self, aps: Sequence[ReadApConfig], floor: int,
                    rules: Mapping[bytes, UserIdRule] | None = None) -> None:
        """A reloaded configuration (D19): the next read uses the new APs, floor and user
        ID rules."""
        self.aps = {ap.aid: ap for ap in aps}
        self.rules = dict(rules or {})
        self.guard = PinGuard(floor)

    def configured(self, aid: bytes) -> bool:
        """Whether the configuration names AP `aid` (`[[read.aps]]` or `[tap]`)."""
        return aid in self.aps or aid in self.cards.tap_aids

    def known_aid(self, aid: bytes) -> str:
        """`aid` for an audit row: marked as an AID (`aid_text`, D59) when the configuration
        names it; an AID only a client typed stays text the My Number guard checks."""
        return aid_text(aid) if self.configured(aid) else aid.hex().upper()

    def rule(self, aid: bytes) -> UserIdRule:
        """How the user IDs of AP `aid` are accepted (`myna.userid`, D49)."""
        return self.rules.get(aid, DEFAULT_RULE)

    def capabilities(self) -> list[str]:
        """The read kinds this configuration serves (for GetStatus)."""
        kinds = {ap.type for ap in self.aps.values()}
        return ["read_user_id.type_c"] + [f"read_user_id.{name}" for kind, name in KIND_NAMES
                                           if kind in kinds]

    # ------------------------------------------------------------------ configuration

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

    async def status(self, aid: bytes, user_id: str) -> StatusView:
        """The revocation status of a read (NO_STATUS when the AID has no organisation)."""
        ap = self.aps.get(aid)
        if ap is None:
            return NO_STATUS
        return await self.revocation.status(ap.organisation, aid, user_id)

    # ------------------------------------------------------------------ reads

    async def read(self, ctx: OpContext, *, reader: str, kind: ApKind, aid: bytes | None,
                   pin: bytes = b"", fresh: bool = False) -> UserIdRead:
        """Read a user ID with its revocation status (audited); Type C from the tap cache
        unless `fresh`, every other type on the card."""
        if kind == "C":
            return await self._read_type_c(ctx, reader, aid, fresh)
        return await self._read_secure(ctx, reader, kind, aid, pin)

    async def _card(self, reader: str) -> tuple[ReaderOwner, ReaderView]:
        """The reader's identified My Number Card."""
        await self.cards.settle(reader)
        owner, view = self.cards.reader_with_card(reader)
        assert view.card is not None
        if view.card.kind is not CardKind.MY_NUMBER_CARD:
            raise NotMyNumberCard(f"the card in {owner.name!r} is not a My Number Card")
        return owner, view

    async def _read_type_c(self, ctx: OpContext, reader: str, aid: bytes | None,
                           fresh: bool) -> UserIdRead:
        start = time.perf_counter()
        card_id, reader_name = "", self.cards.device_name(reader)
        try:
            target = aid or self.cards.default_type_c()
            ap = self.aps.get(target)
            if ap is not None:
                await self.revocation.precheck(ap.organisation)
            owner, view = await self._card(reader)
            reader_name = owner.name
            assert view.card is not None
            card_id = view.card.card_id
            cached = None if fresh else view.card.tap_for(target)
            if cached is not None and cached.user_id:
                result = UserIdRead(cached.user_id, cached.info, card_id, owner.name, target,
                                    cached=True)
            else:
                generation = owner.generation
                rule = self.rule(target)
                record = await owner.run(
                    lambda p: TypeCSession(p).read(target, cancel=ctx.cancel, rule=rule))
                if owner.generation != generation:
                    raise CardRemoved(f"the card left {owner.name!r} during the read")
                self.cards.remember_tap(owner.name, generation,
                                        TapResult(target, record.user_id, tuple(record.info)))
                result = UserIdRead(record.user_id, tuple(record.info), card_id, owner.name,
                                    target, cached=False)
            st = await self.status(target, result.user_id)
            result = dataclasses.replace(result, status=st.status, feed_age_s=st.feed_age_s,
                                         feed_stale=st.stale, warning=st.warning)
        except CardapError as exc:
            await self.recorder.finish(ctx, "read_user_id", start, exc, reader=reader_name,
                                       card_id=card_id,
                                       detail={"aid": "" if aid is None
                                               else self.known_aid(aid)})
            raise
        await self.recorder.finish(
            ctx, "read_user_id", start, None, reader=reader_name, card_id=card_id,
            detail={"aid": aid_text(result.aid), "cached": result.cached,
                    "status": result.status.value, "feed_age_s": result.feed_age_s,
                    "stale": result.feed_stale})
        return result

    def _on_card(self, proto: ApduProtocol, ap: ReadApConfig, pin: bytes,
                 cancel: threading.Event) -> tuple[str, tuple[bytes, ...]]:
        """The card session (reader thread): (user ID, info fields)."""
        rule = self.rule(ap.aid)
        if ap.type == "custom":
            assert ap.locator is not None
            return CustomApSession(proto).read(ap.aid, ap.locator, cancel, rule).user_id, ()
        assert ap.access_key is not None
        session = TypeASession(proto) if ap.type == "A" else TypeDSession(proto)
        rec = session.read(ap.aid, ap.access_key.value, pin, self.guard, cancel, rule)
        return rec.user_id, (rec.info1, rec.info2)

    async def _read_secure(self, ctx: OpContext, reader: str, kind: ApKind,
                           aid: bytes | None, pin: bytes) -> UserIdRead:
        start = time.perf_counter()
        operation = f"read_user_id_{kind.lower()}"
        detail: dict[str, object] = {"aid": "" if aid is None else self.known_aid(aid),
                                     "type": kind}
        card_id, reader_name = "", self.cards.device_name(reader)
        try:
            ap = self.resolve(kind, aid)
            detail["aid"] = aid_text(ap.aid)
            the_pin = self.pin_for(ap, pin)
            await self.revocation.precheck(ap.organisation)
            owner, view = await self._card(reader)
            reader_name = owner.name
            assert view.card is not None
            card_id = view.card.card_id
            generation = owner.generation
            user_id, info = await owner.run(
                lambda p: self._on_card(p, ap, the_pin, ctx.cancel))
            if owner.generation != generation:
                raise CardRemoved(f"the card left {owner.name!r} during the read")
            st = await self.status(ap.aid, user_id)
        except CardapError as exc:
            if isinstance(exc, PinError) and exc.tries_left is not None:
                detail["tries_left"] = exc.tries_left
            await self.recorder.finish(ctx, operation, start, exc, reader=reader_name,
                                       card_id=card_id, detail=detail)
            raise
        detail.update(status=st.status.value, feed_age_s=st.feed_age_s, stale=st.stale)
        await self.recorder.finish(ctx, operation, start, None, reader=reader_name,
                                   card_id=card_id, detail=detail)
        return UserIdRead(user_id, info, card_id, reader_name, ap.aid, cached=False,
                          status=st.status, feed_age_s=st.feed_age_s, feed_stale=st.stale,
                          warning=st.warning)
