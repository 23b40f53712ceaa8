"""GP static keys: KCV, GPPro KDF3 per-card diversification vectors, key stores, no key in repr."""

from __future__ import annotations

import pytest

from cardlib.errors import UnknownKeyVersion
from cardlib.gp.keys import (
    DiversifyingKeyStore,
    FixedKeyStore,
    KeyStore,
    KeyType,
    StaticKeys,
    diversify_kdf3,
    kcv,
)

KEY_16 = bytes(range(0x40, 0x50))
KEY_24 = bytes(range(0x40, 0x58))
KEY_32 = bytes(range(0x40, 0x60))
KDD = bytes.fromhex("00010203040506070809")


def test_kcv_of_the_gp_default_key() -> None:
    """GPPro TestPlaintextKeys: 40..4F has KCV 504A77 (first 3 bytes of AES(k, 01 x 16))."""
    assert kcv(KEY_16).hex().upper() == "504A77"


@pytest.mark.parametrize(("master", "enc", "mac", "dek"), [
    (KEY_16, "E79C05", "D1BD77", "3FDE8C"),
    (KEY_24, "1DE8EA", "47C00C", "C04D76"),
    (KEY_32, "2972D2", "036F94", "5D57B8"),
])
def test_kdf3_diversification_matches_gppro(master: bytes, enc: str, mac: str, dek: str) -> None:
    """GPPro testDiversification_KDF3_SCP03_AES{128,192,256}: master 40.., KDD 00..09.

    KDF3 = SP 800-108 counter mode with AES-CMAC(master, i || 00 00 00 || type || 00 || KDD),
    type ENC=01, MAC=02, DEK=03, output = master key length (template "$_ 0x00 0x00 0x00 $k
    0x00 $0..$9" in GPPro's PlaintextKeys). These are the per-card static key KCVs.
    """
    store = DiversifyingKeyStore(StaticKeys(master, master, master, kvn=0x30))
    keys = store.card_keys(KDD, 0x30)
    assert (kcv(keys.enc).hex().upper(), kcv(keys.mac).hex().upper(),
            kcv(keys.dek).hex().upper()) == (enc, mac, dek)
    assert keys.kvn == 0x30


def test_kdf3_external_vector() -> None:
    """GPPro TestSCP03.testKDF3 (external vector): AES-256 master, KDD D9B1DE5D0362DEDCE4FB."""
    master = bytes.fromhex("8C72C72CF908411653018807950D82FBAD947562F0828A0B10B8B9606ABF3BCD")
    kdd = bytes.fromhex("D9B1DE5D0362DEDCE4FB")
    assert diversify_kdf3(master, KeyType.ENC, kdd) == bytes.fromhex(
        "9AAC5D0B3601F89438A0D9D0B6B256CFB47E6462DFA5228D3420C4AC7C224781")


def test_diversified_keys_differ_per_card() -> None:
    store = DiversifyingKeyStore(StaticKeys(KEY_16, KEY_16, KEY_16))
    a = store.card_keys(KDD, 0x30)
    b = store.card_keys(bytes(10), 0x30)
    assert a != b
    assert a == store.card_keys(KDD, 0x30)


def test_key_store_rejects_an_unknown_key_version() -> None:
    keys = StaticKeys(KEY_16, KEY_16, KEY_16, kvn=0x30)
    for store in (FixedKeyStore(keys), DiversifyingKeyStore(keys)):
        assert isinstance(store, KeyStore)
        with pytest.raises(UnknownKeyVersion) as err:
            store.card_keys(KDD, 0x31)
        assert err.value.reason == "KEY_VERSION_UNKNOWN"


def test_repr_never_shows_key_bytes() -> None:
    secret = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
    keys = StaticKeys(secret, secret, secret, kvn=0x30)
    for text in (repr(keys), str(keys), repr(FixedKeyStore(keys)),
                 repr(DiversifyingKeyStore(keys))):
        assert secret.hex() not in text.lower()
        assert "0x30" in text


@pytest.mark.parametrize("bad", [b"", b"\x00" * 15, b"\x00" * 17, b"\x00" * 33])
def test_invalid_key_lengths_are_refused(bad: bytes) -> None:
    with pytest.raises(ValueError, match="16, 24 or 32"):
        StaticKeys(bad, bad, bad)


def test_mixed_key_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="same length"):
        StaticKeys(KEY_16, KEY_32, KEY_16)


def test_kdd_must_be_ten_bytes() -> None:
    with pytest.raises(ValueError, match="10 bytes"):
        diversify_kdf3(KEY_16, KeyType.ENC, b"\x00" * 9)
