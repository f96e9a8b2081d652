"""TLS for tests and benches: a fresh ``trustme`` CA per call and a server certificate
it issues. What the product itself makes (``seg-gateway make-cert``, ``seg up``'s local
CA) is ``onprem_gateway.dev_certs``, tested where it is used."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import trustme

KeyType = trustme.KeyType


def server_cert(
    directory: Path,
    name: str,
    *,
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    key_type: trustme.KeyType = trustme.KeyType.ECDSA,
) -> tuple[Path, Path]:
    """``<name>.crt`` (the leaf, then its CA: one file is the server's chain and a
    client's ``cafile``) and ``<name>.key``. Each call has its own CA, so one name's file
    does not verify another's certificate."""
    ca = trustme.CA(key_type=key_type)
    leaf = ca.issue_cert(*hosts, key_type=key_type)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems) + ca.cert_pem.bytes())
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key
