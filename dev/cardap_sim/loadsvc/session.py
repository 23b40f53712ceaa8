"""The card session engine (pure, no gRPC): SessionOpen in, APDU batches out, SessionDone last.

A load costs at most 4 round trips whatever the image size:
1. probe: SELECT ISD, GET DATA CPLC / 9F65 / FF21, INITIALIZE UPDATE (plain);
2. load: EXTERNAL AUTHENTICATE, GET STATUS 20/40, INSTALL [for load], every LOAD block,
   INSTALL [for install], STORE DATA, GET DATA FF21 - all wrapped ahead (split mode);
3./4. only after a failure: SELECT ISD + INITIALIZE UPDATE, then EXTERNAL AUTHENTICATE +
   DELETE of our load file (cleanup) - or DELETE + the whole load again when a stale,
   half-loaded copy of the file was found.
The terminal stops a batch at the first unexpected status word and returns what ran;
responses are unwrapped (R-MAC checked) in order. Billing happens only once the card
confirmed the last STORE DATA (or a reconcile found the instance personalised).
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cardap_sim.loadsvc.billing import Billing
from cardap_sim.loadsvc.catalogue import ApType, Catalogue, CatalogueAp
from cardap_sim.loadsvc.hours import Clock, ServiceHours
from cardap_sim.loadsvc.issuer import Issued, Issuer, JournalConflict, UserIdTaken
from cardap_sim.loadsvc.keystore import ApSecrets
from cardlib.apdu import CommandApdu, ResponseApdu, parse_response
from cardlib.errors import (
    CardAuthenticationError,
    CardLibError,
    CardProtocolError,
    SecureChannelError,
    StatusWordError,
)
from cardlib.gp import commands as gpc
from cardlib.gp.keys import KeyStore
from cardlib.gp.primitives import pad80
from cardlib.gp.registry import RegistryEntry, Scope, get_status, parse_get_status
from cardlib.gp.scp03 import FULL_SECURITY, Scp03Session
from cardlib.tlv import Tlv, encode_tlv, parse_all

log = logging.getLogger("cardap_sim.loadsvc.session")

ISD_AID = bytes.fromhex("A000000151000000")
SW_OK = 0x9000
SW_MORE = 0x6310
SW_NOT_FOUND = 0x6A88
SW_EXISTS = 0x6985
SW_FULL = 0x6A84
SW_INSTANCE_EXISTS = 0x6A89
LC_PERSONALISED = 0x0F
LF_LOADED = 0x01
TAG_CPLC = 0x9F7F
TAG_MAX_DATA = 0x9F65
TAG_FREE_SPACE = 0xFF21
DGI_USER_DATA = 0x0101
DGI_ACCESS_KEY = 0x8101
DGI_PIN = 0x8102
DGI_PIN_TRY_LIMIT = 0x0103
# STORE DATA P1 for blocks carrying DGIs encrypted under the DEK (model: bits 6-5 = 01).
STORE_ENCRYPTED = gpc.StoreDataOptions(gpc.StoreDataStructure.DGI,
                                       gpc.StoreDataEncryption.APPLICATION_DEPENDENT)
STORE_PLAIN = gpc.StoreDataOptions(gpc.StoreDataStructure.DGI, gpc.StoreDataEncryption.NONE)
INFO_TAGS = {ApType.C: (0xC2, 0xC3, 0xC4), ApType.A: (0xC2, 0xC3), ApType.D: (0xC2, 0xC3),
             ApType.CUSTOM: (0xC2, 0xC3, 0xC4)}
ACTIONS = ("load", "delete", "reconcile")


class Reason(enum.StrEnum):
    """Stable reasons of SessionDone (never renamed once published)."""

    LOADED = "LOADED"
    DELETED = "DELETED"
    ALREADY_ABSENT = "ALREADY_ABSENT"
    RECONCILED = "RECONCILED"
    NOTHING_TO_RECONCILE = "NOTHING_TO_RECONCILE"
    CARD_FULL = "CARD_FULL"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    NOT_PERMITTED = "NOT_PERMITTED"
    OUTSIDE_SERVICE_HOURS = "OUTSIDE_SERVICE_HOURS"
    CARD_AUTH_FAILED = "CARD_AUTH_FAILED"
    CARD_MISMATCH = "CARD_MISMATCH"
    UNSUPPORTED_CARD = "UNSUPPORTED_CARD"
    UNKNOWN_AP = "UNKNOWN_AP"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    CARD_REMOVED = "CARD_REMOVED"
    CARD_REJECTED = "CARD_REJECTED"
    PROTOCOL_ERROR = "PROTOCOL_ERROR"
    INTERNAL = "INTERNAL"


class Phase(enum.IntEnum):
    """Progress phase hint (values of the proto's LoadPhaseHint)."""

    UNSPECIFIED = 0
    SECURE_CHANNEL = 1
    LOADING = 2
    INSTALLING = 3
    PERSONALISING = 4


@dataclass(frozen=True)
class CardProfile:
    """What the service must know of a vendor beyond what the card reports."""

    name: str
    get_status_tlv: bool


# Keyed by CPLC IC fabricator (data, like the daemon's profiles.toml).
CARD_PROFILES = {"4790": CardProfile("vendor-a", True), "4250": CardProfile("vendor-b", False)}


@dataclass(frozen=True)
class SessionRequest:
    """The terminal's SessionOpen; `organisation` is the one it acts for (checked: its
    certificate's, or one the catalogue lets the terminal serve)."""

    organisation: str
    action: str
    operator_id: str = ""
    ap_id: str = ""
    aid: str = ""
    card_id: str = ""
    profile: str = ""
    journal_id: str = ""
    custom_user_id: str = ""
    terminal_id: str = ""
    delete_reason: str = ""


@dataclass(frozen=True)
class PlannedApdu:
    """One APDU of a batch: the bytes to send and the status words that let the batch go on."""

    command: bytes
    expect_sw: tuple[int, ...] = (SW_OK,)
    sensitive: bool = False


@dataclass(frozen=True)
class Batch:
    """An ApduBatch: what the terminal runs next."""

    batch_id: int
    apdus: tuple[PlannedApdu, ...]
    phase: Phase
    percent: int
    step: str


@dataclass(frozen=True)
class BatchAnswer:
    """A BatchResult: the raw responses of the APDUs that ran, in order."""

    batch_id: int
    responses: tuple[bytes, ...]
    complete: bool = True
    transport_error: str = ""


@dataclass(frozen=True)
class Done:
    """SessionDone."""

    ok: bool
    reason: Reason
    message: str
    aid: str = ""
    user_id: str = ""
    free_bytes: int | None = None
    card_id: str = ""
    next_opening: dt.datetime | None = None
    round_trips: int = 0
    billed: bool = False
    profile: str = ""
    needed_bytes: int = 0


@dataclass
class SessionStats:
    """What a session cost on the link (for tests and benchmarks)."""

    round_trips: int = 0
    apdus: int = 0
    bytes_to_card: int = 0
    load_commands: int = 0
    load_wire_bytes: int = 0
    load_file_bytes: int = 0
    block_size: int = 0
    max_command_data: int = 0


class ServiceKeys(KeyStore, Protocol):
    """The key store the engine needs: card keys plus AP secrets."""

    def ap_secrets(self, ref: str) -> ApSecrets:
        """The access key and PIN named `ref`."""
        ...


@dataclass
class ServiceCore:
    """Everything a card session needs from the service (no gRPC)."""

    catalogue: Catalogue
    keys: ServiceKeys
    issuer: Issuer
    billing: Billing
    clock: Clock
    hours: ServiceHours = field(default_factory=ServiceHours)
    level: int = int(FULL_SECURITY)


class SessionFailed(Exception):
    """Ends the flow with a Done (raised inside the engine only)."""

    def __init__(self, done: Done) -> None:
        super().__init__(done.reason)
        self.done = done


@dataclass
class _Ran:
    """Unwrapped responses of a batch; `failed` is the index of the unexpected answer."""

    responses: list[ResponseApdu]
    failed: int | None

    @property
    def complete(self) -> bool:
        """Every APDU ran with an expected status word."""
        return self.failed is None

    def sw_at(self, i: int) -> int | None:
        """Status word of APDU `i`, None when it did not run."""
        return self.responses[i].sw if i < len(self.responses) else None


@dataclass
class _Card:
    """What the probe learned about the card."""

    card_id: str
    profile: CardProfile
    max_command_data: int = 0
    free: dict[str, tuple[int, int]] = field(default_factory=dict)  # area AID hex -> cap, used


Flow = Generator[Batch, BatchAnswer, Done]


class CardSession:
    """One card session: `start()` then `answer()` each batch until a Done comes back."""

    def __init__(self, core: ServiceCore, request: SessionRequest) -> None:
        self.core = core
        self.req = request
        self.stats = SessionStats()
        self._batch_id = 0
        self._last: Batch | None = None
        self._scp: Scp03Session | None = None
        self._card: _Card | None = None
        self._flow = self._main()
        self.done: Done | None = None

    # --- driving -------------------------------------------------------------------------

    def start(self) -> Batch | Done:
        """The first batch (or a Done when the session is refused before touching the card)."""
        return self._step(None)

    def answer(self, ans: BatchAnswer) -> Batch | Done:
        """Consume the terminal's result of the last batch; the next batch or the Done."""
        if self.done is not None:
            raise RuntimeError("the session is over")
        return self._step(ans)

    def abort(self, reason: Reason, message: str) -> Done:
        """End the session from outside (terminal gone, malformed stream)."""
        self._flow.close()
        return self._finish(Done(False, reason, message))

    def _step(self, ans: BatchAnswer | None) -> Batch | Done:
        """Advance the flow one batch; every failure becomes a Done."""
        try:
            batch = next(self._flow) if ans is None else self._flow.send(ans)
        except StopIteration as stop:
            return self._finish(stop.value)
        except SessionFailed as exc:
            return self._finish(exc.done)
        except CardAuthenticationError as exc:
            return self._finish(self._fail(Reason.CARD_AUTH_FAILED, exc.message))
        except SecureChannelError as exc:
            return self._finish(self._fail(Reason.CARD_AUTH_FAILED, exc.message))
        except CardProtocolError as exc:
            return self._finish(self._fail(Reason.PROTOCOL_ERROR, exc.message))
        except CardLibError as exc:
            return self._finish(self._fail(Reason.CARD_REJECTED, exc.message))
        except Exception:
            log.exception("card session failed", extra=self._log_fields())
            return self._finish(self._fail(Reason.INTERNAL, "internal error in the service"))
        self._last = batch
        return batch

    def _finish(self, done: Done) -> Done:
        """Stamp the Done with the session's facts and log it."""
        card = self._card
        done = Done(**{**done.__dict__, "round_trips": self.stats.round_trips,
                       "card_id": done.card_id or (card.card_id if card else ""),
                       "profile": done.profile or (card.profile.name if card else "")})
        self.done = done
        if self._scp is not None:
            self._scp.close()
        log.info("card session done: %s %s", done.reason, "ok" if done.ok else "failed",
                 extra={**self._log_fields(), "reason": str(done.reason),
                        "round_trips": done.round_trips, "billed": done.billed})
        return done

    def _log_fields(self) -> dict[str, object]:
        """Structured log fields (never keys, PINs or APDU payloads)."""
        return {"organisation": self.req.organisation, "terminal": self.req.terminal_id,
                "action": self.req.action, "ap_id": self.req.ap_id,
                "delete_reason": self.req.delete_reason,
                "journal_id": self.req.journal_id,
                "card_id": self._card.card_id if self._card else self.req.card_id}

    def _fail(self, reason: Reason, message: str, **kw: object) -> Done:
        """A failed Done."""
        return Done(False, reason, message, **kw)  # type: ignore[arg-type]

    # --- batches ------------------------------------------------------------------------

    def _batch(self, step: str, phase: Phase, percent: int,
               apdus: Sequence[PlannedApdu]) -> Generator[Batch, BatchAnswer, _Ran]:
        """Yield one batch, check the answer and return the raw responses (not unwrapped)."""
        self._batch_id += 1
        batch = Batch(self._batch_id, tuple(apdus), phase, percent, step)
        self.stats.round_trips += 1
        self.stats.apdus += len(apdus)
        self.stats.bytes_to_card += sum(len(a.command) for a in apdus)
        ans = yield batch
        if ans.batch_id != batch.batch_id:
            raise CardProtocolError(f"answer to batch {ans.batch_id}, expected {batch.batch_id}")
        if ans.transport_error:
            raise SessionFailed(self._fail(Reason.CARD_REMOVED,
                                           f"the terminal lost the card: {ans.transport_error}"))
        if len(ans.responses) > len(apdus):
            raise CardProtocolError("more responses than commands")
        responses = [parse_response(r) for r in ans.responses]
        failed: int | None = None
        for i, (resp, planned) in enumerate(zip(responses, apdus, strict=False)):
            if resp.sw not in planned.expect_sw:
                failed = i
                break
        if failed is not None and failed != len(responses) - 1:
            raise CardProtocolError("the terminal went on after an unexpected status word")
        if failed is None and len(responses) != len(apdus):
            raise CardProtocolError("the terminal stopped a batch on an expected status word")
        log.info("batch %d (%s): %d/%d APDUs%s", batch.batch_id, step, len(responses),
                 len(apdus), "" if failed is None else
                 f", stopped on {responses[failed].sw:04X}", extra=self._log_fields())
        return _Ran(responses, failed)

    def _secure(self, step: str, phase: Phase, percent: int, ext_auth: CommandApdu,
                commands: Sequence[tuple[CommandApdu, tuple[int, ...], bool]]
                ) -> Generator[Batch, BatchAnswer, _Ran]:
        """EXTERNAL AUTHENTICATE then `commands` wrapped ahead; responses unwrapped in order."""
        scp = self._require_scp()
        planned = [PlannedApdu(ext_auth.encode())]
        for cmd, expect, sensitive in commands:
            planned.append(PlannedApdu(scp.wrap(cmd).encode(), expect, sensitive))
        ran = yield from self._batch(step, phase, percent, planned)
        if not ran.responses:
            raise CardProtocolError("no answer to EXTERNAL AUTHENTICATE")
        try:
            scp.confirm(ran.responses[0])
        except StatusWordError as exc:
            raise SessionFailed(self._fail(
                Reason.CARD_AUTH_FAILED, f"the card refused EXTERNAL AUTHENTICATE ({exc.sw:04X})"
            )) from None
        out = [ran.responses[0]] + [scp.unwrap(r) for r in ran.responses[1:]]
        if not ran.complete:
            scp.close()  # commands wrapped but not sent: the MAC chain is out of step
            self._scp = None
        return _Ran(out, ran.failed)

    def _require_scp(self) -> Scp03Session:
        """The open secure channel."""
        if self._scp is None:
            raise SecureChannelError("no secure channel is open")
        return self._scp

    # --- probe ----------------------------------------------------------------------------

    def _probe(self, *, full: bool) -> Generator[Batch, BatchAnswer, CommandApdu]:
        """Batch 1: SELECT ISD, CPLC, (9F65, FF21,) INITIALIZE UPDATE; returns EXT AUTH.

        The CPLC is optional (`6A 88`: a card presented contactless, or one that never
        gives it): the card's identity and vendor then come from the key diversification
        data of INITIALIZE UPDATE, which every card answers (docs/card-model.md)."""
        scp = Scp03Session(self.core.keys, level=self.core.level, isd_aid=ISD_AID)
        planned = [PlannedApdu(gpc.select(ISD_AID).encode()),
                   PlannedApdu(gpc.get_data(TAG_CPLC).encode(), (SW_OK, SW_NOT_FOUND))]
        if full:
            planned += [PlannedApdu(gpc.get_data(TAG_MAX_DATA).encode()),
                        PlannedApdu(gpc.get_data(TAG_FREE_SPACE).encode())]
        planned.append(PlannedApdu(scp.begin().encode()))
        ran = yield from self._batch("probe", Phase.SECURE_CHANNEL, 10, planned)
        if not ran.complete:
            idx = ran.failed or 0
            sw = ran.responses[idx].sw
            if idx <= 1:
                raise SessionFailed(self._fail(Reason.UNSUPPORTED_CARD,
                                               f"not a card this service can load ({sw:04X})"))
            raise SessionFailed(self._fail(Reason.CARD_REJECTED,
                                           f"the card answered {sw:04X} while probing"))
        cplc = ran.responses[1]
        self._card = self._identify(cplc.data if cplc.sw == SW_OK else None,
                                    ran.responses[-1].data)
        if full:
            self._card.max_command_data = _parse_max_data(ran.responses[2].data)
            self._card.free = parse_free_space(ran.responses[3].data)
        self._scp = scp
        return scp.open(ran.responses[-1])

    def _reopen(self, step: str) -> Generator[Batch, BatchAnswer, CommandApdu]:
        """A fresh secure channel after a stopped batch: SELECT ISD + INITIALIZE UPDATE."""
        scp = Scp03Session(self.core.keys, level=self.core.level, isd_aid=ISD_AID)
        ran = yield from self._batch(step, Phase.SECURE_CHANNEL, 50,
                                     [PlannedApdu(gpc.select(ISD_AID).encode()),
                                      PlannedApdu(scp.begin().encode())])
        if not ran.complete:
            sw = ran.responses[-1].sw
            raise SessionFailed(self._fail(Reason.CARD_REJECTED,
                                           f"the card answered {sw:04X} on reopening"))
        self._scp = scp
        return scp.open(ran.responses[-1])

    def _identify(self, cplc: bytes | None, init_update: bytes) -> _Card:
        """The service's own card id `<IC fabricator>-<IC serial>` and the vendor profile,
        from the CPLC or else from the KDD (fabricator 2, serial 4, batch 2, 00 00).

        The terminal's SessionOpen.card_id is its own opaque (keyed-hash) name for the card
        and is only recorded: the service cannot and does not compare it."""
        if cplc is not None:
            if len(cplc) != 45 or cplc[:3] != b"\x9f\x7f\x2a":
                raise CardProtocolError("CPLC answer is not 9F7F 2A + 42 bytes")
            fab, serial = cplc[3:5], cplc[15:19]
        else:
            if len(init_update) < 10:
                raise CardProtocolError("INITIALIZE UPDATE answer is shorter than its KDD")
            fab, serial = init_update[0:2], init_update[2:6]
        card_id = f"{fab.hex().upper()}-{serial.hex().upper()}"
        profile = CARD_PROFILES.get(fab.hex().upper())
        if profile is None:
            raise SessionFailed(self._fail(Reason.UNSUPPORTED_CARD,
                                           f"unknown IC fabricator {fab.hex().upper()}",
                                           card_id=card_id))
        return _Card(card_id, profile)

    # --- the flows --------------------------------------------------------------------------

    def _main(self) -> Flow:
        """Check the request, then run the action's flow."""
        req = self.req
        if req.action not in ACTIONS:
            return self._fail(Reason.INVALID_ARGUMENT, f"unknown action {req.action!r}")
        now = self.core.clock.now()
        if not self.core.hours.is_open(now):
            nxt = self.core.hours.next_opening(now)
            return self._fail(Reason.OUTSIDE_SERVICE_HOURS,
                              f"the loading service is closed; it opens at {nxt.isoformat()}",
                              next_opening=nxt)
        ap = self._resolve_ap()
        if req.action == "load":
            return (yield from self._load(ap))
        if req.action == "delete":
            return (yield from self._delete(ap))
        return (yield from self._reconcile(ap))

    def _resolve_ap(self) -> CatalogueAp:
        """The catalogue AP of the request, checked against the organisation's permissions."""
        cat, req = self.core.catalogue, self.req
        ap: CatalogueAp | None
        if req.ap_id:
            ap = cat.aps.get(req.ap_id)
        elif req.aid and req.action != "load":
            try:
                ap = cat.by_instance_aid(bytes.fromhex(req.aid))
            except ValueError:
                raise SessionFailed(self._fail(Reason.INVALID_ARGUMENT,
                                               "aid is not hex")) from None
        else:
            raise SessionFailed(self._fail(Reason.INVALID_ARGUMENT, "ap_id is required"))
        if ap is None:
            raise SessionFailed(self._fail(Reason.UNKNOWN_AP, "no such AP in the catalogue"))
        if req.aid and bytes.fromhex(req.aid) != ap.instance_aid:
            raise SessionFailed(self._fail(Reason.INVALID_ARGUMENT,
                                           "aid does not match the AP's instance AID"))
        if not cat.permitted(req.organisation, ap.ap_id):
            raise SessionFailed(self._fail(Reason.NOT_PERMITTED,
                                           f"organisation {req.organisation} may not load or "
                                           f"delete {ap.ap_id}", aid=ap.instance_aid.hex().upper()))
        if req.action == "load" and not req.journal_id:
            raise SessionFailed(self._fail(Reason.INVALID_ARGUMENT, "journal_id is required"))
        if req.action == "load" and (ap.type is ApType.CUSTOM) != bool(req.custom_user_id):
            raise SessionFailed(self._fail(
                Reason.INVALID_ARGUMENT, "custom_user_id is required for custom APs and "
                "refused for the standard types"))
        return ap

    def _status_commands(self, ap: CatalogueAp) -> list[tuple[CommandApdu, tuple[int, ...], bool]]:
        """GET STATUS of our load file (P1 20) and instance (P1 40), in the vendor's form."""
        card = self._require_card()
        tlv = card.profile.get_status_tlv
        expect = (SW_OK, SW_MORE, SW_NOT_FOUND)
        return [(get_status(Scope.LOAD_FILES, tlv=tlv, aid_prefix=ap.load_file_aid), expect,
                 False),
                (get_status(Scope.APPLICATIONS, tlv=tlv, aid_prefix=ap.instance_aid), expect,
                 False)]

    def _registry(self, ran: _Ran, first: int, ap: CatalogueAp
                  ) -> tuple[RegistryEntry | None, RegistryEntry | None]:
        """Our load file and instance entries from the two GET STATUS answers at `first`."""
        tlv = self._require_card().profile.get_status_tlv
        out: list[RegistryEntry | None] = []
        for offset, scope, aid in ((0, Scope.LOAD_FILES, ap.load_file_aid),
                                   (1, Scope.APPLICATIONS, ap.instance_aid)):
            resp = ran.responses[first + offset]
            entries = [] if resp.sw == SW_NOT_FOUND else parse_get_status(scope, resp.data,
                                                                          tlv=tlv)
            out.append(next((e for e in entries if e.aid == aid), None))
        return out[0], out[1]

    def _require_card(self) -> _Card:
        """The probed card."""
        if self._card is None:
            raise RuntimeError("no card probed yet")
        return self._card

    def _free_after(self, ran: _Ran, ap: CatalogueAp) -> int | None:
        """Free bytes of the AP's area from a final GET DATA FF21, when it ran."""
        resp = ran.responses[-1]
        if not ran.complete or not resp.data:
            return None
        area = parse_free_space(resp.data).get(ap.sd_aid.hex().upper())
        return None if area is None else max(area[0] - area[1], 0)

    def _plan_load(self, ap: CatalogueAp, image: bytes, user_id: str
                   ) -> list[tuple[CommandApdu, tuple[int, ...], bool]]:
        """INSTALL [for load], LOAD blocks, INSTALL [for install], STORE DATA, GET DATA FF21."""
        card = self._require_card()
        scp = self._require_scp()
        block = gpc.max_block_size(card.max_command_data, scp.level)
        load_file = gpc.load_file_data_block(image)
        loads = gpc.load_commands(load_file, block)
        self.stats.block_size = block
        self.stats.max_command_data = card.max_command_data
        self.stats.load_commands = len(loads)
        self.stats.load_file_bytes = len(load_file)
        self.stats.load_wire_bytes = gpc.bytes_sent(loads, scp.level)
        install = gpc.install_for_install(
            ap.load_file_aid, ap.module_aid, ap.instance_aid,
            parameters=gpc.install_parameters(bytes((ap.type.install_code,))))
        cmds: list[tuple[CommandApdu, tuple[int, ...], bool]] = [
            (gpc.install_for_load(ap.load_file_aid, ap.sd_aid), (SW_OK,), False)]
        cmds += [(c, (SW_OK,), False) for c in loads]
        cmds.append((install, (SW_OK,), False))
        cmds += [(c, (SW_OK,), True) for c in self._store_data(ap, user_id, block)]
        cmds.append((gpc.get_data(TAG_FREE_SPACE), (SW_OK,), False))
        return cmds

    def _store_data(self, ap: CatalogueAp, user_id: str, block: int) -> list[CommandApdu]:
        """STORE DATA: DGI 0101 (user ID + info) [+ 0103, 8101/8102 encrypted under the DEK].

        One DGI stream split into blocks; when any DGI is encrypted every block says so
        (the card decrypts only the 8xxx DGIs). Encrypted values are pad80'ed first.
        """
        tags = INFO_TAGS[ap.type]
        user_data = encode_tlv(0xC1, user_id.encode("ascii")) + b"".join(
            encode_tlv(tag, _fixed_info(ap, value))
            for tag, value in zip(tags, ap.info, strict=False))
        stream = gpc.dgi(DGI_USER_DATA, user_data)
        options = STORE_PLAIN
        if ap.type.needs_access_key:
            secrets = self.core.keys.ap_secrets(ap.access_key_ref)
            scp = self._require_scp()
            stream += (gpc.dgi(DGI_PIN_TRY_LIMIT, bytes((ap.pin_try_limit,)))
                       + gpc.dgi(DGI_ACCESS_KEY, scp.encrypt_sensitive(pad80(secrets.access_key)))
                       + gpc.dgi(DGI_PIN, scp.encrypt_sensitive(pad80(secrets.pin.encode()))))
            options = STORE_ENCRYPTED
        return gpc.store_data_commands(stream, block, options=options)

    def _load(self, ap: CatalogueAp) -> Flow:
        """Load `ap`: probe, then one batch with everything; cleanup/retry within 4 trips."""
        ext_auth = yield from self._probe(full=True)
        card = self._require_card()
        aid_hex = ap.instance_aid.hex().upper()
        if card.profile.name not in ap.image_bytes:
            return self._fail(Reason.UNSUPPORTED_CARD,
                              f"no image of {ap.ap_id} for {card.profile.name}", aid=aid_hex)
        image = ap.image(card.profile.name)
        cap_used = card.free.get(ap.sd_aid.hex().upper())
        if cap_used is not None and cap_used[0] - cap_used[1] < len(image):
            return self._fail(Reason.CARD_FULL, f"the {ap.area} area has "
                              f"{cap_used[0] - cap_used[1]} bytes free, the AP needs "
                              f"{len(image)}", aid=aid_hex,
                              free_bytes=cap_used[0] - cap_used[1], needed_bytes=len(image))
        try:
            issued = self.core.issuer.issue(
                organisation=self.req.organisation, ap_id=ap.ap_id, card_id=card.card_id,
                journal_id=self.req.journal_id, custom_user_id=self.req.custom_user_id or None)
        except (JournalConflict, UserIdTaken, ValueError) as exc:
            return self._fail(Reason.INVALID_ARGUMENT, str(exc), aid=aid_hex)
        status = self._status_commands(ap)
        ran = yield from self._secure("load", Phase.LOADING, 90, ext_auth,
                                      status + self._plan_load(ap, image, issued.user_id))
        if ran.complete:
            return self._loaded(ap, issued.user_id, self._free_after(ran, ap))
        return (yield from self._load_failed(ap, image, issued, ran))

    def _loaded(self, ap: CatalogueAp, user_id: str, free: int | None) -> Done:
        """The card confirmed the last STORE DATA: bill (once per journal id) and report."""
        billed = self.core.billing.record(
            organisation=self.req.organisation, journal_id=self.req.journal_id, ap_id=ap.ap_id,
            card_id=self._require_card().card_id, operator_id=self.req.operator_id,
            at=self.core.clock.now())
        return Done(True, Reason.LOADED, f"{ap.ap_id} loaded", aid=ap.instance_aid.hex().upper(),
                    user_id=user_id, free_bytes=free, billed=billed)

    def _load_failed(self, ap: CatalogueAp, image: bytes, issued: Issued, ran: _Ran) -> Flow:
        """Decide after a stopped load batch: report, clean up, or delete a stale copy and retry."""
        aid_hex = ap.instance_aid.hex().upper()
        user_id = issued.user_id
        failed = ran.failed if ran.failed is not None else 0
        sw = ran.responses[failed].sw
        install_load_at = 3  # EXT AUTH, GET STATUS 20, GET STATUS 40, INSTALL [for load]
        install_at = install_load_at + self.stats.load_commands + 1
        if failed < install_load_at:
            return self._fail(Reason.CARD_REJECTED, f"GET STATUS answered {sw:04X}", aid=aid_hex)
        lf, inst = self._registry(ran, 1, ap)
        if failed == install_load_at and sw == SW_EXISTS:
            if lf is not None and lf.lifecycle == LF_LOADED and inst is not None \
                    and inst.lifecycle == LC_PERSONALISED:
                if not issued.new:  # a retry of a load the card completed: same user ID
                    return self._loaded(ap, user_id, None)
                return self._fail(Reason.ALREADY_EXISTS, f"{ap.ap_id} is already on the card",
                                  aid=aid_hex)
            # a stale copy (half-loaded, not installed or not personalised): delete, load again
            ext_auth = yield from self._reopen("reopen")
            cmds = [(gpc.delete(ap.load_file_aid, related=True), (SW_OK, SW_NOT_FOUND), False)]
            retry = yield from self._secure("reload", Phase.LOADING, 95, ext_auth,
                                            cmds + self._plan_load(ap, image, user_id))
            if retry.complete:
                return self._loaded(ap, user_id, self._free_after(retry, ap))
            rsw = retry.responses[-1].sw
            return self._fail(Reason.CARD_FULL if rsw == SW_FULL else Reason.CARD_REJECTED,
                              f"reload after removing a stale copy failed ({rsw:04X})",
                              aid=aid_hex)
        if failed == install_at and sw == SW_INSTANCE_EXISTS:
            reason, message = Reason.ALREADY_EXISTS, f"instance {aid_hex} already exists"
        elif sw == SW_FULL:
            reason, message = Reason.CARD_FULL, f"the {ap.area} area is full"
        else:
            reason, message = Reason.CARD_REJECTED, f"the card answered {sw:04X}"
        free = yield from self._cleanup(ap)
        return self._fail(reason, message, aid=aid_hex, free_bytes=free,
                          needed_bytes=len(image) if reason is Reason.CARD_FULL else 0)

    def _cleanup(self, ap: CatalogueAp) -> Generator[Batch, BatchAnswer, int | None]:
        """Delete what a failed load left (our load file and its instance); free bytes after."""
        ext_auth = yield from self._reopen("reopen")
        ran = yield from self._secure("cleanup", Phase.INSTALLING, 100, ext_auth, [
            (gpc.delete(ap.load_file_aid, related=True), (SW_OK, SW_NOT_FOUND), False),
            (gpc.get_data(TAG_FREE_SPACE), (SW_OK,), False)])
        return self._free_after(ran, ap)

    def _delete(self, ap: CatalogueAp) -> Flow:
        """Delete `ap` (load file with related objects, then the instance if pre-issued)."""
        ext_auth = yield from self._probe(full=False)
        aid_hex = ap.instance_aid.hex().upper()
        expect = (SW_OK, SW_NOT_FOUND)
        ran = yield from self._secure("delete", Phase.INSTALLING, 100, ext_auth, [
            (gpc.delete(ap.load_file_aid, related=True), expect, False),
            (gpc.delete(ap.instance_aid), expect, False),
            (gpc.get_data(TAG_FREE_SPACE), (SW_OK,), False)])
        if not ran.complete:
            sw = ran.responses[-1].sw
            return self._fail(Reason.CARD_REJECTED, f"DELETE answered {sw:04X}", aid=aid_hex)
        free = self._free_after(ran, ap)
        if ran.responses[1].sw == SW_NOT_FOUND and ran.responses[2].sw == SW_NOT_FOUND:
            return Done(True, Reason.ALREADY_ABSENT, f"{ap.ap_id} is not on the card",
                        aid=aid_hex, free_bytes=free)
        return Done(True, Reason.DELETED, f"{ap.ap_id} deleted", aid=aid_hex, free_bytes=free)

    def _reconcile(self, ap: CatalogueAp) -> Flow:
        """Read the registry; delete half-loaded or unpersonalised copies, or record completion."""
        ext_auth = yield from self._probe(full=False)
        aid_hex = ap.instance_aid.hex().upper()
        ran = yield from self._secure("status", Phase.SECURE_CHANNEL, 50, ext_auth,
                                      self._status_commands(ap))
        if not ran.complete:
            sw = ran.responses[-1].sw
            return self._fail(Reason.CARD_REJECTED, f"GET STATUS answered {sw:04X}", aid=aid_hex)
        lf, inst = self._registry(ran, 1, ap)
        if lf is None and inst is None:
            return Done(True, Reason.NOTHING_TO_RECONCILE, f"{ap.ap_id} is not on the card",
                        aid=aid_hex)
        if inst is not None and inst.lifecycle == LC_PERSONALISED and (
                lf is None or lf.lifecycle == LF_LOADED):
            prior = (self.core.issuer.lookup(self.req.organisation, self.req.journal_id)
                     if self.req.journal_id else None)
            if prior is not None and prior.card_id == self._require_card().card_id:
                done = self._loaded(ap, prior.user_id, None)
                return Done(**{**done.__dict__, "reason": Reason.RECONCILED,
                               "message": f"{ap.ap_id} was loaded completely; recorded"})
            return Done(True, Reason.NOTHING_TO_RECONCILE, f"{ap.ap_id} is loaded and "
                        "personalised", aid=aid_hex)
        expect = (SW_OK, SW_NOT_FOUND)
        done_ran = yield from self._secure_more("reconcile", [
            (gpc.delete(ap.load_file_aid, related=True), expect, False),
            (gpc.delete(ap.instance_aid), expect, False),
            (gpc.get_data(TAG_FREE_SPACE), (SW_OK,), False)])
        if not done_ran.complete:
            sw = done_ran.responses[-1].sw
            return self._fail(Reason.CARD_REJECTED, f"DELETE answered {sw:04X}", aid=aid_hex)
        return Done(True, Reason.RECONCILED, f"removed an incomplete copy of {ap.ap_id}",
                    aid=aid_hex, free_bytes=self._free_after(done_ran, ap))

    def _secure_more(self, step: str, commands: Sequence[tuple[CommandApdu, tuple[int, ...],
                                                                bool]]
                     ) -> Generator[Batch, BatchAnswer, _Ran]:
        """Another batch in the same (still in step) secure channel."""
        scp = self._require_scp()
        planned = [PlannedApdu(scp.wrap(c).encode(), e, s) for c, e, s in commands]
        ran = yield from self._batch(step, Phase.INSTALLING, 100, planned)
        out = [scp.unwrap(r) for r in ran.responses]
        if not ran.complete:
            scp.close()
            self._scp = None
        return _Ran(out, ran.failed)


def _parse_max_data(data: bytes) -> int:
    """`9F 65 01 xx` -> xx."""
    if len(data) != 4 or data[:3] != b"\x9f\x65\x01":
        raise CardProtocolError("GET DATA 9F65 answer is not 9F65 01 xx")
    return data[3]


def parse_free_space(data: bytes) -> dict[str, tuple[int, int]]:
    """GET DATA FF21: per area AID (hex) its (capacity, used) from `4F`/`81`/`82` groups."""
    if data[:2] == b"\xff\x21":  # FF is "padding" to a strict BER parser: unwrap by hand
        if len(data) < 3:
            raise CardProtocolError("GET DATA FF21 answer truncated")
        n, start = data[2], 3
        if n == 0x81 and len(data) >= 4:
            n, start = data[3], 4
        elif n == 0x82 and len(data) >= 5:
            n, start = int.from_bytes(data[3:5], "big"), 5
        if start + n != len(data):
            raise CardProtocolError("GET DATA FF21 length does not match the answer")
        data = data[start:]
    tlvs = parse_all(data)
    flat: list[Tlv] = []

    def flatten(items: list[Tlv]) -> None:
        for t in items:
            if t.tag in (0x4F, 0x81, 0x82):
                flat.append(t)
            elif t.constructed:
                flatten(t.children())

    flatten(tlvs)
    out: dict[str, tuple[int, int]] = {}
    current: str | None = None
    cap = used = 0
    for t in [*flat, Tlv(0x4F, b"")]:
        if t.tag == 0x4F:
            if current is not None:
                out[current] = (cap, used)
            current, cap, used = t.value.hex().upper(), 0, 0
        elif t.tag == 0x81:
            cap = int.from_bytes(t.value, "big")
        else:
            used = int.from_bytes(t.value, "big")
    return out


# Types A and D have fixed-size records (docs/card-model.md: 2+13 + 2+118 + 2+118 = 255
# bytes): their info fields are personalised at full length, zero-padded.
RECORD_INFO_BYTES = 118


def _fixed_info(ap: CatalogueAp, value: bytes) -> bytes:
    """An info field as personalised: Types A/D padded to their fixed record size."""
    if not ap.type.needs_access_key:
        return value
    if len(value) > RECORD_INFO_BYTES:
        raise ValueError(f"{ap.ap_id}: info field of {len(value)} bytes exceeds "
                         f"{RECORD_INFO_BYTES}")
    return value.ljust(RECORD_INFO_BYTES, b"\x00")
