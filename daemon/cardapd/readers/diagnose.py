"""Card fault isolation: what is wrong with this reader and this card, in plain words.

Runs ordered checks (PC/SC, reader, card presence, ATR, identification, JPKI PIN
counters read without spending a try, which known APs answer SELECT, configured Type C
data) and ends in a verdict with the next action for the operator. It never probes the
text input assist AP (`myna.aids.select_aid` refuses it) and never sends a VERIFY with
data.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cardapd.domain import OpContext
from cardapd.errors import (
    ApNotFound,
    CardDataInvalid,
    CardProtocolError,
    CardRemoved,
    CardUnresponsive,
    ReaderRemoved,
)
from cardapd.myna.aids import CARD_FACE_AID, ISD_AID, JPKI_AID, JUKI_AID, select_aid
from cardapd.myna.cardid import UNCONFIRMED, CardIdKey
from cardapd.myna.identify import CardKind as MynaKind
from cardapd.myna.identify import identify
from cardapd.myna.jpki import JpkiSession, PinKind
from cardapd.myna.profiles import load_profiles
from cardapd.myna.typec import TypeCSession
from cardapd.myna.userid import DEFAULT_RULE, UserIdRule
from cardapd.readers.model import ReaderState, ReaderView
from cardapd.readers.owner import ReaderOwner
from cardapd.transport.udev import UsbReader
from cardlib.errors import StatusWordError
from cardlib.protocol import ApduProtocol


class Verdict(enum.IntEnum):
    """Diagnosis verdicts, ordered from good to bad (the worst one wins)."""

    OK = 0
    NO_CARD = 1
    WARNING = 2
    CARD_FAULT = 3
    READER_FAULT = 4


@dataclass(frozen=True)
class Check:
    """One check: its stable name, outcome, what was found and a reason when it failed."""

    name: str
    ok: bool
    detail: str
    reason: str = ""


@dataclass(frozen=True)
class ApProbe:
    """Whether a known AP answered SELECT."""

    name: str
    aid: bytes
    present: bool
    sw: str = ""


@dataclass(frozen=True)
class CardOperation:
    """A load or delete on this card that did not simply succeed, from the journal, with
    its reconciliation state: "pending" (to be repaired when the card is seen with the
    service reachable), "awaiting_confirmation" (a card that could not be identified: only
    an operator's ConfirmReconcile repairs it), "reconciled", or "not_needed" (it failed
    before the card was touched)."""

    journal_id: str
    action: str
    ap_id: str
    aid: str
    state: str
    reconcile: str
    outcome: str
    started_at: str
    finished_at: str | None
    organisation: str
    operator: str


@dataclass(frozen=True)
class CatalogueApOnCard:
    """One AP of the operator's organisation's catalogue, and whether it is on the card."""

    ap_id: str
    display_name: str
    aid: bytes
    area: str
    present: bool


@dataclass
class Diagnosis:
    """The diagnosis of one reader and its card, and that card's story here: the journal's
    operations on it, its free space, and which catalogue APs are on it (the loading
    capability adds these through a `DiagnosisStep`)."""

    reader: ReaderView
    card_id: str = ""
    checks: list[Check] = field(default_factory=list)
    auth_pin_tries: int | None = None
    sign_pin_tries: int | None = None
    aps: list[ApProbe] = field(default_factory=list)
    verdict: Verdict = Verdict.OK
    next_action: str = "Nothing to do: the reader and the card work."
    operations: list[CardOperation] = field(default_factory=list)
    free_bytes: dict[str, int] = field(default_factory=dict)
    catalogue_organisation: str = ""
    catalogue: list[CatalogueApOnCard] = field(default_factory=list)

    @property
    def card_in_reader(self) -> bool:
        """Whether the reader holds a card (identified, identifying or mute)."""
        return self.reader.state in (ReaderState.CARD_PRESENT, ReaderState.CARD_MUTE,
                                     ReaderState.CARD_IDENTIFYING)

    def conclude(self, verdict: Verdict, next_action: str) -> None:
        """Keep the worse of the current and the given verdict (and its action)."""
        if verdict > self.verdict:
            self.verdict, self.next_action = verdict, next_action


class DiagnosisStep(Protocol):
    """What another capability adds to a diagnosis (registered at its construction with
    `Readers.add_diagnosis_step`): whether a card write keeps the reader busy, and the
    card's story once the card checks ran."""

    def busy(self, reader: str) -> str:
        """What runs on `reader` now (a load, a delete, a reconciliation), or ""."""
        ...

    async def story(self, ctx: OpContext, owner: ReaderOwner, view: ReaderView,
                    diag: Diagnosis, organisation: str) -> None:
        """Add the card's story to `diag` (`organisation`: the operator's, or "")."""
        ...


