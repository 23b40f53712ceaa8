"""AES building blocks for SCP03 (via `cryptography`; no hand-written AES or CMAC)."""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from cardlib.errors import CardProtocolError

BLOCK = 16
AES_KEY_SIZES = (16, 24, 32)


def check_aes_key(key: bytes, name: str = "key") -> None:
    """Raise ValueError unless `key` is an AES-128/192/256 key (a caller bug, not card data)."""
    if len(key) not in AES_KEY_SIZES:
        raise ValueError(f"{name} must be 16, 24 or 32 bytes, got {len(key)}")


def aes_cmac(key: bytes, data: bytes) -> bytes:
    """The full 16-byte AES-CMAC (NIST SP 800-38B) of `data`."""
    mac = CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def aes_ecb_block(key: bytes, block: bytes) -> bytes:
    """Encrypt exactly one 16-byte block (ICVs, key check values)."""
    if len(block) != BLOCK:
        raise ValueError("AES-ECB here encrypts exactly one block")
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 - one block by design
    return enc.update(block) + enc.finalize()


def aes_cbc_encrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    """AES-CBC encryption of block-aligned `data`."""
    if len(data) % BLOCK:
        raise ValueError("AES-CBC input must be a multiple of 16 bytes")
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return enc.update(data) + enc.finalize()


def aes_cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    """AES-CBC decryption of block-aligned `data` (length is checked by the caller)."""
    if len(data) % BLOCK:
        raise ValueError("AES-CBC input must be a multiple of 16 bytes")
    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return dec.update(data) + dec.finalize()


def pad80(data: bytes) -> bytes:
    """ISO/IEC 9797-1 method 2 padding: `80` then `00`s to the next block boundary (always adds)."""
    padded = data + b"\x80"
    return padded + bytes(-len(padded) % BLOCK)


def unpad80(data: bytes) -> bytes:
    """Remove `80 00..` padding; malformed padding is a CardProtocolError (untrusted card data)."""
    stripped = data.rstrip(b"\x00")
    if not stripped or stripped[-1] != 0x80 or len(data) - len(stripped) >= BLOCK:
        raise CardProtocolError("invalid 80 00.. padding in decrypted data")
    return stripped[:-1]


def kdf_counter(key: bytes, prefix: bytes, suffix: bytes, length: int) -> bytes:
    """NIST SP 800-108 counter-mode KDF with AES-CMAC: PRF(prefix || i (1 byte) || suffix)."""
    if not 0 < length <= 255 * BLOCK:
        raise ValueError(f"cannot derive {length} bytes with a one-byte counter")
    out = bytearray()
    counter = 1
    while len(out) < length:
        out += aes_cmac(key, prefix + bytes((counter,)) + suffix)
        counter += 1
    return bytes(out[:length])
