"""ListCardAPs without a secure channel: free space by GET DATA FF21, APs by SELECT.

GET STATUS needs SCP03 (the card keys stay in the loading service, and the service has no
"list" session), so the daemon reads the free space per area with GET DATA `FF21` (allowed
in plain) and finds which candidate APs are on the card by SELECT: the catalogue of this
terminal's organisation, the APs in the card's journal and the configured tap-to-ID APs.
An AP that answers SELECT is reported SELECTABLE: its exact GlobalPlatform lifecycle
(e.g. PERSONALIZED) is not visible outside a secure channel.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from cardapd.errors import NotAuthorized
from cardapd.myna.aids import select_aid
from cardlib.apdu import CommandApdu
from cardlib.errors import CardProtocolError, StatusWordError
from cardlib.protocol import ApduProtocol

ISD_AID = bytes.fromhex("A000000151000000")
AREAS = {"A000000151455854": "extended", "A000000151524547": "regional"}


@dataclass(frozen=True)
class Candidate:
    """An AP that may be on the card: AID, type name ("A", "C", "D", "custom", ""), area."""

    aid: bytes
    type: str = ""
    area: str = ""


@dataclass(frozen=True)
class CardAp:
    """An AP found on the card."""

    aid: bytes
    type: str
    area: str
    lifecycle: str


def parse_ff21(data: bytes) -> dict[str, int]:
    """Free bytes per area name from `FF 21 L {4F aid, 81 cap(4), 82 used(4)}*`."""
    if len(data) < 3 or data[:2] != b"\xff\x21" or data[2] != len(data) - 3:
        raise CardProtocolError("GET DATA FF21: malformed answer")
    body, i = data[3:], 0
    out: dict[str, int] = {}
    aid, cap, used = "", 0, 0
    while i + 2 <= len(body):
        tag, n = body[i], body[i + 1]
        value = body[i + 2:i + 2 + n]
        i += 2 + n
        if tag == 0x4F:
            aid = value.hex().upper()
        elif tag == 0x81:
            cap = int.from_bytes(value, "big")
        elif tag == 0x82:
            used = int.from_bytes(value, "big")
            out[AREAS.get(aid, aid)] = max(cap - used, 0)
    return out


def read_card_aps(proto: ApduProtocol, candidates: list[Candidate],
                  cancel: threading.Event | None = None) -> tuple[list[CardAp], dict[str, int]]:
    """Free space, then SELECT each candidate (denied AIDs are never sent); on the reader thread."""
    select_aid(proto, ISD_AID, "SELECT ISD", cancel=cancel)
    free = parse_ff21(proto.send_ok(CommandApdu(0x80, 0xCA, 0xFF, 0x21, le=256),
                                    "GET DATA FF21", cancel=cancel))
    found: list[CardAp] = []
    seen: set[bytes] = set()
    for cand in candidates:
        if cand.aid in seen:
            continue
        seen.add(cand.aid)
        try:
            present = select_aid(proto, cand.aid, "SELECT candidate AP", cancel=cancel)
        except (NotAuthorized, StatusWordError):
            continue
        if present:
            found.append(CardAp(cand.aid, cand.type, cand.area, "SELECTABLE"))
    select_aid(proto, ISD_AID, "SELECT ISD", cancel=cancel)
    return found, free


def present_aps(proto: ApduProtocol, aids: list[bytes],
                cancel: threading.Event | None = None) -> set[bytes]:
    """Which of `aids` answer SELECT on the card (on the reader thread; the ISD is selected
    again at the end, as every card session expects to find it)."""
    found: set[bytes] = set()
    for aid in aids:
        try:
            if select_aid(proto, aid, "SELECT AP of a preset", cancel=cancel):
                found.add(aid)
        except (NotAuthorized, StatusWordError):
            continue
    select_aid(proto, ISD_AID, "SELECT ISD", cancel=cancel)
    return found
