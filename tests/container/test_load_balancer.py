"""The two-node site's load balancer: Debian's haproxy running the shipped
``deploy/haproxy/haproxy.cfg`` in front of two gateway nodes (plain ``seg-gateway run``
processes: this module tests the balancer, test_site.py the containers) and the demo
mail server.

The one change made to the shipped file (``scaled_config``): ``timeout client``,
``timeout server`` and ``timeout tunnel`` are divided by ``TIME_SCALE``, so 3,900 s
becomes 39 s. Everything else (health checks, retries, forwarding headers) is as shipped;
addresses come from the environment variables the file reads. A Ping held for
``HOLD_S`` (= 500 s at the real scale) passes through the shipped configuration, and the
same Ping is cut when the three timeouts are HAProxy's packaged defaults (50 s, scaled
the same way to 0.5 s): the control that shows the test can fail.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from aiohttp import web
from pyactivesync import FolderType

from seg_cli.demo import DemoDevice, eas_client
from seg_local.demo_mail import DEMO_PASSWORD, MAX_HEARTBEAT_S, DemoMailServer, server_ssl_context
from seg_local.stack import Child
from seg_local.tls import TlsFiles, make_local_tls
from tests.container.policy import POLICY_PIN, allow_policy_file
from tests.e2e.control_plane_ministack.ministack import free_port
from tests.e2e.system.conftest import eventually, metrics

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
TIME_SCALE = 100  # the long-poll timeouts are divided by this in the running balancer
HOLD_S = 5.0  # how long the mail server holds a Ping (500 s at the real scale)
HAPROXY_DEFAULT_S = 50  # timeout client/server in Debian's packaged haproxy.cfg
LONG_TIMEOUTS = ("client", "server", "tunnel")
DEVICE_ADDRESS = "127.0.0.2"  # devices connect from here, the balancer from 127.0.0.1
DEVICES = (
    DemoDevice("lbuser1", "lbdevice1", "iPhone", "iPhone 15", "iOS 18"),
    DemoDevice("lbuser2", "lbdevice2", "iPhone", "iPhone 15", "iOS 18"),
    DemoDevice("lbuser3", "lbdevice3", "Android", "Pixel 8", "Android 15"),
)

pytestmark = [
    pytest.mark.skipif(
        shutil.which("haproxy") is None,
        reason="haproxy is not installed: `make test` installs it as root "
        "(scripts/container-deps.sh); elsewhere: apt-get install haproxy",
    ),
    pytest.mark.timeout(600),
]


def seconds(value: str) -> float:
    """An HAProxy time value (``3900s``, ``5000`` = ms, ``2m``...) in seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(us|ms|s|m|h|d)?", value)
    assert match, f"not an HAProxy time: {value}"
    unit = {"us": 1e-6, "ms": 1e-3, None: 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return float(match.group(1)) * unit[match.group(2)]


_TIMEOUT = re.compile(r"^(\s*timeout\s+(client|server|tunnel)\s+)(\S+)(.*)$", re.MULTILINE)


def long_timeouts(text: str) -> list[tuple[str, float]]:
    return [(m.group(2), seconds(m.group(3))) for m in _TIMEOUT.finditer(text)]


def scaled_config(text: str, *, replace_s: float | None = None) -> str:
    """The documented substitution: each ``timeout client|server|tunnel`` divided by
    TIME_SCALE (after replacing its value by ``replace_s``, for the control)."""

    def scale(m: re.Match[str]) -> str:
        value = replace_s if replace_s is not None else seconds(m.group(3))
        return f"{m.group(1)}{round(value * 1000 / TIME_SCALE)}ms{m.group(4)}"

    return _TIMEOUT.sub(scale, text)


@dataclass
class Endpoint:
    """What seg_cli.demo's EAS client needs of a node: its URL."""

    url: str
    node_id: str = "haproxy"


@dataclass
class ProcessNode:
    child: Child
    state_dir: Path
    listen_port: int = 0
    admin_url: str = ""
    node_id: str = ""


class Balancer:
    def __init__(self, config: Path, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.socket = config.parent / f"{config.stem}.sock"
        env = env | {
            "SEG_LB_BIND": f"127.0.0.1:{self.port}",
            "SEG_LB_STATS_BIND": f"127.0.0.1:{free_port()}",
            "SEG_LB_ADMIN_SOCKET": str(self.socket),
        }
        self.child = Child("haproxy", ["haproxy", "-db", "-f", str(config)], env, log)
        self.url = f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.child.start()
        eventually(
            lambda: self.socket.exists() or not self.child.running,
            timeout=30,
            what="haproxy starts",
        )
        assert self.child.running, self.child.log_tail(30)

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(self.socket))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_status(self, backend: str = "gateways") -> dict[str, str]:
        """server name -> status (UP, DOWN, ...) from the runtime API's CSV."""
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        out = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == backend and row.get("svname") not in {"FRONTEND", "BACKEND"}:
                out[row["svname"]] = row["status"]
        return out


@dataclass
class SiteLB:
    tmp: Path
    tls: TlsFiles
    mail: DemoMailServer
    seen: list[dict[str, str]]
    nodes: list[ProcessNode]
    balancer: Balancer
    node_env: dict[str, str]

    def balancer_with(self, text: str, name: str) -> Balancer:
        config = self.tmp / f"{name}.cfg"
        config.write_text(text)
        balancer = Balancer(config, self.node_env, self.tmp / f"{name}.log")
        balancer.start()
        return balancer


def start_node(index: int, tmp: Path, tls: TlsFiles, mail_port: int, policy: Path) -> ProcessNode:
    state = tmp / f"node{index}"
    env = {
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
        "PYTHONUNBUFFERED": "1",
        "SEG_GW_NODE_ID": f"lb-node-{index}",
        "SEG_GW_LISTEN_HOST": "127.0.0.1",
        "SEG_GW_LISTEN_PORT": "0",
        # As in deploy/compose.yaml: TLS ends at HAProxy, whose address is trusted.
        "SEG_GW_LISTEN_PLAIN_HTTP": "true",
        "SEG_GW_TRUSTED_PROXIES": "127.0.0.1/32",
        "SEG_GW_UPSTREAM_URL": f"https://127.0.0.1:{mail_port}",
        "SEG_GW_UPSTREAM_CA_BUNDLE": str(tls.ca_cert),
        "SEG_GW_POLICY_FILE": str(policy),
        "SEG_GW_POLICY_SIGNING_KEYS": POLICY_PIN,
        "SEG_GW_STATE_DIR": str(state),
        "SEG_GW_ADMIN_HOST": "127.0.0.1",
        "SEG_GW_ADMIN_PORT": "0",
        "SEG_GW_WORKERS": "0",
        "SEG_GW_SHUTDOWN_GRACE_S": "30",
        # Readiness follows the mail server within a second (the last test stops it).
        "SEG_GW_UPSTREAM_CHECK_INTERVAL_S": "1",
    }
    child = Child(
        f"gateway {index}",
        [sys.executable, "-m", "onprem_gateway", "run"],
        env,
        tmp / f"node{index}.log",
    )
    child.start()
    return ProcessNode(child, state, node_id=f"lb-node-{index}")


def wait_node(node: ProcessNode) -> None:
    runtime = node.state_dir / "runtime.json"
    eventually(lambda: runtime.exists() or not node.child.running, timeout=120, what="runtime.json")
    assert node.child.running, node.child.log_tail(30)
    data = json.loads(runtime.read_text())
    node.listen_port = int(data["listen_port"])
    node.admin_url = f"http://127.0.0.1:{data['admin_port']}"
    eventually(
        lambda: httpx.get(node.admin_url + "/readyz", timeout=5).status_code == 200,
        timeout=120,
        what=f"{node.node_id} ready",
    )


def recorder(seen: list[dict[str, str]]) -> Callable[..., Any]:
    """An aiohttp middleware of the mail server: what each request carried."""

    @web.middleware
    async def record(request: web.Request, handler: Callable[..., Any]) -> Any:
        seen.append(
            {
                "command": request.query.get("Cmd", ""),
                "user": request.query.get("User", ""),
                "x-forwarded-for": request.headers.get("X-Forwarded-For", ""),
                "x-forwarded-proto": request.headers.get("X-Forwarded-Proto", ""),
            }
        )
        return await handler(request)

    return record


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteLB]:
    tmp = tmp_path_factory.mktemp("lb")
    tls = make_local_tls(tmp / "tls")
    seen: list[dict[str, str]] = []
    mail = DemoMailServer()
    mail.app.middlewares.append(recorder(seen))
    mail_port = mail.start(ssl_context=server_ssl_context(tls.cert, tls.key))
    policy = allow_policy_file(
        tmp / "policy.json", ((d.user, d.device_id) for d in DEVICES), "lb-site"
    )
    nodes = [start_node(i, tmp, tls, mail_port, policy) for i in (1, 2)]
    pem = tmp / "gateway.pem"  # HAProxy's crt: chain then key
    pem.write_bytes(tls.cert.read_bytes() + tls.key.read_bytes())
    pem.chmod(0o600)
    balancer: Balancer | None = None
    try:
        for node in nodes:
            wait_node(node)
        node_env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "SEG_LB_CERT": str(pem),
            "SEG_NODE1": f"127.0.0.1:{nodes[0].listen_port}",
            "SEG_NODE1_ADMIN_PORT": nodes[0].admin_url.rsplit(":", 1)[1],
            "SEG_NODE2": f"127.0.0.1:{nodes[1].listen_port}",
            "SEG_NODE2_ADMIN_PORT": nodes[1].admin_url.rsplit(":", 1)[1],
        }
        config = tmp / "haproxy.cfg"
        config.write_text(scaled_config(SHIPPED.read_text()))
        balancer = Balancer(config, node_env, tmp / "haproxy.log")
        balancer.start()
        eventually(
            lambda: (
                balancer is not None and balancer.server_status() == {"node1": "UP", "node2": "UP"}
            ),
            timeout=60,
            what="haproxy sees both nodes up",
        )
        yield SiteLB(tmp, tls, mail, seen, nodes, balancer, node_env)
    finally:
        if balancer is not None:
            balancer.child.stop(timeout=10)
        for node in nodes:
            node.child.stop(timeout=45)
        mail.stop()


