"""The gateway node's configuration: one typed, frozen settings model (pydantic-settings).

Sources, later wins: built-in defaults, a TOML file (``--config``; keys are the field
names below, flat or inside one ``[gateway]`` table; the proxy's edge limits in a
``[limits]`` table), environment variables (``SEG_GW_<FIELD NAME IN UPPER CASE>``,
``SEG_GW_LIMITS_<LIMIT NAME>``), and the command line (``--policy-file``).
``load_config`` checks everything and raises one ``ConfigError`` that lists every
problem, one line each, so an operator fixes them in one round; unknown TOML keys and
unknown ``SEG_GW_*`` variables are problems too (a typo must not silently fall back to a
default). ``docs/gateway.md`` documents every entry of ``FIELDS``.

The environment source is this module's own (``_EnvSource``), not pydantic-settings'
default: list settings are comma-separated strings in the environment (operators' files
and units say ``SEG_GW_TRUSTED_PROXIES=10.0.0.0/8,192.168.0.0/16``, not JSON), and every
``SEG_GW_*`` variable is handed to the model so an unknown one is an error.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tomllib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SkipValidation,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from onprem_gateway.proxy.settings import Limits
from seg_contract.crypto import public_key_is_valid
from seg_contract.signing import TrustedKey, load_public_key

ENV_PREFIX = "SEG_GW_"
LIMITS_ENV_PREFIX = ENV_PREFIX + "LIMITS_"
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["text", "json"]
# API Gateway closes an idle WebSocket after 10 minutes and any WebSocket after 2 hours;
# the keepalive and the planned reconnect stay under those limits with a margin.
MAX_KEEPALIVE_S = 540.0
MAX_RECONNECT_AFTER_S = 7080.0
# An access event is on disk within about two flush intervals (the worker's, then the
# agent's spool commit) plus one fsync; a longer interval is a longer window of loss.
MAX_EVENT_FLUSH_INTERVAL_S = 5.0
# Ping and long-poll Sync may legally hang this long (MS-ASCMD 2.2.2.13).
MIN_LONG_POLL_TIMEOUT_S = 3540.0


class ConfigError(ValueError):
    """The configuration is unusable; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            "invalid gateway configuration:\n" + "\n".join(f"  - {p}" for p in problems)
        )


# --- value types: what a TOML value or an environment string becomes -------------------


def _items(value: Any) -> list[str]:
    """A TOML array, or a comma-separated string (the environment's form of a list)."""
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    return [str(i).strip() for i in items if str(i).strip()]


def _networks(value: Any) -> Any:
    if isinstance(value, tuple) and all(isinstance(v, IPNetwork) for v in value):
        return value
    out = []
    for item in _items(value):
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP network (CIDR)") from None
    return tuple(out)


_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")


def _hosts(value: Any) -> tuple[str, ...]:
    hosts = []
    for item in _items(value):
        host = item.lower().rstrip(".")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not _HOST_CHARS.issuperset(host) or ".." in host or host.startswith("-"):
                raise ValueError(f"{host!r} is not a host name (no scheme, no port)") from None
        hosts.append(host)
    return tuple(dict.fromkeys(hosts))


def _keys(value: Any) -> Any:
    """A TOML list (items may be PEM) or a comma-separated string of base64 keys."""
    if isinstance(value, tuple) and all(isinstance(v, TrustedKey) for v in value):
        return value
    keys: list[TrustedKey] = []
    for n, item in enumerate(_items(value), start=1):
        try:
            keys.append(load_public_key(item))
        except ValueError as exc:
            raise ValueError(f"key {n}: {exc}") from None
    return tuple(keys)


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


def _in_range(low: float, high: float, why: str = "", *, open_low: bool = True) -> AfterValidator:
    """``low < value <= high`` (``low <= value`` with ``open_low=False``), the reason why in
    the message: the bounds come from the protocols and services the node talks to."""

    def check(value: float | None) -> float | None:
        if value is None:
            return value
        if (value <= low if open_low else value < low) or value > high:
            bounds = f"in ({low:g}, {high:g}]" if open_low else f"in [{low:g}, {high:g}]"
            if high == float("inf"):
                bounds = f"> {low:g}" if open_low else f">= {low:g}"
            raise ValueError(f"must be {bounds}" + (f": {why}" if why else ""))
        return value

    return AfterValidator(check)


