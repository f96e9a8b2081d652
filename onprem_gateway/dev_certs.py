"""The certificates the product makes for development and local systems, in one place:
``seg-gateway make-cert`` (a self-signed pair an operator can trust directly) and the
throwaway CA with a server certificate that ``seg up`` gives its gateways and demo mail
server (``seg_local/tls.py``). Values in, PEM bytes out; the callers write the files.
Tests and benches use ``trustme`` instead: they need a CA, not the product's choices.

Both are ECDSA P-256 with SHA-256 signatures: small, fast handshakes, and what every EAS
client of the last decade accepts.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Valid from a little before "now", so a peer whose clock runs slightly behind accepts it.
_BACKDATE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class CertPair:
    cert_pem: bytes  # the certificate, then its issuers (none for a self-signed one)
    key_pem: bytes  # PKCS#8, unencrypted: the caller writes it with mode 0600


@dataclass(frozen=True)
class LocalTls:
    ca_pem: bytes  # what clients trust
    server: CertPair  # the leaf and the CA as its chain


def subject_alt_name(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    """IP addresses as IP entries, everything else as DNS names."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
    days: int,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def self_signed(hosts: Sequence[str], *, days: int, now: dt.datetime) -> CertPair:
    """``seg-gateway make-cert``: a self-signed certificate for ``hosts`` (the first is
    the common name). It is its own CA (basic constraints CA:TRUE) so a client can pin
    the certificate file itself as its trust anchor."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    cert = (
        _builder(subject, subject, key, now, days)
        .add_extension(subject_alt_name(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return CertPair(_pem(cert), _key_pem(key))


def _local_name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SEG local"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def local_ca(hosts: Sequence[str], *, days: int, now: dt.datetime) -> LocalTls:
    """``seg up``: a CA that may sign only leaves (path length 0) and a server
    certificate for ``hosts`` it signs (server auth only), as a real deployment has them,
    so clients verify a chain and not a pinned certificate."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _local_name("SEG local CA")
    ca = (
        _builder(ca_name, ca_name, ca_key, now, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        _builder(_local_name(hosts[0]), ca.subject, key, now, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(subject_alt_name(hosts), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return LocalTls(_pem(ca), CertPair(_pem(leaf) + _pem(ca), _key_pem(key)))
