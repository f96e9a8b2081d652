"""The certificates the product makes (``seg-gateway make-cert``, ``seg up``'s local CA):
what a client checks of them."""

from __future__ import annotations

import datetime as dt
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from onprem_gateway.dev_certs import local_ca, self_signed

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def _certs(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


def test_make_cert_is_self_signed_for_its_hosts_and_its_own_anchor() -> None:
    (cert,) = _certs(self_signed(["gw.local", "10.0.0.5"], days=7, now=NOW).cert_pem)
    assert cert.issuer == cert.subject
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gw.local"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5")]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=7)
    assert NOW - dt.timedelta(minutes=10) < cert.not_valid_before_utc < NOW
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


def test_the_local_ca_signs_a_server_only_leaf_sent_with_its_chain() -> None:
    made = local_ca(("127.0.0.1", "localhost"), days=30, now=NOW)
    (ca,) = _certs(made.ca_pem)
    leaf, chain_ca = _certs(made.server.cert_pem)
    assert chain_ca == ca and leaf.issuer == ca.subject
    leaf.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert b"PRIVATE KEY" in made.server.key_pem
