"""This terminal's TLS material for the loading service: read, checked, described.

The client certificate and key (and the service's CA) are read together, so that one
`TerminalTls` is what a channel uses, what the expiry metric and `GetStatus` describe, and
what a reload compares (its digest) to decide whether the files changed: a SIGHUP after the
files were replaced (certificate rotation) builds a new link with the new pair, while a
session in progress finishes on the old one (D19). A pair that cannot be used — a file
unreadable, not PEM, a key that does not belong to the certificate — is refused with the
key that names the file, so a reload keeps the link that works.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from cardapd.config import LoadingConfig
from cardapd.errors import ConfigError

CERT_WARNING = timedelta(days=30)
"""How long before the certificate expires GetStatus (and `cardapctl status`) warns."""


@dataclass(frozen=True)
class TerminalTls:
    """The PEM files of the link and what the certificate says."""

    ca: bytes
    cert: bytes
    key: bytes
    not_after: datetime
    subject: str
    digest: str

    def warning(self, now: datetime) -> str:
        """A line for operations when the certificate expires within CERT_WARNING ("" if
        not)."""
        left = self.not_after - now
        when = self.not_after.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
        if left <= timedelta(0):
            return (f"the terminal certificate for the loading service ({self.subject}) "
                    f"EXPIRED on {when}: loads and deletes fail until a new certificate and "
                    "key are installed and cardapd is reloaded (systemctl reload cardapd)")
        if left > CERT_WARNING:
            return ""
        days = left.days
        return (f"the terminal certificate for the loading service ({self.subject}) expires "
                f"on {when} (in {days} day{'s' if days != 1 else ''}): install the renewed "
                "certificate and key, then systemctl reload cardapd")


def _read(path: Path | None, key: str) -> bytes:
    if path is None:
        raise ConfigError(f"loading.{key}: not set", metadata={"key": f"loading.{key}"})
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"loading.{key}: cannot read {path}: {exc.strerror or exc}",
                          metadata={"key": f"loading.{key}", "file": str(path)}) from exc


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _subject(cert: x509.Certificate) -> str:
    parts = []
    for oid, label in ((NameOID.COMMON_NAME, "CN"), (NameOID.ORGANIZATION_NAME, "O")):
        for attr in cert.subject.get_attributes_for_oid(oid):
            parts.append(f"{label}={_text(attr.value)}")
    return ", ".join(parts) or cert.subject.rfc4514_string()


def certificate_cn(path: Path | None) -> str:
    """The CN of the PEM certificate at `path` (the terminal id the loading service sees);
    "" when there is none or it cannot be read (read_tls says why, at start)."""
    if path is None:
        return ""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return ""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return _text(names[0].value) if names else ""


def read_tls(cfg: LoadingConfig) -> TerminalTls:
    """The link's CA, certificate and key, checked to belong together; ConfigError naming
    the key (`loading.ca`, `loading.cert`, `loading.key`) otherwise."""
    ca, cert_pem, key_pem = _read(cfg.ca, "ca"), _read(cfg.cert, "cert"), _read(cfg.key, "key")
    try:
        x509.load_pem_x509_certificates(ca)
    except ValueError as exc:
        raise ConfigError(f"loading.ca: {cfg.ca} holds no PEM certificate ({exc})",
                          metadata={"key": "loading.ca"}) from exc
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise ConfigError(f"loading.cert: {cfg.cert} holds no PEM certificate ({exc})",
                          metadata={"key": "loading.cert"}) from exc
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"loading.key: {cfg.key} holds no unencrypted PEM private key",
                          metadata={"key": "loading.key"}) from exc
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*raw) != cert.public_key().public_bytes(*raw):
        raise ConfigError(f"loading.key: {cfg.key} is not the key of the certificate "
                          f"{cfg.cert} (replace both together)",
                          metadata={"key": "loading.key"})
    digest = hashlib.sha256(b"\0".join((ca, cert_pem, key_pem))).hexdigest()
    return TerminalTls(ca, cert_pem, key_pem, cert.not_valid_after_utc, _subject(cert), digest)
