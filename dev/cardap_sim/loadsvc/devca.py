"""A development CA and mTLS certificates (EC P-256) for the loading service and terminals.

`python -m cardap_sim.loadsvc.devca --out DIR --terminal kiosk-01 --organisation org-a`
writes ca.pem (+ ca.key), service.pem/service.key (SAN localhost, 127.0.0.1, ::1) and
<terminal>.pem/<terminal>.key whose subject is CN=<terminal id>, O=<organisation>.
Private keys are written with mode 0600. For development and tests only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=825)


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, PEM encoded."""

    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class TerminalIdentity:
    """What the service reads from a terminal certificate."""

    terminal_id: str
    organisation: str


class DevCa:
    """An in-memory CA that signs service and terminal certificates."""

    def __init__(self, name: str = "cardap dev loading CA") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()),
                           critical=False)
            .sign(self._key, hashes.SHA256()))

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        """The CA private key (keep it off terminals)."""
        return _key_pem(self._key)

    def _issue(self, subject: x509.Name, san: list[x509.GeneralName],
               usage: x509.ObjectIdentifier, *, not_before: dt.datetime | None = None,
               not_after: dt.datetime | None = None) -> Issued:
        """Sign a leaf certificate for a new P-256 key (valid from 5 minutes ago for
        VALIDITY, unless given)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        start = not_before or now - dt.timedelta(minutes=5)
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(not_after or now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self._key.public_key()), critical=False))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def service_cert(self, hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")) -> Issued:
        """The loading service's server certificate."""
        san: list[x509.GeneralName] = []
        for h in hosts:
            try:
                san.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                san.append(x509.DNSName(h))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0]),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cardap loading")])
        return self._issue(subject, san, ExtendedKeyUsageOID.SERVER_AUTH)

    def terminal_cert(self, terminal_id: str, organisation: str, *,
                      not_before: dt.datetime | None = None,
                      not_after: dt.datetime | None = None) -> Issued:
        """A terminal's client certificate: CN = terminal id, O = organisation (tests may
        choose its validity, e.g. one that expires soon or has expired)."""
        if not terminal_id or not organisation:
            raise ValueError("terminal id and organisation are required")
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, terminal_id),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation)])
        return self._issue(subject, [], ExtendedKeyUsageOID.CLIENT_AUTH,
                           not_before=not_before, not_after=not_after)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """PKCS#8 PEM without encryption (files are 0600)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def terminal_identity(cert_pem: bytes) -> TerminalIdentity:
    """Terminal id (CN) and organisation (O) of a client certificate; ValueError if absent."""
    cert = x509.load_pem_x509_certificate(cert_pem)

    def one(oid: x509.ObjectIdentifier, what: str) -> str:
        values = cert.subject.get_attributes_for_oid(oid)
        if len(values) != 1 or not isinstance(values[0].value, str) or not values[0].value:
            raise ValueError(f"client certificate must carry exactly one {what}")
        return values[0].value

    return TerminalIdentity(one(NameOID.COMMON_NAME, "CN (terminal id)"),
                            one(NameOID.ORGANIZATION_NAME, "O (organisation)"))


def write_private(path: Path, data: bytes) -> None:
    """Write `data` with mode 0600 (replacing any previous file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_bundle(out: Path, terminals: list[tuple[str, str]], *,
                 hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")) -> DevCa:
    """Create the CA, the service certificate and one certificate per (terminal, org)."""
    out.mkdir(parents=True, exist_ok=True)
    ca = DevCa()
    (out / "ca.pem").write_bytes(ca.cert_pem)
    write_private(out / "ca.key", ca.key_pem)
    svc = ca.service_cert(hosts)
    (out / "service.pem").write_bytes(svc.cert_pem)
    write_private(out / "service.key", svc.key_pem)
    for terminal_id, org in terminals:
        term = ca.terminal_cert(terminal_id, org)
        (out / f"{terminal_id}.pem").write_bytes(term.cert_pem)
        write_private(out / f"{terminal_id}.key", term.key_pem)
    return ca


def main(argv: list[str] | None = None) -> int:
    """Command line: write a dev CA bundle."""
    parser = argparse.ArgumentParser(prog="python -m cardap_sim.loadsvc.devca",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="directory to write to")
    parser.add_argument("--terminal", action="append", default=[],
                        help="terminal id (repeatable; pairs with --organisation)")
    parser.add_argument("--organisation", action="append", default=[],
                        help="organisation of the terminal at the same position")
    parser.add_argument("--host", action="append", default=[],
                        help="service host name/IP for the SAN (default localhost, 127.0.0.1)")
    args = parser.parse_args(argv)
    terminals: list[str] = args.terminal or ["kiosk-01"]
    orgs: list[str] = args.organisation or ["org-a"]
    if len(orgs) == 1:
        orgs = orgs * len(terminals)
    if len(orgs) != len(terminals):
        parser.error("give one --organisation, or one per --terminal")
    hosts = tuple(args.host) or ("localhost", "127.0.0.1", "::1")
    write_bundle(args.out, list(zip(terminals, orgs, strict=True)), hosts=hosts)
    print(f"wrote CA, service and {len(terminals)} terminal certificate(s) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
