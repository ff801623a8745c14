"""The error body both listeners answer with, and the handler that keeps a bug from ever
showing more than "internal error"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.openapi.datastructures import ResponseSpec

from .stores import StoreUnavailable


class ErrorBody(msgspec.Struct):
    """A rejection: `error` is the reason counted in the metrics."""

    code: int
    error: str
    message: str
    detail: str | None = None


def error_response(description: str) -> ResponseSpec:
    """An :class:`ErrorBody` response in an OpenAPI schema. Without generated examples: litestar
    makes those with polyfactory and faker, which the container image does not install."""
    return ResponseSpec(ErrorBody, description=description, generate_examples=False)


def internal_error(log: Any) -> Callable[[Request[Any, Any, Any], Exception], Response[Any]]:
    """Litestar's HTTP errors as :class:`ErrorBody`; anything else a logged, bodiless 500."""

    def handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        if isinstance(exc, StoreUnavailable):
            log.warning("store_unavailable", path=request.url.path, error=str(exc))
            return Response(ErrorBody(503, "unavailable", "the state store is unavailable"), status_code=503)
        if isinstance(exc, HTTPException):
            doc = ErrorBody(
                exc.status_code, "http", exc.detail, str(exc.extra) if getattr(exc, "extra", None) else None
            )
            # exc.headers carries e.g. the Allow header of a 405.
            return Response(doc, status_code=exc.status_code, headers=exc.headers)
        # A bug, not the client's fault. The exception type only: no body, no headers.
        log.error("internal_error", path=request.url.path, error=type(exc).__name__)
        return Response(ErrorBody(500, "internal", "internal error"), status_code=500)

    return handler
