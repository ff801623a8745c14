"""HTTP request metrics for both listeners, as an ASGI middleware with bounded labels: the
route *template*, never the path, and a fixed set of methods.

A request the client abandoned before it was answered (it hung up mid-body) is counted with
code 499, nginx's "client closed request": it is nobody's server error, so it stays out of
every 5xx alert and SLO. 500 is reserved for an exception with no answer sent."""

from __future__ import annotations

import time
from typing import Any, Final

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import Metrics

_CLIENT_CLOSED: Final = 499
_METHODS: Final = frozenset({"GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"})


def instrument(app: ASGIApp, metrics: Metrics, listener: str) -> ASGIApp:
    """Count and time every HTTP request ``app`` answers."""
    in_flight = metrics.http_in_flight.labels(listener)
    counters: dict[tuple[str, str, int], Any] = {}
    timers: dict[str, Any] = {}

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # type: ignore[comparison-overlap]
            await app(scope, receive, send)
            return
        raw_method = scope.get("method", "")
        method = raw_method if raw_method in _METHODS else "other"
        status = 0  # no answer yet
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        in_flight.inc()
        try:
            await app(scope, receive, send_wrapper)
        except BaseException:
            status = status or 500
            raise
        finally:
            status = status or _CLIENT_CLOSED
            in_flight.dec()
            route = scope.get("path_template") or "unmatched"
            key = (route, method, status)
            child = counters.get(key)
            if child is None:
                child = counters[key] = metrics.http_requests.labels(listener, route, method, str(status))
            child.inc()
            timer = timers.get(route)
            if timer is None:
                timer = timers[route] = metrics.http_duration.labels(listener, route)
            timer.observe(time.perf_counter() - started)

    return wrapped
