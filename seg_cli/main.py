"""``seg``: run the Secure Email Gateway on one machine and administer it.

    seg up [--nodes N] [--upstream URL [--upstream-ca FILE]]   the system, in the foreground
    seg demo                                                   the scripted demo, then exit
    seg whoami
    seg cluster register NAME | list | nodes ID | rotate ID | revoke ID
    seg cluster signing-keys
    seg cluster rotate-signing-key begin KEY_ARN | activate KID | retire KID
    seg devices list [--access S] [--compliance S] [--cluster ID] [--node N]
                     [--not-seen-days N] [--query TEXT] [--sort COL [--order asc|desc]]
    seg devices export [--out FILE] [same filters]
    seg device block|allow|clear USER DEVICE_ID [--reason TEXT]
    seg device note USER DEVICE_ID TEXT
    seg device decision USER DEVICE_ID
    seg audit [--action A] [--actor WHO] [--query TEXT] [--limit N] [--export csv|json]

Console commands reach the API given by ``--api`` / ``--token``, else ``SEG_API_URL`` /
``SEG_TOKEN``, else the system ``seg up`` started (``.seg/state.json``: its admin token,
or the token of ``--role viewer|operator|admin``).
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
    print(f"Operator:     {stack.operator_token}  (block, allow, clear, notes)")
    print(f"Viewer:       {stack.viewer_token}  (read only)")
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
    print(f"Notices:      {state['mailbox']} (the e-mails users get, one file each)")
    for key in state["policy_signing_keys"]:
        print(f"Policy key:   {key} (nodes pin it: SEG_GW_POLICY_SIGNING_KEYS)")
    print(f"State, logs:  {stack.state_dir}", flush=True)


# --- console commands ---------------------------------------------------------------


def _console(args: argparse.Namespace) -> Console:
    return Console(resolve_target(args.api, args.token, args.state_dir, args.role))


def _reason(args: argparse.Namespace) -> dict[str, str]:
    """The audit trail's reason for a change (``X-SEG-Reason``)."""
    reason = getattr(args, "reason", "") or ""
    return {"X-SEG-Reason": reason} if reason else {}


def cmd_whoami(args: argparse.Namespace) -> int:
    with _console(args) as api:
        _print_json(api.call("GET", "/console/v1/whoami"))
    return 0


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
                        "policy_rejections",  # signed input refused since it started (alert)
                        "last_rejection",
                        "policy_age_s",
                        "spool_depth",
                        "last_seen",
                    ),
                )
        elif args.action == "rotate":
            path = f"/console/v1/clusters/{args.cluster_id}/credentials/rotate"
            _print_json(api.call("POST", path, headers=_reason(args)))
        elif args.action == "revoke":
            path = f"/console/v1/clusters/{args.cluster_id}/credentials/revoke"
            _print_json(api.call("POST", path, headers=_reason(args)) or {"status": "revoked"})
    return 0


def _device_filters(args: argparse.Namespace) -> dict[str, str]:
    chosen = {
        "access_state": args.access,
        "compliance_state": args.compliance,
        "cluster_id": args.cluster,
        "node": args.node,
        "not_seen_days": args.not_seen_days,
        "q": args.query,
        "sort": args.sort,
        "order": args.order,
    }
    return {k: str(v) for k, v in chosen.items() if v is not None and v != ""}


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
    params = _device_filters(args)
    with _console(args) as api:
        if args.action == "export":
            parts: list[str] = []
            cursor = None
            while True:
                query = {**params, **({"cursor": cursor} if cursor else {})}
                text, cursor = api.download("/console/v1/email-devices/export", params=query)
                parts.append(text)
                if not cursor:
                    break
            csv_text = "".join(parts)
            if args.out:
                Path(args.out).write_text(csv_text)
                print(f"wrote {csv_text.count(chr(10)) - 1} devices to {args.out}")
            else:
                sys.stdout.write(csv_text)
            return 0
        body = api.call(
            "GET", "/console/v1/email-devices", params={**params, "limit": str(args.limit)}
        )
    if args.json:
        _print_json(body)
    else:
        print(f"{body.get('total', 0)} devices match")
        _table(
            list(body.get("items", [])),
            (
                "user",
                "device_id",
                "cluster_id",
                "device_type",
                "access_state",
                "compliance_state",
                "reason",
                "last_seen",
                "last_node",
            ),
        )
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    chosen = {"action": args.action, "actor": args.actor, "q": args.query}
    params = {k: v for k, v in chosen.items() if v}
    with _console(args) as api:
        if args.export:
            text, _ = api.download(
                "/console/v1/audit/export", params={**params, "format": args.export}
            )
            sys.stdout.write(text)
            return 0
        body = api.call("GET", "/console/v1/audit", params={**params, "limit": str(args.limit)})
    if args.json:
        _print_json(body)
    else:
        _table(list(body.get("items", [])), ("at", "actor", "role", "action", "target", "reason"))
    return 0


