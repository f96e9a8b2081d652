"""Who is asking: the user the mail server will authenticate, or a refusal.

``identify`` turns what the ``Authorization`` header presents (``authentication.py``),
what the client connection already proved (``Binding``) and the cluster's settings into
an ``Identity`` or an ``Unidentified`` refusal. The query's ``User=`` names the user
only when the cluster explicitly allows it for identities the gateway cannot verify
(``unverifiable_identity = device_only``); otherwise it is never believed.

===============================  ==================================================
presented                        identity
===============================  ==================================================
nothing, connection not bound    refused 401 (the device is asked to authenticate)
nothing, bound by NTLM           the bound user (IIS serves a connection authenticated
                                 by NTLM without further credentials)
Basic (well-formed)              its user: the account IIS logs on with that password
NTLM / Negotiate NEGOTIATE leg   handshake: forwarded, carries no identity (the
                                 gateway relays only the server's 401 challenge)
NTLM / Negotiate AUTHENTICATE    its ``DOMAIN\\user`` (bound to the connection once
                                 the server accepts it)
NTLM AUTHENTICATE, anonymous     refused 401
Bearer                           the configured claim of a verified token, else 401
Negotiate with Kerberos, other   ``refuse`` (default): 401; ``device_only``: the
schemes                          query's user, on a device entry of that user only
malformed (any scheme)           refused 401, never downgraded to another scheme
===============================  ==================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from onprem_gateway.core.authentication import (
    AuthorizationError,
    Presented,
    Scheme,
    read_authorization,
)
from onprem_gateway.core.bearer import BearerError
from seg_contract import UnverifiableIdentity

# Rules named in access events for requests refused before any policy decision.
RULE_AUTH_REQUIRED = "auth_required"
RULE_AUTH_MALFORMED = "auth_malformed"
RULE_AUTH_REFUSED = "auth_refused"
RULE_BEARER = "bearer"
RULE_UNVERIFIABLE = "unverifiable_identity"

VerifyBearer = Callable[[str], str]  # token -> user; raises BearerError


class Source(StrEnum):
    """Where the identity comes from."""

    BASIC = "basic"
    NTLM = "ntlm"  # an AUTHENTICATE message (NTLM, or inside Negotiate)
    BEARER = "bearer"
    CONNECTION = "connection"  # the connection's NTLM identity, no credentials sent
    UNVERIFIED = "unverified"  # the query's user, under device_only


@dataclass(frozen=True, slots=True)
class Binding:
    """What a client connection proved with connection-bound authentication: the user
    of an NTLM AUTHENTICATE the mail server accepted (``verified``), or, for Kerberos
    under ``device_only``, only that the connection is authenticated as someone the
    gateway cannot name (``verified`` False: each request is judged by its query)."""

    user: str
    verified: bool


@dataclass(frozen=True, slots=True)
class Identity:
    source: Source
    user: str  # as presented ("DOMAIN\\user", "user@domain"); normalise before lookups
    presented: Presented | None = None

    @property
    def verified(self) -> bool:
        return self.source is not Source.UNVERIFIED


@dataclass(frozen=True, slots=True)
class Handshake:
    """An NTLM NEGOTIATE leg: forward it so the server can answer its CHALLENGE."""

    presented: Presented


@dataclass(frozen=True, slots=True)
class Unidentified:
    """Refused before any decision: answer ``status`` (401 with the gateway's
    challenges) and say ``reason``. ``bearer_error``: the RFC 6750 error code to put in
    the Bearer challenge ("invalid_token"), "" when it was not a Bearer problem."""

    status: int
    reason: str
    rule: str
    bearer_error: str = ""


# One return per row of the module table: the table is the specification.
def identify(  # noqa: PLR0911
    authorization: str | None,
    *,
    bound: Binding | None,
    query_user: str,
    unverifiable: UnverifiableIdentity,
    verify_bearer: VerifyBearer,
) -> Identity | Handshake | Unidentified:
    """The identity of one request (see the module table)."""
    try:
        presented = read_authorization(authorization)
    except AuthorizationError as exc:
        return Unidentified(401, f"malformed Authorization: {exc.reason}", RULE_AUTH_MALFORMED)
    if presented is None:
        if bound is None:
            return Unidentified(401, "authentication required", RULE_AUTH_REQUIRED)
        if bound.verified:
            return Identity(Source.CONNECTION, bound.user)
        return _unverified(query_user, unverifiable, None)
    scheme = presented.scheme
    if scheme is Scheme.BASIC:
        return Identity(Source.BASIC, presented.user, presented)
    if scheme is Scheme.BEARER:
        try:
            return Identity(Source.BEARER, verify_bearer(presented.token), presented)
        except BearerError as exc:
            return Unidentified(401, exc.reason, RULE_BEARER, bearer_error="invalid_token")
    if presented.ntlm is not None:
        if presented.handshake:
            return Handshake(presented)
        if presented.ntlm.anonymous:
            return Unidentified(401, "anonymous NTLM logon is not accepted", RULE_AUTH_REFUSED)
        return Identity(Source.NTLM, presented.user, presented)
    return _unverified(query_user, unverifiable, presented)


def _unverified(
    query_user: str, unverifiable: UnverifiableIdentity, presented: Presented | None
) -> Identity | Unidentified:
    what = (
        "a Kerberos ticket"
        if presented is None or presented.scheme is Scheme.NEGOTIATE
        else (f"the {presented.other_scheme or presented.scheme.value} scheme")
    )
    if unverifiable is not UnverifiableIdentity.DEVICE_ONLY:
        return Unidentified(
            401,
            f"the gateway cannot verify the user of {what}; use Basic, NTLM or a Bearer "
            "token (the cluster refuses unverifiable identities)",
            RULE_UNVERIFIABLE,
        )
    if not query_user:
        return Unidentified(
            401,
            f"the user of {what} cannot be verified and the query names none",
            RULE_UNVERIFIABLE,
        )
    return Identity(Source.UNVERIFIED, query_user, presented)
