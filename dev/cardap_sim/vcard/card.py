"""The virtual My Number Card: power, APDU routing, SELECT recording, persistence, faults.

Public API used by the daemon's tests: `VirtualCard.create/load`, `power_on/off`, `reset`,
`transmit`, `selects`, `apdus`, `apdu_log`, `clear_apdus`, `apdu_count`, `faults`,
`block_pin`; `TypeCSpec` for Type C instances. The APDU contract is docs/card-model.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from cardlib.gp.keys import StaticKeys

from . import apdu
from .apdu import Command, SwError
from .applet import Applet, LoadedApplet, Reply, fci
from .builtin_aps import CardFaceApplet, InputAssistApplet, JukiApplet
from .cardkeys import DEV_MASTER_KEYS, diversify, kdd_from_cplc
from .certgen import make_certificates
from .cplc import card_id, encode_cplc, new_cplc
from .errors import CardMute, CardNotPowered, CardTorn
from .faults import Faults
from .files import PinState
from .identity import fake_my_number
from .isd import IsdApplet
from .jpki import (
    AUTH_PIN_TRIES,
    DEFAULT_AUTH_PIN,
    DEFAULT_SIGN_PIN,
    SIGN_PIN_TRIES,
    JpkiApplet,
)
from .profiles import Profile, get_profile
from .state import CardState, load_file, save_atomic
from .typec import TypeCApplet, TypeCSpec

__all__ = ["DEV_MASTER_KEYS", "Faults", "TypeCSpec", "VirtualCard"]

log = logging.getLogger("cardap_sim.vcard.apdu")

APDU_LOG_MAX = 100_000  # headers kept (the oldest go first); ~4 MB at most
CONTACTLESS_ATR = bytes.fromhex("3B888001000005E0B381A1007F")
"""The ATR a PC/SC contactless reader synthesises for a My Number Card (ISO 14443-4 Type B,
PC/SC part 3: `3B 88 80 01` + ATQB application data and protocol info + TCK), as listed for
the "Japanese JPKI card" in pcsc-tools' smartcard_list.txt: the same bytes for every card."""
CLA_SM_BITS = 0x0C
"""CLA b4 b3 of the first interindustry and GP classes (00-3F, 80-BF): secure messaging
(SCP03's 84, Type D's 0C/08). Classes 40-7F carry it in b6; no command here uses them."""


def presents_pin(raw: bytes) -> bool:
    """True for a VERIFY carrying a PIN value on the wire (judged conservatively, well
    formed or not): any command data, except that under secure messaging (CLA x4/xC with
    both SM bits) only a DO87 (encrypted data) carries one."""
    if len(raw) <= 5 or raw[1] != apdu.INS_VERIFY:
        return False
    if raw[0] & CLA_SM_BITS != CLA_SM_BITS:
        return True
    first = 7 if raw[4] == 0 else 5  # extended Lc: 00 hi lo
    return len(raw) > first and raw[first] == 0x87


