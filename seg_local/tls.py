"""A throwaway local certificate authority and a server certificate it signs, for the
gateway's HTTPS listener and the demo mail server (clients trust ``ca.pem``). The
certificates are the product's one helper's (``onprem_gateway.dev_certs.local_ca``);
this module keeps the files and reuses them while they are valid."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from onprem_gateway.dev_certs import local_ca


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    cert: Path  # leaf + CA chain
    key: Path


def make_local_tls(
    directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"), days: int = 30
) -> TlsFiles:
    """Write ``ca.pem``, ``cert.pem`` (chain) and ``key.pem`` (mode 0600) into
    ``directory``, reusing them while they are valid for another day."""
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    now = dt.datetime.now(dt.UTC)
    if files.cert.exists() and files.key.exists() and files.ca_cert.exists():
        existing = x509.load_pem_x509_certificate(files.cert.read_bytes())
        if existing.not_valid_after_utc > now + dt.timedelta(days=1):
            return files
    made = local_ca(hosts, days=days, now=now)
    files.ca_cert.write_bytes(made.ca_pem)
    files.cert.write_bytes(made.server.cert_pem)
    files.key.touch(mode=0o600)
    files.key.write_bytes(made.server.key_pem)
    return files
