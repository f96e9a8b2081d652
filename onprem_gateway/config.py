"""The gateway node's configuration, parsed once into a frozen object.

Sources, later wins: built-in defaults, a TOML file (``--config``; keys are the field
names below), environment variables (``SEG_GW_<FIELD NAME IN UPPER CASE>``), and the
command line (``--policy-file``). ``load_config`` checks everything and raises one
``ConfigError`` that lists every problem, so an operator fixes them in one round;
unknown TOML keys and unknown ``SEG_GW_*`` variables are problems too (a typo must not
silently fall back to a default). ``docs/gateway.md`` renders the ``FIELDS`` table.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from seg_contract.crypto import public_key_is_valid
from seg_contract.signing import TrustedKey, load_public_key

ENV_PREFIX = "SEG_GW_"
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# API Gateway closes an idle WebSocket after 10 minutes and any WebSocket after 2 hours;
# the keepalive and the planned reconnect stay under those limits with a margin.
MAX_KEEPALIVE_S = 540.0
MAX_RECONNECT_AFTER_S = 7080.0
# An access event is on disk within about two flush intervals (the worker's, then the
# agent's spool commit) plus one fsync; a longer interval is a longer window of loss.
MAX_EVENT_FLUSH_INTERVAL_S = 5.0


class ConfigError(ValueError):
    """The configuration is unusable; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            "invalid gateway configuration:\n" + "\n".join(f"  - {p}" for p in problems)
        )


@dataclass(frozen=True)
class GatewayConfig:
    # The EAS listener (what devices connect to).
    listen_host: str
    listen_port: int
    tls_cert: Path | None
    tls_key: Path | None
    listen_plain_http: bool
    public_url: str
    public_hosts: tuple[str, ...]
    trusted_proxies: tuple[IPNetwork, ...]
    # The mail server behind the gateway.
    upstream_url: str
    upstream_ca_bundle: Path | None
    upstream_allow_plain_http: bool
    upstream_connect_timeout_s: float
    request_idle_timeout_s: float
    long_poll_timeout_s: float
    # Edge limits of the EAS listener.
    header_timeout_s: float
    max_connections_per_ip: int
    pw1_max_failures: int
    pw1_failure_window_s: float
    # The control plane ("" api_url: air-gapped, enforce the policy file only).
    api_url: str
    ws_url: str
    control_plane_allow_plain_http: bool
    control_plane_ca_bundle: Path | None
    credential: str = field(repr=False)
    node_id: str
    cluster_key_file: Path | None
    http_timeout_s: float
    keepalive_interval_s: float | None  # None: the cluster's report interval
    pong_timeout_s: float
    reconnect_after_s: float
    backoff_initial_s: float
    backoff_max_s: float
    refresh_interval_s: float | None  # None: the cluster's setting from the snapshot
    # Local state.
    state_dir: Path
    policy_file: Path | None
    max_spool_bytes: int
    event_flush_interval_s: float
    event_fold_window_s: int
    # Operation.
    admin_host: str
    admin_port: int
    workers: int  # 0: the EAS server runs inside the agent process
    upstream_check_interval_s: float
    shutdown_grace_s: float
    log_level: str
    log_format: str
    # Signed policy (``seg_contract.signing``): the control plane's public keys this node
    # trusts (pinned), and the clock skew it tolerates in a statement's issue time.
    policy_signing_keys: tuple[TrustedKey, ...] = ()
    policy_clock_skew_s: float = 300.0
    allow_unsigned_policy_file: bool = False

    @property
    def connected(self) -> bool:
        """True when the node talks to a control plane (False: air-gapped)."""
        return bool(self.api_url)

    @property
    def cluster_id(self) -> str:
        """The cluster the credential belongs to: what every signed statement this node
        applies must name ("" for an air-gapped node)."""
        return cluster_of_credential(self.credential) if self.credential else ""

    def to_wire(self) -> dict[str, Any]:
        """What the agent hands its worker processes over their private socketpair:
        every value as JSON except the control plane's (a worker parses hostile input
        and never talks to the cloud, so it never holds the cluster credential).
        ``config_from_wire`` checks it again on arrival."""
        out = self.describe()
        for name in _AGENT_ONLY:
            out.pop(name, None)
        return {k: v for k, v in out.items() if v is not None and v != ""}

    def describe(self) -> dict[str, Any]:
        """The configuration as plain values for ``check-config``; secrets redacted."""
        out: dict[str, Any] = {}
        for spec in FIELDS:
            if spec.name == "credential_file":
                continue
            value = getattr(self, spec.name)
            if spec.name == "credential":
                value = "<set>" if value else ""
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = [str(v) for v in value]
            out[spec.name] = value
        return out


