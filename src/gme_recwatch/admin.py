"""The admin listener: ``/metrics``, the probes, the drill-down API and the OpenAPI schemas of
both listeners. It must stay inside the cluster."""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
from litestar import Litestar, Request, Response, get
from litestar.exceptions import ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.params import PathParameter, QueryParameter
from prometheus_client.exposition import choose_encoder

from . import __version__
from .callback import callback_schema
from .errors import ErrorBody, internal_error
from .lifecycle import STATE_NAMES, StateName
from .service import Service
from .stores import SegmentView


class Probe(msgspec.Struct):
    """The readiness probe's answer, the same shape whether ready or not."""

    status: str
    """``ready`` or ``not ready``."""
    segments: int
    """Segments tracked, as last heard from the store."""
    reason: str | None
    """Why not ready: ``starting``, ``stopping`` or ``store_unavailable`` (the store has failed
    every check for GME_RECWATCH_STORE_UNREADY_AFTER_SECONDS); null when ready."""


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
    confirmed: bool | None = None
    """With COS checks, for a stuck or upload_missing segment: true when its file was looked up
    and is not there, false when the lookup failed (no answer to trust); otherwise null."""
    lost_events: list[str] = msgspec.field(default_factory=list)
    """Events whose callbacks never arrived though the file was found in COS (reconciled)."""
    blind_window_start: str | None = None
    """For a segment that was live when a blind window opened and has not been heard from
    since (every ``unverified`` one): that window's start and end; otherwise null."""
    blind_window_end: str | None = None


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
        confirmed=v.confirmed, lost_events=v.lost_events,
        blind_window_start=_iso(v.blind_window_start), blind_window_end=_iso(v.blind_window_end),
    )


def _found(views: list[SegmentView]) -> SegmentList:
    return SegmentList(len(views), [_out(v) for v in views])


# The handlers' Python names of parameters whose public name differs.
_PUBLIC_NAMES = {"state_filter": "state"}


def _problem(item: object) -> str:
    """One failed parameter in words: its public name and what it must be (never the
    framework's internals, e.g. the parameter's Python name or an enum's repr)."""
    if not isinstance(item, dict):
        return "invalid parameter"
    name = _PUBLIC_NAMES.get(str(item.get("key")), str(item.get("key")))
    if name == "state":
        return "state: must be one of " + ", ".join(STATE_NAMES)
    return f"{name}: {item.get('message', 'invalid')}"


def bad_request(request: Request[Any, Any, Any], exc: ValidationException) -> Response[ErrorBody]:
    """A query or path parameter failed validation: 400 naming each one and what it must be."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    detail = "; ".join(_problem(i) for i in extra) or None
    return Response(ErrorBody(400, "http", f"invalid parameter for {request.url.path}", detail),
                    status_code=400)


def build_admin_app(service: Service) -> Litestar:
    metrics = service.metrics
    store = service.store

    @get("/metrics", summary="Prometheus metrics", include_in_schema=True,
         media_type="text/plain; version=0.0.4")
    async def metrics_endpoint(request: Request[Any, Any, Any]) -> Response[bytes]:
        await service.refresh_stats()
        # The classic text format unless the scraper asks for OpenMetrics (Prometheus does when
        # exemplar storage is on); only OpenMetrics carries the problem counters' exemplars.
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(metrics.registry), media_type=content_type)

    @get("/healthz", summary="Liveness probe")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", summary="Readiness: started, state restored, store answering",
         responses={503: ResponseSpec(data_container=Probe,
                                      description="Not ready yet, stopping, or the store has "
                                                  "not answered for a while")})
    async def readyz() -> Response[Probe]:
        # From what the service already knows: a probe never waits on the store.
        r = service.readiness()
        return Response(Probe("ready" if r.ready else "not ready", r.segments, r.reason),
                        status_code=200 if r.ready else 503)

    bad_query = {400: ResponseSpec(ErrorBody, description="A query or path parameter is invalid")}

    @get("/api/v1/segments", summary="Tracked segments, oldest first", responses=bad_query)
    async def segments(
        state_filter: Annotated[StateName | None, QueryParameter(name="state")] = None,
        app_id: Annotated[str | None, QueryParameter(max_length=64)] = None,
        room_id: Annotated[str | None, QueryParameter(max_length=256)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> SegmentList:
        return _found(await store.segments(state=state_filter, app_id=app_id, room_id=room_id,
                                           limit=limit))

    @get("/api/v1/rooms/{app_id:str}/{room_id:str}", summary="One room's segments",
         responses=bad_query)
    async def room(app_id: Annotated[str, PathParameter(max_length=64)],
                   room_id: Annotated[str, PathParameter(max_length=256)],
                   limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 1000) -> SegmentList:
        return _found(await store.segments(app_id=app_id, room_id=room_id, limit=limit))

    schema = callback_schema(service.settings.callback_path, service.settings.max_body_bytes)

    @get("/schema/callback/openapi.json", summary="OpenAPI schema of the callback listener")
    async def callback_openapi() -> dict[str, Any]:
        return schema

    return Litestar(
        route_handlers=[metrics_endpoint, healthz, readyz, segments, room, callback_openapi],
        openapi_config=OpenAPIConfig(
            title="gme-recwatch admin API", version=__version__, path="/schema",
            render_plugins=[JsonRenderPlugin()],
        ),
        exception_handlers={ValidationException: bad_request,
                            Exception: internal_error(service.log)},
        logging_config=None,
    )