def device_client(tls: TlsFiles) -> httpx.Client:
    """An HTTPS client that connects from DEVICE_ADDRESS (so the balancer's own address
    and the device's differ in X-Forwarded-For)."""
    verify = ssl.create_default_context(cafile=str(tls.ca_cert))
    transport = httpx.HTTPTransport(verify=verify, local_address=DEVICE_ADDRESS)
    return httpx.Client(transport=transport, verify=verify, trust_env=False, timeout=30)


def folder_sync(
    site: SiteLB, device: DemoDevice, headers: dict[str, str] | None = None
) -> httpx.Response:
    """One raw EAS request through the balancer, from DEVICE_ADDRESS."""
    with device_client(site.tls) as http:
        return http.post(
            f"{site.balancer.url}/Microsoft-Server-ActiveSync",
            params={
                "Cmd": "FolderSync",
                "User": device.user,
                "DeviceId": device.device_id,
                "DeviceType": device.device_type,
            },
            headers={
                "MS-ASProtocolVersion": "16.1",
                "Content-Type": "application/vnd.ms-sync.wbxml",
                **(headers or {}),
            },
            auth=(device.user, DEMO_PASSWORD),
            content=b"",
        )


def ping(site: SiteLB, endpoint: Endpoint, device: DemoDevice, timeout: float = 120) -> Any:
    with eas_client(endpoint, site.tls.ca_cert, device, timeout=timeout) as client:  # type: ignore[arg-type]
        client.provision()
        inbox = next(f for f in client.list_folders() if f.type == FolderType.INBOX)
        return client.ping(inbox.id, heartbeat=600, timeout=timeout)


