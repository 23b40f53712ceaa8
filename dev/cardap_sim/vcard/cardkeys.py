"""The card's static SCP03 keys: the test-only dev master keys and KDF3 diversification."""

from __future__ import annotations

from typing import Any

from cardlib.gp.keys import DEFAULT_KVN, DiversifyingKeyStore, StaticKeys

# TEST-ONLY master keys (ENC = MAC = DEK = 40 41 .. 4F, key version 30), the well-known
# GlobalPlatform test key. Real cards are diversified from the loading service's masters.
DEV_MASTER_KEYS = StaticKeys(enc=bytes(range(0x40, 0x50)), mac=bytes(range(0x40, 0x50)),
                             dek=bytes(range(0x40, 0x50)), kvn=DEFAULT_KVN)


def kdd_from_cplc(cplc: dict[str, str]) -> bytes:
    """KDD = CPLC IC fabricator (2) ‖ IC serial (4) ‖ IC batch (2) ‖ `00 00` (10 bytes)."""
    return (bytes.fromhex(cplc["ic_fabricator"]) + bytes.fromhex(cplc["ic_serial"])
            + bytes.fromhex(cplc["ic_batch"]) + b"\x00\x00")


def diversify(master: StaticKeys, kdd: bytes) -> StaticKeys:
    """The card's static keys: GPPro KDF3 of `master` with the card's KDD (same kvn)."""
    return DiversifyingKeyStore(master).card_keys(kdd, master.kvn)


def keys_to_json(keys: StaticKeys, sequence_counter: int) -> dict[str, Any]:
    """The card file's `keys` entry (already-diversified keys and the SCP03 counter)."""
    return {"kvn": keys.kvn, "enc": keys.enc.hex().upper(), "mac": keys.mac.hex().upper(),
            "dek": keys.dek.hex().upper(), "sequence_counter": sequence_counter}


def keys_from_json(d: dict[str, Any]) -> tuple[StaticKeys, int]:
    """Inverse of keys_to_json: (static keys, sequence counter)."""
    keys = StaticKeys(enc=bytes.fromhex(d["enc"]), mac=bytes.fromhex(d["mac"]),
                      dek=bytes.fromhex(d["dek"]), kvn=int(d["kvn"]))
    counter = int(d["sequence_counter"])
    if not 0 <= counter <= 0xFFFFFF:
        raise ValueError("SCP03 sequence counter must fit 3 bytes")
    return keys, counter
