"""The JPKI AP's four certificates, as real X.509 (EC P-256, fast to make).

A real card holds the user authentication certificate (EF 000A, readable without a PIN),
the digital signature certificate (EF 0001, behind the signing password) and the
certificates of the two CAs that issued them (EF 000B and EF 0002, readable without a PIN),
as OpenSC's JPKI driver reads them. Here two virtual CAs stand in for J-LIS's: one pair per
process (`virtual_cas`), so every card made by one simulator shares them, as every real
card shares J-LIS's. Certificates name a virtual card or a virtual holder, never a person;
serial numbers are random, so two cards never share one. (Real JPKI keys are RSA 2048; the
key type is a model, the file layout is not.)
"""

from __future__ import annotations

import datetime
import functools
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class VirtualCa:
    """A virtual CA: its key and its self-signed certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def der(self) -> bytes:
        """The CA certificate, DER."""
        return self.cert.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class JpkiCertificates:
    """The DER of the four certificate files of one card (None: not issued)."""

    auth: bytes | None
    auth_ca: bytes
    sign: bytes | None
    sign_ca: bytes


def _name(org_unit: str, common: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cardap virtual JPKI"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, org_unit),
        x509.NameAttribute(NameOID.COMMON_NAME, common),
    ])


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def _ca(org_unit: str) -> VirtualCa:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(org_unit, f"virtual {org_unit} CA")
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=20 * 365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    return VirtualCa(key, cert)


@functools.cache
def virtual_cas() -> tuple[VirtualCa, VirtualCa]:
    """(user authentication CA, digital signature CA), made once per process."""
    return _ca("JPKI for user authentication"), _ca("JPKI for digital signature")


def _issue(ca: VirtualCa, subject: x509.Name, years: int) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=years * 365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(ca.key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def make_auth_certificate(card_label: str) -> bytes:
    """A user authentication certificate of the virtual auth CA; names the card only."""
    return _issue(virtual_cas()[0], _name("user authentication", f"virtual card {card_label}"),
                  5)


def make_sign_certificate() -> bytes:
    """A digital signature certificate of the virtual sign CA (a virtual holder's name;
    a real one carries the holder's name and address, never the My Number)."""
    return _issue(virtual_cas()[1], _name("digital signature", "virtual holder"), 5)


def make_certificates(card_label: str, *, issued: bool = True) -> JpkiCertificates:
    """The certificate files of a new card (`issued` False: a holder without electronic
    certificates, modelled as neither certificate file holding one)."""
    auth_ca, sign_ca = virtual_cas()
    return JpkiCertificates(
        auth=make_auth_certificate(card_label) if issued else None, auth_ca=auth_ca.der,
        sign=make_sign_certificate() if issued else None, sign_ca=sign_ca.der)