# --- field table -------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: str  # str | int | float | bool | path | networks | hosts | credential | keys
    default: Any
    doc: str

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


def _cpu_count() -> int:
    # The CPUs this process may run on (a container's cpuset), not the host's count.
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


REQUIRED = object()

FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("listen_host", "str", "0.0.0.0", "EAS listener address"),  # noqa: S104
    FieldSpec("listen_port", "int", 8443, "EAS listener port (0: ephemeral, see runtime.json)"),
    FieldSpec("tls_cert", "path", None, "PEM certificate chain of the EAS listener"),
    FieldSpec("tls_key", "path", None, "PEM private key of the EAS listener"),
    FieldSpec(
        "listen_plain_http",
        "bool",
        False,
        "serve plain HTTP (only behind a TLS-terminating load balancer)",
    ),
    FieldSpec("public_url", "str", "", "URL devices use (451 rewrites); default from host"),
    FieldSpec(
        "public_hosts",
        "hosts",
        (),
        "host names devices may use (Host header; others get 421); default: public_url's",
    ),
    FieldSpec(
        "trusted_proxies",
        "networks",
        (),
        "CIDRs whose X-Forwarded-*, Forwarded and X-Real-IP are trusted",
    ),
    FieldSpec("upstream_url", "str", REQUIRED, "the mail server, e.g. https://exchange.corp"),
    FieldSpec("upstream_ca_bundle", "path", None, "PEM CA bundle that verifies the upstream"),
    FieldSpec("upstream_allow_plain_http", "bool", False, "allow an http:// upstream"),
    FieldSpec("upstream_connect_timeout_s", "float", 10.0, "upstream connect timeout"),
    FieldSpec(
        "request_idle_timeout_s", "float", 120.0, "idle timeout of requests that are not long-polls"
    ),
    FieldSpec(
        "long_poll_timeout_s",
        "float",
        3900.0,
        "idle timeout of Ping / long-poll Sync (> 3540 s, MS-ASCMD 2.2.2.13)",
    ),
    FieldSpec(
        "header_timeout_s",
        "float",
        30.0,
        "deadline for a whole request head from its first byte (408 after it)",
    ),
    FieldSpec(
        "max_connections_per_ip",
        "int",
        1000,
        "connections per client address and worker (0: no cap; see docs)",
    ),
    FieldSpec(
        "pw1_max_failures",
        "int",
        5,
        "wrong device passwords per user / device before attempts are refused unhashed",
    ),
    FieldSpec("pw1_failure_window_s", "float", 300.0, "window of pw1_max_failures"),
    FieldSpec("api_url", "str", "", "control-plane API base URL (empty: air-gapped)"),
    FieldSpec("ws_url", "str", "", "control-plane WebSocket URL (wss://...)"),
    FieldSpec(
        "control_plane_allow_plain_http",
        "bool",
        False,
        "allow http:// and ws:// control-plane URLs (local test systems only)",
    ),
    FieldSpec("control_plane_ca_bundle", "path", None, "PEM CA bundle for the control plane"),
    FieldSpec("credential", "credential", "", "cluster credential (segc_...)"),
    FieldSpec("credential_file", "path", None, "file holding the cluster credential"),
    FieldSpec("node_id", "str", "", "this node's id (default: the host name)"),
    FieldSpec("cluster_key_file", "path", None, "cluster X25519 private key (substitution)"),
    FieldSpec("http_timeout_s", "float", 10.0, "control-plane HTTP timeout"),
    FieldSpec(
        "keepalive_interval_s",
        "float",
        None,
        "report (keepalive) period when shorter than the cluster's report interval (<= 540)",
    ),
    FieldSpec(
        "pong_timeout_s",
        "float",
        10.0,
        "a keepalive unanswered this long: the control plane is unresponsive, reconnect",
    ),
    FieldSpec("reconnect_after_s", "float", 6600.0, "planned WebSocket reconnect (< 2 h)"),
    FieldSpec("backoff_initial_s", "float", 1.0, "first reconnect delay"),
    FieldSpec("backoff_max_s", "float", 60.0, "longest reconnect delay"),
    FieldSpec(
        "refresh_interval_s",
        "float",
        None,
        "override the cluster's Rules Refresh Interval (default: from the snapshot)",
    ),
    FieldSpec("state_dir", "path", Path("/var/lib/seg-gateway"), "persisted policy and spool"),
    FieldSpec(
        "policy_file",
        "path",
        None,
        "start from this signed policy file (`seg-gateway fetch-policy`, or a node's "
        "policy.journal); air-gapped: the only policy source",
    ),
    FieldSpec("max_spool_bytes", "int", 256 * 1024 * 1024, "bound of the event spool on disk"),
    FieldSpec(
        "event_flush_interval_s",
        "float",
        0.2,
        "access-event batching period; an event is on disk within ~2x this (<= 5)",
    ),
    FieldSpec(
        "event_fold_window_s",
        "int",
        3600,
        "while events cannot be delivered, allows fold per device per this window "
        "(60..86400; blocks always per minute)",
    ),
    FieldSpec("admin_host", "str", "127.0.0.1", "admin port address (health, metrics)"),
    FieldSpec("admin_port", "int", 9090, "admin port (0: ephemeral, see runtime.json)"),
    FieldSpec("workers", "int", None, "EAS worker processes (default: CPU count; 0: in-process)"),
    FieldSpec("upstream_check_interval_s", "float", 15.0, "upstream reachability check period"),
    FieldSpec("shutdown_grace_s", "float", 30.0, "how long shutdown waits for held requests"),
    FieldSpec("log_level", "str", "INFO", "DEBUG, INFO, WARNING or ERROR"),
    FieldSpec("log_format", "str", "text", "text, or json (one object per line)"),
    FieldSpec(
        "policy_signing_keys",
        "keys",
        (),
        "public keys that sign the cluster's policy (base64 DER SubjectPublicKeyInfo, "
        "comma separated; `seg cluster register` prints them); required with a control "
        "plane or a signed policy file",
    ),
    FieldSpec(
        "policy_clock_skew_s",
        "float",
        300.0,
        "how far in the future a signed policy's issue time may be (clock skew, 0-600)",
    ),
    FieldSpec(
        "allow_unsigned_policy_file",
        "bool",
        False,
        "accept a policy file that is plain PolicySnapshot JSON, not signed (air-gapped "
        "sites without exports from the control plane; its age counts from each read)",
    ),
)
_BY_NAME = {f.name: f for f in FIELDS}


