"""ISO 7816-4 secure messaging for Type D (AES, DO87/97/99/8E): unchecked data never leaves."""

from __future__ import annotations

import hmac

from cardapd.errors import IntegrityError
from cardapd.myna.mutual_auth import SessionKeys
from cardlib.apdu import CommandApdu, ResponseApdu
from cardlib.errors import CardProtocolError
from cardlib.gp.primitives import (
    BLOCK,
    aes_cbc_decrypt,
    aes_cbc_encrypt,
    aes_cmac,
    aes_ecb_block,
    pad80,
    unpad80,
)
from cardlib.tlv import Tlv, encode_tlv, parse_one

SM_CLA = 0x0C
TAG_CRYPTOGRAM = 0x87
TAG_LE = 0x97
TAG_SW = 0x99
TAG_MAC = 0x8E
MAC_LEN = 8
PADDING_INDICATOR = 0x01
_RESPONSE_LAYOUTS = ([TAG_SW, TAG_MAC], [TAG_CRYPTOGRAM, TAG_SW, TAG_MAC])


def _split(data: bytes) -> tuple[list[Tlv], int]:
    """Parse the response DOs; return them and the offset where the last one starts."""
    dos: list[Tlv] = []
    pos = last = 0
    while pos < len(data):
        last = pos
        do, pos = parse_one(data, pos)
        dos.append(do)
    return dos, last


class SecureMessaging:
    """One SM session: wraps commands, checks and decrypts responses, strictly in turn."""

    def __init__(self, keys: SessionKeys) -> None:
        self._enc = keys.enc
        self._mac = keys.mac
        self._ssc = keys.ssc
        self._pending = False
        self._closed = False

    def __repr__(self) -> str:
        """Never the keys."""
        return f"SecureMessaging(closed={self._closed})"

    @property
    def closed(self) -> bool:
        """True once the session ended (integrity failure, transport failure, close())."""
        return self._closed

    def close(self) -> None:
        """End the session and forget the keys."""
        self._closed = True
        self._enc = self._mac = b""

    def _next_ssc(self) -> bytes:
        """Increment the SSC (before each command and each response) and return it."""
        self._ssc = (self._ssc + 1) % (1 << 128)
        return self._ssc.to_bytes(16, "big")

    def _fail(self, message: str, sw: int | None = None) -> IntegrityError:
        """Close the session and build the error (metadata: the SW only, never data)."""
        self.close()
        meta = {} if sw is None else {"sw": f"{sw:04X}"}
        return IntegrityError(message, metadata=meta)

    def wrap(self, cmd: CommandApdu) -> CommandApdu:
        """CLA 0C, `87 L 01 ‖ E(pad80(data))`, `97 01 Le`, `8E 08 MAC`; outer Le 00."""
        if self._closed:
            raise IntegrityError("the secure messaging session is closed")
        if self._pending:
            raise self._fail("secure messaging out of step: a response was never checked")
        if cmd.cla != 0x00:
            raise ValueError("only CLA 00 commands are wrapped")
        ssc = self._next_ssc()
        dos = b""
        if cmd.data:
            iv = aes_ecb_block(self._enc, ssc)
            dos += encode_tlv(TAG_CRYPTOGRAM, bytes((PADDING_INDICATOR,))
                              + aes_cbc_encrypt(self._enc, iv, pad80(cmd.data)))
        if cmd.le is not None:
            dos += encode_tlv(TAG_LE, bytes((cmd.le & 0xFF,)))
        header = bytes((SM_CLA, cmd.ins, cmd.p1, cmd.p2))
        mac = aes_cmac(self._mac, ssc + pad80(header + dos))[:MAC_LEN]
        body = dos + encode_tlv(TAG_MAC, mac)
        if len(body) > 255:
            raise ValueError("the wrapped command does not fit a short APDU")
        self._pending = True
        return CommandApdu(SM_CLA, cmd.ins, cmd.p1, cmd.p2, body, le=256)

    def unwrap(self, resp: ResponseApdu) -> ResponseApdu:
        """Check the MAC, DO99 against the SW, decrypt DO87; IntegrityError on any doubt."""
        if self._closed or not self._pending:
            raise self._fail("no wrapped command is waiting for this response")
        self._pending = False
        ssc = self._next_ssc()
        if not resp.data:
            raise self._fail(f"the card answered {resp.sw:04X} without secure messaging",
                             resp.sw)
        try:
            dos, mac_at = _split(resp.data)
        except CardProtocolError:
            raise self._fail("malformed secure messaging data objects", resp.sw) from None
        if [d.tag for d in dos] not in _RESPONSE_LAYOUTS or len(dos[-1].value) != MAC_LEN:
            raise self._fail("unexpected secure messaging data objects", resp.sw)
        expected = aes_cmac(self._mac, ssc + pad80(resp.data[:mac_at]))[:MAC_LEN]
        if not hmac.compare_digest(expected, dos[-1].value):
            raise self._fail("the response MAC is wrong", resp.sw)
        sw_do = dos[-2].value
        if len(sw_do) != 2 or int.from_bytes(sw_do, "big") != resp.sw:
            raise self._fail("DO99 does not match the status word", resp.sw)
        data = self._decrypt(ssc, dos[0].value) if len(dos) == 3 else b""
        return ResponseApdu(data, resp.sw)

    def _decrypt(self, ssc: bytes, value: bytes) -> bytes:
        """`01 ‖ cryptogram` → plain data (IV = E(S_ENC, SSC)), padding checked."""
        body = value[1:]
        if not value or value[0] != PADDING_INDICATOR or not body or len(body) % BLOCK:
            raise self._fail("malformed DO87")
        try:
            return unpad80(aes_cbc_decrypt(self._enc, aes_ecb_block(self._enc, ssc), body))
        except CardProtocolError:
            raise self._fail("bad padding in DO87") from None
