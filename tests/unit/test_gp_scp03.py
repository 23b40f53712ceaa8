"""SCP03: KDF and published vectors (GPPro, osmocom pySim), host <-> card sessions, tampering."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardapd.api.status import code_for
from cardapd.errors import from_card
from cardlib.apdu import CommandApdu, ResponseApdu
from cardlib.errors import (
    CardAuthenticationError,
    CardLibError,
    CardProtocolError,
    CommandRejected,
    ResponseIntegrityError,
    SecureChannelError,
    StatusWordError,
)
from cardlib.gp.keys import FixedKeyStore, StaticKeys, kcv
from cardlib.gp.scp03 import (
    DERIVE_S_ENC,
    DERIVE_S_MAC,
    DERIVE_S_RMAC,
    InitUpdateResponse,
    Scp03CardSession,
    Scp03Session,
    SecurityLevel,
    SessionKeys,
    card_challenge,
    derive,
    max_plain_length,
    wrapped_length,
)

h = bytes.fromhex
KEY_16 = bytes(range(0x40, 0x50))
KDD = h("00010203040506070809")


def daemon_sees(exc: CardLibError) -> tuple[str, grpc.StatusCode]:
    """The reason and gRPC code a client gets when the card library raises `exc` (the
    reader thread turns it into the daemon's error, `cardapd.errors.from_card`)."""
    made = from_card(exc)
    return made.reason, code_for(made)



def parse_command(raw: bytes) -> CommandApdu:
    """Decode a short command APDU (test helper for published hex vectors)."""
    cla, ins, p1, p2 = raw[:4]
    rest = raw[4:]
    if not rest:
        return CommandApdu(cla, ins, p1, p2)
    if len(rest) == 1:
        return CommandApdu(cla, ins, p1, p2, le=rest[0] or 256)
    data, tail = rest[1:1 + rest[0]], rest[1 + rest[0]:]
    return CommandApdu(cla, ins, p1, p2, data, (tail[0] or 256) if tail else None)


# --- KDF ------------------------------------------------------------------------------------

def test_session_key_kdf_reproduces_gppro_kcvs() -> None:
    """The C25559 / 0E12CC / 9ACB9C vectors (GPPro TestPlaintextKeys.testSessionKeys_SCP03).

    They come from the Amendment D KDF itself, not from GPPro's KDF3 diversification:
    static keys all 40..4F, derivation data = 00 x11 || constant || 00 || 0080 || 01 || KDD,
    i.e. SP 800-108 counter mode AES-CMAC with the 10-byte KDD 00..09 as the whole context,
    constants 04 (S-ENC), 06 (S-MAC), 07 (S-RMAC, from the MAC key). S-DEK is the static DEK
    (504A77). KDF3 per-card diversification of the same key gives E79C05/D1BD77/3FDE8C
    (see test_gp_keys).
    """
    assert kcv(derive(KEY_16, DERIVE_S_ENC, KDD, 128)).hex().upper() == "C25559"
    assert kcv(derive(KEY_16, DERIVE_S_MAC, KDD, 128)).hex().upper() == "0E12CC"
    assert kcv(derive(KEY_16, DERIVE_S_RMAC, KDD, 128)).hex().upper() == "9ACB9C"
    keys = SessionKeys.derive(StaticKeys(KEY_16, KEY_16, KEY_16), KDD)
    assert [kcv(k).hex().upper() for k in (keys.enc, keys.mac, keys.rmac, keys.dek)] == [
        "C25559", "0E12CC", "9ACB9C", "504A77"]


def test_derive_layout_and_lengths() -> None:
    """Counter mode: 256-bit output is two CMAC blocks with i = 01, 02 and L = 0100."""
    from cardlib.gp.primitives import aes_cmac
    prefix = bytes(11) + b"\x04\x00\x01\x00"
    out = derive(KEY_16, 0x04, b"ctx", 256)
    assert out == aes_cmac(KEY_16, prefix + b"\x01ctx") + aes_cmac(KEY_16, prefix + b"\x02ctx")
    assert len(derive(KEY_16, 0x00, b"", 64)) == 8
    with pytest.raises(ValueError, match="multiple of 8"):
        derive(KEY_16, 0x00, b"", 12)


def test_session_key_repr_hides_keys() -> None:
    keys = SessionKeys.derive(StaticKeys(KEY_16, KEY_16, KEY_16), KDD)
    assert keys.enc.hex() not in repr(keys).lower()


# --- Published SCP03 vectors: osmocom pySim tests/unittests/test_globalplatform.py ----------

K128 = (h("000102030405060708090a0b0c0d0e0f"), h("101112131415161718191a1b1c1d1e1f"),
        h("202122232425262728292a2b2c2d2e2f"))
K192 = tuple(k + k[:8] for k in K128)
K256 = tuple(k + k for k in K128)
ISD_R = h("A0000005591010FFFFFFFF8900000100")
PLAIN_CASES = ("80F22002", "80ca006600", "80F220020a4f0212345c054f9f70c5", "80f28002024f0000")
GET_EID = "80E2910006BF3E035C015A00"
EID_RSP = h("bf3e125a1089882119900000000000000000000005")


@dataclass(frozen=True)
class Vector:
    """One recorded session with a real card (sysmoEUICC), from pySim's unit tests."""

    name: str
    keys: tuple[bytes, ...]
    kvn: int
    init_update: str
    init_update_rsp: str
    ext_auth: str
    get_eid: str
    get_eid_rsp: str
    cases: tuple[str, str, str, str]


VECTORS = [
    Vector("AES128_11", K128, 0x30, "8050300008b13e5f938fc108c400",
           "000000000000000000003003703eb51047495b249f66c484c1d2ef1948000002",
           "84821100107d5f5826a993ebc89eea24957fa0b3ce",
           "84e291000ebf3e035c015a558d036518a2829700",
           "bf3e125a1089882119900000000000000000000005971be68992dbbdfa",
           ("84f220020863a63f8959827fb2", "84ca006608a0c6a4a74166f7ce00",
            "84f22002124f0212345c054f9f70c52249b50272656536", "84f280020a4f00e91443f6dce6b8ed00")),
    Vector("AES128_03", K128, 0x30, "80503000088e1552d0513c60f300",
           "0000000000000000000030037030760cd2c47c1dd395065fe5ead8a9d7000001",
           "8482030010fd4721a14d9b07003c451d2f8ae6bb21",
           "84e2910018ca9c00f6713d79bc8baa642bdff51c3f6a4082d3bd9ad26c00",
           "bf3e125a1089882119900000000000000000000005",
           ("84f2200208c9811b11f1264cf1", "84ca006608e10ab60b3054798800",
            "84f22002184e2908bdb48b2315a55482e9e936ca122d6ecfae7d17416e",
            "84f28002180dd10a6b6193e5340b9e77d32d5a179cd710ac2773aefb2800")),
    Vector("AES128_33", K128, 0x30, "8050300008fdf38259a1e0de4400",
           "000000000000000000003003703b1aca81e821f219081cdc01c26b372d000003",
           "84823300108c36f96bcc00724a4e13ad591d7da3f0",
           "84e2910018267a85dfe4a98fca6fb0527e0dfecce4914e40401433c87f00",
           "f3ba2b1013aa6224f5e1c138d71805c569e5439b47576260b75fc021b25097cb2e68f8a0144975b9",
           ("84f2200208ac6a59024bed84cc", "84ca006608409912ad8fb7aed000",
            "84f22002185f3dafc3ac14c381536a488bf44e06d056df9d74dbd21e5a",
            "84f280021865165105be3373347d0424d4400af2ac393f569ec779389e00")),
    Vector("AES192_33", K192, 0x31, "80503100089b3f2eef0e8c937400",
           "00000000000000000000310370f6bb305a15bae1a68f79fb08212fbed7000002",
           "84823300109100bc22d58b45b86a26365ce39ff3cf",
           "84e29100188f7f946c84f70d17994bc6e8791251bb1bb1bf02cf8de58900",
           "c05176c1b6f72aae50c32cbee63b0e95998928fd4dfb2be9f27ffde8c8476f5909b4805cc4039599",
           ("84f2200208d5d97754b6b3d2ba", "84ca006608516c82b8e30adbeb00",
            "84f2200218cc247f4761e6944277a4e0d6e32e44025b1e31537e2fc668",
            "84f2800218ba22b63d509bef5d093b43e5eaed03ed23144ab2d9cb51de00")),
    Vector("AES256_11", K256, 0x32, "805032000811666d57866c6f5400",
           "0000000000000000000032037053ea8847efa7674e41498a4d66cf0dee000003",
           "84821100102f2ad190eff2fafc4908996d1cebd310",
           "84e291000ebf3e035c015af4b680372542b59d00",
           "bf3e125a10898821199000000000000000000000058012dd7f01f1c4c1",
           ("84f2200208d618b7da68d5fe52", "84ca0066088f3e055db23ad5e500",
            "84f22002124f0212345c054f9f70c5b6e15cc42404915e", "84f280020a4f00aa124aa74afe7f7500")),
    Vector("AES256_33", K256, 0x32, "805032000897b2055fe58599fd00",
           "00000000000000000000320370a8439a22cedf045fa9f1903b2834f26e000002",
           "8482330010508a0fd959d2e547c6b33154a6be2057",
           "84e29100187a5ef717eaf1e135ae92fe54429d0e465decda65f5fe5aea00",
           "ea90dbfa648a67c5eb6abc57f8530b97d0cd5647c5e8732016b55203b078dd2ace7f8bc5d1c1cd99",
           ("84f2200208bcc5c17275545d93", "84ca00660804806aba9d543bb600",
            "84f2200218717222491556ec81a45f49ce48be33320024801a1c4cb0e0",
            "84f2800218561f105bccd3a1642904b251ccc1228beb80a82370a8637000")),
]


def _static(v: Vector) -> StaticKeys:
    enc, mac, dek = v.keys
    return StaticKeys(enc, mac, dek, kvn=v.kvn)


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: v.name)
def test_host_session_matches_pysim_vectors(v: Vector) -> None:
    """Host side: INITIALIZE UPDATE, card cryptogram check, EXTERNAL AUTHENTICATE, C-MAC/C-DEC
    with chaining and counters, R-MAC/R-ENC of GET EID, against a recorded real-card session."""
    host_challenge = h(v.init_update)[5:13]
    level = h(v.ext_auth)[2]
    session = Scp03Session(FixedKeyStore(_static(v)), level=level, kvn=v.kvn,
                           host_challenge=host_challenge, isd_aid=ISD_R)
    assert session.begin().encode() == h(v.init_update)
    assert session.open(ResponseApdu(h(v.init_update_rsp), 0x9000)).encode() == h(v.ext_auth)
    session.confirm(ResponseApdu(b"", 0x9000))
    assert session.wrap(parse_command(h(GET_EID))).encode() == h(v.get_eid)
    assert session.unwrap(ResponseApdu(h(v.get_eid_rsp), 0x9000)) == ResponseApdu(EID_RSP, 0x9000)
    for plain, wrapped in zip(PLAIN_CASES, v.cases, strict=True):
        assert session.wrap(parse_command(h(plain))).encode() == h(wrapped)
        if session.pending_responses:
            session.unwrap(ResponseApdu(b"", 0x6A88))  # error SWs carry no R-MAC


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: v.name)
def test_card_session_matches_pysim_vectors(v: Vector) -> None:
    """Card side: same session seen from the card (pseudo-random challenge from counter+ISD-R)."""
    init = InitUpdateResponse.parse(h(v.init_update_rsp))
    assert init.sequence_counter is not None
    card = Scp03CardSession(_static(v), kdd=init.kdd, isd_aid=ISD_R,
                            sequence_counter=int.from_bytes(init.sequence_counter, "big"))
    answer = card.initialize_update(parse_command(h(v.init_update)))
    assert answer == ResponseApdu(h(v.init_update_rsp), 0x9000)
    assert card.external_authenticate(parse_command(h(v.ext_auth))).sw == 0x9000
    assert card.unwrap(parse_command(h(v.get_eid))) == parse_command(h(GET_EID))
    assert card.wrap(ResponseApdu(EID_RSP, 0x9000)) == ResponseApdu(h(v.get_eid_rsp), 0x9000)
    for plain, wrapped in zip(PLAIN_CASES, v.cases, strict=True):
        assert card.unwrap(parse_command(h(wrapped))) == parse_command(h(plain))


