"""The internet-facing listener: ``POST <callback_path>`` and a liveness probe, nothing else.

The listener is plain ASGI -- the hot path, with nothing in between: Litestar's router and its
request and response objects cost more per callback than verification, decoding and storing
together (BENCHMARKS.md); the admin listener is the Litestar app. The callback route reads the
body and the ``Signature`` header straight from ASGI, enforces the body limit while the body
streams in, hands both to the intake, and maps the intake's outcome to a status and a body
here, and only here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
from litestar import Litestar, Request, get, post
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.types import Receive, Scope, Send

from . import __version__
from .errors import ErrorBody, error_response
from .intake import Accepted, Intake, Outcome, Reason, Unreadable
from .service import Service

# What each rejection is answered with. 4xx tells Tencent not to retry: the same bytes would
# be refused again. 503 asks it to retry: it may or may not have been stored (a store that timed
# out may still apply it), and a retry is safe either way.
STATUS: Final[dict[str, int]] = {
    "missing": 401,
    "mismatch": 401,
    "unknown_app": 401,
    "malformed": 400,
    "stale": 400,
    "too_large": 413,
    "unavailable": 503,
}
MESSAGES: Final[dict[str, str]] = {
    "missing": "the Signature header is missing",
    "mismatch": "the Signature does not match the body under any configured SecretKey",
    "unknown_app": "no SecretKey is configured for this BizID",
    "malformed": "the body is not a valid GME recording callback",
    "too_large": "the body exceeds the configured limit",
    "stale": "the callback's Timestamp is outside the replay window",
    "unavailable": (
        "the state store did not answer in time or is unreachable; the callback may have been "
        "recorded or not: retry it (a retry is safe, a duplicate changes nothing)"
    ),
}
_OK: Final = b'{"code":0}'
_JSON: Final = (b"content-type", b"application/json")
_RETRY_AFTER: Final = ((b"retry-after", b"5"),)
_METHOD_NOT_ALLOWED: Final = b'{"code":405,"error":"http","message":"Method Not Allowed"}'


class Ack(msgspec.Struct):
    """What Tencent's sender expects back: code 0 means delivered."""

    code: int = 0


def reply(outcome: Outcome) -> tuple[int, bytes]:
    """The status and JSON body that answer an outcome."""
    if isinstance(outcome, Accepted):
        return 200, _OK
    return _error(outcome.reason, outcome.detail)


def _error(reason: Reason, detail: str | None) -> tuple[int, bytes]:
    status = STATUS[reason]
    return status, msgspec.json.encode(ErrorBody(status, reason, MESSAGES[reason], detail))


def one_signature(values: list[str]) -> str | None:
    """The Signature header's value. Repeated headers are never what Tencent sends: unless they
    agree, they count as a mismatch rather than a guess at which one to believe."""
    if not values:
        return None
    return values[0] if len(set(values)) == 1 else "!"


_TIMED_OUT: Final = b'{"code":408,"error":"http","message":"the body did not arrive in time"}'
_CLOSE: Final = ((b"connection", b"close"),)