Networks = Annotated[tuple[IPNetwork, ...], BeforeValidator(_networks)]
Hosts = Annotated[tuple[str, ...], BeforeValidator(_hosts)]
Keys = Annotated[tuple[SkipValidation[TrustedKey], ...], BeforeValidator(_keys)]
Port = Annotated[int, Field(ge=0, le=65535)]
Positive = Annotated[float, Field(gt=0)]


def _cpu_count() -> int:
    # The CPUs this process may run on (a container's cpuset), not the host's count.
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# --- the proxy's edge limits ([limits], SEG_GW_LIMITS_*) ---------------------------------


# The proxy's defaults, explained where they are defined: the one definition.
_LIMITS = Limits()


class LimitsConfig(BaseModel):
    """The EAS listener's size and connection limits (``onprem_gateway.proxy.Limits``,
    where each default is defined and explained); the bounds stop a typo from disabling
    a limit or the listener."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_header_bytes: int = Field(
        _LIMITS.max_header_bytes,
        ge=1024,
        le=1024 * 1024,
        description="request line + header bytes (431 over)",
    )
    max_query_bytes: int = Field(
        _LIMITS.max_query_bytes, ge=256, le=64 * 1024, description="query string bytes"
    )
    max_url_bytes: int = Field(
        _LIMITS.max_url_bytes, ge=256, le=64 * 1024, description="request target bytes"
    )
    max_header_count: int = Field(
        _LIMITS.max_header_count, ge=10, le=1000, description="header lines per request"
    )
    max_body_bytes: int = Field(
        _LIMITS.max_body_bytes, ge=1024, le=2**40, description="request body bytes (413 over)"
    )
    max_connections: int = Field(
        _LIMITS.max_connections,
        ge=1,
        le=1_000_000,
        description="client connections per worker process",
    )
    max_discard_bytes: int = Field(
        _LIMITS.max_discard_bytes,
        ge=0,
        le=2**30,
        description="body bytes read and dropped after a local answer to keep the connection",
    )
    write_high_water: int = Field(
        _LIMITS.write_high_water,
        ge=4096,
        le=64 * 1024 * 1024,
        description="buffered bytes before reading from the other leg pauses",
    )


# --- the settings model ----------------------------------------------------------------


@dataclass(frozen=True)
class _Inputs:
    """What one ``load_config`` call reads, beside the init keywords (the command line)."""

    env: Mapping[str, str]
    file_values: Mapping[str, Any]
    worker: bool


_INPUTS: ContextVar[_Inputs | None] = ContextVar("seg_gateway_config_inputs", default=None)


class _DictSource(PydanticBaseSettingsSource):
    """One source of already-read values (the TOML file's or the environment's)."""

    def __init__(self, settings_cls: type[BaseSettings], values: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._values = values

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self._values


def _env_values(env: Mapping[str, str]) -> dict[str, Any]:
    """Every ``SEG_GW_*`` variable as a model key (unknown ones too: the model refuses
    them by name); ``SEG_GW_LIMITS_*`` into the ``limits`` table."""
    out: dict[str, Any] = {}
    for name, value in env.items():
        if name.startswith(LIMITS_ENV_PREFIX):
            out.setdefault("limits", {})[name[len(LIMITS_ENV_PREFIX) :].lower()] = value
        elif name.startswith(ENV_PREFIX):
            out[name[len(ENV_PREFIX) :].lower()] = value
    return out


class GatewayConfig(BaseSettings):
    """The node's configuration, parsed and checked once at start, then read everywhere."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        str_strip_whitespace=True,
        # TOML ``node_id = 7`` has always been the string "7".
        coerce_numbers_to_str=True,
    )

    # The EAS listener (what devices connect to).
    listen_host: str = Field("0.0.0.0", description="EAS listener address")  # noqa: S104
    listen_port: Port = Field(
        8443, description="EAS listener port (0: ephemeral, see runtime.json)"
    )
    tls_cert: Path | None = Field(None, description="PEM certificate chain of the EAS listener")
    tls_key: Path | None = Field(None, description="PEM private key of the EAS listener")
    listen_plain_http: bool = Field(
        False, description="serve plain HTTP (only behind a TLS-terminating load balancer)"
    )
    public_url: str = Field("", description="URL devices use (451 rewrites); default from host")
    public_hosts: Hosts = Field(
        (),
        description="host names devices may use (Host header; others get 421); "
        "default: public_url's",
    )
    trusted_proxies: Networks = Field(
        (), description="CIDRs whose X-Forwarded-*, Forwarded and X-Real-IP are trusted"
    )
    # The mail server behind the gateway.
    # Required: checked with the other fields (a missing field would stop pydantic before
    # the cross-field checks, and an operator would fix the file in two rounds).
    upstream_url: str = Field("", description="the mail server, e.g. https://exchange.corp")
    upstream_ca_bundle: Path | None = Field(
        None, description="PEM CA bundle that verifies the upstream"
    )
    upstream_allow_plain_http: bool = Field(False, description="allow an http:// upstream")
    upstream_connect_timeout_s: Positive = Field(10.0, description="upstream connect timeout")
    request_idle_timeout_s: Positive = Field(
        120.0, description="idle timeout of requests that are not long-polls"
    )
    long_poll_timeout_s: Annotated[
        float,
        _in_range(
            MIN_LONG_POLL_TIMEOUT_S,
            float("inf"),
            "Ping and long-poll Sync may legally hang that long (MS-ASCMD 2.2.2.13)",
            open_low=False,
        ),
    ] = Field(
        3900.0,
        description="idle timeout of Ping / long-poll Sync (> 3540 s, MS-ASCMD 2.2.2.13)",
    )
    # Edge limits of the EAS listener (the size limits are in ``limits``).
    header_timeout_s: Annotated[float, _in_range(0, 600)] = Field(
        30.0, description="deadline for a whole request head from its first byte (408 after it)"
    )
    max_connections_per_ip: int = Field(
        1000, ge=0, description="connections per client address and worker (0: no cap; see docs)"
    )
    pw1_max_failures: int = Field(
        5,
        ge=1,
        le=1000,
        description="wrong device passwords per user / device before attempts are refused unhashed",
    )
    pw1_failure_window_s: Annotated[float, _in_range(0, 86_400)] = Field(
        300.0, description="window of pw1_max_failures"
    )
    limits: LimitsConfig = Field(
        default_factory=LimitsConfig, description="the EAS listener's size limits"
    )
    # The control plane ("" api_url: air-gapped, enforce the policy file only).
    api_url: str = Field("", description="control-plane API base URL (empty: air-gapped)")
    ws_url: str = Field("", description="control-plane WebSocket URL (wss://...)")
    control_plane_allow_plain_http: bool = Field(
        False, description="allow http:// and ws:// control-plane URLs (local test systems only)"
    )
    control_plane_ca_bundle: Path | None = Field(
        None, description="PEM CA bundle for the control plane"
    )
    credential: str = Field("", repr=False, description="cluster credential (segc_...)")
    credential_file: Path | None = Field(None, description="file holding the cluster credential")
    node_id: str = Field("", max_length=128, description="this node's id (default: the host name)")
    cluster_key_file: Path | None = Field(
        None, description="cluster X25519 private key (substitution)"
    )
    http_timeout_s: Positive = Field(10.0, description="control-plane HTTP timeout")
    keepalive_interval_s: Annotated[
        float | None,
        _in_range(0, MAX_KEEPALIVE_S, "API Gateway closes a WebSocket idle for 10 minutes"),
    ] = Field(
        None,
        description="report (keepalive) period when shorter than the cluster's report "
        "interval (<= 540)",
    )
    pong_timeout_s: Positive = Field(
        10.0,
        description="a keepalive unanswered this long: the control plane is unresponsive, "
        "reconnect",
    )
    reconnect_after_s: Annotated[
        float,
        _in_range(0, MAX_RECONNECT_AFTER_S, "API Gateway closes every WebSocket after 2 hours"),
    ] = Field(6600.0, description="planned WebSocket reconnect (< 2 h)")
    backoff_initial_s: Positive = Field(1.0, description="first reconnect delay")
    backoff_max_s: Positive = Field(60.0, description="longest reconnect delay")
    refresh_interval_s: Positive | None = Field(
        None,
        description="override the cluster's Rules Refresh Interval (default: from the snapshot)",
    )
    # Local state.
    state_dir: Path = Field(Path("/var/lib/seg-gateway"), description="persisted policy and spool")
    policy_file: Path | None = Field(
        None,
        description="start from this signed policy file (`seg-gateway fetch-policy`, or a "
        "node's policy.journal); air-gapped: the only policy source",
    )
    max_spool_bytes: int = Field(
        256 * 1024 * 1024, ge=64 * 1024, description="bound of the event spool on disk"
    )
    event_flush_interval_s: Annotated[
        float,
        _in_range(
            0,
            MAX_EVENT_FLUSH_INTERVAL_S,
            "it bounds how long an access event may wait before it is on disk",
        ),
    ] = Field(
        0.2,
        description="access-event batching period; an event is on disk within ~2x this (<= 5)",
    )
    event_fold_window_s: int = Field(
        3600,
        ge=60,
        le=86_400,
        description="while events cannot be delivered, allows fold per device per this window "
        "(60..86400; blocks always per minute)",
    )
    # Operation.
    admin_host: str = Field("127.0.0.1", description="admin port address (health, metrics)")
    admin_port: Port = Field(9090, description="admin port (0: ephemeral, see runtime.json)")
    workers: int = Field(
        default_factory=_cpu_count,
        ge=0,
        le=64,
        description="EAS worker processes (default: CPU count; 0: in-process)",
    )
    upstream_check_interval_s: Positive = Field(
        15.0, description="upstream reachability check period"
    )
    shutdown_grace_s: float = Field(
        30.0, ge=0, description="how long shutdown waits for held requests"
    )
    log_level: Annotated[LogLevel, BeforeValidator(_upper)] = Field(
        "INFO", description="DEBUG, INFO, WARNING or ERROR"
    )
    log_format: LogFormat = Field("text", description="text, or json (one object per line)")
    # Signed policy (``seg_contract.signing``): the control plane's public keys this node
    # trusts (pinned), and the clock skew it tolerates in a statement's issue time.
    policy_signing_keys: Keys = Field(
        (),
        description="public keys that sign the cluster's policy (base64 DER "
        "SubjectPublicKeyInfo, comma separated; `seg cluster register` prints them); "
        "required with a control plane or a signed policy file",
    )
    # At most 10 minutes: signed input that just arrived may be at most 15 minutes old,
    # and the future allowance must stay below that window.
    policy_clock_skew_s: Annotated[float, _in_range(0, 600, open_low=False)] = Field(
        300.0,
        description="how far in the future a signed policy's issue time may be (clock skew, 0-600)",
    )
    allow_unsigned_policy_file: bool = Field(
        False,
        description="accept a policy file that is plain PolicySnapshot JSON, not signed "
        "(air-gapped sites without exports from the control plane; its age counts from "
        "each read)",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        inputs = _INPUTS.get() or _Inputs(os.environ, {}, worker=False)
        return (
            init_settings,  # the command line (and a worker's wire config)
            _DictSource(settings_cls, _env_values(inputs.env)),
            _DictSource(settings_cls, dict(inputs.file_values)),
        )

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any, info: ValidationInfo) -> Any:
        """An empty string (``SEG_GW_TLS_CERT=``) means the default, as it always has."""
        if isinstance(value, str) and not value.strip() and info.field_name:
            spec = cls.model_fields[info.field_name]
            if spec.default is None or spec.default is False or spec.default == ():
                return spec.default
        return value

    @field_validator("node_id", mode="after")
    @classmethod
    def _node_id(cls, value: str) -> str:
        if any(c.isspace() for c in value):
            raise ValueError("must be at most 128 characters without whitespace")
        return value

    @model_validator(mode="after")
    def _cross_field(self) -> GatewayConfig:
        inputs = _INPUTS.get()
        problems = self._derive() + list(
            self.cross_field_problems(worker=bool(inputs and inputs.worker))
        )
        if problems:
            raise _Problems(problems)
        return self

    def _derive(self) -> list[str]:
        """Values that follow from others: the credential from its file, the names devices
        use from the public URL. Set once here, before the model is handed out (the model
        is frozen; this is its construction)."""
        problems = []
        if not self.node_id:
            object.__setattr__(self, "node_id", socket.gethostname())
        if self.credential and self.credential_file is not None:
            problems.append("set SEG_GW_CREDENTIAL or SEG_GW_CREDENTIAL_FILE, not both")
        elif self.credential_file is not None:
            try:
                credential = self.credential_file.read_text().strip()
            except OSError as exc:
                problems.append(f"SEG_GW_CREDENTIAL_FILE: cannot read ({exc.strerror})")
            else:
                if not credential:
                    problems.append("SEG_GW_CREDENTIAL_FILE: the file is empty")
                object.__setattr__(self, "credential", credential)
        # The names devices use default to the configured public URL's; with neither
        # configured the Host header is not checked (a warning at start).
        if self.public_url and not self.public_hosts and _url_ok(self.public_url, _HTTP):
            host = urlsplit(self.public_url).hostname or ""
            object.__setattr__(self, "public_hosts", (host.lower().rstrip("."),))
        return problems

    def cross_field_problems(self, *, worker: bool) -> Iterator[str]:
        """Every check that reads more than one field, or the file system."""
        yield from _check_listener(self)
        yield from _check_upstream(self)
        yield from _check_control_plane(self)
        yield from _check_signing(self, worker)
        if self.backoff_initial_s > self.backoff_max_s:
            yield "SEG_GW_BACKOFF_INITIAL_S must not exceed SEG_GW_BACKOFF_MAX_S"
        if self.state_dir.exists() and not self.state_dir.is_dir():
            yield f"SEG_GW_STATE_DIR: {self.state_dir} exists and is not a directory"

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
        for name in type(self).model_fields:
            if name == "credential_file":
                continue
            value = getattr(self, name)
            if name == "credential":
                value = "<set>" if value else ""
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = [v.kid if isinstance(v, TrustedKey) else str(v) for v in value]
            elif isinstance(value, BaseModel):
                value = value.model_dump()
            out[name] = value
        return out