# --- parsing ----------------------------------------------------------------------------


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected true or false")


def _parse_networks(value: Any) -> tuple[IPNetwork, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    return tuple(
        ipaddress.ip_network(str(i).strip(), strict=False) for i in items if str(i).strip()
    )


def _parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    return int(str(value).strip().replace("_", ""))


def _parse_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number")
    return float(str(value).strip())


def _parse_hosts(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    hosts = []
    for item in items:
        host = str(item).strip().lower().rstrip(".")
        if not host:
            continue
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not _HOST_CHARS.issuperset(host) or ".." in host or host.startswith("-"):
                raise ValueError(f"{host!r} is not a host name (no scheme, no port)") from None
        hosts.append(host)
    return tuple(dict.fromkeys(hosts))


_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")


def _parse_keys(value: Any) -> tuple[TrustedKey, ...]:
    """A TOML list (items may be PEM) or a comma-separated string of base64 keys."""
    items = value if isinstance(value, list) else str(value).split(",")
    keys: list[TrustedKey] = []
    for n, item in enumerate((str(i).strip() for i in items if str(i).strip()), start=1):
        try:
            keys.append(load_public_key(item))
        except ValueError as exc:
            raise ValueError(f"key {n}: {exc}") from None
    return tuple(keys)


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "str": lambda v: str(v).strip(),
    "credential": lambda v: str(v).strip(),
    "int": _parse_int,
    "float": _parse_float,
    "bool": _parse_bool,
    "path": lambda v: Path(str(v).strip()) if str(v).strip() else None,
    "networks": _parse_networks,
    "hosts": _parse_hosts,
    "keys": _parse_keys,
}


def _read_toml(path: Path, problems: list[str]) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        problems.append(f"config file {path}: cannot read ({exc.strerror})")
        return {}
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"config file {path}: not valid TOML ({exc})")
        return {}
    # Accept both a flat file and one with a [gateway] table.
    if isinstance(data.get("gateway"), dict) and len(data) == 1:
        data = data["gateway"]
    return data


