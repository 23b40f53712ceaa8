"""The card id: from data unique to the card and readable without a PIN, keyed-hashed on the
reader's thread, never the ATR (docs/decisions.md D50).

Sources, best first:
1. the JPKI user authentication certificate (EF 000A of the JPKI AP, readable without a
   PIN: OpenSC's JPKI driver, jpki/myna, nfcpy_mynacard): its issuer and serial number,
   unique per certificate by RFC 5280 §4.1.2.2, and readable on a contact and a contactless
   reader alike. Only the head of the file is read (one READ BINARY of 256 bytes);
2. the CPLC's IC fabricator and IC serial number, where the card answers GET DATA 9F7F
   (not established in public sources for a real My Number Card; the model answers it on
   contact only).
Both are person-linked (the certificate serial is J-LIS's key to the holder; a chip serial
follows one holder for ten years), so neither leaves the card session in clear: the id is
`<source>-` + 20 hex digits of HMAC-SHA256 under the terminal's key. A card that offers
neither gets `unconfirmed-` + a random per-insertion value: the daemon cannot tell two such
cards apart, and never pretends to.

No id ever holds 12 digits in a row, like every id the daemon makes (D9, D59): the audit
log refuses a value shaped like a My Number and the log formatter masks any 12 digits
alone, so the 20 hex digits are two groups of 10 and the random value two groups of 8.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass, field

from cardapd.myna.files import read_binary, select_ef
from cardlib.errors import CardProtocolError, StatusWordError
from cardlib.protocol import ApduProtocol
from cardlib.tlv import read_header

EF_AUTH_CERT = 0x000A
HEAD_BYTES = 256
MAX_HEAD_BYTES = 1024
ID_HEX = 20  # 80 bits: no collision in any population of cards a terminal will see
SOURCE_CERT = "cert"
SOURCE_CPLC = "cplc"
UNCONFIRMED = "unconfirmed"
_DOMAIN = b"cardapd card id v1\x00"


@dataclass(frozen=True)
class CardIdKey:
    """The terminal's key for card ids (32 random bytes in the state directory)."""

    value: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.value) < 16:
            raise ValueError("a card id key is at least 16 bytes")

    def name(self, source: str, datum: bytes) -> str:
        """`<source>-` + the first 20 hex digits of HMAC-SHA256(key, domain, source, datum),
        upper case, in two groups of 10 (never 12 digits in a row)."""
        mac = hmac.new(self.value, _DOMAIN + source.encode() + b"\x00" + datum,
                       hashlib.sha256).hexdigest()[:ID_HEX].upper()
        return f"{source}-{mac[:ID_HEX // 2]}-{mac[ID_HEX // 2:]}"

    def cplc_id(self, ic_fabricator: bytes, ic_serial: bytes) -> str:
        """The id of a card from its CPLC IC fabricator (2 bytes) and IC serial (4 bytes)."""
        return self.name(SOURCE_CPLC, ic_fabricator + ic_serial)

    def cert_id(self, issuer_and_serial: bytes) -> str:
        """The id of a card from its authentication certificate's issuer and serial."""
        return self.name(SOURCE_CERT, issuer_and_serial)


def unconfirmed_id() -> str:
    """The id of a card that offers no unique datum: random, this insertion only; two
    groups of 8 hex digits, so never 12 digits in a row."""
    raw = secrets.token_hex(8).upper()
    return f"{UNCONFIRMED}-{raw[:8]}-{raw[8:]}"


def is_unconfirmed(card_id: str) -> bool:
    """Whether `card_id` names one insertion of a card that could not be identified."""
    return card_id.startswith(UNCONFIRMED + "-")


class _NeedMore(Exception):
    """The head read so far ends inside the issuer: read up to `size` bytes."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def issuer_and_serial(head: bytes, whole: bool = False) -> bytes | None:
    """The DER of the serialNumber INTEGER and the issuer Name of a certificate, from the
    first bytes of its file (None when they do not start a DER certificate). Raises
    _NeedMore when the issuer ends beyond `head`, unless `head` is the `whole` file."""
    try:
        tag, _, pos = read_header(head)  # Certificate SEQUENCE
        if tag != 0x30:
            return None
        tag, _, pos = read_header(head, pos)  # tbsCertificate SEQUENCE
        if tag != 0x30:
            return None
        tag, length, value = read_header(head, pos)
        if tag == 0xA0:  # [0] EXPLICIT version
            pos = value + length
            tag, length, value = read_header(head, pos)
        if tag != 0x02 or not 1 <= length <= 20:  # serialNumber (RFC 5280: at most 20 octets)
            return None
        serial_at, serial_end = pos, value + length
        tag, length, value = read_header(head, serial_end)  # signature AlgorithmIdentifier
        if tag != 0x30:
            return None
        issuer_at = value + length
        tag, length, value = read_header(head, issuer_at)  # issuer Name
        if tag != 0x30:
            return None
    except CardProtocolError:
        if whole or len(head) >= MAX_HEAD_BYTES:
            return None
        raise _NeedMore(MAX_HEAD_BYTES) from None
    issuer_end = value + length
    if issuer_end > len(head):
        if whole or issuer_end > MAX_HEAD_BYTES:
            return None
        raise _NeedMore(issuer_end)
    return head[serial_at:serial_end] + head[issuer_at:issuer_end]


def read_auth_cert_identity(proto: ApduProtocol, *,
                            cancel: threading.Event | None = None) -> bytes | None:
    """With the JPKI AP selected: the issuer and serial of the authentication certificate
    (None when EF 000A is absent, empty, unreadable without a PIN or not a certificate)."""
    try:
        if not select_ef(proto, EF_AUTH_CERT, cancel=cancel):
            return None
        head = read_binary(proto, HEAD_BYTES, cancel=cancel)
        try:
            return issuer_and_serial(head, whole=len(head) < HEAD_BYTES)
        except _NeedMore as more:
            head += read_binary(proto, more.size - len(head), len(head), cancel=cancel)
        return issuer_and_serial(head, whole=True)
    except StatusWordError:
        return None
