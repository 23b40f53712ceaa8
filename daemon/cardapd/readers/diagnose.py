"""Card fault isolation: what is wrong with this reader and this card, in plain words.

Runs ordered checks (PC/SC, reader, card presence, ATR, identification, JPKI PIN
counters read without spending a try, which known APs answer SELECT, configured Type C
data) and ends in a verdict with the next action for the operator. It never probes the
text input assist AP (`myna.aids.select_aid` refuses it) and never sends a VERIFY with
data.

Every check and next action carries a stable code beside its text (so that a UI can show
its own words); the texts are English message ids with `{placeholders}`, translated where
they are shown (`render`, in the call's language); the audit row keeps the codes.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cardap.i18n import N_, tr
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


class Term(str):
    """A value filled into a text that is itself a text to translate (a PIN's name)."""

    __slots__ = ()


Values = dict[str, "str | int"]


def render(lang: str, msgid: str, values: Values) -> str:
    """`msgid` in `lang` with its values filled in (a `Term` value translated too)."""
    return tr(lang, msgid, **{k: tr(lang, v) if isinstance(v, Term) else v
                              for k, v in values.items()})


class Verdict(enum.IntEnum):
    """Diagnosis verdicts, ordered from good to bad (the worst one wins)."""

    OK = 0
    NO_CARD = 1
    WARNING = 2
    CARD_FAULT = 3
    READER_FAULT = 4


VERDICT_TEXTS: dict[Verdict, str] = {
    Verdict.OK: N_("OK"), Verdict.NO_CARD: N_("no card"), Verdict.WARNING: N_("warning"),
    Verdict.CARD_FAULT: N_("card fault"), Verdict.READER_FAULT: N_("reader fault")}


class CheckCode(enum.StrEnum):
    """What a check looks at (cardap.v1.CheckCode); the value is the check's stable name,
    or its prefix when the check names a subject (`ap.JPKI`, `type_c.<AID>`)."""

    PCSC = "pcsc"
    USB = "usb"
    READER = "reader"
    CARD = "card"
    CARD_PRESENT = "card_present"
    READER_PRESENT = "reader_present"
    CARD_ANSWERS = "card_answers"
    ATR = "atr"
    IDENTIFY = "identify"
    CARD_IDENTITY = "card_identity"
    JPKI_AUTH_PIN_TRIES = "jpki.auth_pin_tries"
    JPKI_SIGN_PIN_TRIES = "jpki.sign_pin_tries"
    BUILT_IN_AP = "ap"
    TYPE_C_AP = "type_c"
    CARD_BUSY = "card_busy"
    FREE_SPACE = "free_space"
    CATALOGUE_APS = "catalogue_aps"
    JOURNAL = "journal"
    JOURNAL_HISTORY = "journal_history"


CHECK_TITLES: dict[CheckCode, str] = {
    CheckCode.PCSC: N_("PC/SC service"),
    CheckCode.USB: N_("USB readers"),
    CheckCode.READER: N_("reader"),
    CheckCode.CARD: N_("card in the reader"),
    CheckCode.CARD_PRESENT: N_("card stays in the reader"),
    CheckCode.READER_PRESENT: N_("reader stays connected"),
    CheckCode.CARD_ANSWERS: N_("card answers"),
    CheckCode.ATR: N_("ATR"),
    CheckCode.IDENTIFY: N_("card kind"),
    CheckCode.CARD_IDENTITY: N_("card identity"),
    CheckCode.JPKI_AUTH_PIN_TRIES: N_("JPKI authentication PIN tries"),
    CheckCode.JPKI_SIGN_PIN_TRIES: N_("JPKI signing password tries"),
    CheckCode.BUILT_IN_AP: N_("built-in AP"),
    CheckCode.TYPE_C_AP: N_("Type C AP"),
    CheckCode.CARD_BUSY: N_("card in use"),
    CheckCode.FREE_SPACE: N_("free space"),
    CheckCode.CATALOGUE_APS: N_("catalogue APs on the card"),
    CheckCode.JOURNAL: N_("interrupted operations"),
    CheckCode.JOURNAL_HISTORY: N_("earlier operations"),
}


@dataclass(frozen=True)
class Check:
    """One check: its code, outcome, what was found (an English message id with
    `{placeholders}` filled from `values`) and a reason when it failed; `subject` names
    what a per-AP check looked at."""

    code: CheckCode
    ok: bool
    detail: str
    reason: str = ""
    values: Values = field(default_factory=dict)
    subject: str = ""

    @property
    def name(self) -> str:
        """The stable name: `pcsc`, `jpki.auth_pin_tries`, `ap.JPKI`, `type_c.<AID>`."""
        return f"{self.code.value}.{self.subject}" if self.subject else self.code.value

    def text(self, lang: str = "en") -> str:
        """What was found, in `lang`."""
        return render(lang, self.detail, self.values)

    def title(self, lang: str = "en") -> str:
        """What the check looks at, in `lang`."""
        return tr(lang, CHECK_TITLES[self.code])


class ActionCode(enum.StrEnum):
    """The next action of a diagnosis (cardap.v1.NextActionCode); its text is `ACTIONS`'."""

    NONE = "NONE"
    START_PCSCD = "START_PCSCD"
    REPLUG_READER = "REPLUG_READER"
    CHECK_READER_DRIVER = "CHECK_READER_DRIVER"
    INSERT_CARD = "INSERT_CARD"
    CARD_MUTE = "CARD_MUTE"
    CARD_MALFORMED = "CARD_MALFORMED"
    NOT_MY_NUMBER_CARD = "NOT_MY_NUMBER_CARD"
    REINSERT_CARD = "REINSERT_CARD"
    PIN_BLOCKED = "PIN_BLOCKED"
    PIN_FEW_TRIES = "PIN_FEW_TRIES"
    AP_NOT_ANSWERING = "AP_NOT_ANSWERING"
    RELOAD_TYPE_C_AP = "RELOAD_TYPE_C_AP"
    WAIT_FOR_OPERATION = "WAIT_FOR_OPERATION"
    CARD_UNIDENTIFIED = "CARD_UNIDENTIFIED"
    REPORT_UNKNOWN_PROFILE = "REPORT_UNKNOWN_PROFILE"
    LEAVE_CARD_FOR_REPAIR = "LEAVE_CARD_FOR_REPAIR"
    CONFIRM_RECONCILE = "CONFIRM_RECONCILE"
    CHECK_SERVICE_LINK = "CHECK_SERVICE_LINK"


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
    action: ActionCode = ActionCode.NONE
    action_values: Values = field(default_factory=dict)
    operations: list[CardOperation] = field(default_factory=list)
    free_bytes: dict[str, int] = field(default_factory=dict)
    catalogue_organisation: str = ""
    catalogue: list[CatalogueApOnCard] = field(default_factory=list)

    @property
    def card_in_reader(self) -> bool:
        """Whether the reader holds a card (identified, identifying or mute)."""
        return self.reader.state in (ReaderState.CARD_PRESENT, ReaderState.CARD_MUTE,
                                     ReaderState.CARD_IDENTIFYING)

    def conclude(self, verdict: Verdict, action: ActionCode, **values: str | int) -> None:
        """Keep the worse of the current and the given verdict (and its action)."""
        if verdict > self.verdict:
            self.verdict, self.action, self.action_values = verdict, action, dict(values)

    def next_action_text(self, lang: str = "en") -> str:
        """The next action, in `lang`."""
        return render(lang, ACTIONS[self.action], self.action_values)

    @property
    def next_action(self) -> str:
        """The next action in English."""
        return self.next_action_text("en")


class DiagnosisStep(Protocol):
    """What another capability adds to a diagnosis (registered at its construction with
    `Readers.add_diagnosis_step`): whether a card write keeps the reader busy, and the
    card's story once the card checks ran."""

    def busy(self, reader: str) -> str:
        """What runs on `reader` now, as an `N_()`-marked English phrase (a load, a
        delete, a reconciliation), or ""."""
        ...

    async def story(self, ctx: OpContext, owner: ReaderOwner, view: ReaderView,
                    diag: Diagnosis, organisation: str) -> None:
        """Add the card's story to `diag` (`organisation`: the operator's, or "")."""
        ...


BUILT_IN_APS: tuple[tuple[str, bytes], ...] = (
    ("ISD", ISD_AID), ("JPKI", JPKI_AID), ("card face AP", CARD_FACE_AID), ("住基AP", JUKI_AID))

ACTION_NONE = N_("Nothing to do: the reader and the card work.")
ACTION_PCSC = N_("The PC/SC service (pcscd) is not running: start it (systemctl start "
                 "pcscd.socket) and check the reader's USB connection; cardapd reconnects by "
                 "itself.")
ACTION_READER = N_("The reader is not usable: unplug and replug it; if that does not help, try "
                   "another reader.")
ACTION_NOT_OFFERED = N_("A USB smart-card reader is plugged in but pcscd does not offer it: check "
                        "that the CCID driver (libccid) supports the model and that pcscd may open"
                        " the device (udev rule 60-cardapd-ccid.rules), then replug it.")
ACTION_NO_CARD = N_("Insert the card (chip side as marked on the reader) and run the diagnosis "
                    "again.")
ACTION_MUTE = N_("The card does not answer. Take it out, check the chip is clean and undamaged, "
                 "and insert it again. If another card works in this reader but this one never "
                 "does, the card is faulty: the holder applies for a new card at the municipality.")
ACTION_GARBAGE = N_("The card answers with malformed data. Reinsert it; if it persists in another "
                    "reader, the chip is faulty: the holder applies for a new card at the "
                    "municipality.")
ACTION_NOT_MNC = N_("This is not a My Number Card. Ask the holder for their My Number Card.")
ACTION_REMOVED = N_("The card was removed during the diagnosis. Insert it, leave it in place, and "
                    "retry.")
ACTION_BLOCKED = N_("The JPKI {which} is blocked. Card AP loading still works, but the holder must"
                    " have it reset at the municipality before using it.")
ACTION_FEW_TRIES = N_("The JPKI {which} has {n} try left. Card AP loading still works; warn the "
                      "holder before they use that PIN anywhere.")
ACTION_AP_MISSING = N_("The card's {name} does not answer. The card may be damaged or not fully "
                       "issued: the holder should ask the municipality.")
ACTION_TYPE_C_BROKEN = N_("The Type C AP {aid} holds data that does not follow its layout: delete "
                          "it and load it again.")
ACTION_BUSY = N_("A load, delete or reconciliation is running on this card: wait until it ends "
                 "(the kiosk shows its result), then run the diagnosis again.")
ACTION_UNIDENTIFIED = N_("This card offers nothing unique to tell it from another (no JPKI "
                         "authentication certificate, no CPLC): loads work, but a load cut short "
                         "is only repaired when an operator confirms the card (ConfirmReconcile).")
ACTION_UNKNOWN_PROFILE = N_("The card's chip is not in the profile table: loading may pick "
                            "the wrong image. Report the card id to the operations team.")
ACTION_PENDING = N_("This card has {n} interrupted load or delete operation(s) not yet "
                    "repaired ({what}). They are repaired automatically while the card is in "
                    "the reader and the loading service answers: leave it in place, then run "
                    "the diagnosis again.")
ACTION_CONFIRM = N_("This card cannot be identified, and {n} interrupted operation(s) of such "
                    "a card wait ({what}). If the holder confirms this card was in the reader "
                    "then, reconcile it with ConfirmReconcile and the journal id; otherwise "
                    "do nothing.")
ACTION_NO_CATALOGUE = N_("The loading service did not answer, so the card's APs could not be "
                         "compared with the catalogue: check the link (cardapctl status), "
                         "then run the diagnosis again.")
ACTIONS: dict[ActionCode, str] = {
    ActionCode.NONE: ACTION_NONE, ActionCode.START_PCSCD: ACTION_PCSC,
    ActionCode.REPLUG_READER: ACTION_READER, ActionCode.CHECK_READER_DRIVER: ACTION_NOT_OFFERED,
    ActionCode.INSERT_CARD: ACTION_NO_CARD, ActionCode.CARD_MUTE: ACTION_MUTE,
    ActionCode.CARD_MALFORMED: ACTION_GARBAGE, ActionCode.NOT_MY_NUMBER_CARD: ACTION_NOT_MNC,
    ActionCode.REINSERT_CARD: ACTION_REMOVED, ActionCode.PIN_BLOCKED: ACTION_BLOCKED,
    ActionCode.PIN_FEW_TRIES: ACTION_FEW_TRIES, ActionCode.AP_NOT_ANSWERING: ACTION_AP_MISSING,
    ActionCode.RELOAD_TYPE_C_AP: ACTION_TYPE_C_BROKEN,
    ActionCode.WAIT_FOR_OPERATION: ACTION_BUSY,
    ActionCode.CARD_UNIDENTIFIED: ACTION_UNIDENTIFIED,
    ActionCode.REPORT_UNKNOWN_PROFILE: ACTION_UNKNOWN_PROFILE,
    ActionCode.LEAVE_CARD_FOR_REPAIR: ACTION_PENDING,
    ActionCode.CONFIRM_RECONCILE: ACTION_CONFIRM,
    ActionCode.CHECK_SERVICE_LINK: ACTION_NO_CATALOGUE,
}
"""The text of every next action (English message ids; the guide quotes the fixed ones)."""
ID_SOURCES = {"cert": N_("card id from the JPKI authentication certificate (keyed hash)"),
              "cplc": N_("card id from the CPLC (keyed hash)")}
PIN_NAMES: dict[PinKind, Term] = {"auth": Term(N_("authentication PIN")),
                                  "sign": Term(N_("signing password"))}
ERROR = N_("{error}")
"""The detail of a check that is an error's message (the daemon's English text)."""
PIN_CHECKS: dict[PinKind, CheckCode] = {"auth": CheckCode.JPKI_AUTH_PIN_TRIES,
                                        "sign": CheckCode.JPKI_SIGN_PIN_TRIES}


def no_reader_diagnosis(pcsc_available: bool,
                        usb: Sequence[UsbReader] | None = None) -> Diagnosis:
    """The diagnosis when PC/SC offers no reader (`usb`: CCID readers udev sees, if known)."""
    diag = Diagnosis(ReaderView("", ReaderState.UNAVAILABLE))
    if pcsc_available:
        diag.checks.append(Check(CheckCode.PCSC, True, N_("pcscd reachable")))
    else:
        diag.checks.append(Check(CheckCode.PCSC, False, N_("pcscd not reachable"),
                                 "PCSC_UNAVAILABLE"))
    if usb:
        names = ", ".join(r.describe() for r in usb)
        diag.checks.append(Check(CheckCode.USB, True, N_("udev sees {count} USB smart-card "
                                                         "reader(s): {names}"),
                                 values={"count": len(usb), "names": names}))
        diag.checks.append(Check(CheckCode.READER, False, N_("the plugged-in reader is not "
                                                             "offered by PC/SC"),
                                 "READER_NOT_OFFERED"))
        diag.conclude(Verdict.READER_FAULT, ActionCode.CHECK_READER_DRIVER if pcsc_available
                      else ActionCode.START_PCSCD)
        return diag
    if usb is not None:
        diag.checks.append(Check(CheckCode.USB, False, N_("udev sees no USB smart-card reader"),
                                 "NO_USB_READER"))
    diag.checks.append(Check(CheckCode.READER, False, N_("no card reader is connected"),
                             "NO_READER"))
    diag.conclude(Verdict.READER_FAULT, ActionCode.REPLUG_READER if pcsc_available
                  else ActionCode.START_PCSCD)
    return diag


async def diagnose_reader(owner: ReaderOwner, view: ReaderView, *, pcsc_available: bool,
                          type_c_aids: Sequence[bytes], key: CardIdKey,
                          cancel: threading.Event | None = None,
                          rule: Callable[[bytes], UserIdRule] = lambda aid: DEFAULT_RULE
                          ) -> Diagnosis:
    """Diagnose one reader and the card in it."""
    diag = Diagnosis(view)
    if not pcsc_available:
        diag.checks.append(Check(CheckCode.PCSC, False, N_("pcscd is not reachable"),
                                 "PCSC_UNAVAILABLE"))
        diag.conclude(Verdict.READER_FAULT, ActionCode.START_PCSCD)
        return diag
    diag.checks.append(Check(CheckCode.PCSC, True, N_("pcscd reachable")))
    if view.state is ReaderState.UNAVAILABLE:
        diag.checks.append(Check(CheckCode.READER, False,
                                 N_("PC/SC reports the reader unavailable"),
                                 "READER_UNAVAILABLE"))
        diag.conclude(Verdict.READER_FAULT, ActionCode.REPLUG_READER)
        return diag
    diag.checks.append(Check(CheckCode.READER, True, N_("reader '{reader}' is connected"),
                             values={"reader": view.name}))
    if view.state is ReaderState.EMPTY:
        diag.checks.append(Check(CheckCode.CARD, False, N_("no card in the reader"), "NO_CARD"))
        diag.conclude(Verdict.NO_CARD, ActionCode.INSERT_CARD)
        return diag
    diag.checks.append(Check(CheckCode.CARD, True, N_("a card is in the reader")))
    try:
        await owner.run(lambda proto: _diagnose_card(proto, diag, type_c_aids, key, cancel,
                                                            rule))
    except CardRemoved:
        diag.checks.append(Check(CheckCode.CARD_PRESENT, False, N_("the card left the reader"),
                                 "CARD_REMOVED"))
        diag.conclude(Verdict.NO_CARD, ActionCode.REINSERT_CARD)
    except ReaderRemoved as exc:
        diag.checks.append(Check(CheckCode.READER_PRESENT, False, ERROR, exc.reason,
                                 values={"error": exc.message}))
        diag.conclude(Verdict.READER_FAULT, ActionCode.REPLUG_READER)
    except CardUnresponsive as exc:
        diag.checks.append(Check(CheckCode.CARD_ANSWERS, False, ERROR, exc.reason,
                                 values={"error": exc.message}))
        diag.conclude(Verdict.CARD_FAULT, ActionCode.CARD_MUTE)
    except CardProtocolError as exc:
        diag.checks.append(Check(CheckCode.CARD_ANSWERS, False, ERROR, exc.reason,
                                 values={"error": exc.message}))
        diag.conclude(Verdict.CARD_FAULT, ActionCode.CARD_MALFORMED)
    return diag


def _diagnose_card(proto: ApduProtocol, diag: Diagnosis, type_c_aids: Sequence[bytes],
                   key: CardIdKey, cancel: threading.Event | None,
                   rule: Callable[[bytes], UserIdRule]) -> None:
    """The card-side checks, on the reader's thread."""
    atr = proto.atr
    by_atr = load_profiles().lookup(None, atr)
    known = by_atr if by_atr.known else None
    if known is not None:
        diag.checks.append(Check(CheckCode.ATR, True, N_("ATR {atr} is a known My Number Card "
                                                         "ATR ({profile})"),
                                 values={"atr": atr.hex().upper(), "profile": known.name}))
    else:
        diag.checks.append(Check(CheckCode.ATR, True, N_(
            "ATR {atr} is not in the profile table (contactless readers synthesise ATRs: "
            "not a fault by itself)"), values={"atr": atr.hex().upper()}))
    select_aid(proto, ISD_AID, "SELECT ISD", cancel=cancel)  # CPLC is read with the ISD selected
    try:
        ident = identify(proto, atr, key, cancel=cancel)
    except StatusWordError as exc:
        diag.checks.append(Check(CheckCode.IDENTIFY, False, N_("unexpected answer: {error}"),
                                 "NOT_MY_NUMBER_CARD", values={"error": exc.message}))
        diag.conclude(Verdict.CARD_FAULT, ActionCode.NOT_MY_NUMBER_CARD)
        return
    diag.card_id = ident.card_id
    if ident.kind is not MynaKind.MY_NUMBER_CARD:
        diag.checks.append(Check(CheckCode.IDENTIFY, False,
                                 N_("no JPKI AP token: not a My Number Card"),
                                 "NOT_MY_NUMBER_CARD"))
        diag.conclude(Verdict.CARD_FAULT, ActionCode.NOT_MY_NUMBER_CARD)
        return
    diag.checks.append(Check(CheckCode.IDENTIFY, True, N_("My Number Card, profile {profile}, "
                                                          "card {card}"),
                             values={"profile": ident.profile, "card": ident.card_id}))
    if ident.id_source == UNCONFIRMED:
        diag.checks.append(Check(
            CheckCode.CARD_IDENTITY, False, N_("no unique datum readable (no authentication "
                                               "certificate, no CPLC): this card cannot be "
                                               "told from another"), "CARD_UNIDENTIFIED"))
        diag.conclude(Verdict.WARNING, ActionCode.CARD_UNIDENTIFIED)
    else:
        diag.checks.append(Check(CheckCode.CARD_IDENTITY, True, ID_SOURCES[ident.id_source]))
    if ident.profile == "unknown" and ident.cplc is not None:
        diag.conclude(Verdict.WARNING, ActionCode.REPORT_UNKNOWN_PROFILE)
    _check_pins(proto, diag, cancel)
    _probe_aps(proto, diag, type_c_aids, cancel, rule)


def _check_pins(proto: ApduProtocol, diag: Diagnosis, cancel: threading.Event | None) -> None:
    jpki = JpkiSession(proto)
    kinds: tuple[PinKind, ...] = ("auth", "sign")
    for which in kinds:
        name, code = PIN_NAMES[which], PIN_CHECKS[which]
        try:
            jpki.select(cancel=cancel)
            tries = jpki.pin_tries(which, cancel=cancel)
        except (StatusWordError, CardDataInvalid, ApNotFound) as exc:
            diag.checks.append(Check(code, False, N_("could not read the {which} counter: "
                                                     "{error}"), exc.reason,
                                     values={"which": name, "error": exc.message}))
            diag.conclude(Verdict.WARNING, ActionCode.AP_NOT_ANSWERING, name="JPKI AP")
            continue
        if which == "auth":
            diag.auth_pin_tries = tries
        else:
            diag.sign_pin_tries = tries
        if tries == 0:
            diag.checks.append(Check(code, False, N_("the {which} is blocked"), "PIN_BLOCKED",
                                     values={"which": name}))
            diag.conclude(Verdict.WARNING, ActionCode.PIN_BLOCKED, which=name)
        elif tries <= 1:
            diag.checks.append(Check(code, False, N_("{n} try left on the {which}"),
                                     "PIN_TRIES_TOO_FEW", values={"which": name, "n": tries}))
            diag.conclude(Verdict.WARNING, ActionCode.PIN_FEW_TRIES, which=name, n=tries)
        else:
            diag.checks.append(Check(code, True, N_("{n} tries left on the {which} (none "
                                                    "spent)"),
                                     values={"which": name, "n": tries}))


def _probe_aps(proto: ApduProtocol, diag: Diagnosis, type_c_aids: Sequence[bytes],
               cancel: threading.Event | None, rule: Callable[[bytes], UserIdRule]) -> None:
    for name, aid in BUILT_IN_APS:
        present, sw = _probe(proto, aid, name, cancel)
        diag.aps.append(ApProbe(name, aid, present, sw))
        if not present:
            diag.checks.append(Check(CheckCode.BUILT_IN_AP, False,
                                     N_("{name} does not answer SELECT ({sw})"), "AP_NOT_FOUND",
                                     values={"name": name, "sw": sw}, subject=name))
            diag.conclude(Verdict.CARD_FAULT if name in ("ISD", "JPKI") else Verdict.WARNING,
                          ActionCode.AP_NOT_ANSWERING, name=name)
    session = TypeCSession(proto)
    for aid in type_c_aids:
        hex_aid = aid.hex().upper()
        values: Values = {"aid": hex_aid}
        try:
            session.read(aid, cancel=cancel, rule=rule(aid))
        except ApNotFound:
            diag.aps.append(ApProbe("Type C AP", aid, False, "6A82"))
            diag.checks.append(Check(CheckCode.TYPE_C_AP, True,
                                     N_("Type C AP {aid} is not loaded on this card"),
                                     values=values, subject=hex_aid))
            continue
        except (CardDataInvalid, StatusWordError) as exc:
            diag.aps.append(ApProbe("Type C AP", aid, True))
            diag.checks.append(Check(CheckCode.TYPE_C_AP, False, N_("Type C AP {aid}: {error}"),
                                     exc.reason, values={**values, "error": exc.message},
                                     subject=hex_aid))
            diag.conclude(Verdict.CARD_FAULT, ActionCode.RELOAD_TYPE_C_AP, aid=hex_aid)
            continue
        diag.aps.append(ApProbe("Type C AP", aid, True))
        diag.checks.append(Check(CheckCode.TYPE_C_AP, True,
                                 N_("Type C AP {aid} answers and its data follows the Type C "
                                    "layout"), values=values, subject=hex_aid))


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

