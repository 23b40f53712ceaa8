"""Terminal side for the virtual card's GP and Type A/C/D tests (written independently of sim)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from cardap_sim.vcard.card import DEV_MASTER_KEYS, VirtualCard
from cardlib.apdu import CommandApdu, ResponseApdu, parse_response
from cardlib.gp.commands import (
    StoreDataEncryption,
    StoreDataOptions,
    dgi,
    install_for_install,
    install_for_load,
    install_parameters,
    load_commands,
    load_file_data_block,
    max_block_size,
    select,
    store_data_commands,
)
from cardlib.gp.keys import DiversifyingKeyStore
from cardlib.gp.primitives import (
    aes_cbc_decrypt,
    aes_cbc_encrypt,
    aes_cmac,
    aes_ecb_block,
    pad80,
    unpad80,
)
from cardlib.gp.scp03 import Scp03Session
from cardlib.tlv import encode_tlv, parse_all

ISD = bytes.fromhex("A000000151000000")
EXT = bytes.fromhex("A000000151455854")
REG = bytes.fromhex("A000000151524547")
MODULE = {"A": bytes.fromhex("D392F0004F41"), "C": bytes.fromhex("D392F0004F43"),
          "D": bytes.fromhex("D392F0004F44"), "custom": bytes.fromhex("D392F0004F58")}
C9_TYPE = {"A": 0x41, "C": 0x43, "D": 0x44, "custom": 0x58}
USER_ID = "ABCDEFGH1234S"
ACCESS_KEY = bytes(range(0x10, 0x20))
PIN = "1234"


def send(card: VirtualCard, cmd: CommandApdu) -> ResponseApdu:
    """Transmit, following 61xx with GET RESPONSE."""
    resp = parse_response(card.transmit(cmd.encode()))
    data = resp.data
    while resp.sw1 == 0x61:
        resp = parse_response(card.transmit(bytes((0x00, 0xC0, 0x00, 0x00, resp.sw2))))
        data += resp.data
    return ResponseApdu(data, resp.sw)


def open_scp(card: VirtualCard, level: int = 0x33) -> Scp03Session:
    """SELECT ISD, INITIALIZE UPDATE, EXTERNAL AUTHENTICATE with the dev master keys."""
    assert send(card, select(ISD)).sw == 0x9000
    session = Scp03Session(DiversifyingKeyStore(DEV_MASTER_KEYS), level=level, isd_aid=ISD)
    ext = session.open(send(card, session.begin()))
    session.confirm(send(card, ext))
    return session


def secure(card: VirtualCard, session: Scp03Session, cmd: CommandApdu) -> ResponseApdu:
    """Wrap, send, unwrap."""
    return session.unwrap(send(card, session.wrap(cmd)))


@dataclass(frozen=True)
class ApSpec:
    """What the loading service loads: type, AIDs, area, image size and personal data."""

    kind: str
    aid: bytes
    load_file: bytes
    area: bytes = EXT
    image_size: int = 600
    user_id: str = USER_ID
    infos: tuple[bytes, ...] = ()

    def perso_plain(self) -> bytes:
        """DGI 0101: `C1 0D uid` then info TLVs (or the custom content as-is)."""
        if self.kind == "custom":
            return b"\xC1\x0D" + self.user_id.encode() + b"".join(self.infos)
        tags = (0xC2, 0xC3, 0xC4)
        return encode_tlv(0xC1, self.user_id.encode()) + b"".join(
            encode_tlv(t, i) for t, i in zip(tags, self.infos, strict=False))


def default_infos(kind: str) -> tuple[bytes, ...]:
    """Three 4-byte infos for Type C; two 118-byte infos for A/D (255 bytes in all)."""
    if kind == "C":
        return (b"\x01\x02\x03\x04", b"\xA0\xB0\xC0\xD0", b"\xFF\xFF\xFF\xFF")
    if kind in ("A", "D"):
        return (bytes(range(118)), bytes(range(118, 236)))
    return (b"\x00" * 20,)


def spec(kind: str, n: int = 1, **kw: object) -> ApSpec:
    """A standard spec for `kind` with instance number n."""
    aid = MODULE[kind] + bytes((n, 0x01))
    lf = bytes.fromhex("D392F0004C") + bytes((ord(kind[0]), n))
    return ApSpec(kind, aid, lf, infos=default_infos(kind), **kw)  # type: ignore[arg-type]


def load_script(card: VirtualCard, session: Scp03Session, ap: ApSpec) -> list[CommandApdu]:
    """The plain commands of a full load (INSTALL, LOADs, INSTALL, STORE DATAs)."""
    block = max_block_size(card.profile.max_command_data, session.level)
    image = secrets.token_bytes(ap.image_size) if ap.image_size else b""
    cmds = [install_for_load(ap.load_file, ap.area)]
    cmds += load_commands(load_file_data_block(image), block)
    cmds.append(install_for_install(ap.load_file, MODULE[ap.kind], ap.aid,
                                    parameters=install_parameters(bytes((C9_TYPE[ap.kind],)))))
    data = dgi(0x0101, ap.perso_plain())
    options = StoreDataOptions()
    if ap.kind in ("A", "D"):
        data += dgi(0x8101, session.encrypt_sensitive(pad80(ACCESS_KEY)))
        data += dgi(0x8102, session.encrypt_sensitive(pad80(PIN.encode())))
        data += dgi(0x0103, b"\x03")
        options = StoreDataOptions(encryption=StoreDataEncryption.ENCRYPTED)
    cmds += store_data_commands(data, block, options=options)
    return cmds


def load_ap(card: VirtualCard, ap: ApSpec, level: int = 0x33) -> list[ResponseApdu]:
    """Open SCP03 and run a full load; returns the unwrapped responses."""
    session = open_scp(card, level)
    return [secure(card, session, c) for c in load_script(card, session, ap)]


# --- Type A / D terminal ------------------------------------------------------------------

@dataclass
class SmKeys:
    """Terminal copy of S_ENC, S_MAC and the SSC."""

    enc: bytes
    mac: bytes
    ssc: int

    def bump(self) -> bytes:
        """SSC + 1, as 16 bytes."""
        self.ssc = (self.ssc + 1) % (1 << 128)
        return self.ssc.to_bytes(16, "big")


def mutual_auth(card: VirtualCard, key: bytes = ACCESS_KEY) -> tuple[ResponseApdu, SmKeys | None]:
    """GET CHALLENGE + MUTUAL AUTHENTICATE; session keys when the card accepted."""
    chal = send(card, CommandApdu(0x00, 0x84, 0x00, 0x00, le=8))
    assert chal.sw == 0x9000
    assert len(chal.data) == 8
    rnd_ifd, k_ifd = secrets.token_bytes(8), secrets.token_bytes(16)
    crypto = aes_cbc_encrypt(key, bytes(16), rnd_ifd + chal.data + k_ifd)
    resp = send(card, CommandApdu(0x00, 0x82, 0x00, 0x81, crypto, le=256))
    if resp.sw != 0x9000:
        return resp, None
    plain = aes_cbc_decrypt(key, bytes(16), resp.data)
    assert plain[:8] == chal.data
    assert plain[8:16] == rnd_ifd
    seed = bytes(a ^ b for a, b in zip(k_ifd, plain[16:32], strict=True))
    return resp, SmKeys(aes_cmac(key, b"\x01" + seed), aes_cmac(key, b"\x02" + seed),
                        int.from_bytes(chal.data + rnd_ifd, "big"))


def sm_wrap(keys: SmKeys, ins: int, p1: int, p2: int, data: bytes = b"",
            le: int | None = None, *, tamper: bool = False) -> CommandApdu:
    """An SM command: CLA 0C, `87 L 01 ‖ E(data)`, `97 01 Le`, `8E 08 MAC`."""
    ssc = keys.bump()
    dos = b""
    if data:
        iv = aes_ecb_block(keys.enc, ssc)
        dos += encode_tlv(0x87, b"\x01" + aes_cbc_encrypt(keys.enc, iv, pad80(data)))
    if le is not None:
        dos += encode_tlv(0x97, bytes((le & 0xFF,)))
    mac = aes_cmac(keys.mac, ssc + pad80(bytes((0x0C, ins, p1, p2)) + dos))[:8]
    if tamper:
        mac = bytes((mac[0] ^ 1,)) + mac[1:]
    return CommandApdu(0x0C, ins, p1, p2, dos + encode_tlv(0x8E, mac), le=256)


def sm_unwrap(keys: SmKeys, resp: ResponseApdu) -> ResponseApdu:
    """Check the response MAC and decrypt `87`; returns (data, inner SW)."""
    ssc = keys.bump()
    dos = parse_all(resp.data)
    assert [d.tag for d in dos][-2:] == [0x99, 0x8E]
    covered = b"".join(encode_tlv(d.tag, d.value) for d in dos[:-1])
    assert aes_cmac(keys.mac, ssc + pad80(covered))[:8] == dos[-1].value, "response MAC"
    data = b""
    if dos[0].tag == 0x87:
        iv = aes_ecb_block(keys.enc, ssc)
        data = unpad80(aes_cbc_decrypt(keys.enc, iv, dos[0].value[1:]))
    sw = int.from_bytes(dos[-2].value, "big")
    assert sw == resp.sw
    return ResponseApdu(data, sw)


def sm_send(card: VirtualCard, keys: SmKeys, ins: int, p1: int, p2: int, data: bytes = b"",
            le: int | None = None) -> ResponseApdu:
    """Wrap, send, unwrap one SM command."""
    return sm_unwrap(keys, send(card, sm_wrap(keys, ins, p1, p2, data, le)))
