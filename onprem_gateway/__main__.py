"""``seg-gateway``: run a gateway node and its small helper commands.

    seg-gateway run [--config FILE] [--policy-file FILE]
    seg-gateway check-config [--config FILE] [--policy-file FILE]
    seg-gateway fetch-policy --out FILE [--config FILE]
    seg-gateway make-cert --cert PATH --key PATH [--host NAME ...] [--days N]
    seg-gateway keygen --private-key PATH [--public-key PATH]

Exit codes: 0 success (also after a graceful SIGTERM/SIGINT), 2 unusable configuration
or arguments (every problem printed on stderr), 1 any other start-up failure.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import signal
import sys
from pathlib import Path

from onprem_gateway.config import ConfigError, GatewayConfig, load_config

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seg-gateway", description="Secure Email Gateway node (Exchange ActiveSync)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "run the gateway node"),
        ("check-config", "check the configuration and print it (secrets redacted)"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--config", type=Path, help="TOML configuration file")
        cmd.add_argument("--policy-file", type=Path, help="start from this PolicySnapshot JSON")
    fetch = sub.add_parser(
        "fetch-policy",
        help="save the cluster's signed policy to a file (an air-gapped node's --policy-file)",
    )
    fetch.add_argument("--config", type=Path, help="TOML configuration file (a connected node's)")
    fetch.add_argument("--out", type=Path, required=True, help="where to write the signed policy")
    cert = sub.add_parser("make-cert", help="write a self-signed TLS pair for development")
    cert.add_argument("--cert", type=Path, required=True)
    cert.add_argument("--key", type=Path, required=True)
    cert.add_argument("--host", action="append", help="DNS name or IP (repeatable)")
    cert.add_argument("--days", type=int, default=365)
    keygen = sub.add_parser("keygen", help="write a cluster X25519 keypair (substitution)")
    keygen.add_argument("--private-key", type=Path, required=True)
    keygen.add_argument("--public-key", type=Path)
    return parser


def _load(args: argparse.Namespace) -> GatewayConfig:
    return load_config(config_file=args.config, overrides={"policy_file": args.policy_file})


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"seg-gateway: {message}", file=sys.stderr)
    return code


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args)
    print(json.dumps(config.describe(), indent=2, sort_keys=True))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from onprem_gateway.agent.logs import configure_logging  # noqa: PLC0415
    from onprem_gateway.agent.node import Node  # noqa: PLC0415 (keep `--help` light)
    from onprem_gateway.agent.policy_journal import PolicyFileError  # noqa: PLC0415

    config = _load(args)
    configure_logging(config.log_level, config.log_format, "agent")
    try:
        node = Node(config)
    except PolicyFileError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot prepare state directory {config.state_dir}: {exc}", EXIT_FAILURE)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, node.reload_policy_file)
        try:
            return await node.run(stop)
        except OSError as exc:
            logging.getLogger("onprem_gateway").error("start-up failed: %s", exc)
            return EXIT_FAILURE

    try:
        import uvloop  # noqa: PLC0415
    except ImportError:  # pragma: no cover - uvloop is in the gateway extra
        return asyncio.run(main())
    return uvloop.run(main())


def cmd_fetch_policy(args: argparse.Namespace) -> int:
    """Fetch the cluster's policy as signed, verify it with the keys this configuration
    pins (what the air-gapped node will pin too) and write it as a one-record signed
    policy file. Its freshness on the air-gapped node is its signed issue time: export
    again before ``max_policy_age_s`` runs out."""
    from onprem_gateway.agent.cloud import (  # noqa: PLC0415
        ControlPlaneClient,
        ControlPlaneUnavailable,
        CredentialRejected,
    )
    from onprem_gateway.agent.persist import atomic_write  # noqa: PLC0415
    from onprem_gateway.agent.policy_trust import PolicyRefused, PolicyTrust  # noqa: PLC0415
    from seg_contract.signing import encode_record  # noqa: PLC0415

    config = load_config(config_file=args.config)
    if not config.connected:
        return _fail("fetch-policy needs a control plane: SEG_GW_API_URL and SEG_GW_CREDENTIAL")
    trust = PolicyTrust(
        config.policy_signing_keys,
        cluster_id=config.cluster_id,
        max_skew_s=config.policy_clock_skew_s,
    )

    async def fetch() -> int:
        client = ControlPlaneClient(
            config.api_url,
            config.credential,
            config.node_id,
            timeout_s=config.http_timeout_s,
            ca_bundle=config.control_plane_ca_bundle,
        )
        try:
            with trust.refusals("snapshot"):
                answer = await client.fetch_snapshot()
                snapshot, verified = trust.snapshot(answer.signed)
        except (ControlPlaneUnavailable, CredentialRejected, PolicyRefused) as exc:
            return _fail(f"cannot fetch the signed policy: {exc}", EXIT_FAILURE)
        finally:
            await client.aclose()
        atomic_write(args.out, encode_record(answer.signed))
        print(
            f"wrote {args.out}: cluster {snapshot.cluster_id} version {snapshot.version}, "
            f"{len(snapshot.devices)} devices, signed by key {verified.statement.kid}"
        )
        return EXIT_OK

    return asyncio.run(fetch())


def cmd_make_cert(args: argparse.Namespace) -> int:
    from onprem_gateway.dev_certs import self_signed  # noqa: PLC0415

    if not 1 <= args.days <= 3650:
        return _fail("--days must be between 1 and 3650")
    hosts = args.host or ["localhost", "127.0.0.1"]
    pair = self_signed(hosts, days=args.days, now=dt.datetime.now(dt.UTC))
    _write_secret(args.key, pair.key_pem)
    args.cert.write_bytes(pair.cert_pem)
    print(f"wrote {args.cert} and {args.key} (hosts: {', '.join(hosts)}; {args.days} days)")
    return EXIT_OK


def cmd_keygen(args: argparse.Namespace) -> int:
    from seg_contract.crypto import generate_cluster_keypair  # noqa: PLC0415

    if args.private_key.exists():
        return _fail(f"{args.private_key} exists; refusing to overwrite a cluster key")
    private_b64, public_b64 = generate_cluster_keypair()
    _write_secret(args.private_key, private_b64.encode() + b"\n")
    if args.public_key is not None:
        args.public_key.write_text(public_b64 + "\n")
    # The public key goes to the console (PUT /console/v1/clusters/{id}/public-key).
    print(public_b64)
    return EXIT_OK


def _write_secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


COMMANDS = {
    "run": cmd_run,
    "check-config": cmd_check_config,
    "fetch-policy": cmd_fetch_policy,
    "make-cert": cmd_make_cert,
    "keygen": cmd_keygen,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"seg-gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        return _fail(f"{exc.filename or ''}: {exc.strerror or exc}", EXIT_FAILURE)


if __name__ == "__main__":
    sys.exit(main())