def _collect_raw(
    env: Mapping[str, str], file_values: Mapping[str, Any], problems: list[str], source: str
) -> dict[str, tuple[Any, str]]:
    raw: dict[str, tuple[Any, str]] = {}
    for key, value in file_values.items():
        if key not in _BY_NAME:
            problems.append(f"{source}: unknown key {key!r}")
            continue
        raw[key] = (value, f"{source} key {key}")
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in _BY_NAME:
            problems.append(f"unknown environment variable {name}")
            continue
        raw[key] = (value, name)
    return raw


def load_config(
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    worker: bool = False,
) -> GatewayConfig:
    """Parse and check the configuration; raise ``ConfigError`` listing every problem.
    ``worker``: the config of an EAS worker process (its policy comes from the agent)."""
    env = os.environ if env is None else env
    problems: list[str] = []
    file_values = _read_toml(config_file, problems) if config_file else {}
    raw = _collect_raw(env, file_values, problems, f"config file {config_file}")
    for key, value in (overrides or {}).items():
        if value is not None:
            raw[key] = (value, f"--{key.replace('_', '-')}")

    values: dict[str, Any] = {}
    for spec in FIELDS:
        if spec.name not in raw:
            if spec.default is REQUIRED:
                problems.append(f"{spec.env} is required ({spec.doc})")
                values[spec.name] = None
            else:
                values[spec.name] = spec.default
            continue
        value, origin = raw[spec.name]
        try:
            values[spec.name] = _PARSERS[spec.kind](value)
        except ValueError as exc:
            problems.append(f"{origin}: {value!r} is not a valid {spec.kind} ({exc})")
            values[spec.name] = None if spec.default is REQUIRED else spec.default
    _check(values, problems, worker)
    if problems:
        raise ConfigError(problems)
    credential_file = values.pop("credential_file")
    del credential_file  # read into ``credential`` by _check
    return GatewayConfig(**values)


# A worker never talks to the cloud: it gets policy the agent verified, never a key.
_AGENT_ONLY = (
    "api_url",
    "ws_url",
    "credential",
    "credential_file",
    "control_plane_ca_bundle",
    "policy_signing_keys",
    "policy_clock_skew_s",
    "allow_unsigned_policy_file",
)


def cluster_of_credential(credential: str) -> str:
    """The cluster id in a cluster credential ``segc_<cluster>_<key>_<secret>``;
    ``ValueError`` when it is not one."""
    parts = credential.split("_", 3)  # the secret may hold "_" itself
    if len(parts) != 4 or parts[0] != "segc" or not all(parts[1:]):
        raise ValueError("not a cluster credential (segc_<cluster>_<key>_<secret>)")
    return parts[1]


def config_from_wire(data: Mapping[str, Any]) -> GatewayConfig:
    """The inverse of ``GatewayConfig.to_wire`` (a worker process receiving its config):
    the same checks, except that a worker needs no policy source of its own."""
    return load_config(env={}, overrides=data, worker=True)