class VirtualCard:
    """One card: built-in APs plus loaded instances, a card file, and volatile session state."""

    def __init__(self, state: CardState, path: Path | None) -> None:
        self._state = state
        self.path = path
        self._profile = get_profile(state.profile)
        self._lock = threading.RLock()
        self.isd = IsdApplet(encode_cplc(state.cplc), self)
        self.applets: dict[bytes, Applet] = {}
        built_in: tuple[Applet, ...] = (
            JpkiApplet(state.certificates, state.auth_pin, state.sign_pin),
            CardFaceApplet(), JukiApplet(),
            InputAssistApplet(state.my_number, state.input_assist_pin),
        ) if self._profile.my_number_card else ()
        for ap in (self.isd, *built_in, *state.aps):
            if ap.aid in self.applets:
                raise ValueError(f"duplicate AID {ap.aid.hex().upper()}")
            self.applets[ap.aid] = ap
        self.faults = Faults()
        self._selects: list[bytes] = []
        self._apdus: deque[tuple[bytes, bool]] = deque(maxlen=APDU_LOG_MAX)
        self._apdu_count = 0
        self._powered = False
        self._torn = False
        self._selected: Applet = self.isd
        self._pending = b""
        self._pending_ins = 0
        self._contactless = False

    # --- construction and persistence -------------------------------------------------

    @classmethod
    def create(cls, profile: str = "vendor-a", path: Path | None = None,
               serial: int | None = None, type_c: Iterable[TypeCSpec] = (),
               master_keys: StaticKeys | None = None,
               certificates: bool = True) -> VirtualCard:
        """A new card of `profile` (file written to `path` if given; random serial unless given;
        `certificates` False: no JPKI certificate issued to the holder).

        Its static SCP03 keys are diversified from `master_keys` (default: the test-only
        DEV_MASTER_KEYS) with the card's KDD; the card file stores the diversified keys.
        """
        prof = get_profile(profile)
        cplc = new_cplc(prof, serial)
        keys = diversify(master_keys or DEV_MASTER_KEYS, kdd_from_cplc(cplc))
        certs = make_certificates(card_id(cplc), issued=certificates)
        state = CardState(
            profile=prof.name,
            cplc=cplc,
            my_number=fake_my_number(),
            auth_pin=PinState(DEFAULT_AUTH_PIN, AUTH_PIN_TRIES, AUTH_PIN_TRIES),
            sign_pin=PinState(DEFAULT_SIGN_PIN, SIGN_PIN_TRIES, SIGN_PIN_TRIES),
            auth_cert=certs.auth,
            sign_cert=certs.sign,
            auth_ca_cert=certs.auth_ca,
            sign_ca_cert=certs.sign_ca,
            extended_area_capacity=prof.extended_area_size,
            aps=[TypeCApplet(spec) for spec in type_c],
            keys=keys,
        )
        card = cls(state, path)
        card.save()
        return card

    @classmethod
    def load(cls, path: Path) -> VirtualCard:
        """The card stored in `path` (raises CardFileError when missing or malformed)."""
        return cls(load_file(path), path)

    def save(self) -> None:
        """Write the card file now (no-op for a card without a path)."""
        if self.path is not None:
            with self._lock:
                save_atomic(self.path, self._state)

    def state_changed(self) -> None:
        """Applets call this after a persistent change (PIN counter, content)."""
        self.save()

    # --- identity -------------------------------------------------------------------------

    @property
    def profile(self) -> Profile:
        """The vendor profile (ATR, CPLC fabricator, quirks)."""
        return self._profile

    @property
    def atr(self) -> bytes:
        """The profile's contact ATR, or the synthesised one when presented contactless."""
        return CONTACTLESS_ATR if self._contactless else self._profile.atr

    @property
    def contactless(self) -> bool:
        """Presented through a contactless reader: the reader's synthesised ATR, and no
        answer to GET DATA CPLC (whether a real card gives one is not established in public
        sources, so the model assumes the worst). Volatile: set at insertion."""
        return self._contactless

    def present(self, *, contactless: bool) -> None:
        """Choose how the card is presented (before it is powered in a slot)."""
        with self._lock:
            self._contactless = contactless

    @property
    def card_id(self) -> str:
        """`<IC fabricator>-<IC serial>` as the daemon names the card."""
        return card_id(self._state.cplc)

    @property
    def ic_serial(self) -> int:
        """The CPLC IC serial number."""
        return int(self._state.cplc["ic_serial"], 16)

    @property
    def fake_my_number(self) -> str:
        """The fake My Number in the input-assist AP (tests check it never leaks)."""
        return self._state.my_number

    @property
    def state(self) -> CardState:
        """The persistent state (GlobalPlatform code extends it; call save() after changes)."""
        return self._state

    # --- session --------------------------------------------------------------------------

    @property
    def selects(self) -> list[bytes]:
        """Every AID received in a SELECT by AID, in order, failed ones included."""
        with self._lock:
            return list(self._selects)

    @property
    def apdus(self) -> list[bytes]:
        """The header (CLA INS P1 P2, never data) of every command APDU that reached the card
        since it was created or `clear_apdus`, in order: answered, refused by a fault or sent
        to a torn or unpowered card alike (at most APDU_LOG_MAX, the newest)."""
        with self._lock:
            return [header for header, _ in self._apdus]

    @property
    def apdu_log(self) -> list[tuple[bytes, bool]]:
        """`apdus` with, for each, whether it was a VERIFY that presented a PIN value.

        A retry-counter read (`00 20 00 81` without data) is a VERIFY that presents nothing;
        under secure messaging (CLA 0C) a PIN is presented when the command carries DO87.
        Judged on the wire, whether or not the card then accepted the command.
        """
        with self._lock:
            return list(self._apdus)

    def clear_apdus(self) -> None:
        """Forget the recorded APDU headers."""
        with self._lock:
            self._apdus.clear()

    @property
    def apdu_count(self) -> int:
        """Command APDUs processed since this object was created."""
        return self._apdu_count

    @property
    def powered(self) -> bool:
        """True between power_on/reset and power_off."""
        return self._powered

    @property
    def torn(self) -> bool:
        """True once the tear fault fired (until the next power_on, i.e. re-insertion)."""
        return self._torn or self.faults.tear_after == 0

    @property
    def selected_aid(self) -> bytes:
        """The AID of the currently selected AP (the ISD after reset)."""
        return self._selected.aid

    def power_on(self) -> bytes:
        """Cold start (also re-insertion after a tear): volatile state cleared; returns the ATR."""
        with self._lock:
            self._torn = False
            if self.faults.tear_after == 0:
                self.faults.tear_after = None
            self._reset_session()
            self._powered = True
            return self.atr

    def power_off(self) -> None:
        """Power lost: selection, authentication and pending response data are gone."""
        with self._lock:
            self._reset_session()
            self._powered = False

    def reset(self) -> bytes:
        """Warm reset: as power_off + power_on; returns the ATR."""
        with self._lock:
            self._reset_session()
            self._powered = True
            return self.atr

    def _reset_session(self) -> None:
        """Clear volatile state; the ISD becomes selected."""
        for ap in self.applets.values():
            ap.reset()
        self._selected = self.isd
        self._pending = b""

    def set_faults(self, *, clear: bool = False, **settings: Any) -> None:
        """Change the faults between two commands (under the card's lock: a held fault's
        count moves with each answered command)."""
        with self._lock:
            if clear:
                self.faults.clear()
            self.faults.update(**settings)

    def block_pin(self, which: Literal["auth", "sign"]) -> None:
        """Set a JPKI PIN's counter to 0 and persist it (the blocked-PIN fault)."""
        with self._lock:
            pin = {"auth": self._state.auth_pin, "sign": self._state.sign_pin}.get(which)
            if pin is None:
                raise ValueError("which must be 'auth' or 'sign'")
            pin.tries = 0
            self.save()

    def install(self, applet: LoadedApplet) -> None:
        """Add a loaded instance (GlobalPlatform INSTALL) and persist it."""
        with self._lock:
            if applet.aid in self.applets:
                raise ValueError(f"AID {applet.aid.hex().upper()} already present")
            self.applets[applet.aid] = applet
            self._state.aps.append(applet)
            self.save()

    def delete(self, aid: bytes, *, persist: bool = True) -> None:
        """Remove a loaded instance (GlobalPlatform DELETE) and persist it (unless told not to:
        the caller then saves once for the whole APDU)."""
        with self._lock:
            ap = self.applets.get(aid)
            if not isinstance(ap, LoadedApplet):
                raise KeyError(aid.hex().upper())
            del self.applets[aid]
            self._state.aps.remove(ap)
            if self._selected is ap:
                self._selected = self.isd
            if persist:
                self.save()

    # --- APDUs ----------------------------------------------------------------------------

    def transmit(self, raw: bytes) -> bytes:
        """Process one command APDU and return data + SW, subject to the injected faults.

        Raises CardTorn (tear fault fired), CardMute (mute fault) or CardNotPowered.
        """
        with self._lock:
            self._apdus.append((bytes(raw[:4]), presents_pin(raw)))
            if self.torn:
                self._torn = True
                self.faults.tear_after = None
                raise CardTorn("the card was torn from the reader")
            if not self._powered:
                raise CardNotPowered("the card is powered off")
            if self.faults.mute:
                raise CardMute("the card is mute")
            self._apdu_count += 1
            applet = self._selected
            ins = raw[1] if len(raw) > 1 else -1
            if ins == apdu.INS_GET_RESPONSE:
                ins = self._pending_ins
            response = self._process(raw)
            if log.isEnabledFor(logging.DEBUG):
                self._log(raw, response, applet)
            if self.faults.tear_after is not None:
                self.faults.tear_after -= 1
            response = self.faults.distort(self.faults.tampered(response, ins))
            self.faults.answered()
            delay = self.faults.slow_ms
        if delay > 0:
            time.sleep(delay / 1000)
        return response

    def _process(self, raw: bytes) -> bytes:
        """Parse, route and apply the Le rules; every error becomes a status word."""
        if len(raw) > 5 and raw[1] == apdu.INS_SELECT and raw[2] == 0x04:
            self._selects.append(bytes(raw[5:5 + raw[4]]))
        try:
            cmd = apdu.parse(raw)
            if cmd.ins == apdu.INS_GET_RESPONSE:
                return self._get_response(cmd)
            self._pending = b""
            if len(cmd.data) > self._profile.max_command_data:
                raise SwError(apdu.SW_WRONG_LENGTH)
            if not cmd.cla & CLA_SM_BITS:  # a secured command is refused behind its SM
                refused = self.faults.refusal(cmd.ins, cmd.p1)
                if refused is not None:
                    raise SwError(refused)
            if cmd.ins == apdu.INS_SELECT and cmd.p1 == 0x04:
                reply = self._select_aid(cmd)
            else:
                reply = self._selected.process(cmd, self)
        except SwError as exc:
            return apdu.sw_bytes(exc.sw)
        if not reply.apply_le or reply.sw != apdu.SW_OK:
            return reply.data + apdu.sw_bytes(reply.sw)
        response, self._pending = apdu.deliver(reply.data, cmd.le)
        self._pending_ins = cmd.ins
        return response

    def _select_aid(self, cmd: Command) -> Reply:
        """SELECT by AID `00 A4 04 0C|00 Lc AID`: exact match, FCI only for P2 00."""
        if cmd.cla != 0x00:
            raise SwError(apdu.SW_CLA_NOT_SUPPORTED)
        if cmd.p2 not in (0x0C, 0x00):
            raise SwError(apdu.SW_WRONG_P1P2)
        if not 1 <= len(cmd.data) <= 16:
            raise SwError(apdu.SW_WRONG_LENGTH)
        target = self.applets.get(cmd.data)
        if target is None:
            raise SwError(apdu.SW_NOT_FOUND)
        self._selected.reset()
        target.reset()
        self._selected = target
        if cmd.p2 == 0x00:
            return Reply(fci(target.aid))
        return Reply()

    def _get_response(self, cmd: Command) -> bytes:
        """GET RESPONSE `00 C0 00 00 xx` for data announced by 61xx."""
        if cmd.cla != 0x00:
            raise SwError(apdu.SW_CLA_NOT_SUPPORTED)
        if cmd.p1p2 != 0:
            raise SwError(apdu.SW_WRONG_P1P2)
        if cmd.data or cmd.le is None:
            raise SwError(apdu.SW_WRONG_LENGTH)
        if not self._pending:
            raise SwError(apdu.SW_CONDITIONS_NOT_SATISFIED)
        if cmd.le > len(self._pending):
            return bytes([0x6C, len(self._pending)])
        response, self._pending = apdu.deliver(self._pending, cmd.le)
        return response

    def _log(self, raw: bytes, response: bytes, applet: Applet) -> None:
        """Debug-log one exchange without VERIFY data or input-assist responses."""
        if len(raw) > 4 and raw[1] == apdu.INS_VERIFY:
            shown = f"{raw[:4].hex().upper()} <{len(raw) - 4} bytes redacted>"
        else:
            shown = raw.hex().upper()
        if applet.redact_responses or self._selected.redact_responses:
            answer = f"<{len(response) - 2} bytes redacted> {response[-2:].hex().upper()}"
        else:
            answer = response.hex().upper()
        log.debug("%s >> %s << %s", self.card_id, shown, answer)

    def __repr__(self) -> str:
        """Identity only; never the card's secrets or the fake My Number."""
        return f"VirtualCard({self.card_id}, {self._profile.name}, path={self.path})"
