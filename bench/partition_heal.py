"""Time from a partition healing to every node in sync.

Run:  .venv/bin/python bench/partition_heal.py  [--nodes 2] [--repeats 5] [--changes 20]
          [--partition-s 20] [--report-interval-s 30] [--backoff-initial-s 1]
          [--backoff-max-s 60]

Starts the local system as ``seg up`` does (``seg_local.stack``: the control plane with
moto in its own process, HTTPS/WSS, ``--nodes`` gateway nodes) with every node's two
paths to the control plane (the API and the WebSocket) through a TCP proxy of its own on
127.0.0.1 (``tests/e2e/system/tcp_proxy.py``). The cluster's ``report_interval_s`` is set
through the settings API; the nodes' reconnect backoff is the product's default unless
given. Each repeat:

1. partition: every proxy closes its connections and refuses new ones (the nodes notice
   and back off, as behind a failed WAN link);
2. ``--changes`` console overrides (block/allow flips), then wait until the control plane
   has committed them all (its committed version W), then until ``--partition-s`` have
   passed since the partition began;
3. heal: the proxies pass again; then measure, from that moment,
   - *applied*: until every node's applied version (``seg_gateway_policy_version``) is
     at least W (it reconnected after its backoff and fetched the delta);
   - *verified*: until the control plane's view of every node (``GET /console/v1/
     clusters/{id}/nodes``) shows a report at a version >= W with the digest verdict
     ``in_sync`` (the node's first keepalive after catching up: up to one report interval
     later).

Prints each repeat and, per measure, the median with min-max, and the command line.
Both depend on the reconnect backoff: the delay a node sleeps when the path comes back
was drawn during the partition (full jitter, up to ``--backoff-max-s``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seg_local.stack import Stack, StackOptions
from tests.e2e.system.tcp_proxy import TcpProxy

POLL_S = 0.05


def policy_version(admin_url: str) -> int:
    text = httpx.get(admin_url + "/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("seg_gateway_policy_version "):
            return int(float(line.rpartition(" ")[2]))
    raise RuntimeError(f"no seg_gateway_policy_version at {admin_url}")


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``check()`` holds (polling); ``RuntimeError`` past ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if check():
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(POLL_S)
    raise RuntimeError(f"not within {timeout:.0f} s: {what}")


class Bench:
    def __init__(self, args: argparse.Namespace, state_dir: Path) -> None:
        self.args = args
        self.holder: dict[str, Stack] = {}
        self.proxies: dict[str, tuple[TcpProxy, TcpProxy]] = {}
        node_env: dict[str, dict[str, str]] = {}
        for i in range(args.nodes):
            node_id = f"node-{i + 1}"
            api, ws = TcpProxy(self._target("api_url")), TcpProxy(self._target("ws_url"))
            api.start()
            ws.start()
            self.proxies[node_id] = (api, ws)
            node_env[node_id] = {
                "SEG_GW_API_URL": f"https://127.0.0.1:{api.port}",
                "SEG_GW_WS_URL": f"wss://127.0.0.1:{ws.port}/local",
            }
        gateway_env = {}
        if args.backoff_initial_s is not None:
            gateway_env["SEG_GW_BACKOFF_INITIAL_S"] = str(args.backoff_initial_s)
        if args.backoff_max_s is not None:
            gateway_env["SEG_GW_BACKOFF_MAX_S"] = str(args.backoff_max_s)
        self.stack = Stack(
            StackOptions(
                state_dir=state_dir,
                nodes=args.nodes,
                external_moto=True,
                control_plane_tls=True,
                gateway_env=gateway_env,
                node_gateway_env=node_env,
            )
        )
        self.holder["stack"] = self.stack
        self.flip = 0

    def _target(self, endpoint: str) -> Callable[[], tuple[str, int]]:
        def target() -> tuple[str, int]:
            url = httpx.URL(self.holder["stack"].endpoints[endpoint])
            return url.host, int(url.port or 443)

        return target

    def set_mode(self, mode: str) -> None:
        for api, ws in self.proxies.values():
            api.set_mode(mode)
            ws.set_mode(mode)

    def committed(self, http: httpx.Client) -> int:
        r = http.get(f"/console/v1/clusters/{self.stack.cluster_id}")
        r.raise_for_status()
        return int(r.json()["policy_version"])

    def verified(self, http: httpx.Client, version: int) -> bool:
        r = http.get(f"/console/v1/clusters/{self.stack.cluster_id}/nodes")
        r.raise_for_status()
        reports = {n["node_id"]: n for n in r.json()}
        return all(
            (report := reports.get(node.node_id)) is not None
            and report["digest_check"] == "in_sync"
            and int(report["policy_version"] or 0) >= version
            for node in self.stack.nodes
        )

    def repeat(self, http: httpx.Client) -> tuple[float, float, int]:
        args = self.args
        started = time.monotonic()
        self.set_mode("refuse")
        target = self.committed(http) + args.changes  # one version per override
        for _ in range(args.changes):
            self.flip += 1
            action = "block" if self.flip % 2 else "allow"
            r = http.post(
                f"/console/v1/email-devices/bench{self.flip % 10}/dev/override",
                json={"action": action, "reason": "partition bench"},
            )
            r.raise_for_status()
        wait_until(lambda: self.committed(http) >= target, 120, "the control plane commits")
        time.sleep(max(0.0, args.partition_s - (time.monotonic() - started)))
        self.set_mode("pass")
        healed = time.monotonic()
        deadline = args.backoff_max_s_effective + 4 * args.report_interval_s + 30
        wait_until(
            lambda: all(policy_version(n.admin_url) >= target for n in self.stack.nodes),
            deadline,
            "every node applies the committed version",
        )
        applied = time.monotonic() - healed
        wait_until(lambda: self.verified(http, target), deadline, "every node verified")
        verified = time.monotonic() - healed
        return applied, verified, target

    def run(self) -> None:
        args = self.args
        self.stack.start()
        try:
            with self.stack.console() as http:
                r = http.get(f"/console/v1/clusters/{self.stack.cluster_id}")
                r.raise_for_status()
                settings = {**r.json()["settings"], "report_interval_s": args.report_interval_s}
                http.put(
                    f"/console/v1/clusters/{self.stack.cluster_id}/settings", json=settings
                ).raise_for_status()
                version = self.committed(http)
                wait_until(lambda: self.verified(http, version), 120, "nodes verified at start")
                applied, verified = [], []
                for n in range(args.repeats):
                    a, v, w = self.repeat(http)
                    applied.append(a)
                    verified.append(v)
                    print(f"repeat {n + 1}: W={w}  applied {a:6.2f} s  verified {v:6.2f} s")
        finally:
            self.stack.stop()
            for api, ws in self.proxies.values():
                api.stop()
                ws.stop()
        for name, values in (("applied", applied), ("verified (in_sync)", verified)):
            print(
                f"{name:20s} median {statistics.median(values):6.2f} s "
                f"(min {min(values):.2f} - max {max(values):.2f}) over {len(values)} heals"
            )
        print(
            "command: " + " ".join([".venv/bin/python", "bench/partition_heal.py", *sys.argv[1:]])
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--changes", type=int, default=20, help="overrides per partition")
    parser.add_argument("--partition-s", type=float, default=20.0)
    parser.add_argument("--report-interval-s", type=int, default=30, help="10..300")
    parser.add_argument(
        "--backoff-initial-s", type=float, default=None, help="default: the gateway's (1 s)"
    )
    parser.add_argument(
        "--backoff-max-s", type=float, default=None, help="default: the gateway's (60 s)"
    )
    args = parser.parse_args()
    if not 10 <= args.report_interval_s <= 300:
        parser.error("--report-interval-s must be 10..300 (ClusterSettings)")
    if args.nodes < 1 or args.repeats < 1 or args.changes < 1:
        parser.error("--nodes, --repeats and --changes must be at least 1")
    args.backoff_max_s_effective = args.backoff_max_s or 60.0
    with tempfile.TemporaryDirectory(prefix="seg-bench-") as tmp:
        Bench(args, Path(tmp)).run()


if __name__ == "__main__":
    main()