# --- cross-field checks -------------------------------------------------------------------


def _check_file(values: dict[str, Any], name: str, problems: list[str]) -> None:
    path = values.get(name)
    if path is not None and not path.is_file():
        problems.append(f"{_BY_NAME[name].env}: {path} is not a readable file")


def _check_url(url: str, schemes: tuple[str, ...], env: str, problems: list[str]) -> bool:
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        problems.append(f"{env}: {url!r} must be a {' or '.join(schemes)} URL with a host")
        return False
    return True


def _check_listener(values: dict[str, Any], problems: list[str]) -> None:
    for name in ("tls_cert", "tls_key"):
        if values[name] is None and not values["listen_plain_http"]:
            problems.append(
                f"{_BY_NAME[name].env} is required (or set SEG_GW_LISTEN_PLAIN_HTTP=true "
                "behind a TLS-terminating load balancer)"
            )
        _check_file(values, name, problems)
    for name in ("listen_port", "admin_port"):
        if values[name] is not None and not 0 <= values[name] <= 65535:
            problems.append(f"{_BY_NAME[name].env}: {values[name]} is not a port (0-65535)")
    # Empty public_url: derived from the host name and the bound port at start
    # (``eas_runner.public_url``).
    if values["public_url"]:
        if _check_url(values["public_url"], ("https", "http"), "SEG_GW_PUBLIC_URL", problems):
            if not values["public_hosts"]:
                # The names devices use default to the configured public URL's; with
                # neither configured the Host header is not checked (a warning at start).
                host = urlsplit(values["public_url"]).hostname or ""
                values["public_hosts"] = (host.lower().rstrip("."),)
    header = values["header_timeout_s"]
    if header is not None and not 0 < header <= 600:
        problems.append("SEG_GW_HEADER_TIMEOUT_S must be in (0, 600]")
    per_ip = values["max_connections_per_ip"]
    if per_ip is not None and per_ip < 0:
        problems.append("SEG_GW_MAX_CONNECTIONS_PER_IP must be >= 0 (0: no cap)")
    failures = values["pw1_max_failures"]
    if failures is not None and not 1 <= failures <= 1000:
        problems.append("SEG_GW_PW1_MAX_FAILURES must be between 1 and 1000")
    window = values["pw1_failure_window_s"]
    if window is not None and not 0 < window <= 86_400:
        problems.append("SEG_GW_PW1_FAILURE_WINDOW_S must be in (0, 86400]")


def _check_upstream(values: dict[str, Any], problems: list[str]) -> None:
    url = values["upstream_url"]
    if url:
        if _check_url(url, ("https", "http"), "SEG_GW_UPSTREAM_URL", problems):
            if urlsplit(url).path not in ("", "/") or urlsplit(url).query:
                problems.append(
                    "SEG_GW_UPSTREAM_URL must be scheme://host[:port] only: the request path "
                    "is the device's own"
                )
            if urlsplit(url).scheme == "http" and not values["upstream_allow_plain_http"]:
                problems.append(
                    "SEG_GW_UPSTREAM_URL is plain http: set SEG_GW_UPSTREAM_ALLOW_PLAIN_HTTP=true "
                    "to allow it (passwords would cross the network unencrypted)"
                )
    _check_file(values, "upstream_ca_bundle", problems)
    for name in ("upstream_connect_timeout_s", "request_idle_timeout_s", "long_poll_timeout_s"):
        if values[name] is not None and values[name] <= 0:
            problems.append(f"{_BY_NAME[name].env} must be > 0")
    if values["long_poll_timeout_s"] is not None and values["long_poll_timeout_s"] < 3540:
        problems.append(
            "SEG_GW_LONG_POLL_TIMEOUT_S must be >= 3540: Ping and long-poll Sync may legally "
            "hang that long (MS-ASCMD 2.2.2.13)"
        )


