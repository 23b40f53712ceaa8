"""Static SCP03 card keys, the KeyStore interface, and per-card diversification from masters."""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cardlib.errors import UnknownKeyVersion
from cardlib.gp.primitives import aes_ecb_block, check_aes_key, kdf_counter

KDD_LEN = 10
DEFAULT_KVN = 0x30


def kcv(key: bytes) -> bytes:
    """Key check value: the first 3 bytes of AES-ECB(key, 16 x 01) (GP Amendment D 7.2.2)."""
    check_aes_key(key)
    return aes_ecb_block(key, b"\x01" * 16)[:3]


class KeyType(enum.IntEnum):
    """Key type bytes used by the KDF3 diversification template."""

    ENC = 0x01
    MAC = 0x02
    DEK = 0x03


@dataclass(frozen=True, repr=False, eq=False)
class StaticKeys:
    """One SCP03 key set (ENC, MAC, DEK) with its key version number; repr shows KCVs only."""

    enc: bytes
    mac: bytes
    dek: bytes
    kvn: int = DEFAULT_KVN

    def __post_init__(self) -> None:
        for name in ("enc", "mac", "dek"):
            check_aes_key(getattr(self, name), name)
        if not len(self.enc) == len(self.mac) == len(self.dek):
            raise ValueError("ENC, MAC and DEK must have the same length")
        if not 0 <= self.kvn <= 0xFF:
            raise ValueError(f"key version number must be a byte, got {self.kvn}")

    @property
    def key_bits(self) -> int:
        """AES key length in bits (128, 192 or 256)."""
        return len(self.enc) * 8

    def __repr__(self) -> str:
        return (f"StaticKeys(kvn=0x{self.kvn:02X}, AES-{self.key_bits}, "
                f"kcv enc={kcv(self.enc).hex().upper()} mac={kcv(self.mac).hex().upper()} "
                f"dek={kcv(self.dek).hex().upper()})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StaticKeys):
            return NotImplemented
        return self.kvn == other.kvn and hmac.compare_digest(
            self.enc + self.mac + self.dek, other.enc + other.mac + other.dek)

    def __hash__(self) -> int:
        return hash((self.kvn, kcv(self.enc), kcv(self.mac), kcv(self.dek)))


@runtime_checkable
class KeyStore(Protocol):
    """Where the card keys live (the loading service); the terminal never implements this."""

    def card_keys(self, kdd: bytes, kvn: int) -> StaticKeys:
        """The static keys of the card with key diversification data `kdd` and version `kvn`."""
        ...


def _check_kvn(have: int, asked: int) -> None:
    """Raise UnknownKeyVersion when the card names another key version than the store holds."""
    if asked != have:
        raise UnknownKeyVersion(f"card uses key version 0x{asked:02X}, the key store holds "
                                f"0x{have:02X}", metadata={"kvn": f"{asked:02X}"})


class FixedKeyStore:
    """The same keys for every card (test cards and GP default keys; never for production)."""

    def __init__(self, keys: StaticKeys) -> None:
        self._keys = keys

    def card_keys(self, kdd: bytes, kvn: int) -> StaticKeys:
        """Return the fixed keys after checking the key version."""
        _check_kvn(self._keys.kvn, kvn)
        return self._keys

    def __repr__(self) -> str:
        return f"FixedKeyStore({self._keys!r})"


def diversify_kdf3(master: bytes, key_type: KeyType, kdd: bytes) -> bytes:
    """GPPro "KDF3" per-card key: SP 800-108 CMAC(master, i | 000000 | type | 00 | KDD)."""
    check_aes_key(master, "master key")
    if len(kdd) != KDD_LEN:
        raise ValueError(f"KDD must be {KDD_LEN} bytes, got {len(kdd)}")
    return kdf_counter(master, b"", bytes((0, 0, 0, key_type, 0)) + kdd, len(master))


class DiversifyingKeyStore:
    """Per-card static keys diversified from master keys with the card's KDD (GPPro KDF3)."""

    def __init__(self, master: StaticKeys) -> None:
        self._master = master

    def card_keys(self, kdd: bytes, kvn: int) -> StaticKeys:
        """Diversify ENC, MAC and DEK from the masters for the card with this KDD."""
        _check_kvn(self._master.kvn, kvn)
        return StaticKeys(
            enc=diversify_kdf3(self._master.enc, KeyType.ENC, kdd),
            mac=diversify_kdf3(self._master.mac, KeyType.MAC, kdd),
            dek=diversify_kdf3(self._master.dek, KeyType.DEK, kdd),
            kvn=self._master.kvn,
        )

    def __repr__(self) -> str:
        return f"DiversifyingKeyStore(master={self._master!r})"
