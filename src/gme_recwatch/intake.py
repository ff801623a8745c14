"""The callback pipeline, one way: bytes -> verified -> decoded event -> tracker -> metrics/logs.

No HTTP and no I/O here: the HTTP layer hands over the body and the ``Signature`` header and
sends back the :class:`Reply`. Nothing read from the body is trusted, logged as fact or
allowed to change state before the signature holds. (BizID is peeked beforehand only to
choose which app's keys to try.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from . import events, signature
from .events import Event, MalformedCallback, UnknownEvent
from .metrics import Metrics
from .settings import Settings
from .signature import KeyringSource, SignatureError
from .tracker import Clock, Tracker

_OK = b'{"code":0}'

_MESSAGES = {
    "missing": "the Signature header is missing",
    "mismatch": "the Signature does not match the body under any configured SecretKey",
    "unknown_app": "no SecretKey is configured for this BizID",
    "malformed": "the body is not a valid GME recording callback",
    "too_large": "the body exceeds the configured limit",
    "stale": "the callback's Timestamp is outside the replay window",
}


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    reason: str | None = None


def _error(status: int, reason: str, detail: str | None = None) -> Reply:
    doc: dict[str, Any] = {"code": status, "error": reason, "message": _MESSAGES[reason]}
    if detail:
        doc["detail"] = detail
    return Reply(status, msgspec.json.encode(doc), reason)


class Intake:
    def __init__(self, settings: Settings, keys: KeyringSource, tracker: Tracker,
                 metrics: Metrics, tracer: trace.Tracer, log: Any, clock: Clock) -> None:
        self.settings = settings
        self.keys = keys
        self.tracker = tracker
        self.metrics = metrics
        self.tracer = tracer
        self.log = log
        self.clock = clock
        self._accepted_log = getattr(log, settings.accepted_log_level)
        # Entering even a no-op span's context costs ~10 us a callback: skip it when off.
        self._tracing = not isinstance(tracer, trace.NoOpTracer)

    def reject_too_large(self, remote: str) -> Reply:
        self.metrics.invalid.labels("too_large").inc()
        self.log.warning("callback_rejected", reason="too_large", remote=remote,
                         limit_bytes=self.settings.max_body_bytes)
        return _error(413, "too_large")

    def reject_malformed(self, remote: str, detail: str) -> Reply:
        self.metrics.invalid.labels("malformed").inc()
        self.log.warning("callback_rejected", reason="malformed", remote=remote, detail=detail)
        return _error(400, "malformed", detail)

    def handle(self, body: bytes, header: str | None, remote: str) -> Reply:
        if not self._tracing:
            return self._handle(body, header, remote, trace.INVALID_SPAN)
        with self.tracer.start_as_current_span("gme.callback", kind=trace.SpanKind.SERVER) as span:
            reply = self._handle(body, header, remote, span)
            span.set_attribute("gme.outcome", reply.reason or "accepted")
            if reply.status >= 400:
                span.set_status(Status(StatusCode.ERROR, reply.reason))
            return reply

    def _handle(self, body: bytes, header: str | None, remote: str, span: trace.Span) -> Reply:
        try:
            ring = self.keys.current
            # Peeking costs a JSON parse: only worth it when keys differ per app.
            biz = events.peek_biz_id(body) if header and ring.per_app else None
            keys = ring.keys_for(biz)
            signature.verify(body, header, keys, self.settings.signature_encoding)
        except SignatureError as exc:
            self.metrics.signature_failures.labels(exc.reason).inc()
            # The BizID is unverified here: logged as a claim, for finding a misconfigured app.
            self.log.warning("callback_rejected", reason=exc.reason, remote=remote,
                             claimed_biz_id=biz, body_bytes=len(body))
            return _error(401, exc.reason)

        now = self.clock.time()
        self.metrics.last_callback.set(now)
        try:
            ev = events.decode(body)
        except MalformedCallback as exc:
            return self.reject_malformed(remote, str(exc))

        if isinstance(ev, UnknownEvent):
            self.metrics.count_callback("unknown", "ignored")
            span.set_attribute("gme.event_type", ev.event_type)
            self.log.info("callback_unknown_event_type", event_type=ev.event_type,
                          biz_id=ev.biz_id, remote=remote)
            return Reply(200, _OK, "ignored")

        span.set_attributes({
            "gme.biz_id": ev.biz_id, "gme.room_id": ev.room_id, "gme.user_id": ev.user_id,
            "gme.task_id": str(ev.task_id), "gme.seq_no": ev.seq_no,
            "gme.event_type": ev.event_name,
        })
        window = self.settings.replay_window_seconds
        if window and abs(now - ev.timestamp) > window:
            self.metrics.invalid.labels("stale").inc()
            self.log.warning("callback_rejected", reason="stale", remote=remote,
                             biz_id=ev.biz_id, room_id=ev.room_id, timestamp=ev.timestamp,
                             skew_seconds=round(now - ev.timestamp, 3))
            return _error(400, "stale")
        return self._track(ev, now, remote)

    def _track(self, ev: Event, now: float, remote: str) -> Reply:
        out = self.tracker.record(ev)
        m = self.metrics
        m.count_callback(out.event_type, out.result)
        m.observe_callback_delay(out.event_type, now - ev.timestamp)
        if out.duration is not None:
            m.observe_duration(out.record_mode, out.duration)
        if out.upload_delay is not None:
            m.observe_upload_delay(out.record_mode, out.upload_delay)
        self._accepted_log(
            "callback_accepted", result=out.result, event_type=out.event_type,
            biz_id=ev.biz_id, room_id=ev.room_id, user_id=ev.user_id, task_id=str(ev.task_id),
            seq_no=ev.seq_no, remote=remote)
        return Reply(200, _OK, None if out.result == "accepted" else out.result)
