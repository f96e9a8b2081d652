"""``seg``: run the Secure Email Gateway on one machine and administer it.

    seg up [--nodes N] [--upstream URL [--upstream-ca FILE]]   the system, in the foreground
    seg demo                                                   the scripted demo, then exit
    seg cluster register NAME | list | nodes ID | rotate ID | revoke ID
    seg cluster signing-keys
    seg cluster rotate-signing-key begin KEY_ARN | activate KID | retire KID
    seg devices list [--access allow|block|quarantine] [--query TEXT]
    seg device block|allow|clear USER DEVICE_ID [--reason TEXT]
    seg device decision USER DEVICE_ID

Console commands reach the API given by ``--api`` / ``--token``, else ``SEG_API_URL`` /
``SEG_TOKEN``, else the system ``seg up`` started (``.seg/state.json``).
Errors are one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seg_cli.console import DEFAULT_STATE_DIR, CliError, Console, read_state, resolve_target

EXIT_ERROR = 1


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    if not rows:
        print("(none)")
        return
    widths = {c: max(len(c), *(len(str(r.get(c, "") or "")) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "") or "").ljust(widths[c]) for c in columns))


# --- seg up / seg demo ---------------------------------------------------------------


def _wait_for_interrupt() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass


def cmd_up(args: argparse.Namespace, *, demo_only: bool = False) -> int:
    import httpx  # noqa: PLC0415 - heavy imports only for the commands that use them
    import requests  # noqa: PLC0415
    from pyactivesync import EASError  # noqa: PLC0415

    from seg_cli.demo import DemoError, run_demo  # noqa: PLC0415
    from seg_local.stack import Stack, StackError, StackOptions  # noqa: PLC0415

    if args.nodes < 1 or args.nodes > 16:
        raise CliError("--nodes must be between 1 and 16")
    upstream = getattr(args, "upstream", "") or ""
    if upstream and not upstream.startswith(("https://", "http://")):
        raise CliError(f"--upstream must be an http(s) URL, got {upstream!r}")
    ca = getattr(args, "upstream_ca", None)
    if ca is not None and not ca.is_file():
        raise CliError(f"--upstream-ca {ca} is not a file")
    _refuse_second_instance(args.state_dir)
    stack = Stack(
        StackOptions(
            state_dir=args.state_dir,
            nodes=args.nodes,
            upstream=upstream,
            upstream_ca_bundle=ca,
            demo_ping_hold_cap_s=None,
        )
    )
    print(f"Starting the control plane and {args.nodes} gateway node(s)...", flush=True)
    try:
        stack.start()
        _announce(stack)
        if not upstream:
            print("\nDemo:", flush=True)
            try:
                run_demo(stack, say=lambda line: print(line, flush=True))
            except (DemoError, EASError, httpx.HTTPError, requests.RequestException) as exc:
                if demo_only:
                    raise DemoError(f"the demo failed: {exc}") from None
                # `seg up` keeps the system running: it is still useful to look into.
                print(f"seg: warning: the demo failed: {exc}{_log_hint(stack)}", flush=True)
        if demo_only:
            return 0
        print("\nRunning. Press Ctrl-C to stop.", flush=True)
        _wait_for_interrupt()
        print("\nStopping...", flush=True)
        return 0
    except (StackError, DemoError) as exc:
        raise CliError(str(exc).splitlines()[0] + _log_hint(stack)) from None
    except KeyboardInterrupt:
        print("\nStopping...", flush=True)
        return 0
    finally:
        stack.stop()


def _refuse_second_instance(state_dir: Path) -> None:
    state = read_state(state_dir)
    pid = state.get("pid") if state else None
    if isinstance(pid, int) and pid != os.getpid():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return  # a stale file from a killed run
        except PermissionError:
            pass
        raise CliError(
            f"`seg up` already runs with state in {state_dir} (pid {pid}); stop it first "
            "or pass another --state-dir"
        )


def _log_hint(stack: Any) -> str:
    return f" (logs in {stack.state_dir / 'logs'})"


def _announce(stack: Any) -> None:
    state = stack.public_state()
    print(f"Dashboard:    {state['dashboard_url']}")
    print(f"Admin token:  {stack.admin_token}")
    print(f"Control API:  {state['api_url']}")
    for node in state["nodes"]:
        print(
            f"Gateway:      {node['url']}/Microsoft-Server-ActiveSync  ({node['node_id']}, "
            f"admin {node['admin_url']})"
        )
    upstream = "bundled demo mail server" if state["demo_mail"] else "upstream"
    print(f"Mail server:  {state['upstream_url']} ({upstream})")
    if state["demo_mail"]:
        print("Demo mailbox: any user name, password 'demo'")
    print(f"Local CA:     {state['ca_cert']} (trust it in test clients)")
    for key in state["policy_signing_keys"]:
        print(f"Policy key:   {key} (nodes pin it: SEG_GW_POLICY_SIGNING_KEYS)")
    print(f"State, logs:  {stack.state_dir}", flush=True)


# --- console commands ---------------------------------------------------------------


def _console(args: argparse.Namespace) -> Console:
    return Console(resolve_target(args.api, args.token, args.state_dir))


def cmd_cluster(args: argparse.Namespace) -> int:
    if args.action in {"signing-keys", "rotate-signing-key"}:
        return cmd_signing_keys(args)
    with _console(args) as api:
        if args.action == "register":
            created = api.call("POST", "/console/v1/clusters", json={"name": args.name})
            try:
                pins = _pins(api)
            except CliError:
                _print_json(created)  # shown once: never lose the credential
                raise
            _print_json({**created, **pins})
        elif args.action == "list":
            body = api.call("GET", "/console/v1/clusters")
            rows = body.get("items", body) if isinstance(body, dict) else body
            if args.json:
                _print_json(rows)
            else:
                _table(list(rows), ("cluster_id", "name", "policy_version", "created_at"))
        elif args.action == "nodes":
            rows = api.call("GET", f"/console/v1/clusters/{args.cluster_id}/nodes")
            if args.json:
                _print_json(rows)
            else:
                _table(
                    list(rows),
                    (
                        "node_id",
                        "connected",
                        "policy_version",  # the version the node has applied
                        "digest_check",  # in_sync / diverged / unchecked, at its last report
                        "last_verified_at",
                        "policy_age_s",
                        "spool_depth",
                        "last_seen",
                    ),
                )
        elif args.action == "rotate":
            path = f"/console/v1/clusters/{args.cluster_id}/credentials/rotate"
            _print_json(api.call("POST", path))
        elif args.action == "revoke":
            path = f"/console/v1/clusters/{args.cluster_id}/credentials/revoke"
            _print_json(api.call("POST", path) or {"status": "revoked"})
    return 0


# --- policy signing keys (docs/gateway.md, "Signed policy") ----------------------------

SIGNING_KEYS = "/console/v1/signing-keys"


def _pins(api: Console) -> dict[str, Any]:
    """What a new cluster's nodes must pin: printed with its credential, so an operator
    configures both at once."""
    try:
        keys = api.call("GET", SIGNING_KEYS)
    except CliError as exc:
        raise CliError(
            f"the cluster is registered (its credential is above), but the policy signing "
            f"keys could not be read: {exc}; run `seg cluster signing-keys`"
        ) from None
    return {
        "policy_signing_keys": keys["trusted"],
        "gateway_env": {"SEG_GW_POLICY_SIGNING_KEYS": ",".join(keys["trusted"])},
    }


def cmd_signing_keys(args: argparse.Namespace) -> int:
    with _console(args) as api:
        if args.action == "signing-keys":
            body = api.call("GET", SIGNING_KEYS)
        elif args.step == "begin":
            body = api.call("POST", SIGNING_KEYS, json={"key_arn": args.target})
        else:
            body = api.call("POST", f"{SIGNING_KEYS}/{args.target}/{args.step}")
    if args.json:
        _print_json(body)
        return 0
    _table(list(body["keys"]), ("kid", "state", "key_arn", "changed_at"))
    print(f"\nNodes must trust (SEG_GW_POLICY_SIGNING_KEYS, key set v{body['generation']}):")
    print(",".join(body["trusted"]))
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    params = {"limit": str(args.limit)}
    if args.access:
        params["access_state"] = args.access
    if args.query:
        params["q"] = args.query
    with _console(args) as api:
        body = api.call("GET", "/console/v1/email-devices", params=params)
    if args.json:
        _print_json(body)
    else:
        _table(
            list(body.get("items", [])),
            (
                "user",
                "device_id",
                "device_type",
                "access_state",
                "reason",
                "last_seen",
                "last_node",
            ),
        )
    return 0


def cmd_device(args: argparse.Namespace) -> int:
    path = f"/console/v1/email-devices/{args.user}/{args.device_id}"
    with _console(args) as api:
        if args.action in {"block", "allow", "clear"}:
            reason = args.reason or f"{args.action} from the seg command line"
            _print_json(
                api.call("POST", path + "/override", json={"action": args.action, "reason": reason})
            )
            return 0
        result: dict[str, Any] = {"control_plane": api.call("GET", path)}
        if api.target.nodes:
            result["nodes"] = {
                n["node_id"]: api.node_decision(n, args.user, args.device_id)
                for n in api.target.nodes
            }
        _print_json(result)
    return 0


# --- argument parsing ---------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="where `seg up` keeps its state (default .seg)",
    )
    api = argparse.ArgumentParser(add_help=False, parents=[common])
    api.add_argument("--api", help="control-plane API URL (env SEG_API_URL)")
    api.add_argument("--token", help="console admin token (env SEG_TOKEN)")
    api.add_argument("--json", action="store_true", help="print raw JSON")

    parser = argparse.ArgumentParser(
        prog="seg",
        description="Run and administer the Secure Email Gateway.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[1],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", parents=[common], help="start the whole system in the foreground")
    up.add_argument("--nodes", type=int, default=2, help="gateway nodes (default 2)")
    up.add_argument("--upstream", default="", help="mail server URL (default: bundled demo)")
    up.add_argument("--upstream-ca", type=Path, help="PEM CA bundle for the upstream")
    demo = sub.add_parser("demo", parents=[common], help="run the demo and exit")
    demo.add_argument("--nodes", type=int, default=2)

    cluster = sub.add_parser("cluster", help="gateway clusters")
    csub = cluster.add_subparsers(dest="action", required=True)
    reg = csub.add_parser("register", parents=[api], help="register a cluster")
    reg.add_argument("name")
    csub.add_parser("list", parents=[api], help="list clusters")
    for action, text in (
        ("nodes", "a cluster's gateway nodes and their state"),
        ("rotate", "issue a new cluster credential"),
        ("revoke", "revoke the cluster credential (nodes are disconnected)"),
    ):
        p = csub.add_parser(action, parents=[api], help=text)
        p.add_argument("cluster_id")
    csub.add_parser(
        "signing-keys", parents=[api], help="the policy signing keys and the ones nodes pin"
    )
    rot = csub.add_parser(
        "rotate-signing-key",
        parents=[api],
        help="rotate the policy signing key: begin KEY_ARN, activate KID, retire KID",
        description="1. deploy the stack with a new key label (-c signing_keys=1,2); "
        "2. `begin <new key ARN>`: nodes learn the key; 3. once every node trusts it "
        "(one refresh interval), `activate <new kid>`; 4. once every node refreshed "
        "again, `retire <old kid>`; 5. deploy without the old label.",
    )
    rot.add_argument("step", choices=("begin", "activate", "retire"))
    rot.add_argument("target", help="begin: the new key's ARN; activate/retire: a kid")

    devices = sub.add_parser("devices", help="email devices seen by the gateways")
    dsub = devices.add_subparsers(dest="action", required=True)
    dl = dsub.add_parser("list", parents=[api], help="list email devices")
    dl.add_argument("--access", choices=("allow", "block", "quarantine", "unknown"))
    dl.add_argument("--query", help="filter on user, device id, model")
    dl.add_argument("--limit", type=int, default=100)

    device = sub.add_parser("device", help="one email device")
    esub = device.add_subparsers(dest="action", required=True)
    for action, text in (
        ("block", "block it"),
        ("allow", "allow it"),
        ("clear", "drop the manual override"),
        ("decision", "show what the control plane and each node decide"),
    ):
        p = esub.add_parser(action, parents=[api], help=text)
        p.add_argument("user")
        p.add_argument("device_id")
        if action != "decision":
            p.add_argument("--reason", default="")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "up":
            return cmd_up(args)
        if args.command == "demo":
            args.upstream = ""
            return cmd_up(args, demo_only=True)
        if args.command == "cluster":
            return cmd_cluster(args)
        if args.command == "devices":
            return cmd_devices(args)
        return cmd_device(args)
    except CliError as exc:
        print(f"seg: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
