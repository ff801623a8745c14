"""Litestar app factories for the two listeners, and the service object they share.

* The callback app is the only thing exposed to the internet: ``POST <callback_path>`` and a
  liveness probe, nothing else.
* The admin app serves ``/metrics``, ``/healthz``, ``/readyz``, the drill-down API and the
  OpenAPI schemas. It must stay inside the cluster.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import msgspec
from litestar import Litestar, MediaType, Request, Response, asgi, get, post
from litestar.exceptions import ClientException, HTTPException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.params import PathParameter, QueryParameter
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry.sdk.trace.export import SpanExporter
from prometheus_client import generate_latest

from . import __version__
from .intake import Intake
from .logging import get_logger
from .metrics import Metrics
from .settings import Settings
from .signature import KeyringError, KeyringSource
from .state import SnapshotStore
from .tracing import make_provider, tracer
from .tracker import STATE_NAMES, Clock, SegmentView, SystemClock, Tracker, TrackerConfig

SWEEP_BUDGET = 5000  # due segments handled per round before yielding to the event loop
_EXPOSITION = "text/plain; version=0.0.4"  # Litestar appends the charset
_METHODS = frozenset({"GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"})


class Service:
    """Everything both listeners share: keys, tracker, metrics, intake, snapshots, loops."""

    def __init__(self, settings: Settings, clock: Clock | None = None,
                 span_exporter: SpanExporter | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.log = get_logger()
        self.metrics = Metrics()
        self.keys = KeyringSource(settings.secret_key, settings.keys_file)
        self.metrics.keyring_keys.set(len(self.keys.current))
        self.tracker = Tracker(TrackerConfig(
            max_recording_seconds=settings.max_recording_seconds,
            upload_grace_seconds=settings.upload_grace_seconds,
            reorder_window_seconds=settings.reorder_window_seconds,
            retention_seconds=settings.retention_seconds,
            max_segments=settings.max_segments,
            max_apps=settings.max_apps,
        ), self.clock)
        self.tracker.register_apps(self.keys.current.app_ids())
        self.metrics.attach_tracker(self.tracker)
        self.provider = make_provider(span_exporter)
        self.intake = Intake(settings, self.keys, self.tracker, self.metrics,
                             tracer(self.provider), self.log, self.clock)
        self.store = SnapshotStore(settings.state_file, self.tracker, self.metrics, self.log)
        self.ready = False
        self._tasks: list[asyncio.Task[None]] = []

    def restore(self) -> None:
        self.store.restore()

    def start_background(self) -> None:
        s = self.settings
        self._tasks = [
            asyncio.create_task(self._every("sweep", s.sweep_interval_seconds, self._sweep_all)),
            asyncio.create_task(self._every("keys", s.keys_reload_seconds, self._reload_keys)),
        ]
        if s.state_file:
            self._tasks.append(asyncio.create_task(
                self._every("snapshot", s.snapshot_interval_seconds, self.store.write_in_background)))
        self.ready = True

    async def stop(self) -> None:
        """Stop the loops, write the final snapshot, flush traces."""
        self.ready = False
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.settings.state_file:
            self.store.write()
        if self.provider is not None:
            self.provider.shutdown()

    async def _every(self, name: str, seconds: float, fn: Callable[[], Awaitable[Any]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await fn()
            except Exception as exc:  # a background loop must outlive one bad round
                self.log.error("background_task_failed", task=name, error=type(exc).__name__)

    async def _sweep_all(self) -> None:
        # Deadlines can fall due by the hundred thousand in one second (a fleet-wide outage):
        # sweep in rounds and yield between them, so callbacks are still answered promptly.
        self.sweep(SWEEP_BUDGET)
        while self.tracker.has_due():
            await asyncio.sleep(0)
            self.sweep(SWEEP_BUDGET)

    async def _reload_keys(self) -> None:
        self.reload_keys()

    def sweep(self, budget: int | None = None) -> None:
        for t in self.tracker.sweep(budget):
            self.log.warning(
                f"segment_{t.state}", state=t.state, app_id=t.app_id, biz_id=t.biz_id,
                room_id=t.room_id, user_id=t.user_id, task_id=str(t.task_id), seq_no=t.seq_no)

    def reload_keys(self) -> None:
        try:
            changed = self.keys.maybe_reload()
        except (OSError, KeyringError, UnicodeDecodeError) as exc:
            self.metrics.keyring_reloads.labels("failure").inc()
            # The message names a line number or an OS error, never key material.
            self.log.error("keyring_reload_failed", path=self.settings.keys_file,
                           error=str(exc) if isinstance(exc, KeyringError) else type(exc).__name__)
            return
        if changed:
            self.metrics.keyring_reloads.labels("success").inc()
            self.metrics.keyring_keys.set(len(self.keys.current))
            self.tracker.register_apps(self.keys.current.app_ids())
            self.log.info("keyring_reloaded", keys=len(self.keys.current),
                          apps=self.keys.current.app_ids())


# ------------------------------------------------------------------------- instrumentation

def instrument(app: ASGIApp, metrics: Metrics, listener: str) -> ASGIApp:
    """Count and time every HTTP request with bounded labels (route *template*, not path)."""
    in_flight = metrics.http_in_flight.labels(listener)
    counters: dict[tuple[str, str, int], Any] = {}
    timers: dict[str, Any] = {}

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # type: ignore[comparison-overlap]
            await app(scope, receive, send)
            return
        raw_method = scope.get("method", "")
        method = raw_method if raw_method in _METHODS else "other"
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        in_flight.inc()
        try:
            await app(scope, receive, send_wrapper)
        finally:
            in_flight.dec()
            route = scope.get("path_template") or "unmatched"
            key = (route, method, status)
            child = counters.get(key)
            if child is None:
                child = counters[key] = metrics.http_requests.labels(
                    listener, route, method, str(status))
            child.inc()
            timer = timers.get(route)
            if timer is None:
                timer = timers[route] = metrics.http_duration.labels(listener, route)
            timer.observe(time.perf_counter() - started)

    return wrapped


def _internal_error(log: Any) -> Callable[[Request[Any, Any, Any], Exception], Response[Any]]:
    def handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        if isinstance(exc, HTTPException):
            doc = ErrorBody(exc.status_code, "http", exc.detail,
                            str(exc.extra) if getattr(exc, "extra", None) else None)
            # exc.headers carries e.g. the Allow header of a 405.
            return Response(doc, status_code=exc.status_code, headers=exc.headers)
        # A bug, not the client's fault. The exception type only: no body, no headers.
        log.error("internal_error", path=request.url.path, error=type(exc).__name__)
        return Response(ErrorBody(500, "internal", "internal error"), status_code=500)

    return handler


def _one_signature(values: list[str]) -> str | None:
    """The Signature header's value. Repeated headers are never what Tencent sends: unless they
    agree, they count as a mismatch rather than a guess at which one to believe."""
    if not values:
        return None
    return values[0] if len(set(values)) == 1 else "!"


def _remote(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "unknown"


# ------------------------------------------------------------------------- callback listener

class Ack(msgspec.Struct):
    """What Tencent's sender expects back: code 0 means delivered."""

    code: int = 0


