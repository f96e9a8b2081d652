"""Deployment parameters from CDK context, with defaults, validated once.

Every key is optional (``cdk synth`` with no context works); override with
``cdk deploy -c stage_name=prod -c alarm_email=ops@example.com`` or in ``cdk.json``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aws_cdk import aws_logs as logs
from constructs import Node


class ConfigError(ValueError):
    """A context parameter has a value the stack cannot use."""


class BundleTarget(StrEnum):
    # AWS Lambda: arm64 wheels for the function runtime's Python (the default).
    LAMBDA = "lambda"
    # The machine running synth: wheels for this interpreter and CPU, for local
    # emulators that run the handlers in a local Python (tests/e2e with ministack).
    HOST = "host"


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_STAGE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_DOMAIN_PREFIX_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_KEY_LABEL_RE = re.compile(r"^[A-Za-z0-9]{1,16}$")
MAX_SIGNING_KEYS = 3  # active, next and previous during a rotation
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_RETENTION_DAYS = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1096: logs.RetentionDays.THREE_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    2192: logs.RetentionDays.SIX_YEARS,
    2557: logs.RetentionDays.SEVEN_YEARS,
    2922: logs.RetentionDays.EIGHT_YEARS,
    3288: logs.RetentionDays.NINE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}


@dataclass(frozen=True)
class StackConfig:
    stage_name: str = "v1"  # the WebSocket API stage (the HTTP API uses $default)
    alarm_email: str | None = None  # subscribed to the alarm topic when given
    log_retention_days: int = 90
    log_level: str = "INFO"
    retain_data: bool = True  # tables survive `cdk destroy` unless this is false
    throttle_rate: int = 200  # HTTP API stage: steady requests/s
    throttle_burst: int = 400
    bundle_target: BundleTarget = BundleTarget.LAMBDA
    auth_domain_prefix: str | None = None  # Cognito hosted UI; default seg-console-<account>
    # Only for local emulators: where execute-api URLs live instead of
    # https://{api_id}.execute-api.{region}.amazonaws.com (ministack:
    # http://127.0.0.1:<port>/_aws/execute-api).
    execute_api_base_url: str | None = None
    # The SES identity notices to users come from (verified in SES beforehand); None:
    # notices are not sent (the console says so).
    notice_sender: str | None = None
    # Labels of the policy signing keys (one asymmetric KMS key each). A rotation adds a
    # label, then (once the old key is retired in the console) removes the old one.
    signing_keys: tuple[str, ...] = ("1",)

    @property
    def log_retention(self) -> logs.RetentionDays:
        return _RETENTION_DAYS[self.log_retention_days]


CONTEXT_KEYS = (
    "stage_name",
    "alarm_email",
    "log_retention_days",
    "log_level",
    "retain_data",
    "throttle_rate",
    "throttle_burst",
    "bundle_target",
    "auth_domain_prefix",
    "execute_api_base_url",
    "notice_sender",
    "signing_keys",
)


def _as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "1", "yes"}:
        return True
    if text in {"false", "0", "no"}:
        return False
    raise ConfigError(f"context {key}={value!r}: expected true or false")


def _as_int(key: str, value: Any, minimum: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"context {key}={value!r}: expected an integer") from None
    if number < minimum:
        raise ConfigError(f"context {key}={value!r}: must be at least {minimum}")
    return number


def _signing_keys(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    labels = tuple(str(item).strip() for item in items if str(item).strip())
    if not 1 <= len(labels) <= MAX_SIGNING_KEYS:
        raise ConfigError(
            f"context signing_keys={value!r}: list 1 to {MAX_SIGNING_KEYS} key labels"
        )
    bad = [label for label in labels if not _KEY_LABEL_RE.match(label)]
    if bad:
        raise ConfigError(f"context signing_keys={value!r}: labels are 1-16 letters or digits")
    if len(set(labels)) != len(labels):
        raise ConfigError(f"context signing_keys={value!r}: a label is listed twice")
    return labels


def parse_config(context: dict[str, Any]) -> StackConfig:
    """Validate raw context values (strings from ``-c``, JSON values from cdk.json)."""
    defaults = StackConfig()
    raw = {k: v for k, v in context.items() if k in CONTEXT_KEYS and v not in (None, "")}

    stage = str(raw.get("stage_name", defaults.stage_name))
    if not _STAGE_RE.match(stage):
        raise ConfigError(f"context stage_name={stage!r}: use 1-64 letters, digits, - or _")

    email = raw.get("alarm_email")
    if email is not None and not _EMAIL_RE.match(str(email)):
        raise ConfigError(f"context alarm_email={email!r}: not an e-mail address")

    retention = _as_int(
        "log_retention_days", raw.get("log_retention_days", defaults.log_retention_days), 1
    )
    if retention not in _RETENTION_DAYS:
        allowed = ", ".join(str(d) for d in sorted(_RETENTION_DAYS))
        raise ConfigError(f"context log_retention_days={retention}: CloudWatch allows {allowed}")

    level = str(raw.get("log_level", defaults.log_level)).upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"context log_level={level!r}: use one of {', '.join(LOG_LEVELS)}")

    target = str(raw.get("bundle_target", defaults.bundle_target.value))
    if target not in {t.value for t in BundleTarget}:
        raise ConfigError(f"context bundle_target={target!r}: use 'lambda' or 'host'")

    prefix = raw.get("auth_domain_prefix")
    if prefix is not None and not _DOMAIN_PREFIX_RE.match(str(prefix)):
        raise ConfigError(
            f"context auth_domain_prefix={prefix!r}: use lowercase letters, digits and -"
        )

    base_url = raw.get("execute_api_base_url")
    if base_url is not None and not re.match(r"^https?://[^\s/]+(/[^\s]*)?$", str(base_url)):
        raise ConfigError(f"context execute_api_base_url={base_url!r}: not an http(s) URL")

    sender = raw.get("notice_sender")
    if sender is not None and not _EMAIL_RE.match(str(sender)):
        raise ConfigError(f"context notice_sender={sender!r}: not an e-mail address")

    return StackConfig(
        notice_sender=str(sender) if sender is not None else None,
        signing_keys=_signing_keys(raw.get("signing_keys", ",".join(defaults.signing_keys))),
        execute_api_base_url=str(base_url).rstrip("/") if base_url is not None else None,
        auth_domain_prefix=str(prefix) if prefix is not None else None,
        stage_name=stage,
        alarm_email=str(email) if email is not None else None,
        log_retention_days=retention,
        log_level=level,
        retain_data=_as_bool("retain_data", raw.get("retain_data", defaults.retain_data)),
        throttle_rate=_as_int("throttle_rate", raw.get("throttle_rate", defaults.throttle_rate), 1),
        throttle_burst=_as_int(
            "throttle_burst", raw.get("throttle_burst", defaults.throttle_burst), 1
        ),
        bundle_target=BundleTarget(target),
    )


def config_from_node(node: Node) -> StackConfig:
    return parse_config({key: node.try_get_context(key) for key in CONTEXT_KEYS})