def test_pseudo_random_card_challenge_vector() -> None:
    """pySim AES128_11: challenge 3EB51047495B249F = derive(ENC, 02, 000002 || ISD-R AID, 64)."""
    assert card_challenge(K128[0], h("000002"), ISD_R) == h("3eb51047495b249f")


def test_wrong_keys_fail_on_the_card_cryptogram() -> None:
    v = VECTORS[0]
    wrong = StaticKeys(K128[1], K128[0], K128[2], kvn=0x30)
    session = Scp03Session(FixedKeyStore(wrong), level=0x11, host_challenge=h(v.init_update)[5:13])
    session.begin()
    with pytest.raises(CardAuthenticationError) as err:
        session.open(h(v.init_update_rsp))
    assert K128[1].hex() not in str(err.value)
    assert daemon_sees(err.value) == ("CARD_AUTHENTICATION_FAILED",
                                      grpc.StatusCode.FAILED_PRECONDITION)
    assert not session.is_open
    with pytest.raises(SecureChannelError) as closed:
        session.wrap(CommandApdu(0x80, 0xF2, 0x80, 0x02, b"\x4f\x00"))
    assert daemon_sees(closed.value) == ("SECURE_CHANNEL_ERROR",
                                         grpc.StatusCode.FAILED_PRECONDITION)