BUILT_IN_APS: tuple[tuple[str, bytes], ...] = (
    ("ISD", ISD_AID), ("JPKI", JPKI_AID), ("card face AP", CARD_FACE_AID), ("住基AP", JUKI_AID))

ACTION_PCSC = ("The PC/SC service (pcscd) is not running: start it (systemctl start pcscd.socket) "
               "and check the reader's USB connection; cardapd reconnects by itself.")
ACTION_READER = ("The reader is not usable: unplug and replug it; if that does not help, "
                 "try another reader.")
ACTION_NOT_OFFERED = ("A USB smart-card reader is plugged in but pcscd does not offer it: "
                      "check that the CCID driver (libccid) supports the model and that "
                      "pcscd may open the device (udev rule 60-cardapd-ccid.rules), then "
                      "replug it.")
ACTION_NO_CARD = "Insert the card (chip side as marked on the reader) and run the diagnosis again."
ACTION_MUTE = ("The card does not answer. Take it out, check the chip is clean and undamaged, and "
               "insert it again. If another card works in this reader but this one never does, "
               "the card is faulty: the holder applies for a new card at the municipality.")
ACTION_GARBAGE = ("The card answers with malformed data. Reinsert it; if it persists in another "
                  "reader, the chip is faulty: the holder applies for a new card at the "
                  "municipality.")
ACTION_NOT_MNC = "This is not a My Number Card. Ask the holder for their My Number Card."
ACTION_REMOVED = ("The card was removed during the diagnosis. Insert it, leave it in place, "
                  "and retry.")
ACTION_BLOCKED = ("The JPKI {which} is blocked. Card AP loading still works, but the holder must "
                  "have it reset at the municipality before using it.")
ACTION_FEW_TRIES = ("The JPKI {which} has {n} try left. Card AP loading still works; warn the "
                    "holder before they use that PIN anywhere.")
ACTION_AP_MISSING = ("The card's {name} does not answer. The card may be damaged or not fully "
                     "issued: the holder should ask the municipality.")
ACTION_TYPE_C_BROKEN = ("The Type C AP {aid} holds data that does not follow its layout: delete "
                        "it and load it again.")
ACTION_BUSY = ("A load, delete or reconciliation is running on this card: wait until it ends "
               "(the kiosk shows its result), then run the diagnosis again.")
ACTION_UNIDENTIFIED = ("This card offers nothing unique to tell it from another (no JPKI "
                       "authentication certificate, no CPLC): loads work, but a load cut short "
                       "is only repaired when an operator confirms the card "
                       "(ConfirmReconcile).")
ID_SOURCES = {"cert": "JPKI authentication certificate (keyed hash)",
              "cplc": "CPLC (keyed hash)"}
PIN_NAMES: dict[PinKind, str] = {"auth": "authentication PIN", "sign": "signing password"}


def no_reader_diagnosis(pcsc_available: bool,
                        usb: Sequence[UsbReader] | None = None) -> Diagnosis:
    """The diagnosis when PC/SC offers no reader (`usb`: CCID readers udev sees, if known)."""
    diag = Diagnosis(ReaderView("", ReaderState.UNAVAILABLE))
    diag.checks.append(Check("pcsc", pcsc_available, "pcscd reachable" if pcsc_available
                             else "pcscd not reachable", "" if pcsc_available
                             else "PCSC_UNAVAILABLE"))
    if usb:
        names = ", ".join(r.describe() for r in usb)
        diag.checks.append(Check("usb", True, f"udev sees {len(usb)} USB smart-card "
                                 f"reader(s): {names}"))
        diag.checks.append(Check("reader", False, "the plugged-in reader is not offered by "
                                 "PC/SC", "READER_NOT_OFFERED"))
        diag.conclude(Verdict.READER_FAULT, ACTION_NOT_OFFERED if pcsc_available
                      else ACTION_PCSC)
        return diag
    if usb is not None:
        diag.checks.append(Check("usb", False, "udev sees no USB smart-card reader",
                                 "NO_USB_READER"))
    diag.checks.append(Check("reader", False, "no card reader is connected", "NO_READER"))
    diag.conclude(Verdict.READER_FAULT, ACTION_READER if pcsc_available else ACTION_PCSC)
    return diag


