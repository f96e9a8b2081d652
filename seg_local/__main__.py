"""``python -m seg_local``: run the local control plane (or a bare moto server) in the
foreground of a process of its own, until SIGINT or SIGTERM.

    python -m seg_local serve [--api-port N] [--ws-port N] [--moto-endpoint URL]
                              [--schedule-minutes M] [--ready-file PATH]
    python -m seg_local moto [--port N] [--ready-file PATH]

Secrets come from the environment, never the command line (``ps`` shows it):
``SEG_LOCAL_ADMIN_TOKEN``, ``SEG_LOCAL_OPERATOR_TOKEN``, ``SEG_LOCAL_VIEWER_TOKEN`` (the
console's three roles) and ``SEG_LOCAL_DEVICE_SERVICES_KEY`` (generated when unset).
Once up, the public endpoints are written as JSON to ``--ready-file`` (atomically) and
printed on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

ENV_ADMIN_TOKEN = "SEG_LOCAL_ADMIN_TOKEN"  # noqa: S105 - the variable's name
ENV_OPERATOR_TOKEN = "SEG_LOCAL_OPERATOR_TOKEN"  # noqa: S105 - the variable's name
ENV_VIEWER_TOKEN = "SEG_LOCAL_VIEWER_TOKEN"  # noqa: S105 - the variable's name
ENV_DEVICE_SERVICES_KEY = "SEG_LOCAL_DEVICE_SERVICES_KEY"


def write_json_atomic(path: Path, data: dict[str, Any], mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.is_set():
        signal.pause()  # returns once a handled signal arrived


def _serve(args: argparse.Namespace) -> int:
    from seg_local.controlplane import ControlPlaneError, LocalControlPlane, Options  # noqa: PLC0415
    from seg_local.websocket_api import Limits  # noqa: PLC0415

    options = Options(
        host=args.host,
        api_port=args.api_port,
        ws_port=args.ws_port,
        moto_endpoint=args.moto_endpoint,
        prefix=args.prefix,
        admin_token=os.environ.get(ENV_ADMIN_TOKEN, ""),
        operator_token=os.environ.get(ENV_OPERATOR_TOKEN, ""),
        viewer_token=os.environ.get(ENV_VIEWER_TOKEN, ""),
        mailbox_dir=args.mailbox_dir,
        device_services_key=os.environ.get(ENV_DEVICE_SERVICES_KEY, ""),
        schedule_interval_s=args.schedule_minutes * 60 if args.schedule_minutes else None,
        log_level=args.log_level,
        ws_limits=Limits(
            max_connection_s=args.ws_max_connection_s,
            idle_timeout_s=args.ws_idle_timeout_s,
        ),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        ca_bundle=args.ca_bundle,
        signing_keys=args.signing_keys,
        signing_registry_ttl_s=args.signing_registry_ttl_s,
    )
    cp = LocalControlPlane(options)
    try:
        endpoints = cp.start()
    except (ControlPlaneError, OSError) as exc:
        print(f"seg_local: {exc}", file=sys.stderr)
        return 1
    try:
        info = {**endpoints.public(), "pid": os.getpid()}
        if args.ready_file:
            write_json_atomic(Path(args.ready_file), info)
        print(json.dumps(info), flush=True)
        _wait_for_signal()
    finally:
        cp.stop()
        if args.ready_file:
            Path(args.ready_file).unlink(missing_ok=True)
    return 0


def _moto(args: argparse.Namespace) -> int:
    from seg_local.mailbox import Mailbox  # noqa: PLC0415
    from seg_local.moto_server import LocalMotoServer  # noqa: PLC0415

    try:
        server = LocalMotoServer(args.host, args.port)
        endpoint = server.start()
    except OSError as exc:
        print(f"seg_local: cannot start moto on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    mailbox = Mailbox(Path(args.mailbox_dir)) if args.mailbox_dir else None
    if mailbox is not None:
        mailbox.start()
    info = {"moto_endpoint": endpoint, "pid": os.getpid()}
    if args.ready_file:
        write_json_atomic(Path(args.ready_file), info)
    print(json.dumps(info), flush=True)
    try:
        _wait_for_signal()
    finally:
        if mailbox is not None:
            mailbox.stop()
        server.stop()
        if args.ready_file:
            Path(args.ready_file).unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seg_local", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the local control plane")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--api-port", type=int, default=0)
    serve.add_argument("--ws-port", type=int, default=0)
    serve.add_argument("--moto-endpoint", default="", help="use this moto server (default: own)")
    serve.add_argument("--prefix", default="seg-local", help="table and queue name prefix")
    serve.add_argument("--schedule-minutes", type=float, default=None)
    serve.add_argument("--ready-file", default="")
    serve.add_argument("--log-level", default="WARNING", help="the handlers' log level")
    serve.add_argument("--tls-cert", default="", help="PEM chain: serve HTTPS and WSS")
    serve.add_argument("--tls-key", default="")
    serve.add_argument("--ca-bundle", default="", help="CA the handlers trust (@connections)")
    serve.add_argument("--mailbox-dir", default="", help="copy the e-mails sent (SES) here")
    serve.add_argument("--ws-max-connection-s", type=float, default=7200.0, help="API Gateway: 2 h")
    serve.add_argument("--ws-idle-timeout-s", type=float, default=600.0, help="API Gateway: 10 min")
    serve.add_argument(
        "--signing-keys", type=int, default=1, help="policy signing keys (2: rotate between them)"
    )
    serve.add_argument(
        "--signing-registry-ttl-s",
        type=float,
        default=None,
        help="how long handlers keep the signing-key registry (default 60, as in AWS)",
    )
    moto = sub.add_parser("moto", help="run a bare moto server (DynamoDB, SQS)")
    moto.add_argument("--host", default="127.0.0.1")
    moto.add_argument("--port", type=int, default=0)
    moto.add_argument("--ready-file", default="")
    moto.add_argument("--mailbox-dir", default="", help="copy the e-mails sent (SES) here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    return _serve(args) if args.command == "serve" else _moto(args)


if __name__ == "__main__":
    code = main()
    # Everything was stopped explicitly; skip the interpreter's finalisation, which
    # takes seconds of garbage collection over moto's object graph.
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)