def test_card_challenge_not_matching_its_counter_is_refused() -> None:
    v = VECTORS[0]
    raw = bytearray(h(v.init_update_rsp))
    raw[-1] ^= 1  # another sequence counter
    session = Scp03Session(FixedKeyStore(_static(v)), level=0x11,
                           host_challenge=h(v.init_update)[5:13], isd_aid=ISD_R)
    session.begin()
    with pytest.raises(CardAuthenticationError, match="sequence counter"):
        session.open(bytes(raw))


# --- Host <-> card self-consistency ---------------------------------------------------------

def pair(level: int, keys: StaticKeys | None = None) -> tuple[Scp03Session, Scp03CardSession]:
    """An authenticated host/card session pair."""
    keys = keys or StaticKeys(KEY_16, KEY_16, KEY_16)
    card = Scp03CardSession(keys, kdd=KDD, isd_aid=h("A000000151000000"), sequence_counter=5)
    host = Scp03Session(FixedKeyStore(keys), level=level, isd_aid=h("A000000151000000"))
    ext = host.open(card.initialize_update(host.begin()))
    host.confirm(card.external_authenticate(ext))
    assert card.authenticated
    assert card.level == level
    assert card.sequence_counter == 6
    return host, card


LEVELS = [0x01, 0x03, 0x11, 0x13, 0x33]
KEYS = [StaticKeys(KEY_16, KEY_16[::-1], bytes(16)),
        StaticKeys(bytes(range(32)), bytes(range(32, 64)), bytes(32), kvn=0x31)]


