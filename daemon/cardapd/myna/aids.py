"""Named AIDs, the one AID check, and `select_aid`: the only place the daemon selects by AID.

Every AID that enters the daemon — a configuration key, a request field, a catalogue entry
of the loading service, a SELECT the loading service asks the terminal to relay — passes
one of the two functions here:

* `is_denied`: could a SELECT of this AID reach the text input assist AP, which holds the
  My Number? Exact, prefix or partial (a prefix of it, or it a prefix of the AID), in any
  case (AIDs are compared as bytes). Such an AID is never sent to a card.
* `check_aid`: `is_denied`, and — where the AID names a card AP loaded onto the card (a
  Type C AP read at a tap, a Type A/D/custom AP, a catalogue entry, an AP to delete) —
  not one of the card's built-in APs (ISD, JPKI, card face, 住基), matched the same way:
  selecting a built-in AP where a card AP is expected reads the wrong AP, or worse.
  The error names the configuration key or the request field.
"""

from __future__ import annotations

import threading

from cardapd.errors import InvalidArgument, NotAuthorized
from cardlib.apdu import SW_FILE_NOT_FOUND, CommandApdu
from cardlib.errors import StatusWordError
from cardlib.protocol import ApduProtocol

ISD_AID = bytes.fromhex("A000000151000000")
JPKI_AID = bytes.fromhex("D392F000260100000001")
CARD_FACE_AID = bytes.fromhex("D3921000310001010402")  # 券面事項確認AP
JUKI_AID = bytes.fromhex("D3921000310001010401")  # 住基AP (uncertain)

# The text input assist AP (券面事項入力補助AP) holds the My Number.
DENY_MY_NUMBER_AP = bytes.fromhex("D392100031000101 0408")  # never selected: holds the My Number

DENY_LIST: frozenset[bytes] = frozenset({DENY_MY_NUMBER_AP})

BUILT_IN: dict[bytes, str] = {
    ISD_AID: "the card's ISD (issuer security domain)",
    JPKI_AID: "the JPKI AP",
    CARD_FACE_AID: "the card face AP (券面事項確認AP)",
    JUKI_AID: "the 住基AP",
}
"""The APs every My Number Card carries from issue (docs/card-model.md), by AID."""

MIN_AID_LEN = 5
MAX_AID_LEN = 16

FORBIDDEN_TEXT = ("could select the text input assist AP (D3921000310001010408), which "
                  "holds the My Number; cardapd never selects it")


def _overlaps(aid: bytes, other: bytes) -> bool:
    """Exact, or one a prefix of the other (a partial-AID SELECT could reach `other`)."""
    return other.startswith(aid) or aid.startswith(other)


def is_denied(aid: bytes) -> bool:
    """True if SELECT of `aid` could reach a denied AP (also by partial-AID matching)."""
    return any(_overlaps(aid, d) for d in DENY_LIST)


def built_in(aid: bytes) -> str | None:
    """The name of the built-in AP a SELECT of `aid` could reach, or None."""
    return next((name for b, name in BUILT_IN.items() if _overlaps(aid, b)), None)


def aid_problem(aid: bytes, *, card_ap: bool = True) -> tuple[str, str] | None:
    """(reason, what is wrong) when `aid` may not be used, else None.

    `card_ap`: the AID names an AP loaded onto the card, so a built-in AP is wrong too.
    """
    if is_denied(aid):
        return "AID_FORBIDDEN", FORBIDDEN_TEXT
    if card_ap and (name := built_in(aid)) is not None:
        return "AID_BUILT_IN", (f"could select {name}, a built-in AP of every My Number "
                                "Card, where a card AP is expected")
    return None


def check_aid(aid: bytes, field: str, *, card_ap: bool = True) -> bytes:
    """`aid` if it may be used as `field`; PERMISSION_DENIED `AID_FORBIDDEN` (the input
    assist AP) or INVALID_ARGUMENT `AID_BUILT_IN` (a built-in AP where a card AP is
    expected) otherwise, naming `field`."""
    problem = aid_problem(aid, card_ap=card_ap)
    if problem is None:
        return aid
    reason, text = problem
    message = f"{field}: {aid.hex().upper()} {text}"
    meta = {"field": field}
    if reason == "AID_FORBIDDEN":
        raise NotAuthorized(message, reason=reason, metadata=meta)
    raise InvalidArgument(message, reason=reason, metadata=meta)


def select_aid(proto: ApduProtocol, aid: bytes, context: str = "SELECT AP", *,
               cancel: threading.Event | None = None) -> bool:
    """SELECT by AID (`00 A4 04 0C`): True on 9000, False on 6A82; denied AIDs never leave."""
    if not MIN_AID_LEN <= len(aid) <= MAX_AID_LEN:
        raise InvalidArgument(f"{context}: an AID is {MIN_AID_LEN}-{MAX_AID_LEN} bytes, "
                              f"got {len(aid)}")
    if is_denied(aid):
        raise NotAuthorized(f"{context}: this AP may never be selected", reason="AID_FORBIDDEN")
    resp = proto.send(CommandApdu(0x00, 0xA4, 0x04, 0x0C, aid), cancel=cancel)
    if resp.ok:
        return True
    if resp.sw == SW_FILE_NOT_FOUND:
        return False
    raise StatusWordError(resp.sw, context)
