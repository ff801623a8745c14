"""The admin listener: ``/metrics``, the probes, the drill-down API and the OpenAPI schemas of
both listeners. It must stay inside the cluster."""

from __future__ import annotations

import math
import time
from typing import Annotated, Any, Final

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
from .errors import ErrorBody, error_response, internal_error
from .lifecycle import STATE_NAMES, State, StateName
from .service import Service
from .settings import Settings, env_name, human_duration
from .stores import SegmentPage, SegmentView

# A cursor holds a time and a segment key (ids of at most a few hundred bytes), in hex.
_CURSOR_MAX: Final = 2400
CURSOR_PATTERN: Final = r"^-?0x[0-9a-f]+(\.[0-9a-f]*)?p[+-]?[0-9]{1,5}~([0-9a-f]{2})*$"


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
    state_since: str | None = None
    """For a stuck, upload_missing, orphan or unverified segment: since when it is in that
    state (when its deadline passed, or when its COS lookup answered); otherwise null."""
    deadline: str | None = None
    """The setting whose deadline passed: max_recording_seconds, upload_grace_seconds or
    reorder_window_seconds; null for a segment in no problem state."""
    reason: str | None = None
    """Why the segment is in its problem state, in words (the deadline, and what COS said)."""
    checked_at: str | None = None
    """With COS checks: when the lookup that settled this segment answered; then also: """
    check_result: str | None = None
    """found, not_found or error."""
    bucket: str | None = None
    object_key: str | None = None
    check_error: str | None = None
    """Why the lookup gave no answer to trust (timeout, forbidden, no_such_bucket,
    no_file_name, ...); null when it answered."""
    check_detail: str | None = None


class SegmentList(msgspec.Struct):
    count: int
    """Segments in this answer."""
    segments: list[SegmentOut]
    total: int = 0
    """Segments matching the query, on every page."""
    next_cursor: str | None = None
    """Pass as ``cursor`` for the next page; null on the last one."""


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
    except (OverflowError, OSError, ValueError):  # a time no calendar can show
        return None


_WAITED_FOR: Final = {
    "max_recording_seconds": "still recording {d} after its start was received",
    "upload_grace_seconds": "no uploaded callback within {d} of the completion",
    "reorder_window_seconds": "no started callback within {d} of its first callback",
}


def _reason(v: SegmentView, settings: Settings) -> str | None:
    """Why ``v`` is a problem, in words: the deadline that passed, then what COS said."""
    if v.deadline is None:
        return None
    seconds = getattr(settings, v.deadline)
    revealed = not v.events_seen and not v.lost_events  # by a later SeqNo: no callback at all
    waited = (
        "no callback at all within {d} of a later SeqNo of its stream" if revealed else _WAITED_FOR[v.deadline]
    )
    text = waited.format(d=human_duration(seconds)) + f" ({env_name(v.deadline)}={seconds:g})"
    if v.state == State.UNVERIFIED.label:  # which blind window of ours may hold what it missed
        if revealed:
            text += "; its callbacks may have been sent in a blind window of ours"
        elif v.deadline == "reorder_window_seconds":
            text += "; its start may have been sent in a blind window of ours"
        else:
            text += "; it was live when a blind window opened"
        text += ", so it is not paged"
    if v.confirmed is True:
        text += "; its file is not in COS"
    elif v.confirmed is False:
        error = v.check.check_error if v.check is not None else ""
        text += f"; the COS lookup gave no answer ({error or 'error'})"
    return text


def _out(v: SegmentView, settings: Settings) -> SegmentOut:
    note = v.check
    return SegmentOut(
        app_id=v.app_id,
        biz_id=str(v.biz_id),
        room_id=v.room_id,
        user_id=v.user_id,
        task_id=str(v.task_id),
        seq_no=v.seq_no,
        state=v.state,
        record_mode=v.record_mode,
        events_seen=v.events_seen,
        started_at=_iso(v.started_at),
        completed_at=_iso(v.completed_at),
        uploaded_at=_iso(v.uploaded_at),
        first_received_at=_iso(v.first_received_at) or "",
        next_deadline_at=_iso(v.next_deadline_at),
        expires_at=_iso(v.expires_at) or "",
        confirmed=v.confirmed,
        lost_events=v.lost_events,
        blind_window_start=_iso(v.blind_window_start),
        blind_window_end=_iso(v.blind_window_end),
        state_since=_iso(v.state_since),
        deadline=v.deadline,
        reason=_reason(v, settings),
        checked_at=_iso(note.checked_at) if note else None,
        check_result=note.result if note else None,
        bucket=note.bucket or None if note else None,
        object_key=note.object_key or None if note else None,
        check_error=note.check_error or None if note else None,
        check_detail=note.check_detail or None if note else None,
    )


