"""Terminal side of GET CHALLENGE + MUTUAL AUTHENTICATE (Types A and D) and the session keys."""

from __future__ import annotations

import hmac
import secrets
import threading
from dataclasses import dataclass

from cardapd.errors import CardError, InvalidArgument
from cardlib.apdu import CommandApdu
from cardlib.errors import CardProtocolError, StatusWordError
from cardlib.gp.primitives import aes_cbc_decrypt, aes_cbc_encrypt, aes_cmac
from cardlib.protocol import ApduProtocol

ACCESS_KEY_SIZES = (16, 32)
CHALLENGE_LEN = 8
KEY_HALF_LEN = 16
CRYPTOGRAM_LEN = 2 * CHALLENGE_LEN + KEY_HALF_LEN
INS_GET_CHALLENGE = 0x84
INS_MUTUAL_AUTHENTICATE = 0x82
P2_AP_KEY = 0x81
SW_AUTH_FAILED = 0x6300
_ZERO_IV = bytes(16)


class ApAuthFailed(CardError):
    """Mutual authentication with the AP failed: wrong access key or a card cryptogram mismatch."""

    reason = "AP_AUTH_FAILED"


@dataclass(frozen=True, repr=False)
class SessionKeys:
    """S_ENC, S_MAC (AES-128) and the initial send sequence counter; never printed."""

    enc: bytes
    mac: bytes
    ssc: int

    def __repr__(self) -> str:
        """Nothing secret in reprs, logs or tracebacks."""
        return "SessionKeys(<hidden>)"


def derive_session_keys(access_key: bytes, k_ifd: bytes, k_icc: bytes,
                        rnd_icc: bytes, rnd_ifd: bytes) -> SessionKeys:
    """S_ENC/S_MAC = AES-CMAC(K, 01|02 ‖ K.IFD ⊕ K.ICC); SSC = RND.ICC ‖ RND.IFD."""
    seed = bytes(a ^ b for a, b in zip(k_ifd, k_icc, strict=True))
    return SessionKeys(enc=aes_cmac(access_key, b"\x01" + seed),
                       mac=aes_cmac(access_key, b"\x02" + seed),
                       ssc=int.from_bytes(rnd_icc + rnd_ifd, "big"))


def mutual_authenticate(proto: ApduProtocol, access_key: bytes, *,
                        cancel: threading.Event | None = None) -> SessionKeys:
    """Authenticate with the selected AP's access key (16/32 bytes) and return session keys.

    Raises ApAuthFailed on `63 00` (wrong key) or a card cryptogram that does not match,
    StatusWordError for other status words, CardProtocolError for a malformed challenge.
    """
    if len(access_key) not in ACCESS_KEY_SIZES:
        raise InvalidArgument("an AP access key is 16 or 32 bytes")
    with proto.sensitive():
        chal = proto.send(CommandApdu(0x00, INS_GET_CHALLENGE, 0x00, 0x00, le=CHALLENGE_LEN),
                          cancel=cancel)
        if not chal.ok:
            raise StatusWordError(chal.sw, "GET CHALLENGE")
        if len(chal.data) != CHALLENGE_LEN:
            raise CardProtocolError(f"GET CHALLENGE returned {len(chal.data)} bytes, "
                                    f"expected {CHALLENGE_LEN}")
        rnd_icc = chal.data
        rnd_ifd = secrets.token_bytes(CHALLENGE_LEN)
        k_ifd = secrets.token_bytes(KEY_HALF_LEN)
        ours = aes_cbc_encrypt(access_key, _ZERO_IV, rnd_ifd + rnd_icc + k_ifd)
        resp = proto.send(CommandApdu(0x00, INS_MUTUAL_AUTHENTICATE, 0x00, P2_AP_KEY, ours,
                                      le=256), cancel=cancel)
        if resp.sw == SW_AUTH_FAILED:
            raise ApAuthFailed("mutual authentication failed: wrong access key")
        if not resp.ok:
            raise StatusWordError(resp.sw, "MUTUAL AUTHENTICATE")
        if len(resp.data) != CRYPTOGRAM_LEN:
            raise ApAuthFailed(f"the card's cryptogram is {len(resp.data)} bytes, "
                               f"expected {CRYPTOGRAM_LEN}")
        plain = aes_cbc_decrypt(access_key, _ZERO_IV, resp.data)
        icc_ok = hmac.compare_digest(plain[:CHALLENGE_LEN], rnd_icc)
        ifd_ok = hmac.compare_digest(plain[CHALLENGE_LEN:2 * CHALLENGE_LEN], rnd_ifd)
        if not (icc_ok and ifd_ok):
            raise ApAuthFailed("the card's cryptogram does not match: it does not hold the key")
        return derive_session_keys(access_key, k_ifd, plain[2 * CHALLENGE_LEN:], rnd_icc,
                                   rnd_ifd)