def _check_control_plane(values: dict[str, Any], problems: list[str], worker: bool) -> None:
    if values["credential"] and values["credential_file"] is not None:
        problems.append("set SEG_GW_CREDENTIAL or SEG_GW_CREDENTIAL_FILE, not both")
    elif values["credential_file"] is not None:
        try:
            values["credential"] = values["credential_file"].read_text().strip()
        except OSError as exc:
            problems.append(f"SEG_GW_CREDENTIAL_FILE: cannot read ({exc.strerror})")
        else:
            if not values["credential"]:
                problems.append("SEG_GW_CREDENTIAL_FILE: the file is empty")
    if any(c.isspace() or ord(c) < 32 for c in values["credential"] or ""):
        problems.append("the cluster credential must not contain whitespace or control bytes")
    cloud = [values["api_url"], values["ws_url"], values["credential"]]
    if any(cloud) and not all(cloud):
        problems.append(
            "a control plane needs SEG_GW_API_URL, SEG_GW_WS_URL and SEG_GW_CREDENTIAL "
            "(or SEG_GW_CREDENTIAL_FILE) together"
        )
    plain_ok = values["control_plane_allow_plain_http"]
    for name, schemes in (("api_url", ("https", "http")), ("ws_url", ("wss", "ws"))):
        env = _BY_NAME[name].env
        url = values[name]
        if url and _check_url(url, schemes, env, problems):
            if urlsplit(url).scheme == schemes[1] and not plain_ok:
                problems.append(
                    f"{env} is plain {schemes[1]}: set SEG_GW_CONTROL_PLANE_ALLOW_PLAIN_HTTP=true "
                    "to allow it (the cluster credential and the policy would cross the "
                    "network unencrypted)"
                )
    for name in ("control_plane_ca_bundle", "cluster_key_file", "policy_file"):
        _check_file(values, name, problems)
    _check_cluster_key(values["cluster_key_file"], problems)


def _check_signing(values: dict[str, Any], problems: list[str], worker: bool) -> None:
    """A node verifies its policy: the keys it pins, the cluster its credential names."""
    if values["credential"]:
        try:
            cluster_of_credential(values["credential"])
        except ValueError:
            problems.append(
                "the cluster credential is not one `seg cluster register` issued "
                "(segc_<cluster>_<key>_<secret>): the node verifies that its policy was "
                "signed for the cluster it names"
            )
    cloud = [values["api_url"], values["ws_url"], values["credential"]]
    if all(cloud) and not values["policy_signing_keys"] and not worker:
        problems.append(
            "SEG_GW_POLICY_SIGNING_KEYS is required with a control plane: the node applies "
            "only policy signed by these keys (`seg cluster register` and `seg cluster "
            "signing-keys` print them; for a CDK stack, `aws kms get-public-key` of each "
            "ARN in the stack output PolicySigningKeyArns)"
        )
    if (
        not any(cloud)
        and values["policy_file"] is not None
        and not values["policy_signing_keys"]
        and not values["allow_unsigned_policy_file"]
        and not worker
    ):
        problems.append(
            "an air-gapped node verifies its policy file: set SEG_GW_POLICY_SIGNING_KEYS "
            "(the control plane's public keys), or SEG_GW_ALLOW_UNSIGNED_POLICY_FILE=true "
            "to accept a plain, unsigned PolicySnapshot file"
        )
    if not any(cloud) and values["policy_file"] is None and not worker:
        problems.append(
            "no policy source: configure a control plane (SEG_GW_API_URL, SEG_GW_WS_URL, "
            "SEG_GW_CREDENTIAL) or a policy file (--policy-file / SEG_GW_POLICY_FILE)"
        )


def _check_cluster_key(key_file: Path | None, problems: list[str]) -> None:
    if key_file is not None and key_file.is_file():
        try:
            key = key_file.read_text().strip()
        except (OSError, UnicodeDecodeError):
            key = ""
        if not public_key_is_valid(key):
            problems.append(
                f"SEG_GW_CLUSTER_KEY_FILE: {key_file} does not hold a base64 X25519 key "
                "(make one with `seg-gateway keygen`)"
            )


