"""The whole system on one machine, as processes: the local control plane, N gateway
nodes of one cluster, and (without an upstream) the bundled demo mail server.

``seg up``, the end-to-end tests and the benchmark all start the system through
``Stack``, so what users run is what the tests test. Gateways are real ``seg-gateway
run`` processes configured through their documented environment (``docs/gateway.md``);
the control plane runs in a process of its own (``python -m seg_local serve``) because
the handlers read one process environment.

Children die with the parent (``PR_SET_PDEATHSIG`` on Linux), so a crashed test or a
killed ``seg up`` leaves no stray process behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from seg_local.__main__ import (
    ENV_ADMIN_TOKEN,
    ENV_DEVICE_SERVICES_KEY,
    ENV_OPERATOR_TOKEN,
    ENV_VIEWER_TOKEN,
    write_json_atomic,
)
from seg_local.controlplane import new_secret
from seg_local.demo_mail import DemoMailServer, server_ssl_context
from seg_local.tls import TlsFiles, make_local_tls

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
MAILBOX = "mailbox"
# Demo users have bare names ("alice"); notices to them go to <name>@<this domain>.
LOCAL_MAIL_DOMAIN = "example.com"


class StackError(RuntimeError):
    """The local system could not start (the message says which part and why)."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    """One child process with its log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches `seg`, which stops children in order
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing it", self.name, timeout)
                self.proc.kill()
                self.proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


