"""What to do with one request head, as a value: route it, check its Host, identify and
decide it (``core.admission.admit``), and later what a device-password check means.

The flow (``proxy/flow.py``) calls ``admit_request`` once a request becomes its
connection's current one and executes the outcome; nothing here writes, counts or logs:

- ``Answer``: answer it ourselves, nothing recorded (routing, the Host check);
- ``Reject``: record a rejected access event and answer (malformed, no accepted
  identity, a wrong device password);
- ``Block``: the policy refuses it: record the decision, answer ``block_responses``';
- ``ForwardHeadOnly``: an NTLM NEGOTIATE leg, forwarded without its body and without a
  decision (only the server's 401 CHALLENGE may come back);
- ``VerifyPassword``: admitted; its device password (PW1) is checked at the edge (scrypt
  may run in a thread), and ``after_password`` turns that check's result into a
  ``Forward``, an ``Answer`` (503: this node cannot substitute) or a ``Reject`` (401).

Routes: ``/Microsoft-Server-ActiveSync`` (POST and OPTIONS, MS-ASHTTP 2.2.1.1.1; any
other method is 405), ``/autodiscover/autodiscover.xml`` in any case (GET and POST,
decided by user like OPTIONS), everything else 404. When the gateway has public names,
a request without Host is 400 and one for another name 421 (RFC 9110 15.5.20), before
anything else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from onprem_gateway.core.admission import Admitted, Blocked, HandshakeLeg, Refused, admit
from onprem_gateway.core.authentication import Presented
from onprem_gateway.core.credentials import Substitution
from onprem_gateway.core.facts import Decision, RequestFacts
from onprem_gateway.core.identity import Binding, VerifyBearer
from onprem_gateway.core.policy_index import PolicyIndex
from seg_contract import UnverifiableIdentity

Headers = tuple[tuple[bytes, bytes], ...]

EAS_PATH = b"/microsoft-server-activesync"
AUTODISCOVER_PATH = b"/autodiscover/autodiscover.xml"
_EAS_METHODS = (b"POST", b"OPTIONS")
_AUTODISCOVER_METHODS = (b"POST", b"GET")
# The request headers ``core.admission.admit`` reads.
_ADMISSION_HEADERS = (
    (b"user-agent", "user-agent"),
    (b"authorization", "authorization"),
    (b"ms-asprotocolversion", "ms-asprotocolversion"),
    (b"x-ms-policykey", "x-ms-policykey"),
)
REALM = b'Basic realm="Exchange ActiveSync"'
BASIC_CHALLENGE: Headers = ((b"WWW-Authenticate", REALM),)
RULE_PW1 = "pw1"


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer the device ourselves with ``reason`` as a plain-text body."""

    status: int
    reason: str
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse it: a rejected access event (``refused``'s rule and reason), then its
    status with ``headers``."""

    refused: Refused
    headers: Headers = ()
    # The request counter's label; "" for a password check (counted when admitted).
    counted_as: str = ""
    limited: bool = False  # refused by the wrong-password limiter, without hashing


@dataclass(frozen=True, slots=True)
class Block:
    """The policy refuses it: record the decision, answer the blocked response."""

    facts: RequestFacts
    decision: Decision
    status: int
    body: bytes  # WBXML or empty: sent without a Content-Type of ours
    headers: Headers


@dataclass(frozen=True, slots=True)
class ForwardHeadOnly:
    """An NTLM NEGOTIATE leg: no identity yet, nothing decided, nothing recorded."""

    facts: RequestFacts
    handshake: Presented


# Admitted: check its device password at the edge, then ``after_password``. The
# admission's own value, passed on as it is (one allocation fewer per request).
VerifyPassword = Admitted


@dataclass(frozen=True, slots=True)
class Forward:
    """Send it upstream, with ``authorization`` in place of the device's (PW2) when
    it is not None."""

    authorization: bytes | None


HeadOutcome = Answer | Reject | Block | ForwardHeadOnly | VerifyPassword
PasswordOutcome = Forward | Answer | Reject

FORWARD_UNCHANGED = Forward(None)

_NOT_FOUND = Answer(404, "not found: this gateway serves Exchange ActiveSync")
_NO_HOST = Answer(400, "a Host header is required")
_OTHER_HOST = Answer(421, "this gateway does not serve that host name")
_EAS_NOT_ALLOWED = Answer(405, "method not allowed", ((b"Allow", b"OPTIONS, POST"),))
_AUTODISCOVER_NOT_ALLOWED = Answer(405, "method not allowed", ((b"Allow", b"GET, POST"),))


def admit_request(
    method: bytes,
    target: bytes,
    lookup: Mapping[bytes, bytes],
    *,
    public_hosts: frozenset[str],
    bound: Binding | None,
    policy: PolicyIndex,
    now: float,
    verify_bearer: VerifyBearer,
) -> HeadOutcome:
    """What to do with a request head. ``lookup`` answers lower-case header names;
    ``bound`` is the identity the connection proved (NTLM); ``now`` is wall-clock time."""
    routed = route(method, target, lookup, public_hosts)
    if type(routed) is Answer:
        return routed
    hdrs = {
        name: lookup[key].decode("latin-1") for key, name in _ADMISSION_HEADERS if key in lookup
    }
    outcome = admit(
        method.decode("ascii"),
        target.decode("latin-1"),
        hdrs,
        autodiscover=routed is AUTODISCOVER,
        bound=bound,
        policy=policy,
        now=now,
        verify_bearer=verify_bearer,
    )
    if isinstance(outcome, Admitted):
        return outcome
    if isinstance(outcome, Blocked):
        block = outcome.response
        return Block(outcome.facts, outcome.decision, block.status, block.body, raw(block.headers))
    if isinstance(outcome, HandshakeLeg):
        return ForwardHeadOnly(outcome.facts, outcome.handshake.presented)
    return _refused(outcome, policy)


class Route(Enum):
    EAS = "eas"
    AUTODISCOVER = "autodiscover"


EAS, AUTODISCOVER = Route.EAS, Route.AUTODISCOVER


def route(
    method: bytes, target: bytes, lookup: Mapping[bytes, bytes], public_hosts: frozenset[str]
) -> Route | Answer:
    """Which endpoint a request is for, or the answer when it is for none we serve."""
    if public_hosts:
        host = lookup.get(b"host")
        if host is None:
            return _NO_HOST
        if host_name(host) not in public_hosts:
            return _OTHER_HOST
    path = target.split(b"?", 1)[0].lower()
    if path == EAS_PATH:
        return EAS if method in _EAS_METHODS else _EAS_NOT_ALLOWED
    if path == AUTODISCOVER_PATH:
        return AUTODISCOVER if method in _AUTODISCOVER_METHODS else _AUTODISCOVER_NOT_ALLOWED
    return _NOT_FOUND


def _refused(refused: Refused, policy: PolicyIndex) -> Reject:
    facts = refused.facts
    return Reject(
        refused,
        challenges(policy, refused.bearer_error) if refused.challenge else (),
        counted_as=(facts.command or facts.method) if facts else refused.rule,
    )


def challenges(policy: PolicyIndex, bearer_error: str = "") -> Headers:
    """The schemes the gateway can verify for this cluster, strongest first as clients
    pick the first they support (RFC 9110 11.6.1): Bearer when issuers are configured,
    NTLM, Negotiate only when unverifiable identities may be admitted, Basic last."""
    settings = policy.settings
    out: list[tuple[bytes, bytes]] = []
    if settings.bearer_issuers:
        value = b"Bearer"
        if bearer_error:
            value += b' error="' + bearer_error.encode("ascii") + b'"'
        out.append((b"WWW-Authenticate", value))
    out.append((b"WWW-Authenticate", b"NTLM"))
    if settings.unverifiable_identity is UnverifiableIdentity.DEVICE_ONLY:
        out.append((b"WWW-Authenticate", b"Negotiate"))
    out.append((b"WWW-Authenticate", REALM))
    return tuple(out)


def after_password(
    result: bytes | Substitution | None, facts: RequestFacts, *, retry_after_s: int
) -> PasswordOutcome:
    """What the device-password check's result means (``proxy/substitution.py``): None
    (no substitution for this user) or the new Authorization value: forward it."""
    if result is None:
        return FORWARD_UNCHANGED
    if isinstance(result, bytes):
        return Forward(result)
    if result is Substitution.UNAVAILABLE:
        return Answer(
            503,
            "credential substitution is unavailable on this node",
            ((b"Retry-After", str(retry_after_s).encode()),),
        )
    # A wrong device password (PW1) is never forwarded: the upstream would count it
    # against the real account's lockout. 401 + Basic challenge (MS-ASHTTP 3.1.5.2).
    limited = result is Substitution.LIMITED
    if limited:
        reason = "too many wrong device passwords for this user or device; try later"
    else:
        reason = "wrong device password"
    return Reject(Refused(401, reason, RULE_PW1, facts), BASIC_CHALLENGE, limited=limited)


def host_name(host: bytes) -> str:
    """The name in a Host header value, without port, lower-case, no trailing dot
    (``[::1]:443`` -> ``::1``)."""
    text = host.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    if text.count(":") == 1:
        text = text.split(":", 1)[0]
    return text.rstrip(".")


def raw(pairs: Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]) -> Headers:
    """A block answer's headers as bytes pairs, minus framing (the data path sets
    Content-Length and Connection)."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    out = []
    for name, value in items:
        name_b = name if isinstance(name, bytes) else str(name).encode("latin-1")
        if name_b.lower() in (b"content-length", b"transfer-encoding", b"connection"):
            continue
        value_b = value if isinstance(value, bytes) else str(value).encode("latin-1")
        out.append((name_b, value_b))
    return tuple(out)