def callback_asgi(
    intake: Intake, limit: int, body_timeout: float | None = None, timed_out: Any = None
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The served callback route. A body whose next piece does not arrive within
    ``body_timeout`` seconds (a slow-body client holding the connection) is answered 408 and
    the connection closed, counted in ``timed_out``."""

    async def answer(send: Send, status: int, body: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        headers = [_JSON, (b"content-length", str(len(body)).encode()), *extra]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def read(scope: Scope, receive: Receive) -> bytes | Unreadable | None:
        """The body, why it was not read, or None when the client went away."""
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None:
            if not declared.strip().isdigit():
                return Unreadable("malformed", "Content-Length is not a number")
            if int(declared) > limit:  # refuse before reading a byte
                return Unreadable("too_large")
        chunks: list[bytes] = []
        size = 0
        while True:
            async with asyncio.timeout(body_timeout):
                message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk: bytes = message.get("body", b"")  # type: ignore[assignment]
            size += len(chunk)
            if size > limit:
                return Unreadable("too_large")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") != "POST":
            await answer(send, 405, _METHOD_NOT_ALLOWED, ((b"allow", b"POST"),))
            return
        try:
            body = await read(scope, receive)
        except TimeoutError:
            if timed_out is not None:
                timed_out.inc()
            await answer(send, 408, _TIMED_OUT, _CLOSE)
            return
        if body is None:
            return  # the client is gone: nobody to answer
        client = scope.get("client")
        signatures = [v.decode("latin-1") for k, v in scope["headers"] if k == b"signature"]
        outcome = await intake.handle(body, one_signature(signatures), client[0] if client else "unknown")
        status, doc = reply(outcome)
        # Nothing was stored: Tencent retries; the header says when a retry may succeed.
        await answer(send, status, doc, _RETRY_AFTER if status == 503 else ())

    return handle


@get("/healthz", summary="Liveness probe")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


_HEALTHY: Final = b'{"status":"ok"}'
_NOT_FOUND: Final = b'{"code":404,"error":"http","message":"Not Found"}'
_INTERNAL: Final = b'{"code":500,"error":"internal","message":"internal error"}'


def build_callback_app(service: Service) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The internet-facing app: the callback route, the liveness probe, 404 for anything else.

    A plain ASGI dispatcher, no framework: with the fast HTTP stack, routing through Litestar
    cost as much as the whole callback's own work (BENCHMARKS.md). It serves no schema: the
    admin listener publishes it (:func:`callback_schema`).
    """
    s = service.settings
    callback = callback_asgi(
        service.intake,
        s.max_body_bytes,
        s.header_timeout_seconds,
        service.metrics.connections_refused.labels("callback", "body_timeout"),
    )
    path, log = s.callback_path, service.log

    async def plain(send: Send, status: int, body: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [_JSON, (b"content-length", str(len(body)).encode()), *extra],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # type: ignore[comparison-overlap]  # no lifespan, no websockets
            return
        try:
            if scope["path"] == path:
                scope["path_template"] = path  # the route label of the request metrics
                await callback(scope, receive, send)
            elif scope["path"] == "/healthz":
                scope["path_template"] = "/healthz"
                if scope.get("method") in ("GET", "HEAD"):
                    await plain(send, 200, _HEALTHY)
                else:
                    await plain(send, 405, _METHOD_NOT_ALLOWED, ((b"allow", b"GET, HEAD"),))
            else:
                await plain(send, 404, _NOT_FOUND)
        except Exception as exc:  # a bug, not the client's fault: the type only, never a body
            log.error("internal_error", path=scope["path"], error=type(exc).__name__)
            # Unless the answer had already begun (then the server closes the connection).
            with contextlib.suppress(Exception):
                await plain(send, 500, _INTERNAL)

    return app


def callback_schema(callback_path: str, max_body_bytes: int) -> dict[str, Any]:
    """The OpenAPI schema of the callback listener.

    ASGI routes are not described by Litestar, so the route is declared once more here, for the
    schema only: the declaration below is never served, and schemathesis checks the served
    route against what it says (tests/test_hostile.py).
    """

    @post(
        callback_path,
        request_max_body_size=max_body_bytes,
        summary="Receive a GME recording callback",
        status_code=200,
        responses={
            400: error_response("Malformed body, or stale Timestamp"),
            401: error_response("Signature missing, wrong, or no key for the app"),
            413: error_response("Body larger than the configured limit"),
            503: error_response("State store unavailable: may be recorded; retry (safe)"),
        },
        description="Tencent GME server-side recording callback, signed with HMAC-SHA1 in "
        'the `Signature` header. Answers `{"code":0}` when accepted.',
    )
    async def receive_callback(request: Request[Any, Any, Any]) -> Ack:
        raise NotImplementedError("documentation only: the served route is callback_asgi")

    app = Litestar(
        route_handlers=[receive_callback, healthz],
        openapi_config=OpenAPIConfig(
            title="gme-recwatch callback listener",
            version=__version__,
            path="/schema",
            render_plugins=[JsonRenderPlugin()],
        ),
        logging_config=None,
    )
    return app.openapi_schema.to_schema()
