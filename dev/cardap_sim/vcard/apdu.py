"""Short-APDU parsing, status words and the Le rules (61xx / 6Cxx) of docs/card-model.md."""

from __future__ import annotations

from dataclasses import dataclass

SW_OK = 0x9000
SW_EOF_BEFORE_LE = 0x6282
SW_WRONG_LENGTH = 0x6700
SW_CHANNEL_NOT_SUPPORTED = 0x6881
SW_INCOMPATIBLE_FILE = 0x6981
SW_SECURITY_NOT_SATISFIED = 0x6982
SW_PIN_BLOCKED_VERIFY = 0x6983
SW_PIN_BLOCKED = 0x6984
SW_CONDITIONS_NOT_SATISFIED = 0x6985
SW_NO_CURRENT_EF = 0x6986
SW_WRONG_DATA = 0x6A80
SW_NOT_FOUND = 0x6A82
SW_NO_SPACE = 0x6A84
SW_WRONG_P1P2 = 0x6A86
SW_REF_NOT_FOUND = 0x6A88
SW_OFFSET_OUT_OF_RANGE = 0x6B00
SW_INS_NOT_SUPPORTED = 0x6D00
SW_CLA_NOT_SUPPORTED = 0x6E00

INS_SELECT = 0xA4
INS_READ_BINARY = 0xB0
INS_VERIFY = 0x20
INS_GET_RESPONSE = 0xC0
INS_GET_DATA = 0xCA

# Classes the card knows on channel 0: ISO, ISO+SM, GlobalPlatform, GlobalPlatform+SCP MAC.
KNOWN_CLASSES = frozenset({0x00, 0x0C, 0x80, 0x84})


class SwError(Exception):
    """Raised by command handlers to answer with a bare status word."""

    def __init__(self, sw: int) -> None:
        super().__init__(f"SW {sw:04X}")
        self.sw = sw


@dataclass(frozen=True, slots=True)
class Command:
    """A parsed short command APDU; `le` is None when absent, 256 for a `00` Le byte."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes
    le: int | None

    @property
    def p1p2(self) -> int:
        """P1 and P2 as one 16-bit number (READ BINARY offsets, GET DATA tags)."""
        return (self.p1 << 8) | self.p2

    @property
    def header_hex(self) -> str:
        """CLA INS P1 P2 in hex, for logs that must not show the command data."""
        return f"{self.cla:02X}{self.ins:02X}{self.p1:02X}{self.p2:02X}"


def check_class(cla: int) -> None:
    """Reject other logical channels (6881) and unknown classes (6E00)."""
    if cla & 0x40:  # further interindustry class: channels 4-19
        raise SwError(SW_CHANNEL_NOT_SUPPORTED if cla != 0xFF else SW_CLA_NOT_SUPPORTED)
    if cla & 0x03:
        raise SwError(SW_CHANNEL_NOT_SUPPORTED)
    if cla not in KNOWN_CLASSES:
        raise SwError(SW_CLA_NOT_SUPPORTED)


def parse(raw: bytes) -> Command:
    """Parse a short APDU (cases 1-4); extended length or a bad Lc raise 6700."""
    if len(raw) < 4:
        raise SwError(SW_WRONG_LENGTH)
    cla, ins, p1, p2 = raw[0], raw[1], raw[2], raw[3]
    check_class(cla)
    body = raw[4:]
    if not body:
        return Command(cla, ins, p1, p2, b"", None)
    if len(body) == 1:
        return Command(cla, ins, p1, p2, b"", body[0] or 256)
    lc = body[0]
    if lc == 0:  # extended length marker
        raise SwError(SW_WRONG_LENGTH)
    if len(body) == 1 + lc:
        return Command(cla, ins, p1, p2, bytes(body[1:]), None)
    if len(body) == 2 + lc:
        return Command(cla, ins, p1, p2, bytes(body[1:1 + lc]), body[-1] or 256)
    raise SwError(SW_WRONG_LENGTH)


def sw_bytes(sw: int) -> bytes:
    """Two status bytes."""
    return sw.to_bytes(2, "big")


def deliver(data: bytes, le: int | None) -> tuple[bytes, bytes]:
    """Apply the contract's Le rules; return (response APDU, data still pending for C0).

    Le absent -> `61 xx` and nothing yet; Le `00` (256: "up to 256") -> the data and
    `90 00`; another Le larger than the data -> `6C xx`; Le smaller than the data (or data
    over 256 bytes) -> Le bytes + `61 xx`.
    """
    if not data:
        return sw_bytes(SW_OK), b""
    if le is None:
        return bytes([0x61, min(len(data), 256) & 0xFF]), data
    if le == 256 and len(data) <= 256:
        return data + sw_bytes(SW_OK), b""
    if le > len(data):
        return bytes([0x6C, len(data)]), b""
    rest = data[le:]
    if rest:
        return data[:le] + bytes([0x61, min(len(rest), 256) & 0xFF]), rest
    return data + sw_bytes(SW_OK), b""
