"""The API Gateway Management API (``@connections``): push to, or close, one gateway
node's WebSocket connection. The endpoint comes from configuration
(``SEG_WS_MANAGEMENT_ENDPOINT``), never built from the request, so the same code talks
to AWS and to the local runtime's stand-in."""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from lambdas.domain.errors import ConnectionGone, PushFailed

if TYPE_CHECKING:
    from mypy_boto3_apigatewaymanagementapi import ApiGatewayManagementApiClient


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class ApiGatewayConnections:
    def __init__(
        self, endpoint_url: str, client: ApiGatewayManagementApiClient | None = None
    ) -> None:
        if client is None and not endpoint_url:
            raise ValueError("no WebSocket management endpoint configured")
        self._client: ApiGatewayManagementApiClient = client or boto3.client(
            "apigatewaymanagementapi", endpoint_url=endpoint_url
        )

    def post(self, connection_id: str, data: bytes) -> None:
        try:
            self._client.post_to_connection(ConnectionId=connection_id, Data=data)
        except ClientError as exc:
            if _code(exc) == "GoneException":
                raise ConnectionGone(connection_id) from exc
            raise PushFailed(f"{_code(exc) or 'error'} posting to {connection_id}") from exc
        except BotoCoreError as exc:
            raise PushFailed(f"{type(exc).__name__} posting to {connection_id}") from exc

    def disconnect(self, connection_id: str) -> None:
        try:
            self._client.delete_connection(ConnectionId=connection_id)
        except ClientError as exc:
            if _code(exc) == "GoneException":
                return
            raise PushFailed(f"{_code(exc) or 'error'} closing {connection_id}") from exc
        except BotoCoreError as exc:
            raise PushFailed(f"{type(exc).__name__} closing {connection_id}") from exc