async def diagnose_reader(owner: ReaderOwner, view: ReaderView, *, pcsc_available: bool,
                          type_c_aids: Sequence[bytes], key: CardIdKey,
                          cancel: threading.Event | None = None,
                          rule: Callable[[bytes], UserIdRule] = lambda aid: DEFAULT_RULE
                          ) -> Diagnosis:
    """Diagnose one reader and the card in it."""
    diag = Diagnosis(view)
    if not pcsc_available:
        diag.checks.append(Check("pcsc", False, "pcscd is not reachable", "PCSC_UNAVAILABLE"))
        diag.conclude(Verdict.READER_FAULT, ACTION_PCSC)
        return diag
    diag.checks.append(Check("pcsc", True, "pcscd reachable"))
    if view.state is ReaderState.UNAVAILABLE:
        diag.checks.append(Check("reader", False, "PC/SC reports the reader unavailable",
                                 "READER_UNAVAILABLE"))
        diag.conclude(Verdict.READER_FAULT, ACTION_READER)
        return diag
    diag.checks.append(Check("reader", True, f"reader {view.name!r} is connected"))
    if view.state is ReaderState.EMPTY:
        diag.checks.append(Check("card", False, "no card in the reader", "NO_CARD"))
        diag.conclude(Verdict.NO_CARD, ACTION_NO_CARD)
        return diag
    diag.checks.append(Check("card", True, "a card is in the reader"))
    try:
        await owner.run(lambda proto: _diagnose_card(proto, diag, type_c_aids, key, cancel,
                                                            rule))
    except CardRemoved:
        diag.checks.append(Check("card_present", False, "the card left the reader", "CARD_REMOVED"))
        diag.conclude(Verdict.NO_CARD, ACTION_REMOVED)
    except ReaderRemoved as exc:
        diag.checks.append(Check("reader_present", False, exc.message, exc.reason))
        diag.conclude(Verdict.READER_FAULT, ACTION_READER)
    except CardUnresponsive as exc:
        diag.checks.append(Check("card_answers", False, exc.message, exc.reason))
        diag.conclude(Verdict.CARD_FAULT, ACTION_MUTE)
    except CardProtocolError as exc:
        diag.checks.append(Check("card_answers", False, exc.message, exc.reason))
        diag.conclude(Verdict.CARD_FAULT, ACTION_GARBAGE)
    return diag


def _diagnose_card(proto: ApduProtocol, diag: Diagnosis, type_c_aids: Sequence[bytes],
                   key: CardIdKey, cancel: threading.Event | None,
                   rule: Callable[[bytes], UserIdRule]) -> None:
    """The card-side checks, on the reader's thread."""
    atr = proto.atr
    by_atr = load_profiles().lookup(None, atr)
    known = by_atr if by_atr.known else None
    diag.checks.append(Check(
        "atr", True, f"ATR {atr.hex().upper()} " + (
            f"is a known My Number Card ATR ({known.name})" if known is not None
            else "is not in the profile table (contactless readers synthesise ATRs: "
                 "not a fault by itself)")))
    select_aid(proto, ISD_AID, "SELECT ISD", cancel=cancel)  # CPLC is read with the ISD selected
    try:
        ident = identify(proto, atr, key, cancel=cancel)
    except StatusWordError as exc:
        diag.checks.append(Check("identify", False, f"unexpected answer: {exc.message}",
                                 "NOT_MY_NUMBER_CARD"))
        diag.conclude(Verdict.CARD_FAULT, ACTION_NOT_MNC)
        return
    diag.card_id = ident.card_id
    if ident.kind is not MynaKind.MY_NUMBER_CARD:
        diag.checks.append(Check("identify", False, "no JPKI AP token: not a My Number Card",
                                 "NOT_MY_NUMBER_CARD"))
        diag.conclude(Verdict.CARD_FAULT, ACTION_NOT_MNC)
        return
    diag.checks.append(Check("identify", True, f"My Number Card, profile {ident.profile}, "
                             f"card {ident.card_id}"))
    if ident.id_source == UNCONFIRMED:
        diag.checks.append(Check(
            "card_identity", False, "no unique datum readable (no authentication certificate, "
            "no CPLC): this card cannot be told from another", "CARD_UNIDENTIFIED"))
        diag.conclude(Verdict.WARNING, ACTION_UNIDENTIFIED)
    else:
        diag.checks.append(Check("card_identity", True,
                                 "card id from the " + ID_SOURCES[ident.id_source]))
    if ident.profile == "unknown" and ident.cplc is not None:
        diag.conclude(Verdict.WARNING, "The card's chip is not in the profile table: loading "
                      "may pick the wrong image. Report the card id to the operations team.")
    _check_pins(proto, diag, cancel)
    _probe_aps(proto, diag, type_c_aids, cancel, rule)