@settings(max_examples=60, deadline=None)
@given(level=st.sampled_from(LEVELS), keys=st.sampled_from(KEYS),
       exchanges=st.lists(st.tuples(st.binary(max_size=223), st.binary(max_size=200),
                                    st.sampled_from([0x9000, 0x6310, 0x6282])),
                          min_size=1, max_size=6))
def test_wrap_unwrap_round_trip(level: int, keys: StaticKeys,
                                exchanges: list[tuple[bytes, bytes, int]]) -> None:
    """Any command/response survives host wrap -> card unwrap -> card wrap -> host unwrap."""
    host, card = pair(level, keys)
    for n, (cmd_data, rsp_data, sw) in enumerate(exchanges):
        cmd = CommandApdu(0x80, 0xE8, 0x00, n, cmd_data, le=256)
        wrapped = host.wrap(cmd)
        assert wrapped.cla == 0x84
        assert len(wrapped.data) == wrapped_length(len(cmd_data), SecurityLevel(level))
        if level & SecurityLevel.C_DECRYPTION and len(cmd_data) > 7:
            assert cmd_data not in wrapped.data
        assert card.unwrap(wrapped) == cmd
        protected = card.wrap(ResponseApdu(rsp_data, sw))
        if level & SecurityLevel.R_ENCRYPTION and len(rsp_data) > 7:
            assert rsp_data not in protected.data
        assert host.unwrap(protected) == ResponseApdu(rsp_data, sw)
    if level & SecurityLevel.C_DECRYPTION:
        assert host.encryption_counter == len(exchanges)