def encode_cursor(after: tuple[float, str]) -> str:
    """A page's position (when the segment was first heard of, its key) as a token: the time
    exactly (``float.hex``), the key in hex. Every string of :data:`CURSOR_PATTERN` is a
    position, so the schema says exactly which cursors are accepted."""
    return f"{after[0].hex()}~{after[1].encode().hex()}"


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The position a token of :data:`CURSOR_PATTERN` holds (the route checked the pattern)."""
    at, key = cursor.split("~", 1)
    try:
        position = float.fromhex(at)
    except OverflowError:  # an exponent no time has: after every segment
        position = math.inf if not at.startswith("-") else -math.inf
    return position, bytes.fromhex(key).decode("utf-8", "replace")


def _found(page: SegmentPage, settings: Settings) -> SegmentList:
    return SegmentList(
        len(page.segments),
        [_out(v, settings) for v in page.segments],
        page.total,
        encode_cursor(page.after) if page.after else None,
    )


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
    return Response(
        ErrorBody(400, "http", f"invalid parameter for {request.url.path}", detail), status_code=400
    )


def build_admin_app(service: Service) -> Litestar:
    metrics = service.metrics
    store = service.store
    settings = service.settings

    @get(
        "/metrics", summary="Prometheus metrics", include_in_schema=True, media_type="text/plain; version=0.0.4"
    )
    async def metrics_endpoint(request: Request[Any, Any, Any]) -> Response[bytes]:
        await service.refresh_stats()
        # The classic text format unless the scraper asks for OpenMetrics (Prometheus does when
        # exemplar storage is on); only OpenMetrics carries the problem counters' exemplars.
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(metrics.registry), media_type=content_type)

    @get("/healthz", summary="Liveness probe")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get(
        "/readyz",
        summary="Readiness: started, state restored, store answering",
        responses={
            503: ResponseSpec(
                data_container=Probe,
                description="Not ready yet, stopping, or the store has not answered for a while",
                generate_examples=False,
            )
        },
    )
    async def readyz() -> Response[Probe]:
        # From what the service already knows: a probe never waits on the store.
        r = service.readiness()
        return Response(
            Probe("ready" if r.ready else "not ready", r.segments, r.reason),
            status_code=200 if r.ready else 503,
        )

    bad_query = {400: error_response("A query or path parameter is invalid")}

    @get("/api/v1/segments", summary="Tracked segments, oldest first", responses=bad_query)
    async def segments(
        state_filter: Annotated[StateName | None, QueryParameter(name="state")] = None,
        app_id: Annotated[str | None, QueryParameter(max_length=64)] = None,
        room_id: Annotated[str | None, QueryParameter(max_length=256)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
        cursor: Annotated[
            str | None,
            QueryParameter(
                max_length=_CURSOR_MAX, pattern=CURSOR_PATTERN, description="next_cursor of the previous page"
            ),
        ] = None,
    ) -> SegmentList:
        return _found(
            await store.page(
                state=state_filter,
                app_id=app_id,
                room_id=room_id,
                limit=limit,
                after=decode_cursor(cursor) if cursor else None,
            ),
            settings,
        )

    @get("/api/v1/rooms/{app_id:str}/{room_id:str}", summary="One room's segments", responses=bad_query)
    async def room(
        app_id: Annotated[str, PathParameter(max_length=64)],
        room_id: Annotated[str, PathParameter(max_length=256)],
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 1000,
        cursor: Annotated[
            str | None,
            QueryParameter(
                max_length=_CURSOR_MAX, pattern=CURSOR_PATTERN, description="next_cursor of the previous page"
            ),
        ] = None,
    ) -> SegmentList:
        return _found(
            await store.page(
                app_id=app_id, room_id=room_id, limit=limit, after=decode_cursor(cursor) if cursor else None
            ),
            settings,
        )

    schema = callback_schema(service.settings.callback_path, service.settings.max_body_bytes)

    @get("/schema/callback/openapi.json", summary="OpenAPI schema of the callback listener")
    async def callback_openapi() -> dict[str, Any]:
        return schema

    return Litestar(
        route_handlers=[metrics_endpoint, healthz, readyz, segments, room, callback_openapi],
        openapi_config=OpenAPIConfig(
            title="gme-recwatch admin API",
            version=__version__,
            path="/schema",
            render_plugins=[JsonRenderPlugin()],
        ),
        exception_handlers={ValidationException: bad_request, Exception: internal_error(service.log)},
        logging_config=None,
    )
