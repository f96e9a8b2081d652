"""Runtime settings of the Lambda functions, parsed once from the environment.

Physical table names and queue URLs arrive in the environment variables that
``lambdas.resources`` names (the CDK stack and the local runtime set them from the same
definitions). ``load_settings()`` fails fast, naming every missing variable at once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from lambdas import resources


class SettingsError(RuntimeError):
    """The environment does not describe a usable deployment."""


DEFAULT_AUDIT_RETENTION_DAYS = 90
MAX_AUDIT_RETENTION_DAYS = 3653  # CloudWatch's longest retention (ten years)
_HEX64 = frozenset("0123456789abcdef")


def _token_hash(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip().lower()
    if value and (len(value) != 64 or not set(value) <= _HEX64):
        raise SettingsError(f"{name} must be a hex sha256 (64 characters)")
    return value


def _retention_days(env: Mapping[str, str]) -> int:
    raw = env.get(resources.ENV_AUDIT_RETENTION_DAYS, "").strip()
    if not raw:
        return DEFAULT_AUDIT_RETENTION_DAYS
    try:
        days = int(raw)
    except ValueError:
        raise SettingsError(
            f"{resources.ENV_AUDIT_RETENTION_DAYS} must be a number of days"
        ) from None
    if not 1 <= days <= MAX_AUDIT_RETENTION_DAYS:
        raise SettingsError(
            f"{resources.ENV_AUDIT_RETENTION_DAYS} must be between 1 and {MAX_AUDIT_RETENTION_DAYS}"
        )
    return days


def _notice_sender(env: Mapping[str, str]) -> str:
    sender = env.get(resources.ENV_NOTICE_SENDER, "").strip()
    if sender and (sender.count("@") != 1 or any(c.isspace() for c in sender)):
        raise SettingsError(f"{resources.ENV_NOTICE_SENDER} must be one e-mail address")
    return sender


@dataclass(frozen=True)
class Settings:
    tables: Mapping[str, str]  # table id -> physical name
    queues: Mapping[str, str]  # queue id -> URL
    websocket_management_endpoint: str  # "" when this deployment has no WebSocket API
    console_auth: str  # "jwt" | "static"
    console_token_sha256: str  # the static admin token
    device_services_key_sha256: str
    device_services_secret_arn: str
    # The static tokens of the other console roles ("": none).
    console_operator_token_sha256: str = ""
    console_viewer_token_sha256: str = ""
    audit_retention_days: int = DEFAULT_AUDIT_RETENTION_DAYS
    notice_sender: str = ""  # SES identity notices are sent from ("": notices are off)
    # The stack's policy signing keys (KMS key ARNs); () when this deployment has none.
    policy_signing_key_arns: tuple[str, ...] = ()
    # How long a warm function keeps the signing-key registry (seconds).
    policy_signing_registry_ttl_s: float = 60.0

    def table(self, table_id: str) -> str:
        return self.tables[table_id]

    def queue_url(self, queue_id: str) -> str:
        return self.queues[queue_id]


def parse_settings(env: Mapping[str, str]) -> Settings:
    missing = [t.env for t in resources.TABLES if not env.get(t.env)]
    missing += [q.env for q in resources.QUEUES if not env.get(q.env)]
    if missing:
        raise SettingsError("missing environment variables: " + ", ".join(sorted(missing)))
    console_auth = env.get(resources.ENV_CONSOLE_AUTH, "jwt")
    if console_auth not in {"jwt", "static"}:
        raise SettingsError(f"{resources.ENV_CONSOLE_AUTH} must be 'jwt' or 'static'")
    if console_auth == "static" and not env.get(resources.ENV_CONSOLE_TOKEN_SHA256):
        raise SettingsError(
            f"{resources.ENV_CONSOLE_AUTH}=static needs {resources.ENV_CONSOLE_TOKEN_SHA256}"
        )
    signing_keys = _signing_key_arns(env.get(resources.ENV_POLICY_SIGNING_KEY_ARNS, ""))
    registry_ttl = _registry_ttl(env.get(resources.ENV_POLICY_SIGNING_REGISTRY_TTL_S, ""))
    return Settings(
        policy_signing_key_arns=signing_keys,
        policy_signing_registry_ttl_s=registry_ttl,
        tables={t.id: env[t.env] for t in resources.TABLES},
        queues={q.id: env[q.env] for q in resources.QUEUES},
        websocket_management_endpoint=env.get(resources.ENV_WEBSOCKET_MANAGEMENT_ENDPOINT, ""),
        console_auth=console_auth,
        console_token_sha256=env.get(resources.ENV_CONSOLE_TOKEN_SHA256, ""),
        device_services_key_sha256=env.get(resources.ENV_DEVICE_SERVICES_KEY_SHA256, ""),
        device_services_secret_arn=env.get(resources.ENV_DEVICE_SERVICES_SECRET_ARN, ""),
        console_operator_token_sha256=_token_hash(env, resources.ENV_CONSOLE_OPERATOR_TOKEN_SHA256),
        console_viewer_token_sha256=_token_hash(env, resources.ENV_CONSOLE_VIEWER_TOKEN_SHA256),
        audit_retention_days=_retention_days(env),
        notice_sender=_notice_sender(env),
    )


_KMS_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]{1,128}$")


def _signing_key_arns(raw: str) -> tuple[str, ...]:
    arns = tuple(a.strip() for a in raw.split(",") if a.strip())
    bad = [a for a in arns if not _KMS_KEY_ARN.match(a)]
    if bad:
        raise SettingsError(
            f"{resources.ENV_POLICY_SIGNING_KEY_ARNS}: not a KMS key ARN: {', '.join(bad)}"
        )
    if len(set(arns)) != len(arns):
        raise SettingsError(f"{resources.ENV_POLICY_SIGNING_KEY_ARNS} lists a key twice")
    return arns


def _registry_ttl(raw: str) -> float:
    if not raw.strip():
        return 60.0
    try:
        ttl = float(raw)
    except ValueError:
        ttl = -1.0
    if not 0.1 <= ttl <= 300:
        raise SettingsError(
            f"{resources.ENV_POLICY_SIGNING_REGISTRY_TTL_S} must be a number of seconds in "
            "[0.1, 300]"
        )
    return ttl


@lru_cache(maxsize=1)
def load_settings() -> Settings:
    """The process's settings (cached: a warm Lambda parses its environment once)."""
    return parse_settings(os.environ)
