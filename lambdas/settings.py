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


@dataclass(frozen=True)
class Settings:
    tables: Mapping[str, str]  # table id -> physical name
    queues: Mapping[str, str]  # queue id -> URL
    websocket_management_endpoint: str  # "" when this deployment has no WebSocket API
    console_auth: str  # "jwt" | "static"
    console_token_sha256: str
    device_services_key_sha256: str
    device_services_secret_arn: str
    # The stack's policy signing keys (KMS key ARNs); () when this deployment has none.
    policy_signing_key_arns: tuple[str, ...] = ()

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
    return Settings(
        policy_signing_key_arns=signing_keys,
        tables={t.id: env[t.env] for t in resources.TABLES},
        queues={q.id: env[q.env] for q in resources.QUEUES},
        websocket_management_endpoint=env.get(resources.ENV_WEBSOCKET_MANAGEMENT_ENDPOINT, ""),
        console_auth=console_auth,
        console_token_sha256=env.get(resources.ENV_CONSOLE_TOKEN_SHA256, ""),
        device_services_key_sha256=env.get(resources.ENV_DEVICE_SERVICES_KEY_SHA256, ""),
        device_services_secret_arn=env.get(resources.ENV_DEVICE_SERVICES_SECRET_ARN, ""),
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


@lru_cache(maxsize=1)
def load_settings() -> Settings:
    """The process's settings (cached: a warm Lambda parses its environment once)."""
    return parse_settings(os.environ)
