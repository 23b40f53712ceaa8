"""SCP03 (GP Card Spec 2.3 Amendment D): key derivation, host session and card session.

Both sessions are pure state machines over CommandApdu/ResponseApdu: no I/O, so the host
side can run in the loading service (which holds the keys) and the card side in the
virtual card. `cardlib.gp.channel` runs a host session over an ApduProtocol.
"""

from __future__ import annotations

import enum
import hmac
import secrets
from collections import deque
from dataclasses import dataclass

from cardlib.apdu import CommandApdu, ResponseApdu
from cardlib.errors import (
    CardAuthenticationError,
    CardProtocolError,
    CommandRejected,
    ResponseIntegrityError,
    SecureChannelError,
    StatusWordError,
)
from cardlib.gp.keys import KDD_LEN, KeyStore, StaticKeys
from cardlib.gp.primitives import (
    BLOCK,
    aes_cbc_decrypt,
    aes_cbc_encrypt,
    aes_cmac,
    aes_ecb_block,
    check_aes_key,
    kdf_counter,
    pad80,
    unpad80,
)

# Derivation constants (Amendment D table 4-1)
DERIVE_CARD_CRYPTOGRAM = 0x00
DERIVE_HOST_CRYPTOGRAM = 0x01
DERIVE_CARD_CHALLENGE = 0x02
DERIVE_S_ENC = 0x04
DERIVE_S_MAC = 0x06
DERIVE_S_RMAC = 0x07

SCP03 = 0x03
I_PSEUDO_RANDOM_CHALLENGE = 0x10  # i bit: card challenge derived from a sequence counter
I_S16 = 0x01  # i bit: 16-byte challenges/cryptograms (not supported: the model uses S8)
DEFAULT_I = 0x70

INS_INITIALIZE_UPDATE = 0x50
INS_EXTERNAL_AUTHENTICATE = 0x82
CHALLENGE_LEN = 8
CRYPTOGRAM_LEN = 8
MAC_LEN = 8
SEQUENCE_COUNTER_LEN = 3
MAX_SHORT_DATA = 255


class SecurityLevel(enum.IntFlag):
    """EXTERNAL AUTHENTICATE P1: which protections apply to the rest of the session."""

    C_MAC = 0x01
    C_DECRYPTION = 0x02
    R_MAC = 0x10
    R_ENCRYPTION = 0x20


VALID_LEVELS = frozenset({0x01, 0x03, 0x11, 0x13, 0x33})
FULL_SECURITY = SecurityLevel(0x33)


def check_level(level: int) -> SecurityLevel:
    """`level` as a SecurityLevel; ValueError unless Amendment D allows it (01/03/11/13/33)."""
    if level not in VALID_LEVELS:
        raise ValueError(f"security level {level:02X} is not one of 01, 03, 11, 13, 33")
    return SecurityLevel(level)


