"""Card master keys (per key version) and AP secrets, behind the gp `KeyStore` protocol.

`FileKeyStore` reads a JSON file of hex keys that must be mode 0600 (or stricter): a file
readable by group or others is refused. Nothing here logs or shows a key; reprs give key
check values only. An HSM plugs in by implementing `KeyStore.card_keys` and `ApSecretStore`.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cardlib.errors import UnknownKeyVersion
from cardlib.gp.keys import DEFAULT_KVN, DiversifyingKeyStore, StaticKeys, kcv

FORMAT = "cardap-loadsvc-keys/1"
DEV_MASTER_KEY = bytes(range(0x40, 0x50))
DEV_MASTER_KEYS = StaticKeys(DEV_MASTER_KEY, DEV_MASTER_KEY, DEV_MASTER_KEY, DEFAULT_KVN)
DEV_SYSTEM_PIN = "4827"


class KeyFileError(ValueError):
    """The key file is missing, malformed or too widely readable (never shows key bytes)."""


@dataclass(frozen=True, repr=False, eq=False)
class ApSecrets:
    """An AP's access key and its system-fixed PIN; repr shows the key check value only."""

    access_key: bytes
    pin: str

    def __post_init__(self) -> None:
        if len(self.access_key) not in (16, 32):
            raise ValueError("an AP access key is 16 or 32 bytes")
        if not (4 <= len(self.pin) <= 16 and self.pin.isascii() and self.pin.isprintable()):
            raise ValueError("an AP PIN is 4-16 printable ASCII characters")

    def __repr__(self) -> str:
        return f"ApSecrets(kcv={kcv(self.access_key).hex().upper()}, pin=hidden)"


class ApSecretStore(Protocol):
    """Where AP access keys and PINs live (by the catalogue's `access_key_ref`)."""

    def ap_secrets(self, ref: str) -> ApSecrets:
        """The secrets named `ref`; KeyError when unknown."""
        ...


class MasterKeyStore:
    """Master keys per key version; card keys are KDF3-diversified with the card's KDD."""

    def __init__(self, masters: Mapping[int, StaticKeys], *, default_kvn: int = DEFAULT_KVN,
                 ap_secrets: Mapping[str, ApSecrets] | None = None) -> None:
        if not masters:
            raise ValueError("at least one master key set is needed")
        self._stores = {kvn: DiversifyingKeyStore(keys) for kvn, keys in masters.items()}
        for kvn, keys in masters.items():
            if keys.kvn != kvn:
                raise ValueError("master key set filed under another key version")
        if default_kvn not in self._stores:
            raise ValueError("the default key version has no master keys")
        self.default_kvn = default_kvn
        self._secrets = dict(ap_secrets or {})

    @property
    def key_versions(self) -> list[int]:
        """Key versions held."""
        return sorted(self._stores)

    def card_keys(self, kdd: bytes, kvn: int) -> StaticKeys:
        """The card's static keys for key version `kvn` (0 = the default version)."""
        store = self._stores.get(kvn or self.default_kvn)
        if store is None:
            raise UnknownKeyVersion(f"no master keys for key version 0x{kvn:02X}",
                                    metadata={"kvn": f"{kvn:02X}"})
        return store.card_keys(kdd, kvn or self.default_kvn)

    def ap_secrets(self, ref: str) -> ApSecrets:
        """The access key and PIN named `ref`."""
        try:
            return self._secrets[ref]
        except KeyError:
            raise KeyError(f"no AP secrets under reference {ref!r}") from None

    def __repr__(self) -> str:
        versions = ", ".join(f"0x{k:02X}" for k in self.key_versions)
        return f"MasterKeyStore(versions=[{versions}], ap_secrets={len(self._secrets)})"


def dev_ap_secrets(ref: str) -> ApSecrets:
    """Deterministic dev secrets for an access key reference (never for production)."""
    return ApSecrets(hashlib.sha256(f"cardap-dev-access/{ref}".encode()).digest()[:16],
                     DEV_SYSTEM_PIN)


