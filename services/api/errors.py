"""The API's one error shape: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from .backend import StoreUnavailable, Unavailable


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] = []


class ErrorResponse(BaseModel):
    error: ErrorBody


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details = details or []
        self.headers = headers


def _response(status: int, code: str, message: str, details: list[dict[str, Any]],
              headers: dict[str, str] | None = None) -> JSONResponse:  # fmt: skip
    body = ErrorResponse(error=ErrorBody(code=code, message=message, details=details))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


async def api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _response(exc.status, exc.code, exc.message, exc.details, exc.headers)


async def unavailable_error(_: Request, exc: Exception) -> JSONResponse:
    """503 with Retry-After: a dependency (the store, the bus) is down for now."""
    assert isinstance(exc, Unavailable)
    code = "store_unavailable" if isinstance(exc, StoreUnavailable) else "unavailable"
    return _response(503, code, str(exc), [], {"Retry-After": str(exc.retry_after_s)})


async def validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        {"path": ".".join(str(p) for p in e.get("loc", ())), "reason": e.get("msg", "")}
        for e in exc.errors()
    ]
    return _response(422, "invalid_request", "the request parameters are invalid", details)


async def http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return _response(exc.status_code, code, str(exc.detail), [], dict(exc.headers or {}))


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "missing or invalid API key"},
    403: {"model": ErrorResponse, "description": "the key may not do this"},
    404: {"model": ErrorResponse, "description": "no such queue for this tenant"},
    422: {"model": ErrorResponse, "description": "invalid parameters"},
    400: {"model": ErrorResponse, "description": "the request body could not be read"},
    413: {"model": ErrorResponse, "description": "the request body is too large"},
    429: {
        "model": ErrorResponse,
        "description": "too many requests for this API key; retry after Retry-After seconds",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
    },
    503: {
        "model": ErrorResponse,
        "description": "the store is unreachable for now; retry after Retry-After seconds",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
    },
}
