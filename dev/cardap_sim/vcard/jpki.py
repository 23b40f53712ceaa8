"""The JPKI AP: token EF, the four certificate files, auth PIN and signing password.

File layout as OpenSC's JPKI driver reads it: EF 000A user authentication certificate and
EF 000B its CA's certificate, EF 0002 the signature CA's certificate (all three readable
without a PIN), EF 0001 the digital signature certificate (READ BINARY only after VERIFY of
the signing password, EF 001B). A certificate not issued is an EF that is not there.
"""

from __future__ import annotations

from .applet import Applet
from .certgen import JpkiCertificates
from .files import BinaryFile, ElementaryFile, PinFile, PinState

JPKI_AID = bytes.fromhex("D392F000260100000001")
FID_TOKEN = 0x0006
FID_SIGN_CERT = 0x0001
FID_SIGN_CA_CERT = 0x0002
FID_AUTH_CERT = 0x000A
FID_AUTH_CA_CERT = 0x000B
FID_AUTH_PIN = 0x0018
FID_SIGN_PIN = 0x001B
TOKEN = b"JPKIAPICCTOKEN2".ljust(32, b" ")

DEFAULT_AUTH_PIN = "1234"
DEFAULT_SIGN_PIN = "ABC123"
AUTH_PIN_TRIES = 3
SIGN_PIN_TRIES = 5


class JpkiApplet(Applet):
    """JPKI AP `D3 92 F0 00 26 01 00 00 00 01`."""

    def __init__(self, certs: JpkiCertificates, auth_pin: PinState, sign_pin: PinState) -> None:
        super().__init__(JPKI_AID)
        files: dict[int, ElementaryFile] = {
            FID_TOKEN: BinaryFile(TOKEN),
            FID_AUTH_CA_CERT: BinaryFile(certs.auth_ca),
            FID_SIGN_CA_CERT: BinaryFile(certs.sign_ca),
            FID_AUTH_PIN: PinFile(auth_pin),
            FID_SIGN_PIN: PinFile(sign_pin),
        }
        if certs.auth is not None:
            files[FID_AUTH_CERT] = BinaryFile(certs.auth)
        if certs.sign is not None:
            files[FID_SIGN_CERT] = BinaryFile(certs.sign, needs_pin=FID_SIGN_PIN)
        self.files = files