@pytest.mark.parametrize("level", LEVELS)
def test_tampered_command_is_rejected_by_the_card(level: int) -> None:
    host, card = pair(level)
    wrapped = host.wrap(CommandApdu(0x80, 0xE6, 0x02, 0x00, b"\x05" * 20, le=256))
    bad = CommandApdu(wrapped.cla, wrapped.ins, wrapped.p1, wrapped.p2,
                      wrapped.data[:3] + bytes((wrapped.data[3] ^ 0x01,)) + wrapped.data[4:])
    with pytest.raises(CommandRejected) as err:
        card.unwrap(bad)
    assert err.value.sw == 0x6982
    assert daemon_sees(err.value) == ("COMMAND_REJECTED", grpc.StatusCode.FAILED_PRECONDITION)
    assert not card.authenticated


@pytest.mark.parametrize("where", ["mac", "body", "sw"])
def test_tampered_response_is_rejected_by_the_host(where: str) -> None:
    host, card = pair(0x33)
    card.unwrap(host.wrap(CommandApdu(0x80, 0xCA, 0x00, 0x66, le=256)))
    good = card.wrap(ResponseApdu(b"\x66\x03\x01\x02\x03", 0x9000))
    data, sw = bytearray(good.data), good.sw
    if where == "mac":
        data[-1] ^= 0x80
    elif where == "body":
        data[0] ^= 0x01
    else:
        sw = 0x6310
    with pytest.raises(ResponseIntegrityError) as err:
        host.unwrap(ResponseApdu(bytes(data), sw))
    assert isinstance(err.value, CardProtocolError)
    assert daemon_sees(err.value) == ("RESPONSE_INTEGRITY_FAILED",
                                      grpc.StatusCode.FAILED_PRECONDITION)
    assert not host.is_open


def test_response_without_rmac_is_rejected() -> None:
    host, _ = pair(0x11)
    host.wrap(CommandApdu(0x80, 0xCA, 0x00, 0x66, le=256))
    with pytest.raises(ResponseIntegrityError, match="no R-MAC"):
        host.unwrap(ResponseApdu(b"\x01\x02", 0x9000))


def test_error_status_words_travel_bare() -> None:
    """Amendment D: error SWs (all but 9000/62xx/63xx) get neither R-MAC nor R-ENC."""
    host, card = pair(0x33)
    card.unwrap(host.wrap(CommandApdu(0x80, 0xE4, 0x00, 0x80, b"\x4f\x05" + b"\x01" * 5)))
    bare = card.wrap(ResponseApdu(b"", 0x6A88))
    assert bare == ResponseApdu(b"", 0x6A88)
    assert host.unwrap(bare) == bare
    host.wrap(CommandApdu(0x80, 0xCA, 0x00, 0x66, le=256))
    with pytest.raises(ResponseIntegrityError, match="error status"):
        host.unwrap(ResponseApdu(b"\x01" * 8, 0x6A80))


def test_batches_unwrap_in_command_order() -> None:
    """Split mode: the service wraps a batch ahead, then unwraps the relayed answers in order."""
    host, card = pair(0x33)
    batch = [host.wrap(CommandApdu(0x80, 0xE8, 0x00, n, bytes([n]) * 40)) for n in range(5)]
    assert host.pending_responses == 5
    answers = []
    for cmd in batch:
        card.unwrap(cmd)
        answers.append(card.wrap(ResponseApdu(bytes([cmd.p2]) * 3, 0x9000)))
    assert [host.unwrap(a).data for a in answers] == [bytes([n]) * 3 for n in range(5)]
    assert host.pending_responses == 0
    with pytest.raises(SecureChannelError):
        host.unwrap(ResponseApdu(b"", 0x9000))


def test_replayed_command_is_rejected() -> None:
    host, card = pair(0x01)
    first = host.wrap(CommandApdu(0x80, 0xF2, 0x80, 0x02, b"\x4f\x00", le=256))
    card.unwrap(first)
    with pytest.raises(CommandRejected):
        card.unwrap(first)


def test_card_refuses_a_wrong_host_cryptogram() -> None:
    keys = StaticKeys(KEY_16, KEY_16, KEY_16)
    card = Scp03CardSession(keys, kdd=KDD, isd_aid=h("A000000151000000"))
    other = StaticKeys(KEY_16, KEY_16[::-1], KEY_16)
    host = Scp03Session(FixedKeyStore(other), level=0x33)
    init = card.initialize_update(host.begin())
    with pytest.raises(CardAuthenticationError):
        host.open(init)
    # forge an EXTERNAL AUTHENTICATE with a bad MAC / cryptogram
    assert card.external_authenticate(
        CommandApdu(0x84, 0x82, 0x33, 0x00, bytes(16))).sw == 0x6982
    assert not card.authenticated
    assert card.external_authenticate(CommandApdu(0x84, 0x82, 0x33, 0x00, bytes(16))).sw == 0x6985