class ErrorBody(msgspec.Struct):
    """A rejection: `error` is the reason counted in the metrics."""

    code: int
    error: str
    message: str
    detail: str | None = None


class Probe(msgspec.Struct):
    status: str
    segments: int | None = None


_JSON_HEADERS = [(b"content-type", b"application/json")]


def callback_asgi(service: Service) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The callback route as a plain ASGI handler: the hot path, with nothing in between.

    Litestar's request and response objects cost more per callback than verification,
    decoding and tracking together (BENCHMARKS.md), so this handler reads the body and the
    ``Signature`` header straight from ASGI. It enforces the body limit while the body streams
    in, and answers exactly what the documented handler in :func:`build_callback_app` does.
    """
    intake = service.intake
    limit = service.settings.max_body_bytes

    async def reply_with(send: Send, status: int, body: bytes,
                         extra: list[tuple[bytes, bytes]] | None = None) -> None:
        headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode()), *(extra or [])]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") != "POST":
            await reply_with(send, 405, b'{"code":405,"error":"http","message":"Method Not Allowed"}',
                             [(b"allow", b"POST")])
            return
        client = scope.get("client")
        remote = client[0] if client else "unknown"
        signatures: list[str] = []
        declared: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"signature":
                signatures.append(value.decode("latin-1"))
            elif name == b"content-length":
                declared = value
        if declared is not None:
            if not declared.strip().isdigit():
                r = intake.reject_malformed(remote, "Content-Length is not a number")
                await reply_with(send, r.status, r.body)
                return
            if int(declared) > limit:  # refuse before reading a byte
                r = intake.reject_too_large(remote)
                await reply_with(send, r.status, r.body)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client is gone: nobody to answer
            chunk: bytes = message.get("body", b"")  # type: ignore[assignment]
            size += len(chunk)
            if size > limit:
                r = intake.reject_too_large(remote)
                await reply_with(send, r.status, r.body)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        r = intake.handle(b"".join(chunks), _one_signature(signatures), remote)
        await reply_with(send, r.status, r.body)

    return handle


def build_callback_app(service: Service, *, with_openapi: bool = False) -> Litestar:
    """The internet-facing app. With ``with_openapi``, a twin that only documents the route.

    The served callback route is :func:`callback_asgi`; the documented one below behaves the
    same through Litestar's request objects, and exists so the schema describes the contract.
    """
    settings = service.settings
    intake = service.intake

    @post(settings.callback_path, request_max_body_size=settings.max_body_bytes,
          summary="Receive a GME recording callback", status_code=200,
          responses={
              400: ResponseSpec(ErrorBody, description="Malformed body, or stale Timestamp"),
              401: ResponseSpec(ErrorBody, description="Signature missing, wrong, or no key for the app"),
              413: ResponseSpec(ErrorBody, description="Body larger than the configured limit"),
          },
          description="Tencent GME server-side recording callback, signed with HMAC-SHA1 in "
                      "the `Signature` header. Answers `{\"code\":0}` when accepted.")
    async def documented_callback(request: Request[Any, Any, Any]) -> Response[Ack]:
        remote = _remote(request)
        try:
            body = await request.body()
        except RequestEntityTooLarge:
            reply = intake.reject_too_large(remote)
        except ClientException as exc:
            reply = intake.reject_malformed(remote, str(exc.detail))
        else:
            reply = intake.handle(body, _one_signature(request.headers.getall("signature", [])),
                                  remote)
        return Response(reply.body, status_code=reply.status,  # type: ignore[arg-type]
                        media_type=MediaType.JSON)

    @get("/healthz", summary="Liveness probe")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    if with_openapi:
        return Litestar(
            route_handlers=[documented_callback, healthz],
            openapi_config=OpenAPIConfig(
                title="gme-recwatch callback listener", version=__version__, path="/schema",
                render_plugins=[JsonRenderPlugin()],
            ),
            logging_config=None,
        )
    # The internet-facing app serves no schema; the admin listener publishes it instead.
    return Litestar(
        route_handlers=[asgi(settings.callback_path, copy_scope=False)(callback_asgi(service)), healthz],
        openapi_config=None,
        exception_handlers={Exception: _internal_error(service.log)},
        logging_config=None,
    )


# ------------------------------------------------------------------------- admin listener

class SegmentOut(msgspec.Struct):
    """One segment; ids are strings so that JavaScript clients keep TaskID exact."""

    app_id: str
    biz_id: str
    room_id: str
    user_id: str
    task_id: str
    seq_no: int
    state: str
    record_mode: str
    events_seen: list[str]
    started_at: str | None
    completed_at: str | None
    uploaded_at: str | None
    first_received_at: str
    next_deadline_at: str | None
    expires_at: str


class SegmentList(msgspec.Struct):
    count: int
    segments: list[SegmentOut]


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
    except (OverflowError, OSError, ValueError):  # a time no calendar can show
        return None


def _out(v: SegmentView) -> SegmentOut:
    return SegmentOut(
        app_id=v.app_id, biz_id=str(v.biz_id), room_id=v.room_id, user_id=v.user_id,
        task_id=str(v.task_id), seq_no=v.seq_no, state=v.state, record_mode=v.record_mode,
        events_seen=v.events_seen, started_at=_iso(v.started_at),
        completed_at=_iso(v.completed_at), uploaded_at=_iso(v.uploaded_at),
        first_received_at=_iso(v.first_received_at) or "",
        next_deadline_at=_iso(v.next_deadline_at), expires_at=_iso(v.expires_at) or "",
    )


State = Literal["recording", "completed", "uploaded", "stuck", "upload_missing", "orphan"]
assert set(State.__args__) == set(STATE_NAMES)  # type: ignore[attr-defined]


def build_admin_app(service: Service) -> Litestar:
    metrics = service.metrics
    tracker = service.tracker

    @get("/metrics", summary="Prometheus metrics", include_in_schema=True,
         media_type="text/plain; version=0.0.4")
    async def metrics_endpoint() -> Response[bytes]:
        # Always the classic text format, never OpenMetrics: the names the dashboards and
        # alerts rely on (`gme_recording_missing_uploads` gauge beside the
        # `gme_recording_missing_uploads_total` counter) would be two families of one name there.
        return Response(generate_latest(metrics.registry), media_type=_EXPOSITION)  # + charset

    @get("/healthz", summary="Liveness probe")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", summary="Readiness: started and state restored",
         responses={503: ResponseSpec(data_container=Probe, description="Not ready yet, or stopping")})
    async def readyz() -> Response[Probe]:
        if service.ready:
            return Response(Probe("ready", len(tracker)))
        return Response(Probe("not ready"), status_code=503)

    bad_query = {400: ResponseSpec(ErrorBody, description="A query or path parameter is invalid")}

    @get("/api/v1/segments", summary="Tracked segments, oldest first", responses=bad_query)
    async def segments(
        state_filter: Annotated[State | None, QueryParameter(name="state")] = None,
        app_id: Annotated[str | None, QueryParameter(max_length=64)] = None,
        room_id: Annotated[str | None, QueryParameter(max_length=256)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> SegmentList:
        found = tracker.segments(state=state_filter, app_id=app_id, room_id=room_id, limit=limit)
        return SegmentList(len(found), [_out(v) for v in found])

    @get("/api/v1/rooms/{app_id:str}/{room_id:str}", summary="One room's segments",
         responses=bad_query)
    async def room(app_id: Annotated[str, PathParameter(max_length=64)],
                   room_id: Annotated[str, PathParameter(max_length=256)],
                   limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 1000) -> SegmentList:
        found = tracker.segments(app_id=app_id, room_id=room_id, limit=limit)
        return SegmentList(len(found), [_out(v) for v in found])

    handlers: list[Any] = [metrics_endpoint, healthz, readyz, segments, room]
    callback_schema = build_callback_app(service, with_openapi=True).openapi_schema.to_schema()

    @get("/schema/callback/openapi.json", summary="OpenAPI schema of the callback listener")
    async def callback_openapi() -> dict[str, Any]:
        return callback_schema

    handlers.append(callback_openapi)

    return Litestar(
        route_handlers=handlers,
        openapi_config=OpenAPIConfig(
            title="gme-recwatch admin API", version=__version__, path="/schema",
            render_plugins=[JsonRenderPlugin()],
        ),
        exception_handlers={Exception: _internal_error(service.log)},
        logging_config=None,
    )


def build_apps(service: Service) -> tuple[ASGIApp, ASGIApp]:
    """Both listeners' ASGI apps, instrumented."""
    return (instrument(build_callback_app(service), service.metrics, "callback"),
            instrument(build_admin_app(service), service.metrics, "admin"))

