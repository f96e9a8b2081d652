"""The one place typed errors become HTTP answers.

Every error body is ``{"detail": "<clear reason>"}``; validation errors add pydantic's
list under ``"errors"``. Routes and use cases raise typed errors
(``lambdas.domain.errors``) and never build an HTTP error
themselves.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lambdas.domain.errors import (
    Conflict,
    Forbidden,
    Gone,
    InvalidInput,
    NotFound,
    StorageError,
    Unauthenticated,
    UseCaseError,
)
from lambdas.usecases.gateway_auth import CREDENTIAL_REJECTIONS
from seg_contract.http import CREDENTIAL_REJECTED_HEADER, CREDENTIAL_REJECTED_VALUE

logger = logging.getLogger(__name__)

STATUS: dict[type[UseCaseError], int] = {
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    Gone: 410,
    InvalidInput: 422,
    StorageError: 503,
}


def status_of(error: UseCaseError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def _where(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc) or "request"


def _validation_detail(errors: list[dict[str, Any]]) -> str:
    if not errors:
        return "invalid request"
    first = errors[0]
    detail = f"{_where(first.get('loc', ()))}: {first.get('msg', 'invalid')}"
    if len(errors) > 1:
        detail += f" (and {len(errors) - 1} more)"
    return detail


async def _use_case_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UseCaseError)
    status = status_of(exc)
    if status >= 500:
        logger.error("use case failed: %s", exc.detail, exc_info=exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if isinstance(exc, CREDENTIAL_REJECTIONS):
        headers[CREDENTIAL_REJECTED_HEADER] = CREDENTIAL_REJECTED_VALUE
    return JSONResponse({"detail": exc.detail}, status_code=status, headers=headers or None)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {k: v for k, v in error.items() if k in {"type", "loc", "msg"}} for error in exc.errors()
    ]
    return JSONResponse(
        {"detail": _validation_detail(errors), "errors": jsonable_encoder(errors)},
        status_code=422,
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else "request failed"
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


def install(app: FastAPI) -> None:
    app.add_exception_handler(UseCaseError, _use_case_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
