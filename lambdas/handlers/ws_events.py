"""The WebSocket route events API Gateway sends to the $connect, $disconnect and
$default Lambdas, parsed into the few fields the handlers use.

Lenient about what we do not read (API Gateway adds fields over time, and the local
runtime's stand-in sends only these), strict about what we do: a missing connection id
is a malformed event. Header names are case-folded (HTTP headers are case-insensitive,
and API Gateway passes them as the client spelled them)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class RequestContext(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    connection_id: str = Field(alias="connectionId", min_length=1, max_length=256)
    route_key: str = Field(default="", alias="routeKey")
    request_id: str = Field(default="", alias="requestId")
    disconnect_reason: str = Field(default="", alias="disconnectReason")


class WebSocketEvent(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    request_context: RequestContext = Field(alias="requestContext")
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, str] = Field(default_factory=dict, alias="queryStringParameters")
    body: str | None = None
    is_base64_encoded: bool = Field(default=False, alias="isBase64Encoded")

    @field_validator("headers", mode="before")
    @classmethod
    def _fold_headers(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, dict):
            return {str(k).lower(): v for k, v in value.items()}
        return value

    @field_validator("query", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def text(self) -> str | None:
        """The message body as text (API Gateway base64-encodes binary frames)."""
        if self.body is None or not self.is_base64_encoded:
            return self.body
        try:
            return base64.b64decode(self.body, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return None


def response(
    status: int, detail: str = "", headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """A route response: for $connect, any non-2xx refuses the connection."""
    result: dict[str, Any] = {"statusCode": status}
    if headers:
        result["headers"] = headers
    if detail:
        result["body"] = detail
    return result
