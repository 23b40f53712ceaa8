"""The JPKI AP: token EF, authentication certificate, auth PIN and signing password."""

from __future__ import annotations

from .applet import Applet
from .files import BinaryFile, PinFile, PinState

JPKI_AID = bytes.fromhex("D392F000260100000001")
FID_TOKEN = 0x0006
FID_AUTH_CERT = 0x000A
FID_AUTH_PIN = 0x0018
FID_SIGN_PIN = 0x001B
TOKEN = b"JPKIAPICCTOKEN2".ljust(32, b" ")

DEFAULT_AUTH_PIN = "1234"
DEFAULT_SIGN_PIN = "ABC123"
AUTH_PIN_TRIES = 3
SIGN_PIN_TRIES = 5


class JpkiApplet(Applet):
    """JPKI AP `D3 92 F0 00 26 01 00 00 00 01` (certificate readable without PIN)."""

    def __init__(self, auth_cert: bytes, auth_pin: PinState, sign_pin: PinState) -> None:
        super().__init__(JPKI_AID)
        self.files = {
            FID_TOKEN: BinaryFile(TOKEN),
            FID_AUTH_CERT: BinaryFile(auth_cert),
            FID_AUTH_PIN: PinFile(auth_pin),
            FID_SIGN_PIN: PinFile(sign_pin),
        }
