"""Card side of the Type A/D mutual authentication and Type D ISO 7816-4 secure messaging."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from cardlib.errors import CardProtocolError
from cardlib.gp.primitives import (
    aes_cbc_decrypt,
    aes_cbc_encrypt,
    aes_cmac,
    aes_ecb_block,
    pad80,
    unpad80,
)
from cardlib.tlv import encode_tlv, parse_all

from .apdu import Command

CHALLENGE_LEN = 8
KEY_HALF_LEN = 16
MAC_LEN = 8
SM_CLA = 0x0C
TAG_CRYPTOGRAM = 0x87
TAG_LE = 0x97
TAG_SW = 0x99
TAG_MAC = 0x8E
PADDING_INDICATOR = 0x01


class SmError(Exception):
    """The command is not acceptable secure messaging (the AP answers 6988, session closed)."""


@dataclass(repr=False)
class SmSession:
    """S_ENC, S_MAC and the send sequence counter after MUTUAL AUTHENTICATE."""

    enc: bytes
    mac: bytes
    ssc: int

    def __repr__(self) -> str:
        return "SmSession(hidden)"

    def _next_ssc(self) -> bytes:
        """Increment the SSC (before each command and each response) and return it."""
        self.ssc = (self.ssc + 1) % (1 << 128)
        return self.ssc.to_bytes(16, "big")

    def unwrap(self, cmd: Command) -> Command:
        """Check `8E` and decrypt `87` of an SM command; the inner command has CLA 00."""
        if cmd.cla != SM_CLA:
            raise SmError("not a secure messaging command")
        try:
            dos = parse_all(cmd.data)
        except (CardProtocolError, ValueError):
            raise SmError("malformed SM data objects") from None
        tags = [d.tag for d in dos]
        if tags not in ([TAG_MAC], [TAG_CRYPTOGRAM, TAG_MAC], [TAG_LE, TAG_MAC],
                        [TAG_CRYPTOGRAM, TAG_LE, TAG_MAC]):
            raise SmError("unexpected SM data objects")
        mac_do = dos[-1]
        covered = b"".join(encode_tlv(d.tag, d.value) for d in dos[:-1])
        ssc = self._next_ssc()
        header = bytes((cmd.cla, cmd.ins, cmd.p1, cmd.p2))
        expected = aes_cmac(self.mac, ssc + pad80(header + covered))[:MAC_LEN]
        if len(mac_do.value) != MAC_LEN or not hmac.compare_digest(expected, mac_do.value):
            raise SmError("wrong MAC")
        data = b""
        le: int | None = None
        for do in dos[:-1]:
            if do.tag == TAG_CRYPTOGRAM:
                data = self._decrypt(ssc, do.value)
            elif do.tag == TAG_LE:
                if len(do.value) != 1:
                    raise SmError("DO97 must hold one byte")
                le = do.value[0] or 256
        return Command(0x00, cmd.ins, cmd.p1, cmd.p2, data, le)

    def _decrypt(self, ssc: bytes, value: bytes) -> bytes:
        """`01 ‖ cryptogram` → plain data (IV = E(S_ENC, SSC))."""
        body = value[1:]
        if not value or value[0] != PADDING_INDICATOR or not body or len(body) % 16:
            raise SmError("malformed DO87")
        try:
            return unpad80(aes_cbc_decrypt(self.enc, aes_ecb_block(self.enc, ssc), body))
        except CardProtocolError:
            raise SmError("bad padding in DO87") from None

    def wrap(self, data: bytes, sw: int) -> bytes:
        """Response data: `87` (when data) ‖ `99 02 SW` ‖ `8E 08 MAC`."""
        ssc = self._next_ssc()
        out = b""
        if data:
            iv = aes_ecb_block(self.enc, ssc)
            out = encode_tlv(TAG_CRYPTOGRAM, bytes((PADDING_INDICATOR,))
                             + aes_cbc_encrypt(self.enc, iv, pad80(data)))
        out += encode_tlv(TAG_SW, sw.to_bytes(2, "big"))
        mac = aes_cmac(self.mac, ssc + pad80(out))[:MAC_LEN]
        return out + encode_tlv(TAG_MAC, mac)


def mutual_authenticate(key: bytes, rnd_icc: bytes,
                        cryptogram: bytes) -> tuple[bytes, SmSession] | None:
    """Check the terminal's cryptogram; return (card cryptogram, session) or None (wrong key)."""
    plain = aes_cbc_decrypt(key, bytes(16), cryptogram)
    rnd_ifd, echoed, k_ifd = plain[:8], plain[8:16], plain[16:32]
    if not hmac.compare_digest(echoed, rnd_icc):
        return None
    k_icc = secrets.token_bytes(KEY_HALF_LEN)
    answer = aes_cbc_encrypt(key, bytes(16), rnd_icc + rnd_ifd + k_icc)
    seed = bytes(a ^ b for a, b in zip(k_ifd, k_icc, strict=True))
    session = SmSession(enc=aes_cmac(key, b"\x01" + seed), mac=aes_cmac(key, b"\x02" + seed),
                        ssc=int.from_bytes(rnd_icc + rnd_ifd, "big"))
    return answer, session
