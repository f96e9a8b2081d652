"""The three kinds of callers and how each proves who it is.

- Device Services (the MDM): ``Authorization: Bearer <key>``; the key's sha256 hex is
  configured (``SEG_DEVICE_SERVICES_KEY_SHA256``).
- Gateways: ``Authorization: Bearer segc_<cluster>_<key>_<secret>``, checked against the
  cluster's stored hash (``usecases.gateway_auth``).
- Console users: with ``SEG_CONSOLE_AUTH=jwt`` API Gateway's JWT authorizer has already
  validated a Cognito token and Mangum hands us its claims
  (``scope["aws.event"]["requestContext"]["authorizer"]["jwt"]["claims"]``), whose
  ``cognito:groups`` give the role; with ``static`` a bearer token whose sha256 hex is
  one of the configured role tokens (``SEG_CONSOLE_TOKEN_SHA256`` for admin, and the
  operator and viewer ones).

Console routes say which role they need with exactly one of ``Viewer``, ``Operator`` or
``Admin`` (or ``OperatorAudit`` / ``AdminAudit``, which add the audit recorder to the same
check): the one place a role is enforced. Too small a role is a 403 that names the role
needed.

Every secret comparison is constant time (``hmac.compare_digest`` on equal-length hex
digests). A credential of one kind never opens another kind's routes: the MDM key and the
admin token are not gateway credentials and hash to other values.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from lambdas.api.deps import Audit, Auth, Credentials, Now
from lambdas.domain.errors import Forbidden, Unauthenticated
from lambdas.domain.roles import GROUPS, Role, parse_groups, role_of_groups
from lambdas.ports import AuditLog
from lambdas.usecases.audit import AuditTrail
from lambdas.usecases.connections import validate_node_id
from lambdas.usecases.gateway_auth import (
    GatewayPrincipal,
    authenticate_gateway,
    bearer_token,
    gateway_token,
)
from seg_contract.http import NODE_ID_HEADER


@dataclass(frozen=True)
class DeviceServicesCaller:
    pass


@dataclass(frozen=True)
class ConsoleUser:
    subject: str
    role: Role


@dataclass(frozen=True)
class GatewayCaller:
    principal: GatewayPrincipal
    node_id: str

    @property
    def cluster_id(self) -> str:
        return self.principal.cluster_id


def _matches_sha256(token: str, expected_hex: str) -> bool:
    digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
    # Both sides are 64 hex characters, so compare_digest's time does not depend on
    # where they differ; an unconfigured key never matches.
    return bool(expected_hex) and hmac.compare_digest(digest, expected_hex.strip().lower())


AuthorizationHeader = Annotated[str | None, Header(alias="Authorization")]


def device_services(
    config: Auth,
    authorization: AuthorizationHeader = None,
) -> DeviceServicesCaller:
    token = bearer_token(authorization)
    if not _matches_sha256(token, config.device_services_key_sha256()):
        raise Unauthenticated("invalid Device Services key")
    return DeviceServicesCaller()


def _jwt_claims(request: Request) -> dict[str, Any]:
    event = request.scope.get("aws.event") or {}
    claims = (
        event.get("requestContext", {}).get("authorizer", {}).get("jwt", {}).get("claims")
        if isinstance(event, dict)
        else None
    )
    return claims if isinstance(claims, dict) else {}


def console_user(
    request: Request,
    config: Auth,
    authorization: AuthorizationHeader = None,
) -> ConsoleUser:
    """Who calls (401 when nobody we know), and the role they hold (403 when none)."""
    if config.console_auth == "jwt":
        claims = _jwt_claims(request)
        subject = claims.get("sub") or claims.get("username") or claims.get("cognito:username")
        if not subject:
            raise Unauthenticated("no validated console identity (JWT claims missing)")
        label = str(claims.get("email") or claims.get("cognito:username") or subject)
        role = role_of_groups(parse_groups(claims.get("cognito:groups")))
        if role is None:
            raise Forbidden(
                f"{label} is in no console group: an administrator adds the user to "
                f"one of the user pool's groups {', '.join(GROUPS)}"
            )
        return ConsoleUser(subject=label, role=role)
    token = bearer_token(authorization)
    # Every configured token is compared, so the time taken does not tell which role's
    # token came closest.
    matched = [role for role, digest in config.console_tokens if _matches_sha256(token, digest)]
    if not matched:
        raise Unauthenticated("invalid console token")
    role = max(matched)
    return ConsoleUser(subject=role.label, role=role)


def _needs(needed: Role, user: ConsoleUser) -> ConsoleUser:
    if not user.role.may(needed):
        raise Forbidden(
            f"this needs the {needed.label} role; {user.subject} holds {user.role.label}"
        )
    return user


# One dependency per role (FastAPI runs a dependency once per request, by identity).
def viewer(user: Annotated[ConsoleUser, Depends(console_user)]) -> ConsoleUser:
    return _needs(Role.VIEWER, user)


def operator(user: Annotated[ConsoleUser, Depends(console_user)]) -> ConsoleUser:
    return _needs(Role.OPERATOR, user)


def admin(user: Annotated[ConsoleUser, Depends(console_user)]) -> ConsoleUser:
    return _needs(Role.ADMIN, user)


ROLE_DEPENDENCIES = {Role.VIEWER: viewer, Role.OPERATOR: operator, Role.ADMIN: admin}


def gateway(
    credentials: Credentials,
    authorization: AuthorizationHeader = None,
    node_id: Annotated[str | None, Header(alias=NODE_ID_HEADER)] = None,
) -> GatewayCaller:
    principal = authenticate_gateway(gateway_token(authorization), credentials)
    # Optional on HTTP routes (the body's events name their node); when sent, it must be
    # a node id the WebSocket side would accept.
    node = validate_node_id(node_id.strip()) if node_id else ""
    return GatewayCaller(principal=principal, node_id=node)


REASON_HEADER = "X-SEG-Reason"
ReasonHeader = Annotated[
    str | None,
    Header(
        alias=REASON_HEADER,
        max_length=512,
        description="Why (kept in the audit trail with the action)",
    ),
]


def _trail(user: ConsoleUser, log: AuditLog, now: datetime, reason: str | None) -> AuditTrail:
    return AuditTrail(log=log, actor=user.subject, role=user.role, now=now, reason=reason or "")


def operator_audit(
    user: Annotated[ConsoleUser, Depends(operator)],
    log: Audit,
    now: Now,
    reason: ReasonHeader = None,
) -> AuditTrail:
    """An operator's action, with the audit trail it is recorded in."""
    return _trail(user, log, now, reason)


def admin_audit(
    user: Annotated[ConsoleUser, Depends(admin)],
    log: Audit,
    now: Now,
    reason: ReasonHeader = None,
) -> AuditTrail:
    """An admin's action, with the audit trail it is recorded in."""
    return _trail(user, log, now, reason)


# The callers as route parameters, spelled once for every router.
Viewer = Annotated[ConsoleUser, Depends(viewer)]
Operator = Annotated[ConsoleUser, Depends(operator)]
Admin = Annotated[ConsoleUser, Depends(admin)]
OperatorAudit = Annotated[AuditTrail, Depends(operator_audit)]
AdminAudit = Annotated[AuditTrail, Depends(admin_audit)]
Gateway = Annotated[GatewayCaller, Depends(gateway)]
DeviceServices = Annotated[DeviceServicesCaller, Depends(device_services)]