def _check_pins(proto: ApduProtocol, diag: Diagnosis, cancel: threading.Event | None) -> None:
    jpki = JpkiSession(proto)
    kinds: tuple[PinKind, ...] = ("auth", "sign")
    for which in kinds:
        name = PIN_NAMES[which]
        try:
            jpki.select(cancel=cancel)
            tries = jpki.pin_tries(which, cancel=cancel)
        except (StatusWordError, CardDataInvalid, ApNotFound) as exc:
            diag.checks.append(Check(f"jpki.{which}_pin_tries", False,
                                     f"could not read the {name} counter: {exc.message}",
                                     exc.reason))
            diag.conclude(Verdict.WARNING, ACTION_AP_MISSING.format(name="JPKI AP"))
            continue
        if which == "auth":
            diag.auth_pin_tries = tries
        else:
            diag.sign_pin_tries = tries
        if tries == 0:
            diag.checks.append(Check(f"jpki.{which}_pin_tries", False, f"the {name} is blocked",
                                     "PIN_BLOCKED"))
            diag.conclude(Verdict.WARNING, ACTION_BLOCKED.format(which=name))
        elif tries <= 1:
            diag.checks.append(Check(f"jpki.{which}_pin_tries", False,
                                     f"{tries} try left on the {name}", "PIN_TRIES_TOO_FEW"))
            diag.conclude(Verdict.WARNING, ACTION_FEW_TRIES.format(which=name, n=tries))
        else:
            diag.checks.append(Check(f"jpki.{which}_pin_tries", True,
                                     f"{tries} tries left on the {name} (none spent)"))


def _probe_aps(proto: ApduProtocol, diag: Diagnosis, type_c_aids: Sequence[bytes],
               cancel: threading.Event | None, rule: Callable[[bytes], UserIdRule]) -> None:
    for name, aid in BUILT_IN_APS:
        present, sw = _probe(proto, aid, name, cancel)
        diag.aps.append(ApProbe(name, aid, present, sw))
        if not present:
            diag.checks.append(Check(f"ap.{name}", False, f"{name} does not answer SELECT ({sw})",
                                     "AP_NOT_FOUND"))
            diag.conclude(Verdict.CARD_FAULT if name in ("ISD", "JPKI") else Verdict.WARNING,
                          ACTION_AP_MISSING.format(name=name))
    session = TypeCSession(proto)
    for aid in type_c_aids:
        label = f"Type C AP {aid.hex().upper()}"
        try:
            session.read(aid, cancel=cancel, rule=rule(aid))
        except ApNotFound:
            diag.aps.append(ApProbe("Type C AP", aid, False, "6A82"))
            diag.checks.append(Check(f"type_c.{aid.hex().upper()}", True,
                                     f"{label} is not loaded on this card"))
            continue
        except (CardDataInvalid, StatusWordError) as exc:
            diag.aps.append(ApProbe("Type C AP", aid, True))
            diag.checks.append(Check(f"type_c.{aid.hex().upper()}", False,
                                     f"{label}: {exc.message}", exc.reason))
            diag.conclude(Verdict.CARD_FAULT, ACTION_TYPE_C_BROKEN.format(aid=aid.hex().upper()))
            continue
        diag.aps.append(ApProbe("Type C AP", aid, True))
        diag.checks.append(Check(f"type_c.{aid.hex().upper()}", True,
                                 f"{label} answers and its data follows the Type C layout"))


def _probe(proto: ApduProtocol, aid: bytes, name: str,
           cancel: threading.Event | None) -> tuple[bool, str]:
    try:
        return (True, "") if select_aid(proto, aid, f"SELECT {name}", cancel=cancel) else (
            False, "6A82")
    except StatusWordError as exc:
        return False, f"{exc.sw:04X}"


def worst(diags: Sequence[Diagnosis]) -> Diagnosis | None:
    """The diagnosis whose verdict decides the overall one: the worst, except that an empty
    reader's NO_CARD never counts while a card is in another reader (a terminal with a
    healthy card in one reader and none in the other is OK, not "insert the card")."""
    with_card = any(d.card_in_reader for d in diags)
    counted = [d for d in diags if not (with_card and d.verdict is Verdict.NO_CARD
                                        and not d.card_in_reader)]
    return max(counted, key=lambda d: d.verdict, default=None)