def _wait_json(path: Path, child: Child, timeout: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            try:
                data: dict[str, Any] = json.loads(path.read_text())
                return data
            except (OSError, ValueError):
                pass  # written atomically, but be tolerant of a half-visible file
        if not child.running:
            raise StackError(
                f"{what} exited during start-up (log {child.log_path}):\n{child.log_tail()}"
            )
        time.sleep(0.05)
    raise StackError(f"{what} did not start within {timeout:.0f} s (log {child.log_path})")


@dataclass
class Node:
    node_id: str
    child: Child
    state_dir: Path
    url: str = ""  # https://127.0.0.1:port
    admin_url: str = ""  # http://127.0.0.1:port

    def public(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "url": self.url,
            "admin_url": self.admin_url,
            "pid": self.child.proc.pid if self.child.proc else None,
            "log": str(self.child.log_path),
        }


@dataclass
class StackOptions:
    state_dir: Path = field(default_factory=lambda: Path(".seg"))
    nodes: int = 2
    upstream: str = ""  # "": the bundled demo mail server
    upstream_ca_bundle: Path | None = None
    cluster_name: str = "local"
    schedule_minutes: float | None = None
    external_moto: bool = False  # moto in a process of its own (control-plane restarts)
    api_port: int = 0
    ws_port: int = 0
    gateway_env: Mapping[str, str] = field(default_factory=dict)  # extra SEG_GW_* values
    # node id -> extra SEG_GW_* values for that node only (tests: one node's network)
    node_gateway_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    demo_ping_hold_cap_s: float | None = None
    control_plane_tls: bool = False  # HTTPS/WSS between gateways and the control plane
    # API Gateway's WebSocket limits (tests and soak runs shorten them)
    ws_max_connection_s: float = 7200.0
    ws_idle_timeout_s: float = 600.0
    start_timeout_s: float = 45.0
    log_level: str = "WARNING"
    # Policy signing keys of the control plane (2: a rotation can be run) and how long
    # its handlers keep the key registry (None: 60 s, as in AWS).
    signing_keys: int = 1
    signing_registry_ttl_s: float | None = None


class Stack:
    def __init__(self, options: StackOptions | None = None) -> None:
        self.options = options or StackOptions()
        self.state_dir = self.options.state_dir.resolve()
        self.admin_token = new_secret("segadmin")
        self.operator_token = new_secret("segoperator")
        self.viewer_token = new_secret("segviewer")
        self.device_services_key = new_secret("segds")
        self.tls: TlsFiles | None = None
        self.mail: DemoMailServer | None = None
        self.upstream_url = self.options.upstream
        self.moto: Child | None = None
        self.moto_endpoint = ""
        self.control_plane: Child | None = None
        self.endpoints: dict[str, Any] = {}
        self.cluster_id = ""
        self.credential = ""
        self.nodes: list[Node] = []

    # --- start ----------------------------------------------------------------------

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # The control plane starts empty (moto keeps nothing), so a node's persisted
        # policy and spool from an earlier run belong to a cluster that no longer exists.
        shutil.rmtree(self.state_dir / "nodes", ignore_errors=True)
        shutil.rmtree(self.state_dir / "logs", ignore_errors=True)  # one run's logs
        shutil.rmtree(self.mailbox, ignore_errors=True)  # and its e-mails
        self.tls = make_local_tls(self.state_dir / "tls")
        if not self.upstream_url:
            self.mail = DemoMailServer(ping_hold_cap_s=self.options.demo_ping_hold_cap_s)
            port = self.mail.start(ssl_context=server_ssl_context(self.tls.cert, self.tls.key))
            self.upstream_url = f"https://127.0.0.1:{port}"
        if self.options.external_moto:
            self._start_moto()
        self.start_control_plane()
        self._register_cluster()
        for i in range(self.options.nodes):
            self.nodes.append(self._new_node(f"node-{i + 1}"))
        for node in self.nodes:
            node.child.start()
        for node in self.nodes:
            self._wait_node(node)
        self.write_state()

    def _python(self) -> str:
        return sys.executable

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEG_GW_")}
        env["PYTHONUNBUFFERED"] = "1"
        return env

    @property
    def tokens(self) -> dict[str, str]:
        """The console's static token of each role."""
        return {
            "admin": self.admin_token,
            "operator": self.operator_token,
            "viewer": self.viewer_token,
        }

    @property
    def mailbox(self) -> Path:
        """Where the e-mails the control plane sent (SES, played by moto) are copied."""
        return self.state_dir / MAILBOX

    def _start_moto(self) -> None:
        ready = self.state_dir / "moto.json"
        ready.unlink(missing_ok=True)
        self.moto = Child(
            "moto",
            [
                self._python(),
                "-m",
                "seg_local",
                "moto",
                "--ready-file",
                str(ready),
                "--mailbox-dir",
                str(self.mailbox),
            ],
            self._base_env(),
            self.state_dir / "logs" / "moto.log",
        )
        self.moto.start()
        self.moto_endpoint = _wait_json(ready, self.moto, self.options.start_timeout_s, "moto")[
            "moto_endpoint"
        ]

    def start_control_plane(self) -> None:
        """Start (or restart, on the same ports) the control-plane process."""
        ready = self.state_dir / "controlplane.json"
        ready.unlink(missing_ok=True)
        api_port = self.options.api_port or _port(self.endpoints.get("api_url"))
        ws_port = self.options.ws_port or _port(self.endpoints.get("ws_url"))
        argv = [
            self._python(),
            "-m",
            "seg_local",
            "serve",
            "--ready-file",
            str(ready),
            "--api-port",
            str(api_port),
            "--ws-port",
            str(ws_port),
            "--log-level",
            self.options.log_level,
            "--ws-max-connection-s",
            str(self.options.ws_max_connection_s),
            "--ws-idle-timeout-s",
            str(self.options.ws_idle_timeout_s),
        ]
        if self.moto_endpoint:
            argv += ["--moto-endpoint", self.moto_endpoint]
        else:
            argv += ["--mailbox-dir", str(self.mailbox)]
        if self.options.signing_keys != 1:
            argv += ["--signing-keys", str(self.options.signing_keys)]
        if self.options.signing_registry_ttl_s is not None:
            argv += ["--signing-registry-ttl-s", str(self.options.signing_registry_ttl_s)]
        if self.options.schedule_minutes:
            argv += ["--schedule-minutes", str(self.options.schedule_minutes)]
        if self.options.control_plane_tls:
            assert self.tls is not None
            argv += ["--tls-cert", str(self.tls.cert), "--tls-key", str(self.tls.key)]
            argv += ["--ca-bundle", str(self.tls.ca_cert)]
        env = self._base_env()
        env[ENV_ADMIN_TOKEN] = self.admin_token
        env[ENV_OPERATOR_TOKEN] = self.operator_token
        env[ENV_VIEWER_TOKEN] = self.viewer_token
        env[ENV_DEVICE_SERVICES_KEY] = self.device_services_key
        self.control_plane = Child(
            "control plane", argv, env, self.state_dir / "logs" / "controlplane.log"
        )
        self.control_plane.start()
        self.endpoints = _wait_json(
            ready, self.control_plane, self.options.start_timeout_s, "the control plane"
        )
        self._wait_http(self.endpoints["api_url"] + "/health", "the control-plane API")

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What HTTP clients of this system's control plane pass as ``verify``."""
        if self.tls is None or not self.endpoints.get("api_url", "").startswith("https"):
            return True
        return ssl.create_default_context(cafile=str(self.tls.ca_cert))

    def stop_control_plane(self, *, kill: bool = False) -> None:
        if self.control_plane is not None:
            self.control_plane.stop(sig=signal.SIGKILL if kill else signal.SIGTERM)

    def _wait_http(self, url: str, what: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.options.start_timeout_s)
        last = ""
        while time.monotonic() < deadline:
            try:
                r = httpx.get(url, timeout=2, verify=self.verify)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}: {r.text[:200]}"
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise StackError(f"{what} is not ready at {url}: {last}")

    def console(self, role: str = "admin") -> httpx.Client:
        return httpx.Client(
            base_url=self.endpoints["api_url"],
            headers={"Authorization": f"Bearer {self.tokens[role]}"},
            timeout=10,
            verify=self.verify,
        )

    def _register_cluster(self) -> None:
        with self.console() as http:
            r = http.post("/console/v1/clusters", json={"name": self.options.cluster_name})
            if r.status_code != 201:
                raise StackError(
                    f"cannot register the cluster: HTTP {r.status_code} {r.text[:300]}"
                )
            body = r.json()
            self.cluster_id, self.credential = body["cluster_id"], body["credential"]
            # Notices to users: the demo's users have bare names.
            settings = http.get("/console/v1/notices").json()
            settings["mail_domain"] = LOCAL_MAIL_DOMAIN
            r = http.put("/console/v1/notices", json=settings)
            if r.status_code != 200:
                raise StackError(f"cannot set up notices: HTTP {r.status_code} {r.text[:300]}")

    def node_env(self, node_id: str, state_dir: Path) -> dict[str, str]:
        assert self.tls is not None
        env = self._base_env()
        env.update(
            {
                "SEG_GW_LISTEN_HOST": "127.0.0.1",
                "SEG_GW_LISTEN_PORT": "0",
                "SEG_GW_TLS_CERT": str(self.tls.cert),
                "SEG_GW_TLS_KEY": str(self.tls.key),
                "SEG_GW_UPSTREAM_URL": self.upstream_url,
                "SEG_GW_API_URL": self.endpoints["api_url"],
                "SEG_GW_WS_URL": self.endpoints["ws_url"],
                "SEG_GW_CREDENTIAL_FILE": str(self._credential_file(state_dir)),
                # The control plane's public signing key(s), pinned as an operator would.
                "SEG_GW_POLICY_SIGNING_KEYS": ",".join(self.policy_signing_keys),
                "SEG_GW_NODE_ID": node_id,
                # Devices (the demo, the tests) address the nodes by loopback address.
                "SEG_GW_PUBLIC_HOSTS": "127.0.0.1,localhost",
                "SEG_GW_STATE_DIR": str(state_dir),
                "SEG_GW_ADMIN_HOST": "127.0.0.1",
                "SEG_GW_ADMIN_PORT": "0",
                "SEG_GW_WORKERS": "0",  # in-process: two nodes on a laptop
                # Ctrl-C should not wait half a minute for held Pings: devices re-Ping.
                "SEG_GW_SHUTDOWN_GRACE_S": "5",
            }
        )
        if self.options.control_plane_tls:
            env["SEG_GW_CONTROL_PLANE_CA_BUNDLE"] = str(self.tls.ca_cert)
        if self.mail is not None:
            env["SEG_GW_UPSTREAM_CA_BUNDLE"] = str(self.tls.ca_cert)
        elif self.options.upstream_ca_bundle is not None:
            env["SEG_GW_UPSTREAM_CA_BUNDLE"] = str(self.options.upstream_ca_bundle)
        if self.upstream_url.startswith("http://"):
            env["SEG_GW_UPSTREAM_ALLOW_PLAIN_HTTP"] = "true"
        env.update(self.options.gateway_env)
        env.update(self.options.node_gateway_env.get(node_id, {}))
        if env["SEG_GW_API_URL"].startswith("http://") or env["SEG_GW_WS_URL"].startswith("ws://"):
            # The local control plane runs without TLS unless asked (--tls / tests), so
            # this local system opts in to plain control-plane URLs; a real node never
            # does (docs/gateway.md).
            env.setdefault("SEG_GW_CONTROL_PLANE_ALLOW_PLAIN_HTTP", "true")
        return env

    def _credential_file(self, state_dir: Path) -> Path:
        """The cluster credential in a 0600 file (not in the environment, which other
        processes of the user can read)."""
        path = state_dir / "credential"
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.credential)
        return path

    def _new_node(self, node_id: str) -> Node:
        state_dir = self.state_dir / "nodes" / node_id
        state_dir.mkdir(parents=True, exist_ok=True)
        child = Child(
            f"gateway {node_id}",
            [self._python(), "-m", "onprem_gateway", "run"],
            self.node_env(node_id, state_dir),
            self.state_dir / "logs" / f"{node_id}.log",
        )
        return Node(node_id, child, state_dir)

    def _wait_node(self, node: Node) -> None:
        runtime = _wait_json(
            node.state_dir / "runtime.json",
            node.child,
            self.options.start_timeout_s,
            f"gateway {node.node_id}",
        )
        node.url = f"https://127.0.0.1:{runtime['listen_port']}"
        node.admin_url = f"http://127.0.0.1:{runtime['admin_port']}"
        self._wait_http(node.admin_url + "/readyz", f"gateway {node.node_id}")

    def start_node(self, node: Node, *, wait_ready: bool = True) -> None:
        """(Re)start a node with its configuration and state directory."""
        (node.state_dir / "runtime.json").unlink(missing_ok=True)
        node.child = Child(
            node.child.name,
            node.child.argv,
            self.node_env(node.node_id, node.state_dir),
            node.child.log_path,
        )
        node.child.start()
        if wait_ready:
            self._wait_node(node)
        else:
            runtime = _wait_json(
                node.state_dir / "runtime.json",
                node.child,
                self.options.start_timeout_s,
                f"gateway {node.node_id}",
            )
            node.url = f"https://127.0.0.1:{runtime['listen_port']}"
            node.admin_url = f"http://127.0.0.1:{runtime['admin_port']}"

    # --- state file -----------------------------------------------------------------

    @property
    def policy_signing_keys(self) -> list[str]:
        """The public keys gateway nodes pin (base64 DER SubjectPublicKeyInfo)."""
        return list(self.endpoints.get("policy_signing_keys", []))

    def public_state(self) -> dict[str, Any]:
        return {
            "api_url": self.endpoints.get("api_url", ""),
            "ws_url": self.endpoints.get("ws_url", ""),
            "dashboard_url": self.endpoints.get("api_url", "") + "/console/",
            "upstream_url": self.upstream_url,
            "demo_mail": self.mail is not None,
            "cluster_id": self.cluster_id,
            "policy_signing_keys": self.policy_signing_keys,
            "ca_cert": str(self.tls.ca_cert) if self.tls else "",
            "mailbox": str(self.mailbox),
            "nodes": [n.public() for n in self.nodes],
            "pid": os.getpid(),
        }

    def write_state(self) -> None:
        """``<state_dir>/state.json`` (mode 0600: it holds the admin token) lets
        ``seg`` console commands find the running system."""
        path = self.state_dir / STATE_FILE
        data = {
            **self.public_state(),
            "admin_token": self.admin_token,
            "tokens": self.tokens,
            "device_services_key": self.device_services_key,
        }
        write_json_atomic(path, data, mode=0o600)

    # --- stop -----------------------------------------------------------------------

    def stop(self) -> None:
        """Gateways first (they flush their events), then the control plane, moto and
        the demo mail server. Safe to call twice."""
        for node in self.nodes:
            node.child.send_signal()  # all at once: each drains its held requests in parallel
        for node in self.nodes:
            node.child.stop()
        if self.control_plane is not None:
            self.control_plane.stop()
        if self.moto is not None:
            self.moto.stop()
        if self.mail is not None:
            self.mail.stop()
            self.mail = None
        with contextlib.suppress(OSError):
            state = self.state_dir / STATE_FILE
            if state.exists() and json.loads(state.read_text()).get("pid") == os.getpid():
                state.unlink()


def _port(url: str | None) -> int:
    if not url:
        return 0
    return int(httpx.URL(url).port or 0)