def derive(key: bytes, constant: int, context: bytes, bits: int) -> bytes:
    """Amendment D KDF: label 00x11 || constant || 00 || L (bits, 2 bytes) || i || context."""
    check_aes_key(key)
    if bits <= 0 or bits % 8 or not 0 <= constant <= 0xFF:
        raise ValueError("bits must be a positive multiple of 8 and constant a byte")
    prefix = bytes(11) + bytes((constant, 0x00)) + bits.to_bytes(2, "big")
    return kdf_counter(key, prefix, context, bits // 8)


def card_challenge(static_enc: bytes, sequence_counter: bytes, aid: bytes) -> bytes:
    """Pseudo-random card challenge (i bit 10): derive(static ENC, 02, counter || AID, 64)."""
    return derive(static_enc, DERIVE_CARD_CHALLENGE, sequence_counter + aid, 64)


@dataclass(frozen=True, repr=False, eq=False)
class SessionKeys:
    """S-ENC, S-MAC, S-RMAC of one session, plus the static DEK; repr hides them."""

    enc: bytes
    mac: bytes
    rmac: bytes
    dek: bytes

    @classmethod
    def derive(cls, static: StaticKeys, context: bytes) -> SessionKeys:
        """Derive session keys; `context` is host challenge || card challenge."""
        bits = static.key_bits
        return cls(enc=derive(static.enc, DERIVE_S_ENC, context, bits),
                   mac=derive(static.mac, DERIVE_S_MAC, context, bits),
                   rmac=derive(static.mac, DERIVE_S_RMAC, context, bits),
                   dek=static.dek)

    def __repr__(self) -> str:
        return f"SessionKeys(AES-{len(self.enc) * 8}, hidden)"


def card_cryptogram(keys: SessionKeys, context: bytes) -> bytes:
    """The 8-byte card cryptogram: derive(S-MAC, 00, host || card challenge, 64)."""
    return derive(keys.mac, DERIVE_CARD_CRYPTOGRAM, context, 64)


def host_cryptogram(keys: SessionKeys, context: bytes) -> bytes:
    """The 8-byte host cryptogram: derive(S-MAC, 01, host || card challenge, 64)."""
    return derive(keys.mac, DERIVE_HOST_CRYPTOGRAM, context, 64)


@dataclass(frozen=True)
class InitUpdateResponse:
    """The parsed INITIALIZE UPDATE response (S8 mode)."""

    kdd: bytes
    kvn: int
    scp: int
    i: int
    card_challenge: bytes
    card_cryptogram: bytes
    sequence_counter: bytes | None

    @classmethod
    def parse(cls, data: bytes) -> InitUpdateResponse:
        """Parse KDD 10 | kvn, 03, i | challenge 8 | cryptogram 8 | [sequence counter 3]."""
        if len(data) not in (29, 32):
            raise CardProtocolError(f"INITIALIZE UPDATE response of {len(data)} bytes, "
                                    "expected 29 or 32")
        kvn, scp, i = data[10], data[11], data[12]
        if scp != SCP03:
            raise CardProtocolError(f"card offers SCP{scp:02X}, only SCP03 is supported")
        if i & I_S16:
            raise CardProtocolError(f"SCP03 i={i:02X} asks for S16 mode, only S8 is supported")
        pseudo = bool(i & I_PSEUDO_RANDOM_CHALLENGE)
        if pseudo != (len(data) == 32):
            raise CardProtocolError(f"SCP03 i={i:02X} does not match a response of "
                                    f"{len(data)} bytes (sequence counter presence)")
        return cls(kdd=bytes(data[:10]), kvn=kvn, scp=scp, i=i,
                   card_challenge=bytes(data[13:21]), card_cryptogram=bytes(data[21:29]),
                   sequence_counter=bytes(data[29:32]) if pseudo else None)

    def encode(self) -> bytes:
        """Encode as the card sends it."""
        return (self.kdd + bytes((self.kvn, self.scp, self.i)) + self.card_challenge
                + self.card_cryptogram + (self.sequence_counter or b""))


def wrapped_length(plain_len: int, level: SecurityLevel) -> int:
    """Length of the command data field after wrapping `plain_len` bytes at `level`."""
    n = plain_len
    if level & SecurityLevel.C_DECRYPTION and n:
        n = (n // BLOCK + 1) * BLOCK
    if level & SecurityLevel.C_MAC:
        n += MAC_LEN
    return n


def max_plain_length(max_command_data: int, level: SecurityLevel) -> int:
    """The largest plain data length whose wrapped form fits `max_command_data` bytes."""
    room = min(max_command_data, MAX_SHORT_DATA)
    if level & SecurityLevel.C_MAC:
        room -= MAC_LEN
    if level & SecurityLevel.C_DECRYPTION:
        room = (room // BLOCK) * BLOCK - 1
    if room <= 0:
        raise ValueError(f"max command data {max_command_data} leaves no room at level {level:02X}")
    return room


class _Codec:
    """The secure messaging arithmetic shared by the host and the card side."""

    def __init__(self, keys: SessionKeys, level: SecurityLevel) -> None:
        self.keys = keys
        self.level = level
        self.chain = bytes(BLOCK)  # MAC chaining value
        self.counter = 0  # encryption counter, incremented before each command (C-DEC)

    def command_mac(self, cla: int, ins: int, p1: int, p2: int, data: bytes) -> bytes:
        """Full C-MAC over chain || header || Lc (incl. the MAC) || data; updates the chain."""
        header = bytes((cla, ins, p1, p2, len(data) + MAC_LEN))
        full = aes_cmac(self.keys.mac, self.chain + header + data)
        self.chain = full
        return full[:MAC_LEN]

    def command_icv(self) -> bytes:
        """ICV for C-DEC: AES(S-ENC, counter as 16 bytes)."""
        return aes_ecb_block(self.keys.enc, self.counter.to_bytes(BLOCK, "big"))

    def response_icv(self, counter: int) -> bytes:
        """ICV for R-ENC: AES(S-ENC, counter with 80 in its first byte)."""
        block = bytearray(counter.to_bytes(BLOCK, "big"))
        block[0] = 0x80
        return aes_ecb_block(self.keys.enc, bytes(block))

    def response_mac(self, chain: bytes, data: bytes, sw: int) -> bytes:
        """R-MAC over the command's chaining value || response data || SW."""
        return aes_cmac(self.keys.rmac, chain + data + sw.to_bytes(2, "big"))[:MAC_LEN]


def is_error_sw(sw: int) -> bool:
    """True for status words that carry no R-MAC/R-ENC (all but 9000, 62xx and 63xx)."""
    return not (sw == 0x9000 or sw >> 8 in (0x62, 0x63))


@dataclass(frozen=True)
class _Pending:
    """What unwrap needs from the command a response answers."""

    chain: bytes
    counter: int


class _HostState(enum.Enum):
    NEW = "new"
    INITIALIZING = "initializing"
    AUTHENTICATING = "authenticating"
    OPEN = "open"
    CLOSED = "closed"


class Scp03Session:
    """Host side of one SCP03 session, pure: begin() -> open() -> confirm(), then wrap/unwrap.

    Commands may be wrapped ahead of their responses (batches produced by the loading
    service); with R-MAC, responses must then be unwrapped in the order of the commands.
    """

    def __init__(self, keys: KeyStore, *, level: int = FULL_SECURITY, kvn: int = 0,
                 host_challenge: bytes | None = None, isd_aid: bytes | None = None) -> None:
        self._store = keys
        self._level = check_level(level)
        if not 0 <= kvn <= 0xFF:
            raise ValueError("kvn must be a byte (0 = the card's default key set)")
        self._kvn = kvn
        if host_challenge is not None and len(host_challenge) != CHALLENGE_LEN:
            raise ValueError("host challenge must be 8 bytes")
        self._host_challenge = host_challenge or secrets.token_bytes(CHALLENGE_LEN)
        self._isd_aid = isd_aid
        self._state = _HostState.NEW
        self._codec: _Codec | None = None
        self._pending: deque[_Pending] = deque()
        self._init: InitUpdateResponse | None = None

    def __repr__(self) -> str:
        return f"Scp03Session(state={self._state.value}, level={int(self._level):02X})"

    @property
    def level(self) -> SecurityLevel:
        """The security level requested in EXTERNAL AUTHENTICATE."""
        return self._level

    @property
    def is_open(self) -> bool:
        """True once EXTERNAL AUTHENTICATE was built (commands may be wrapped)."""
        return self._state in (_HostState.AUTHENTICATING, _HostState.OPEN)

    @property
    def card(self) -> InitUpdateResponse:
        """The card's INITIALIZE UPDATE answer (KDD, key version, i, challenge)."""
        if self._init is None:
            raise SecureChannelError("no INITIALIZE UPDATE response yet")
        return self._init

    @property
    def pending_responses(self) -> int:
        """Wrapped commands whose responses have not been unwrapped yet (R-MAC only)."""
        return len(self._pending)

    @property
    def encryption_counter(self) -> int:
        """The C-DEC counter of the last wrapped command."""
        return 0 if self._codec is None else self._codec.counter

    def begin(self) -> CommandApdu:
        """Build INITIALIZE UPDATE (80 50 kvn 00 08 host challenge 00)."""
        if self._state is not _HostState.NEW:
            raise SecureChannelError("begin() called twice on one session")
        self._state = _HostState.INITIALIZING
        return CommandApdu(0x80, INS_INITIALIZE_UPDATE, self._kvn, 0x00,
                           self._host_challenge, le=256)

    def open(self, init_update_response: ResponseApdu | bytes) -> CommandApdu:
        """Check the card cryptogram and build EXTERNAL AUTHENTICATE (C-MAC'd, starts the chain)."""
        if self._state is not _HostState.INITIALIZING:
            raise SecureChannelError("open() needs begin() first, once")
        if isinstance(init_update_response, ResponseApdu):
            if not init_update_response.ok:
                self._state = _HostState.CLOSED
                raise StatusWordError(init_update_response.sw, "INITIALIZE UPDATE")
            data = init_update_response.data
        else:
            data = init_update_response
        self._state = _HostState.CLOSED  # until everything below checks out
        init = InitUpdateResponse.parse(data)
        if self._kvn and init.kvn != self._kvn:
            raise CardProtocolError(f"asked for key version {self._kvn:02X}, card used "
                                    f"{init.kvn:02X}")
        static = self._store.card_keys(init.kdd, init.kvn)
        if (init.sequence_counter is not None and self._isd_aid is not None
                and not hmac.compare_digest(
                    card_challenge(static.enc, init.sequence_counter, self._isd_aid),
                    init.card_challenge)):
            raise CardAuthenticationError("card challenge does not match its sequence counter")
        context = self._host_challenge + init.card_challenge
        keys = SessionKeys.derive(static, context)
        if not hmac.compare_digest(card_cryptogram(keys, context), init.card_cryptogram):
            raise CardAuthenticationError("card cryptogram mismatch: wrong keys or another card",
                                          metadata={"kvn": f"{init.kvn:02X}",
                                                    "kdd": init.kdd.hex().upper()})
        self._init = init
        codec = _Codec(keys, self._level)
        cryptogram = host_cryptogram(keys, context)
        mac = codec.command_mac(0x84, INS_EXTERNAL_AUTHENTICATE, int(self._level), 0x00,
                                cryptogram)
        self._codec = codec
        self._state = _HostState.AUTHENTICATING
        return CommandApdu(0x84, INS_EXTERNAL_AUTHENTICATE, int(self._level), 0x00,
                           cryptogram + mac)

    def confirm(self, ext_auth_response: ResponseApdu) -> None:
        """Accept the EXTERNAL AUTHENTICATE answer; anything but 9000 closes the session."""
        if self._state is not _HostState.AUTHENTICATING:
            raise SecureChannelError("confirm() needs open() first")
        if not ext_auth_response.ok or ext_auth_response.data:
            self.close()
            raise StatusWordError(ext_auth_response.sw, "EXTERNAL AUTHENTICATE")
        self._state = _HostState.OPEN

    def close(self) -> None:
        """Forget the session keys (after an error, a card reset or the end of the load)."""
        self._state = _HostState.CLOSED
        self._codec = None
        self._pending.clear()

    def encrypt_sensitive(self, data: bytes) -> bytes:
        """Encrypt key or personalisation data with the static DEK (AES-CBC, zero ICV)."""
        codec = self._require_codec()
        return aes_cbc_encrypt(codec.keys.dek, bytes(BLOCK), data)

    def _require_codec(self) -> _Codec:
        """The codec of an authenticated session, else SecureChannelError."""
        if self._codec is None or not self.is_open:
            raise SecureChannelError("secure channel is not open")
        return self._codec

    def wrap(self, cmd: CommandApdu) -> CommandApdu:
        """Protect `cmd` at the session level: C-DEC (counter ICV), then C-MAC with chaining."""
        codec = self._require_codec()
        data = cmd.data
        if wrapped_length(len(data), self._level) > MAX_SHORT_DATA:
            raise ValueError(f"{len(data)} bytes do not fit one short APDU once wrapped")
        cla = cmd.cla | 0x04
        if self._level & SecurityLevel.C_DECRYPTION:
            codec.counter += 1
            if data:
                data = aes_cbc_encrypt(codec.keys.enc, codec.command_icv(), pad80(data))
        mac = codec.command_mac(cla, cmd.ins, cmd.p1, cmd.p2, data)
        if self._level & SecurityLevel.R_MAC:
            self._pending.append(_Pending(codec.chain, codec.counter))
        return CommandApdu(cla, cmd.ins, cmd.p1, cmd.p2, data + mac, cmd.le)

    def unwrap(self, resp: ResponseApdu) -> ResponseApdu:
        """Check the R-MAC and decrypt R-ENC of the oldest wrapped command's response."""
        codec = self._require_codec()
        if not self._level & SecurityLevel.R_MAC:
            return resp
        if not self._pending:
            raise SecureChannelError("unwrap() without a wrapped command awaiting its response")
        pending = self._pending.popleft()
        if is_error_sw(resp.sw):
            if resp.data:
                raise ResponseIntegrityError(f"error status {resp.sw:04X} came with data")
            return resp
        if len(resp.data) < MAC_LEN:
            raise ResponseIntegrityError(f"protected response of {len(resp.data)} bytes has "
                                         "no R-MAC")
        body, mac = resp.data[:-MAC_LEN], resp.data[-MAC_LEN:]
        if not hmac.compare_digest(codec.response_mac(pending.chain, body, resp.sw), mac):
            self.close()
            raise ResponseIntegrityError("R-MAC mismatch: the response was altered")
        if self._level & SecurityLevel.R_ENCRYPTION and body:
            if len(body) % BLOCK:
                raise ResponseIntegrityError("encrypted response is not block-aligned")
            body = unpad80(aes_cbc_decrypt(codec.keys.enc, codec.response_icv(pending.counter),
                                           body))
        return ResponseApdu(body, resp.sw)


class Scp03CardSession:
    """Card side of SCP03 for the virtual card: answers INITIALIZE UPDATE / EXTERNAL AUTHENTICATE,
    unwraps commands and wraps responses."""

    def __init__(self, keys: StaticKeys, *, kdd: bytes, isd_aid: bytes,
                 sequence_counter: int = 0, i: int = DEFAULT_I) -> None:
        if len(kdd) != KDD_LEN:
            raise ValueError("KDD must be 10 bytes")
        if i & I_S16:
            raise ValueError(f"unsupported i={i:02X}")
        self._keys = keys
        self._kdd = kdd
        self._aid = isd_aid
        self._i = i
        self.sequence_counter = sequence_counter
        self._context: bytes | None = None
        self._session: SessionKeys | None = None
        self._codec: _Codec | None = None
        self._authenticated = False
        self._last_counter = 0
        self._last_chain = bytes(BLOCK)

    def __repr__(self) -> str:
        return f"Scp03CardSession(authenticated={self._authenticated})"

    @property
    def authenticated(self) -> bool:
        """True after a successful EXTERNAL AUTHENTICATE (until reset or a security error)."""
        return self._authenticated

    @property
    def level(self) -> SecurityLevel | None:
        """The security level of the open session."""
        return self._codec.level if self._authenticated and self._codec else None

    def reset(self) -> None:
        """Close the session (power cycle, SELECT of another application, security error)."""
        self._context = None
        self._session = None
        self._codec = None
        self._authenticated = False

    def initialize_update(self, cmd: CommandApdu) -> ResponseApdu:
        """Answer INITIALIZE UPDATE; a pseudo-random challenge uses, then bumps, the counter."""
        self.reset()
        if cmd.p2 != 0x00:
            return ResponseApdu(b"", 0x6A86)
        if len(cmd.data) != CHALLENGE_LEN:
            return ResponseApdu(b"", 0x6700)
        if cmd.p1 not in (0x00, self._keys.kvn):
            return ResponseApdu(b"", 0x6A88)
        seq: bytes | None = None
        if self._i & I_PSEUDO_RANDOM_CHALLENGE:
            if self.sequence_counter >= 0xFFFFFF:
                return ResponseApdu(b"", 0x6985)
            seq = self.sequence_counter.to_bytes(SEQUENCE_COUNTER_LEN, "big")
            challenge = card_challenge(self._keys.enc, seq, self._aid)
            self.sequence_counter += 1
        else:
            challenge = secrets.token_bytes(CHALLENGE_LEN)
        context = cmd.data + challenge
        self._session = SessionKeys.derive(self._keys, context)
        self._context = context
        answer = InitUpdateResponse(self._kdd, self._keys.kvn, SCP03, self._i, challenge,
                                    card_cryptogram(self._session, context), seq)
        return ResponseApdu(answer.encode(), 0x9000)

    def external_authenticate(self, cmd: CommandApdu) -> ResponseApdu:
        """Verify EXTERNAL AUTHENTICATE's C-MAC and host cryptogram; 6300/6982 on failure."""
        session, context = self._session, self._context
        self.reset()
        if session is None or context is None:
            return ResponseApdu(b"", 0x6985)
        if cmd.p1 not in VALID_LEVELS or cmd.p2 != 0x00:
            return ResponseApdu(b"", 0x6A86)
        if len(cmd.data) != CRYPTOGRAM_LEN + MAC_LEN or cmd.cla & 0x04 == 0:
            return ResponseApdu(b"", 0x6982)
        codec = _Codec(session, SecurityLevel(cmd.p1))
        mac = codec.command_mac(cmd.cla, cmd.ins, cmd.p1, cmd.p2, cmd.data[:CRYPTOGRAM_LEN])
        if not hmac.compare_digest(mac, cmd.data[CRYPTOGRAM_LEN:]):
            return ResponseApdu(b"", 0x6982)
        if not hmac.compare_digest(host_cryptogram(session, context), cmd.data[:CRYPTOGRAM_LEN]):
            return ResponseApdu(b"", 0x6300)
        self._codec = codec
        self._authenticated = True
        return ResponseApdu(b"", 0x9000)

    def unwrap(self, cmd: CommandApdu) -> CommandApdu:
        """Verify C-MAC and decrypt C-DEC; raises CommandRejected (6982) and closes the session."""
        codec = self._codec
        if codec is None or not self._authenticated:
            raise CommandRejected("no secure channel is open", 0x6982)
        if not cmd.cla & 0x04 or len(cmd.data) < MAC_LEN:
            self.reset()
            raise CommandRejected("command is not protected", 0x6982)
        body, mac = cmd.data[:-MAC_LEN], cmd.data[-MAC_LEN:]
        if not hmac.compare_digest(codec.command_mac(cmd.cla, cmd.ins, cmd.p1, cmd.p2, body), mac):
            self.reset()
            raise CommandRejected("C-MAC mismatch", 0x6982)
        if codec.level & SecurityLevel.C_DECRYPTION:
            codec.counter += 1
            if body:
                try:
                    if len(body) % BLOCK:
                        raise CardProtocolError("ciphertext not block-aligned")
                    body = unpad80(aes_cbc_decrypt(codec.keys.enc, codec.command_icv(), body))
                except CardProtocolError:
                    self.reset()
                    raise CommandRejected("C-DEC data malformed", 0x6982) from None
        self._last_chain = codec.chain
        self._last_counter = codec.counter
        return CommandApdu(cmd.cla & ~0x04 & 0xFF, cmd.ins, cmd.p1, cmd.p2, body, cmd.le)

    def wrap(self, resp: ResponseApdu) -> ResponseApdu:
        """Protect the answer to the last unwrapped command (R-ENC, R-MAC); errors go bare."""
        codec = self._codec
        if codec is None or not self._authenticated:
            return resp
        if is_error_sw(resp.sw):
            return ResponseApdu(b"", resp.sw)
        if not codec.level & SecurityLevel.R_MAC:
            return resp
        data = resp.data
        if codec.level & SecurityLevel.R_ENCRYPTION and data:
            data = aes_cbc_encrypt(codec.keys.enc, codec.response_icv(self._last_counter),
                                   pad80(data))
        return ResponseApdu(data + codec.response_mac(self._last_chain, data, resp.sw), resp.sw)
