"""The values that flow through the gateway's pure core.

``parse`` (``eas_request``) turns an HTTP request line and headers into ``RequestFacts``;
``decide`` (``decision``) turns facts, a policy index and the time into a ``Decision``.
Both are frozen, slotted dataclasses: cheap to build on the request path, safe to share.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from seg_contract import Access

QueryForm = Literal["plain", "base64", "none"]


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What an EAS request says about itself (MS-ASHTTP 2.2.1.1).

    ``user`` and ``device_id`` are normalised (``seg_contract.identity``); ``raw_user`` is
    the name as presented, kept only for credential substitution and never logged. As
    ``parse`` returns them they are the query's claim; ``core.admission`` replaces them
    with the authenticated user before anything is decided.
    ``command`` is the command name ("Sync", "Ping", ...), "" for OPTIONS,
    "Autodiscover" for an Autodiscover request.
    """

    method: str
    command: str
    user: str
    device_id: str
    device_type: str
    protocol_version: str  # "14.1"; "" when the client sent none
    policy_key: str | None
    user_agent: str
    query_form: QueryForm
    raw_user: str = ""
    locale: int | None = None
    parameters: MappingProxyType[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one request.

    ``access`` is what the policy says. ``enforced`` is False when the cluster is in test
    (monitor-only) mode and the request is let through although ``access`` is not ALLOW.
    ``admitted`` is True when ``access`` is QUARANTINE but the command is one a
    quarantined device may still use (``decision.QUARANTINE_ADMITS``: Provision,
    FolderSync, Settings): the request goes through and is recorded as quarantined.
    ``rule`` names what decided ("entry", "rule:<id>", "user_block", "unknown_device",
    "fail_closed", ...), ``reason`` says why in words an admin understands.
    """

    access: Access
    reason: str
    rule: str
    enforced: bool = True
    admitted: bool = False

    @property
    def effective(self) -> Access:
        """What the gateway actually does with the request."""
        return Access.ALLOW if self.admitted or not self.enforced else self.access


def with_user(facts: RequestFacts, user: str, raw_user: str) -> RequestFacts:
    """``facts`` naming another user (``dataclasses.replace`` costs ~3 µs per request:
    it introspects the fields on every call)."""
    return RequestFacts(
        facts.method,
        facts.command,
        user,
        facts.device_id,
        facts.device_type,
        facts.protocol_version,
        facts.policy_key,
        facts.user_agent,
        facts.query_form,
        raw_user,
        facts.locale,
        facts.parameters,
    )