class _Problems(ValueError):
    """The cross-field checks' findings, carried through pydantic as one error."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


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


# --- the field listing (docs/gateway.md, check-config, deployment tests) --------------------


@dataclass(frozen=True)
class FieldSpec:
    name: str  # the TOML key (``limits.<name>`` inside the [limits] table)
    env: str
    kind: str
    default: Any
    doc: str


def _kind(info: FieldInfo) -> str:
    text = str(info.annotation)
    for needle, kind in (
        ("IPv4Network", "networks"),
        ("TrustedKey", "keys"),
        ("tuple[str", "hosts"),
        ("Path", "path"),
        ("Literal", "choice"),
        ("bool", "bool"),
        ("float", "float"),
        ("int", "int"),
    ):
        if needle in text:
            return kind
    return "str"


def _specs() -> Iterator[FieldSpec]:
    for name, info in GatewayConfig.model_fields.items():
        if name == "limits":
            for sub, sub_info in LimitsConfig.model_fields.items():
                yield FieldSpec(
                    f"limits.{sub}",
                    LIMITS_ENV_PREFIX + sub.upper(),
                    _kind(sub_info),
                    sub_info.default,
                    sub_info.description or "",
                )
            continue
        default = None if info.default_factory is not None else info.default
        yield FieldSpec(
            name, ENV_PREFIX + name.upper(), _kind(info), default, info.description or ""
        )


FIELDS: tuple[FieldSpec, ...] = tuple(_specs())
_ENV_NAMES = {spec.name: spec.env for spec in FIELDS}


# --- loading ------------------------------------------------------------------------------


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
    # Accept both a flat file and one with a [gateway] table (beside it, or inside it,
    # a [limits] table).
    if isinstance(data.get("gateway"), dict) and set(data) <= {"gateway", "limits"}:
        flat = dict(data["gateway"])
        if isinstance(data.get("limits"), dict):
            flat["limits"] = {**data["limits"], **flat.get("limits", {})}
        data = flat
    return data


def _origin(
    loc: tuple[int | str, ...],
    env: Mapping[str, str],
    file_values: Mapping[str, Any],
    overrides: Mapping[str, Any],
    config_file: Path | None,
) -> str:
    """Where the value at ``loc`` came from, in the words an operator searches for."""
    name = str(loc[0]) if loc else ""
    sub = str(loc[1]) if len(loc) > 1 and name == "limits" else ""
    key = f"limits.{sub}" if sub else name
    env_name = (LIMITS_ENV_PREFIX + sub.upper()) if sub else (ENV_PREFIX + name.upper())
    if name in overrides:
        return f"--{name.replace('_', '-')}"
    if env_name in env:
        return env_name
    in_file = file_values.get(name)
    if (sub and isinstance(in_file, dict) and sub in in_file) or (not sub and name in file_values):
        return f"config file {config_file} key {key}"
    return _ENV_NAMES.get(key, env_name)


def _problem_lines(
    exc: ValidationError,
    env: Mapping[str, str],
    file_values: Mapping[str, Any],
    overrides: Mapping[str, Any],
    config_file: Path | None,
) -> list[str]:
    """One readable line per problem pydantic collected."""
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])[:2]  # a list setting's item index is in the message
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, _Problems):
            lines.extend(cause.problems)
            continue
        origin = _origin(loc, env, file_values, overrides, config_file)
        if err["type"] == "extra_forbidden":
            if origin.startswith(ENV_PREFIX):
                lines.append(f"unknown environment variable {origin}")
            elif origin.startswith("config file"):
                where = origin.rsplit(" key ", 1)
                lines.append(f"{where[0]}: unknown key {where[1]!r}")
            else:
                lines.append(f"{origin}: unknown setting")
        elif err["type"] == "missing":
            spec = next((s for s in FIELDS if s.env == origin), None)
            lines.append(f"{origin} is required ({spec.doc if spec else 'no default'})")
        elif isinstance(cause, ValueError):
            sep = " " if str(cause).startswith("must ") else ": "
            lines.append(f"{origin}{sep}{cause}")
        elif err["msg"].startswith("Input should be "):
            should = err["msg"].removeprefix("Input should be ")
            lines.append(f"{origin} must be {should} (got {err['input']!r})")
        else:
            lines.append(f"{origin}: {err['msg']} (got {err['input']!r})")
    return list(dict.fromkeys(lines))


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
    init = {k: v for k, v in (overrides or {}).items() if v is not None}
    token = _INPUTS.set(_Inputs(env, file_values, worker))
    try:
        try:
            config = GatewayConfig(**init)
        except ValidationError as exc:
            problems += _problem_lines(exc, env, file_values, init, config_file)
            # A field that failed leaves the cross-field checks unrun: run them once more
            # with those fields at their defaults, so one round lists every problem.
            failed = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
            if failed:
                problems += _retry_without(failed, env, file_values, init, worker)
            config = None
    finally:
        _INPUTS.reset(token)
    if problems or config is None:
        raise ConfigError(list(dict.fromkeys(problems)))
    return config


def _retry_without(
    failed: set[str],
    env: Mapping[str, str],
    file_values: Mapping[str, Any],
    init: Mapping[str, Any],
    worker: bool,
) -> list[str]:
    """The cross-field problems of the configuration minus the ``failed`` fields."""
    dropped = {ENV_PREFIX + f.upper() for f in failed}
    env = {
        k: v
        for k, v in env.items()
        if k not in dropped and not ("limits" in failed and k.startswith(LIMITS_ENV_PREFIX))
    }
    token = _INPUTS.set(
        _Inputs(env, {k: v for k, v in file_values.items() if k not in failed}, worker)
    )
    try:
        GatewayConfig(**{k: v for k, v in init.items() if k not in failed})
    except ValidationError as exc:
        return [
            p
            for e in exc.errors()
            if isinstance(cause := (e.get("ctx") or {}).get("error"), _Problems)
            for p in cause.problems
        ]
    finally:
        _INPUTS.reset(token)
    return []


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

_HTTP = ("https", "http")


def _url_ok(url: str, schemes: tuple[str, ...]) -> bool:
    parts = urlsplit(url)
    return parts.scheme in schemes and bool(parts.hostname)


def _check_url(url: str, schemes: tuple[str, ...], env: str) -> Iterator[str]:
    if not _url_ok(url, schemes):
        yield f"{env}: {url!r} must be a {' or '.join(schemes)} URL with a host"


def _check_files(config: GatewayConfig, *names: str) -> Iterator[str]:
    for name in names:
        path = getattr(config, name)
        if path is not None and not path.is_file():
            yield f"{_ENV_NAMES[name]}: {path} is not a readable file"


def _check_listener(config: GatewayConfig) -> Iterator[str]:
    for name in ("tls_cert", "tls_key"):
        if getattr(config, name) is None and not config.listen_plain_http:
            yield (
                f"{_ENV_NAMES[name]} is required (or set SEG_GW_LISTEN_PLAIN_HTTP=true "
                "behind a TLS-terminating load balancer)"
            )
    yield from _check_files(config, "tls_cert", "tls_key")
    # Empty public_url: derived from the host name and the bound port at start
    # (``eas_runner.public_url``).
    if config.public_url:
        yield from _check_url(config.public_url, _HTTP, "SEG_GW_PUBLIC_URL")


def _check_upstream(config: GatewayConfig) -> Iterator[str]:
    url = config.upstream_url
    if not url:
        yield "SEG_GW_UPSTREAM_URL is required (the mail server, e.g. https://exchange.corp)"
    elif _url_ok(url, _HTTP):
        parts = urlsplit(url)
        if parts.path not in ("", "/") or parts.query:
            yield (
                "SEG_GW_UPSTREAM_URL must be scheme://host[:port] only: the request path "
                "is the device's own"
            )
        if parts.scheme == "http" and not config.upstream_allow_plain_http:
            yield (
                "SEG_GW_UPSTREAM_URL is plain http: set SEG_GW_UPSTREAM_ALLOW_PLAIN_HTTP=true "
                "to allow it (passwords would cross the network unencrypted)"
            )
    else:
        yield from _check_url(url, _HTTP, "SEG_GW_UPSTREAM_URL")
    yield from _check_files(config, "upstream_ca_bundle")


def _check_control_plane(config: GatewayConfig) -> Iterator[str]:
    if any(c.isspace() or ord(c) < 32 for c in config.credential):
        yield "the cluster credential must not contain whitespace or control bytes"
    cloud = [config.api_url, config.ws_url, config.credential]
    if any(cloud) and not all(cloud):
        yield (
            "a control plane needs SEG_GW_API_URL, SEG_GW_WS_URL and SEG_GW_CREDENTIAL "
            "(or SEG_GW_CREDENTIAL_FILE) together"
        )
    for name, schemes in (("api_url", _HTTP), ("ws_url", ("wss", "ws"))):
        env, url = _ENV_NAMES[name], getattr(config, name)
        if not url:
            continue
        if not _url_ok(url, schemes):
            yield from _check_url(url, schemes, env)
        elif urlsplit(url).scheme == schemes[1] and not config.control_plane_allow_plain_http:
            yield (
                f"{env} is plain {schemes[1]}: set SEG_GW_CONTROL_PLANE_ALLOW_PLAIN_HTTP=true "
                "to allow it (the cluster credential and the policy would cross the "
                "network unencrypted)"
            )
    yield from _check_files(config, "control_plane_ca_bundle", "cluster_key_file", "policy_file")
    key_file = config.cluster_key_file
    if key_file is not None and key_file.is_file():
        try:
            key = key_file.read_text().strip()
        except (OSError, UnicodeDecodeError):
            key = ""
        if not public_key_is_valid(key):
            yield (
                f"SEG_GW_CLUSTER_KEY_FILE: {key_file} does not hold a base64 X25519 key "
                "(make one with `seg-gateway keygen`)"
            )


def _check_signing(config: GatewayConfig, worker: bool) -> Iterator[str]:
    """A node verifies its policy: the keys it pins, the cluster its credential names."""
    if config.credential:
        try:
            cluster_of_credential(config.credential)
        except ValueError:
            yield (
                "the cluster credential is not one `seg cluster register` issued "
                "(segc_<cluster>_<key>_<secret>): the node verifies that its policy was "
                "signed for the cluster it names"
            )
    if worker:
        return
    cloud = [config.api_url, config.ws_url, config.credential]
    if all(cloud) and not config.policy_signing_keys:
        yield (
            "SEG_GW_POLICY_SIGNING_KEYS is required with a control plane: the node applies "
            "only policy signed by these keys (`seg cluster register` and `seg cluster "
            "signing-keys` print them; for a CDK stack, `aws kms get-public-key` of each "
            "ARN in the stack output PolicySigningKeyArns)"
        )
    if any(cloud):
        return
    if config.policy_file is None:
        yield (
            "no policy source: configure a control plane (SEG_GW_API_URL, SEG_GW_WS_URL, "
            "SEG_GW_CREDENTIAL) or a policy file (--policy-file / SEG_GW_POLICY_FILE)"
        )
    elif not config.policy_signing_keys and not config.allow_unsigned_policy_file:
        yield (
            "an air-gapped node verifies its policy file: set SEG_GW_POLICY_SIGNING_KEYS "
            "(the control plane's public keys), or SEG_GW_ALLOW_UNSIGNED_POLICY_FILE=true "
            "to accept a plain, unsigned PolicySnapshot file"
        )
