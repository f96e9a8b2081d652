"""Notices to users as values: the settings admins keep (templates, mail domain,
remediation texts, validated on the way in) and the per-device marker of the state last
notified (``lambdas.usecases.notices`` has the rules of when a notice is sent).

Pure: values in, values out.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

PLACEHOLDERS = ("user", "device_id", "device_type", "state", "reason", "remediation", "time")

DEFAULT_SUBJECT = "Your $device_type is $state from company mail"
DEFAULT_BODY = """Hello $user,

Your device ($device_type, ID $device_id) is $state from company e-mail since $time.

Why: $reason

What to do: $remediation

This message was sent automatically by the mail gateway."""
DEFAULT_REMEDIATION = "Contact your IT help desk."


def _template(text: str) -> str:
    """A ``string.Template`` that uses only the known placeholders (``$$`` is a "$")."""
    known = ", ".join("$" + p for p in PLACEHOLDERS)
    unknown = sorted(set(string.Template(text).get_identifiers()) - set(PLACEHOLDERS))
    if unknown:
        raise ValueError(f"unknown placeholder {', '.join('$' + u for u in unknown)}; use {known}")
    try:
        string.Template(text).substitute(dict.fromkeys(PLACEHOLDERS, ""))
    except ValueError:
        raise ValueError(f"invalid placeholder (a $ not followed by a name); use {known}") from None
    return text


def _domain(text: str) -> str:
    domain = text.strip().lower().lstrip("@")
    if domain and ("." not in domain or any(c.isspace() or c in "@/\\<>,;" for c in domain)):
        raise ValueError("mail_domain must be a domain name like example.com")
    return domain


ClusterId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")]


class NoticeSettings(BaseModel):
    """What admins set (``PUT /console/v1/notices``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    # For user names without one: alice -> alice@<mail_domain>. Empty: such users get no
    # notice (the log says so).
    mail_domain: Annotated[str, Field(max_length=253), AfterValidator(_domain)] = ""
    subject: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_template)] = (
        DEFAULT_SUBJECT
    )
    body: Annotated[str, Field(min_length=1, max_length=5000), AfterValidator(_template)] = (
        DEFAULT_BODY
    )
    default_remediation: Annotated[str, Field(max_length=2000)] = DEFAULT_REMEDIATION
    # Per cluster: what users of that site should do.
    remediation: dict[ClusterId, Annotated[str, Field(max_length=2000)]] = Field(
        default_factory=dict, max_length=200
    )

    def remediation_for(self, cluster_id: str) -> str:
        return self.remediation.get(cluster_id) or self.default_remediation


@dataclass(frozen=True)
class NoticeMarker:
    email_device_key: str
    state: str  # the state last notified ("allow" once released)
    observed_at: str  # format_instant() of the request that changed it
    edge_id: str  # the change: observation key and event id
    outcome: str = ""  # "" not yet sent, "sent", "skipped: <why>"
    outcome_at: str = ""