def cmd_device(args: argparse.Namespace) -> int:
    path = f"/console/v1/email-devices/{args.user}/{args.device_id}"
    with _console(args) as api:
        if args.action == "note":
            _print_json(api.call("PUT", path + "/note", json={"text": args.text}))
            return 0
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
    api.add_argument("--token", help="console token (env SEG_TOKEN)")
    api.add_argument(
        "--role",
        choices=("viewer", "operator", "admin"),
        help="with `seg up`: use that role's token (default admin)",
    )
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

    sub.add_parser("whoami", parents=[api], help="who the token is and its role")

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
        if action != "nodes":
            p.add_argument("--reason", default="", help="kept in the audit trail")
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

    _device_parsers(sub, api)
    return parser


def _device_parsers(sub: Any, api: argparse.ArgumentParser) -> None:
    devices = sub.add_parser("devices", help="email devices seen by the gateways")
    dsub = devices.add_subparsers(dest="action", required=True)
    dl = dsub.add_parser("list", parents=[api], help="list email devices")
    dx = dsub.add_parser("export", parents=[api], help="the filtered list as CSV")
    dx.add_argument("--out", help="write to this file (default: stdout)")
    for p in (dl, dx):
        p.add_argument("--access", choices=("allow", "block", "quarantine", "unknown"))
        p.add_argument("--compliance", choices=("compliant", "non_compliant", "unknown"))
        p.add_argument("--cluster", help="seen by this cluster (id)")
        p.add_argument("--node", help="last seen by this gateway node")
        p.add_argument("--not-seen-days", type=int, help="last seen more than N days ago")
        p.add_argument("--query", help="substring of user, device id, type, model")
        p.add_argument("--sort", help="column to sort on (default last_seen)")
        p.add_argument("--order", choices=("asc", "desc"))
    dl.add_argument("--limit", type=int, default=100)

    audit = sub.add_parser("audit", parents=[api], help="the audit trail of console actions")
    audit.add_argument("--action", help='an action or prefix ("device.block", "cluster.")')
    audit.add_argument("--actor", help="who")
    audit.add_argument("--query", help="substring anywhere")
    audit.add_argument("--limit", type=int, default=50)
    audit.add_argument("--export", choices=("csv", "json"), help="print every match in this form")

    device = sub.add_parser("device", help="one email device")
    esub = device.add_subparsers(dest="action", required=True)
    for action, text in (
        ("block", "block it"),
        ("allow", "allow it"),
        ("clear", "drop the manual override"),
        ("decision", "show what the control plane and each node decide"),
        ("note", "set the operators' note (an empty text removes it)"),
    ):
        p = esub.add_parser(action, parents=[api], help=text)
        p.add_argument("user")
        p.add_argument("device_id")
        if action == "note":
            p.add_argument("text")
        elif action != "decision":
            p.add_argument("--reason", default="")


def cmd_demo(args: argparse.Namespace) -> int:
    args.upstream = ""
    return cmd_up(args, demo_only=True)


COMMANDS = {
    "up": cmd_up,
    "demo": cmd_demo,
    "whoami": cmd_whoami,
    "cluster": cmd_cluster,
    "devices": cmd_devices,
    "audit": cmd_audit,
    "device": cmd_device,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except CliError as exc:
        print(f"seg: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