def dev_keystore(refs: list[str] | None = None) -> MasterKeyStore:
    """The development key store: master keys 40..4F (key version 30) and dev AP secrets."""
    refs = refs if refs is not None else ["org-a/org-a-cert-a", "org-a/org-a-records-d"]
    return MasterKeyStore({DEFAULT_KVN: DEV_MASTER_KEYS},
                          ap_secrets={r: dev_ap_secrets(r) for r in refs})


class FileKeyStore(MasterKeyStore):
    """A MasterKeyStore read from a 0600 JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        data = _read_private_json(path)
        if data.get("format") != FORMAT:
            raise KeyFileError(f"{path}: format must be {FORMAT!r}")
        masters: dict[int, StaticKeys] = {}
        for i, entry in enumerate(data.get("master_keys", [])):
            try:
                kvn = int(str(entry["kvn"]), 16)
                keys = StaticKeys(bytes.fromhex(entry["enc"]), bytes.fromhex(entry["mac"]),
                                  bytes.fromhex(entry["dek"]), kvn)
            except (KeyError, ValueError, TypeError):
                raise KeyFileError(f"{path}: master_keys[{i}] is malformed") from None
            masters[kvn] = keys
        secrets: dict[str, ApSecrets] = {}
        for ref, entry in dict(data.get("ap_secrets", {})).items():
            try:
                secrets[str(ref)] = ApSecrets(bytes.fromhex(entry["access_key"]),
                                              str(entry["pin"]))
            except (KeyError, ValueError, TypeError):
                raise KeyFileError(f"{path}: ap_secrets[{ref!r}] is malformed") from None
        try:
            default = int(str(data.get("default_kvn", f"{DEFAULT_KVN:02X}")), 16)
            super().__init__(masters, default_kvn=default, ap_secrets=secrets)
        except ValueError as exc:
            raise KeyFileError(f"{path}: {exc}") from None

    def __repr__(self) -> str:
        return f"FileKeyStore({self.path}, versions={self.key_versions})"


def _read_private_json(path: Path) -> dict[str, Any]:
    """Open `path` refusing symlinks and any group/other permission bit, parse JSON."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot open key file ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{path}: not a regular file")
        if st.st_mode & 0o077:
            raise KeyFileError(f"{path}: mode {stat.S_IMODE(st.st_mode):04o} lets group or "
                               "others read the card keys; chmod 600 it")
        with os.fdopen(fd, "rb") as f:
            fd = -1
            raw = f.read()
    finally:
        if fd >= 0:
            os.close(fd)
    try:
        data = json.loads(raw)
    except ValueError:
        raise KeyFileError(f"{path}: not valid JSON") from None
    if not isinstance(data, dict):
        raise KeyFileError(f"{path}: top level must be an object")
    return data


def write_key_file(path: Path, masters: list[StaticKeys],
                   ap_secrets: Mapping[str, ApSecrets]) -> None:
    """Write a key file with mode 0600 from the start (created exclusively)."""
    data = {
        "format": FORMAT,
        "default_kvn": f"{masters[0].kvn:02X}",
        "master_keys": [{"kvn": f"{k.kvn:02X}", "enc": k.enc.hex(), "mac": k.mac.hex(),
                         "dek": k.dek.hex()} for k in masters],
        "ap_secrets": {ref: {"access_key": s.access_key.hex(), "pin": s.pin}
                       for ref, s in ap_secrets.items()},
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)


def write_dev_key_file(path: Path) -> None:
    """Write the dev key store (masters 40..4F, dev AP secrets) as a 0600 key file."""
    store = dev_keystore()
    refs = ["org-a/org-a-cert-a", "org-a/org-a-records-d"]
    write_key_file(path, [DEV_MASTER_KEYS], {r: store.ap_secrets(r) for r in refs})