def test_the_shipped_timeouts_hold_the_longest_ping() -> None:
    timeouts = long_timeouts(SHIPPED.read_text())
    found = dict(timeouts)
    # Set once, in `defaults`: every frontend and backend has them.
    assert len(timeouts) == len(found) and set(found) == set(LONG_TIMEOUTS), timeouts
    for name, value in found.items():
        # MS-ASCMD: a Ping's heartbeat is at most 3,540 s; the balancer needs a margin.
        assert value >= MAX_HEARTBEAT_S + 300, (name, value)
    scaled = dict(long_timeouts(scaled_config(SHIPPED.read_text())))
    assert scaled == {name: value / TIME_SCALE for name, value in found.items()}
    # What the running test's Ping proves, at the real scale:
    assert HOLD_S * TIME_SCALE > HAPROXY_DEFAULT_S
    assert HOLD_S < min(scaled.values())


def test_a_ping_outlives_haproxys_default_timeouts(site: SiteLB) -> None:
    site.mail.ping_hold_cap_s = HOLD_S
    try:
        result = ping(site, Endpoint(site.balancer.url), DEVICES[0])
        assert result.status == "1", result  # the heartbeat ran out without new mail
        # The control: HAProxy's packaged timeouts, scaled the same way, cut that Ping.
        control = site.balancer_with(
            scaled_config(SHIPPED.read_text(), replace_s=HAPROXY_DEFAULT_S), "defaults"
        )
        try:
            eventually(
                lambda: "UP" in control.server_status().values(),
                timeout=60,
                what="the control balancer sees a node",
            )
            # The device sees what phones see in the field: the connection closed under
            # its held Ping (client timeout) or a 504 (server timeout), no Ping answer.
            with pytest.raises((requests.ConnectionError, requests.HTTPError)) as cut:
                ping(site, Endpoint(control.url), DEVICES[0])
            if isinstance(cut.value, requests.HTTPError):
                assert cut.value.response is not None and cut.value.response.status_code == 504
        finally:
            control.child.stop(timeout=10)
    finally:
        site.mail.ping_hold_cap_s = None


