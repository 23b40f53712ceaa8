"""Short command/response APDUs and status words (ISO/IEC 7816-4), the only framing we use."""

from __future__ import annotations

from dataclasses import dataclass, replace

from cardlib.errors import CardProtocolError

SW_OK = 0x9000
SW_EOF_BEFORE_LE = 0x6282
SW_GP_MORE_DATA = 0x6310
SW_WRONG_LENGTH = 0x6700
SW_CHANNEL_NOT_SUPPORTED = 0x6881
SW_SECURITY_NOT_SATISFIED = 0x6982
SW_AUTH_METHOD_BLOCKED = 0x6983
SW_REF_DATA_NOT_USABLE = 0x6984
SW_CONDITIONS_NOT_SATISFIED = 0x6985
SW_NO_CURRENT_EF = 0x6986
SW_WRONG_DATA = 0x6A80
SW_FUNC_NOT_SUPPORTED = 0x6A81
SW_FILE_NOT_FOUND = 0x6A82
SW_NOT_ENOUGH_MEMORY = 0x6A84
SW_INCORRECT_P1P2 = 0x6A86
SW_REF_DATA_NOT_FOUND = 0x6A88
SW_WRONG_P1P2 = 0x6B00
SW_INS_NOT_SUPPORTED = 0x6D00
SW_CLA_NOT_SUPPORTED = 0x6E00
SW_UNKNOWN = 0x6F00

SW_NAMES: dict[int, str] = {
    SW_OK: "success",
    SW_EOF_BEFORE_LE: "end of file reached before Le bytes",
    SW_GP_MORE_DATA: "more data available (GlobalPlatform)",
    SW_WRONG_LENGTH: "wrong length",
    SW_CHANNEL_NOT_SUPPORTED: "logical channel not supported",
    SW_SECURITY_NOT_SATISFIED: "security status not satisfied",
    SW_AUTH_METHOD_BLOCKED: "authentication method blocked",
    SW_REF_DATA_NOT_USABLE: "reference data not usable (blocked)",
    SW_CONDITIONS_NOT_SATISFIED: "conditions of use not satisfied",
    SW_NO_CURRENT_EF: "command not allowed (no current EF)",
    SW_WRONG_DATA: "incorrect data field",
    SW_FUNC_NOT_SUPPORTED: "function not supported",
    SW_FILE_NOT_FOUND: "file or application not found",
    SW_NOT_ENOUGH_MEMORY: "not enough memory space",
    SW_INCORRECT_P1P2: "incorrect P1-P2",
    SW_REF_DATA_NOT_FOUND: "referenced data not found",
    SW_WRONG_P1P2: "wrong parameters P1-P2 (offset outside the EF)",
    SW_INS_NOT_SUPPORTED: "instruction not supported",
    SW_CLA_NOT_SUPPORTED: "class not supported",
    SW_UNKNOWN: "no precise diagnosis",
}


def describe_sw(sw: int) -> str:
    """Return `"XXXX meaning"` for logs and error messages read by humans."""
    sw1, sw2 = sw >> 8, sw & 0xFF
    if sw in SW_NAMES:
        text = SW_NAMES[sw]
    elif sw1 == 0x61:
        text = f"{sw2 or 256} more bytes available (GET RESPONSE)"
    elif sw1 == 0x6C:
        text = f"wrong Le, exact length is {sw2 or 256}"
    elif sw1 == 0x63 and sw2 & 0xF0 == 0xC0:
        left = sw2 & 0x0F
        text = f"verification failed, {left} {'try' if left == 1 else 'tries'} left"
    elif sw1 in (0x62, 0x63):
        text = "warning"
    elif sw1 in (0x64, 0x65, 0x66):
        text = "execution error"
    elif 0x67 <= sw1 <= 0x6F:
        text = "checking error"
    else:
        text = "unknown status word"
    return f"{sw:04X} {text}"


def _check_byte(name: str, value: int) -> None:
    """Reject header fields that do not fit a byte."""
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{name} must be a byte, got {value}")


@dataclass(frozen=True)
class CommandApdu:
    """A command APDU; `le=None` means no Le field, 256 is encoded as `00`."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None

    def __post_init__(self) -> None:
        for name in ("cla", "ins", "p1", "p2"):
            _check_byte(name, getattr(self, name))

    def with_le(self, le: int) -> CommandApdu:
        """The same command with another Le (used for `6Cxx` re-sends)."""
        return replace(self, le=le)

    def encode(self) -> bytes:
        """Encode as a short APDU; ValueError when Lc > 255 or Le is outside 1..256."""
        if len(self.data) > 255:
            raise ValueError(f"short APDU data is at most 255 bytes, got {len(self.data)}")
        if self.le is not None and not 1 <= self.le <= 256:
            raise ValueError(f"short APDU Le must be 1..256, got {self.le}")
        out = bytearray((self.cla, self.ins, self.p1, self.p2))
        if self.data:
            out.append(len(self.data))
            out += self.data
        if self.le is not None:
            out.append(self.le & 0xFF)
        return bytes(out)


@dataclass(frozen=True)
class ResponseApdu:
    """A response APDU: data and the status word."""

    data: bytes
    sw: int

    @property
    def sw1(self) -> int:
        """The first status byte."""
        return self.sw >> 8

    @property
    def sw2(self) -> int:
        """The second status byte."""
        return self.sw & 0xFF

    @property
    def ok(self) -> bool:
        """True for `90 00`."""
        return self.sw == SW_OK


def parse_response(raw: bytes) -> ResponseApdu:
    """Split raw response bytes; fewer than 2 bytes is a protocol error."""
    if len(raw) < 2:
        raise CardProtocolError(f"response of {len(raw)} bytes has no status word")
    return ResponseApdu(bytes(raw[:-2]), (raw[-2] << 8) | raw[-1])
