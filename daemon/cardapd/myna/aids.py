"""Named AIDs, the deny list, and `select_aid`: the only place the daemon selects by AID."""

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

MIN_AID_LEN = 5
MAX_AID_LEN = 16


def is_denied(aid: bytes) -> bool:
    """True if SELECT of `aid` could reach a denied AP (also by partial-AID matching)."""
    return any(d.startswith(aid) or aid.startswith(d) for d in DENY_LIST)


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