def test_the_device_address_reaches_the_mail_server_as_x_forwarded_for(site: SiteLB) -> None:
    device = DEVICES[1]
    # A device's own X-Forwarded-For is a claim: it must not survive.
    r = folder_sync(site, device, {"X-Forwarded-For": "203.0.113.7"})
    assert r.status_code == 200, r.text
    mine = [s for s in site.seen if s["user"] == device.user and s["command"] == "FolderSync"]
    assert mine, site.seen
    # The device's address as HAProxy saw it, then HAProxy's (the gateway's peer).
    assert mine[-1]["x-forwarded-for"] == f"{DEVICE_ADDRESS}, 127.0.0.1", mine[-1]
    assert mine[-1]["x-forwarded-proto"] == "https", mine[-1]


def test_a_stopping_node_drains_its_held_ping_and_the_site_fails_over(site: SiteLB) -> None:
    pinger, other = DEVICES[2], DEVICES[0]
    answer: dict[str, Any] = {}

    def hold() -> None:
        try:
            answer["result"] = ping(site, Endpoint(site.balancer.url), pinger, timeout=180)
        except Exception as exc:  # reported below
            answer["error"] = exc

    thread = threading.Thread(target=hold)
    thread.start()

    def holder() -> ProcessNode | None:
        for node in site.nodes:
            if metrics(node)["seg_gateway_held"] >= 1:  # type: ignore[arg-type]
                return node
        return None

    draining = eventually(holder, timeout=60, what="a node holds the Ping")
    name = f"node{site.nodes.index(draining) + 1}"
    survivor = site.nodes[1 - site.nodes.index(draining)]
    draining.child.send_signal(signal.SIGTERM)
    # /readyz answers 503 at once; HAProxy's health checks take the node out.
    eventually(
        lambda: site.balancer.server_status()[name] != "UP",
        timeout=60,
        what=f"haproxy takes {name} out",
    )
    assert thread.is_alive(), answer  # the held Ping is still being held
    before = metrics(survivor)  # type: ignore[arg-type]
    with eas_client(Endpoint(site.balancer.url), site.tls.ca_cert, other) as client:  # type: ignore[arg-type]
        client.provision()
        for _ in range(5):
            assert client.list_folders()  # every request goes through, to the survivor
    after = metrics(survivor)  # type: ignore[arg-type]
    served = sum(v for k, v in after.items() if k.startswith("seg_gateway_requests_total"))
    served -= sum(v for k, v in before.items() if k.startswith("seg_gateway_requests_total"))
    assert served >= 6, (before, after)

    site.mail.deliver(pinger.user, "ops@example.com", "While draining", "Mail arrives.")
    thread.join(120)
    assert "error" not in answer, answer
    assert answer["result"].status == "2", answer  # the mail server's answer, not a cut
    assert draining.child.proc is not None
    assert draining.child.proc.wait(60) == 0, draining.child.log_tail(30)

    # The node is gone for good now: the site keeps serving from the other one.
    eventually(
        lambda: site.balancer.server_status()[name] == "DOWN",
        timeout=60,
        what=f"{name} is down",
    )
    with eas_client(Endpoint(site.balancer.url), site.tls.ca_cert, other) as client:  # type: ignore[arg-type]
        client.provision()
        assert client.list_folders()


def test_with_no_node_ready_devices_still_reach_a_live_node(site: SiteLB) -> None:
    """The fallback backend: when every node answers 503 on /readyz (here: the mail
    server is down), HAProxy still sends devices to a live node, whose own answer the
    device gets (not HAProxy's "no server available"). Runs last: it stops the mail
    server."""
    site.mail.stop()
    eventually(
        lambda: "UP" not in site.balancer.server_status().values(),
        timeout=60,
        what="no node is ready",
    )
    eventually(
        lambda: "UP" in site.balancer.server_status("gateways-live").values(),
        timeout=60,
        what="a node is alive",
    )
    r = folder_sync(site, DEVICES[0])
    assert r.status_code == 503, r.text
    assert "mail server is unreachable" in r.text, r.text  # the gateway's own answer
    assert "Retry-After" in r.headers