def _check_timings(values: dict[str, Any], problems: list[str]) -> None:
    for name in (
        "http_timeout_s",
        "pong_timeout_s",
        "backoff_initial_s",
        "backoff_max_s",
        "event_flush_interval_s",
        "upstream_check_interval_s",
        "refresh_interval_s",
    ):
        if values[name] is not None and values[name] <= 0:
            problems.append(f"{_BY_NAME[name].env} must be > 0")
    skew = values["policy_clock_skew_s"]
    # At most 10 minutes: signed input that just arrived may be at most 15 minutes old,
    # and the future allowance must stay below that window.
    if skew is not None and not 0 <= skew <= 600:
        problems.append("SEG_GW_POLICY_CLOCK_SKEW_S must be between 0 and 600 seconds")
    flush = values["event_flush_interval_s"]
    if flush is not None and flush > MAX_EVENT_FLUSH_INTERVAL_S:
        problems.append(
            f"SEG_GW_EVENT_FLUSH_INTERVAL_S must be <= {MAX_EVENT_FLUSH_INTERVAL_S:g}: it bounds "
            "how long an access event may wait before it is on disk"
        )
    if values["shutdown_grace_s"] is not None and values["shutdown_grace_s"] < 0:
        problems.append("SEG_GW_SHUTDOWN_GRACE_S must be >= 0")
    keepalive = values["keepalive_interval_s"]
    if keepalive is not None and not 0 < keepalive <= MAX_KEEPALIVE_S:
        problems.append(
            f"SEG_GW_KEEPALIVE_INTERVAL_S must be in (0, {MAX_KEEPALIVE_S:g}]: API Gateway "
            "closes a WebSocket idle for 10 minutes"
        )
    reconnect = values["reconnect_after_s"]
    if reconnect is not None and not 0 < reconnect <= MAX_RECONNECT_AFTER_S:
        problems.append(
            f"SEG_GW_RECONNECT_AFTER_S must be in (0, {MAX_RECONNECT_AFTER_S:g}]: API Gateway "
            "closes every WebSocket after 2 hours"
        )
    if (values["backoff_initial_s"] or 0) > (values["backoff_max_s"] or 0) > 0:
        problems.append("SEG_GW_BACKOFF_INITIAL_S must not exceed SEG_GW_BACKOFF_MAX_S")


def _check_operation(values: dict[str, Any], problems: list[str]) -> None:
    if values["workers"] is None:
        values["workers"] = _cpu_count()
    elif not 0 <= values["workers"] <= 64:
        problems.append("SEG_GW_WORKERS must be between 0 (in-process) and 64")
    if values["max_spool_bytes"] is not None and values["max_spool_bytes"] < 64 * 1024:
        problems.append("SEG_GW_MAX_SPOOL_BYTES must be at least 65536")
    window = values["event_fold_window_s"]
    if window is not None and not 60 <= window <= 86_400:
        problems.append("SEG_GW_EVENT_FOLD_WINDOW_S must be between 60 and 86400 seconds")
    level = str(values["log_level"] or "").upper()
    if level not in LOG_LEVELS:
        problems.append(f"SEG_GW_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
    values["log_level"] = level
    if values["log_format"] not in ("text", "json"):
        problems.append("SEG_GW_LOG_FORMAT must be text or json")
    if not values["node_id"]:
        values["node_id"] = socket.gethostname()
    if len(values["node_id"]) > 128 or any(c.isspace() for c in values["node_id"]):
        problems.append("SEG_GW_NODE_ID must be at most 128 characters without whitespace")
    state_dir = values["state_dir"]
    if state_dir is not None and state_dir.exists() and not state_dir.is_dir():
        problems.append(f"SEG_GW_STATE_DIR: {state_dir} exists and is not a directory")


def _check(values: dict[str, Any], problems: list[str], worker: bool) -> None:
    _check_listener(values, problems)
    _check_upstream(values, problems)
    _check_control_plane(values, problems, worker)
    _check_signing(values, problems, worker)
    _check_timings(values, problems)
    _check_operation(values, problems)