def test_card_initialize_update_errors() -> None:
    card = Scp03CardSession(StaticKeys(KEY_16, KEY_16, KEY_16, kvn=0x30), kdd=KDD,
                            isd_aid=h("A000000151000000"))
    assert card.initialize_update(CommandApdu(0x80, 0x50, 0x31, 0x00, bytes(8))).sw == 0x6A88
    assert card.initialize_update(CommandApdu(0x80, 0x50, 0x30, 0x00, bytes(7))).sw == 0x6700
    assert card.initialize_update(CommandApdu(0x80, 0x50, 0x30, 0x01, bytes(8))).sw == 0x6A86


def test_initialize_update_status_word_is_raised() -> None:
    host = Scp03Session(FixedKeyStore(StaticKeys(KEY_16, KEY_16, KEY_16)))
    host.begin()
    with pytest.raises(StatusWordError) as err:
        host.open(ResponseApdu(b"", 0x6A88))
    assert daemon_sees(err.value) == ("UNEXPECTED_STATUS_WORD",
                                      grpc.StatusCode.FAILED_PRECONDITION)
    assert from_card(err.value).metadata == {"sw": "6A88"}


def test_ext_auth_refusal_closes_the_session() -> None:
    keys = StaticKeys(KEY_16, KEY_16, KEY_16)
    card = Scp03CardSession(keys, kdd=KDD, isd_aid=h("A000000151000000"))
    host = Scp03Session(FixedKeyStore(keys))
    host.open(card.initialize_update(host.begin()))
    with pytest.raises(StatusWordError):
        host.confirm(ResponseApdu(b"", 0x6300))
    assert not host.is_open


def test_session_steps_out_of_order_are_refused() -> None:
    host = Scp03Session(FixedKeyStore(StaticKeys(KEY_16, KEY_16, KEY_16)))
    with pytest.raises(SecureChannelError):
        host.open(bytes(29))
    host.begin()
    with pytest.raises(SecureChannelError):
        host.begin()
    with pytest.raises(SecureChannelError):
        host.confirm(ResponseApdu(b"", 0x9000))


@pytest.mark.parametrize("level", [0x00, 0x02, 0x10, 0x31, 0x30])
def test_invalid_security_levels(level: int) -> None:
    with pytest.raises(ValueError, match="security level"):
        Scp03Session(FixedKeyStore(StaticKeys(KEY_16, KEY_16, KEY_16)), level=level)


def test_wrap_refuses_what_cannot_fit_a_short_apdu() -> None:
    host, _ = pair(0x33)
    fits = max_plain_length(255, SecurityLevel(0x33))
    assert fits == 239
    host.wrap(CommandApdu(0x80, 0xE8, 0, 0, bytes(fits)))
    with pytest.raises(ValueError, match="short APDU"):
        host.wrap(CommandApdu(0x80, 0xE8, 0, 0, bytes(fits + 1)))


def test_encrypt_sensitive_uses_the_static_dek() -> None:
    from cardlib.gp.primitives import aes_cbc_decrypt
    dek = bytes(range(16))
    host, _ = pair(0x33, StaticKeys(KEY_16, KEY_16, dek))
    secret = b"\x11" * 32
    assert aes_cbc_decrypt(dek, bytes(16), host.encrypt_sensitive(secret)) == secret


# --- INITIALIZE UPDATE response parsing -----------------------------------------------------

@pytest.mark.parametrize(("raw", "match"), [
    ("00" * 28, "29 or 32"),
    ("00" * 10 + "300270" + "00" * 19, "SCP02"),
    ("00" * 10 + "300371" + "00" * 19, "S16"),
    ("00" * 10 + "300370" + "00" * 16, "sequence counter"),
    ("00" * 10 + "300360" + "00" * 19, "sequence counter"),
])
def test_init_update_response_malformed(raw: str, match: str) -> None:
    with pytest.raises(CardProtocolError, match=match):
        InitUpdateResponse.parse(h(raw))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_init_update_parser_raises_only_protocol_errors(raw: bytes) -> None:
    try:
        parsed = InitUpdateResponse.parse(raw)
    except CardProtocolError:
        return
    assert parsed.encode() == raw
