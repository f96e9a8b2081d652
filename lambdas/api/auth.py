"""The three kinds of callers and how each proves who it is.

- Device Services (the MDM): ``Authorization: Bearer <key>``; the key's sha256 hex is
  configured (``SEG_DEVICE_SERVICES_KEY_SHA256``).
- Gateways: ``Authorization: Bearer segc_<cluster>_<key>_<secret>``, checked against the
  cluster's stored hash (``usecases.gateway_auth``).
- Console admins: with ``SEG_CONSOLE_AUTH=jwt`` API Gateway's JWT authorizer has already
  validated a Cognito token and Mangum hands us its claims
  (``scope["aws.event"]["requestContext"]["authorizer"]["jwt"]["claims"]``); with
  ``static`` a bearer token whose sha256 hex is ``SEG_CONSOLE_TOKEN_SHA256``.

Every secret comparison is constant time (``hmac.compare_digest`` on equal-length hex
digests). A credential of one kind never opens another kind's routes: the MDM key and the
admin token are not gateway credentials and hash to other values.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from lambdas.api.deps import AuthConfig, auth_config, credential_store
from lambdas.ports import ClusterCredentialStore
from lambdas.usecases.connections import validate_node_id
from lambdas.usecases.errors import Unauthenticated
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
class ConsoleAdmin:
    subject: str


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
    config: Annotated[AuthConfig, Depends(auth_config)],
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


def console_admin(
    request: Request,
    config: Annotated[AuthConfig, Depends(auth_config)],
    authorization: AuthorizationHeader = None,
) -> ConsoleAdmin:
    if config.console_auth == "jwt":
        claims = _jwt_claims(request)
        subject = claims.get("sub") or claims.get("username") or claims.get("cognito:username")
        if not subject:
            raise Unauthenticated("no validated console identity (JWT claims missing)")
        label = claims.get("email") or claims.get("cognito:username") or subject
        return ConsoleAdmin(subject=str(label))
    token = bearer_token(authorization)
    if not _matches_sha256(token, config.console_token_sha256):
        raise Unauthenticated("invalid console token")
    return ConsoleAdmin(subject="admin")


def gateway(
    credentials: Annotated[ClusterCredentialStore, Depends(credential_store)],
    authorization: AuthorizationHeader = None,
    node_id: Annotated[str | None, Header(alias=NODE_ID_HEADER)] = None,
) -> GatewayCaller:
    principal = authenticate_gateway(gateway_token(authorization), credentials)
    # Optional on HTTP routes (the body's events name their node); when sent, it must be
    # a node id the WebSocket side would accept.
    node = validate_node_id(node_id.strip()) if node_id else ""
    return GatewayCaller(principal=principal, node_id=node)


# The callers as route parameters, spelled once for every router.
Admin = Annotated[ConsoleAdmin, Depends(console_admin)]
Gateway = Annotated[GatewayCaller, Depends(gateway)]
DeviceServices = Annotated[DeviceServicesCaller, Depends(device_services)]
