"""The callback pipeline, one way: bytes -> verified -> decoded event -> store -> metrics/logs.

No HTTP here: the HTTP layer hands over what it read (the body, or why it could not read one)
and the ``Signature`` header, and gets back an :data:`Outcome` -- :class:`Accepted` with the
store's result, or :class:`Rejected` with a reason -- which it maps to a status and a body.
Every rejection is counted and logged here, once, with its reason; a rejected signature may
add one rate-limited ``signature_hint`` line naming the misconfiguration that explains it.
Nothing read from the body is trusted, logged as fact or allowed to change state before the
signature holds. (BizID is peeked beforehand only to choose which app's keys to try, and to
name the app a hint is about.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from . import events, signature
from .clock import Clock
from .events import CANARY_ROOM_ID, Event, InvalidReason, MalformedCallback, UnknownEvent
from .hints import SignatureDoctor
from .lifecycle import Result, key_of
from .logging import level_number
from .metrics import Metrics
from .ratelimit import TokenBucket
from .settings import Settings
from .signature import FailureReason, Keyring, KeyringSource, SignatureError
from .stores import Store, StoreUnavailable

# The store could not take the callback (unreachable, too slow): answered so that Tencent
# retries it, counted as gme_recording_backend_errors_total{operation="record"}.
Unavailable = Literal["unavailable"]
Reason = FailureReason | InvalidReason | Unavailable


@dataclass(frozen=True, slots=True)
class Accepted:
    """The callback was verified and its effect is stored (or it was a type we ignore)."""

    result: Result


@dataclass(frozen=True, slots=True)
class Rejected:
    """The callback was refused; nothing changed but the counter of ``reason``."""

    reason: Reason
    detail: str | None = None


Outcome = Accepted | Rejected
_ACCEPTED: Final = {r: Accepted(r) for r in Result}
# Answered like any accepted callback; the result is never counted in recording metrics.
_CANARY: Final = Accepted(Result.IGNORED)


@dataclass(frozen=True, slots=True)
class Unreadable:
    """What the HTTP layer hands over instead of a body it would not or could not read."""

    reason: Literal["too_large", "malformed"]
    detail: str | None = None


class Intake:
    def __init__(
        self,
        settings: Settings,
        keys: KeyringSource,
        store: Store,
        metrics: Metrics,
        tracer: trace.Tracer,
        log: Any,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.store = store
        self.metrics = metrics
        self.tracer = tracer
        self.log = log
        self.clock = clock
        self._accepted_log = getattr(log, settings.accepted_log_level)
        # Building the accepted line's fields costs ~2 us a callback: skip it when its level is
        # filtered out (the default: debug under info).
        self._log_accepted = level_number(settings.accepted_log_level) >= level_number(settings.log_level)
        # Entering even a no-op span's context costs ~10 us a callback: skip it when off.
        self._tracing = not isinstance(tracer, trace.NoOpTracer)
        self._marks = TokenBucket(
            settings.rejection_marks_per_second, settings.rejection_marks_burst, clock.monotonic
        )
        self.doctor = (
            SignatureDoctor(settings.signature_hints_per_second, clock.monotonic)
            if settings.signature_hints_per_second > 0
            else None
        )

    async def handle(self, body: bytes | Unreadable, header: str | None, remote: str) -> Outcome:
        """Verify, decode and store one callback; the outcome says what became of it."""
        if isinstance(body, Unreadable):
            limit = {"limit_bytes": self.settings.max_body_bytes} if body.reason == "too_large" else {}
            return self._invalid(body.reason, remote, body.detail, **limit)
        if not self._tracing:
            return await self._handle(body, header, remote, trace.INVALID_SPAN)
        with self.tracer.start_as_current_span("gme.callback", kind=trace.SpanKind.SERVER) as span:
            outcome = await self._handle(body, header, remote, span)
            if isinstance(outcome, Rejected):
                span.set_attribute("gme.outcome", outcome.reason)
                span.set_status(Status(StatusCode.ERROR, outcome.reason))
            else:
                span.set_attribute("gme.outcome", outcome.result.value)
            return outcome

    def _invalid(self, reason: InvalidReason, remote: str, detail: str | None, **fields: Any) -> Rejected:
        self.metrics.invalid.labels(reason).inc()
        self.log.warning(
            "callback_rejected",
            reason=reason,
            remote=remote,
            **({"detail": detail} if detail else {}),
            **fields,
        )
        return Rejected(reason, detail)

    def _canary(self, ev: Event, now: float, remote: str) -> Outcome:
        """A verified canary: proof the public path works, counted apart from recordings."""
        self.metrics.canaries.inc()
        self.metrics.canary_last_success.set(now)
        self.log.debug("canary_received", biz_id=ev.biz_id, remote=remote)
        return _CANARY

    def _explain(self, body: bytes, header: str, ring: Keyring, biz: int | None, remote: str) -> None:
        """Say which misconfiguration would make a rejected signature verify, if one would.
        The callback stays rejected; the hint names settings and BizIDs, never key material."""
        assert self.doctor is not None
        found = self.doctor.examine(body, header, ring, biz, self.settings.signature_encoding)
        if found is None:
            self.metrics.signature_diagnoses_skipped.inc()
            return
        hint = found.hint
        if hint is None:
            return
        self.metrics.signature_hints.labels(hint.kind).inc()
        if found.log:
            self.log.warning(
                "signature_hint",
                hint=hint.kind,
                fix=hint.fix,
                claimed_biz_id=found.biz_id,
                remote=remote,
                **({"deviations": list(hint.deviations)} if len(hint.deviations) > 1 else {}),
                **({"verifies_for_biz_id": hint.key_biz_id} if hint.key_biz_id is not None else {}),
                **({"unlogged_repeats": found.repeats} if found.repeats else {}),
            )

    async def _mark_refused(self, body: bytes) -> None:
        """A well-formed callback for a BizID we hold a key for failed verification: mark the
        live segment it names as attributed to us (we refused its event; lifecycle.can_mark),
        so its deadline makes it unverified (or looked up in COS), never a miss nor a page.
        Nothing in the body is trusted beyond naming that one segment; marks are bounded by a
        token bucket (rate and burst) and counted; a segment we do not track is left alone."""
        try:
            ev = events.decode(body)
        except MalformedCallback:
            return
        if not isinstance(ev, Event) or ev.room_id == CANARY_ROOM_ID:
            return
        marks = self.metrics.segment_marks
        if not self._marks.try_take():
            marks.labels("signature", "refused").inc()
            return
        now = self.clock.time()
        try:
            marked = await self.store.mark_segment(key_of(ev), now, now)
        except StoreUnavailable:
            return  # the store's own outage is counted and marked by its blind window
        marks.labels("signature", "marked" if marked else "not_tracked").inc()

    async def _handle(self, body: bytes, header: str | None, remote: str, span: trace.Span) -> Outcome:
        biz = None
        try:
            ring = self.keys.current
            # Peeking costs a JSON parse: only worth it when keys differ per app.
            biz = events.peek_biz_id(body) if header and ring.per_app else None
            signature.verify(body, header, ring.keys_for(biz), self.settings.signature_encoding)
        except SignatureError as exc:
            self.metrics.signature_failures.labels(exc.reason).inc()
            if biz is None and header:  # one key for every app: not peeked before, only now
                biz = events.peek_biz_id(body)
            # The BizID is unverified here: logged as a claim, for finding a misconfigured app.
            self.log.warning(
                "callback_rejected", reason=exc.reason, remote=remote, claimed_biz_id=biz, body_bytes=len(body)
            )
            if header is not None and exc.reason != "missing" and self.doctor is not None:
                self._explain(body, header, ring, biz, remote)
            if exc.reason == "mismatch":
                await self._mark_refused(body)
            return Rejected(exc.reason)

        now = self.clock.time()
        try:
            ev = events.decode(body)
        except MalformedCallback as exc:
            self.metrics.last_callback.set(now)
            return self._invalid("malformed", remote, str(exc))
        canary = isinstance(ev, Event) and ev.room_id == CANARY_ROOM_ID
        if not canary:
            self.metrics.last_callback.set(now)

        if isinstance(ev, UnknownEvent):
            self.metrics.count_callback("unknown", Result.IGNORED, "other")
            span.set_attribute("gme.event_type", ev.event_type)
            self.log.info(
                "callback_unknown_event_type", event_type=ev.event_type, biz_id=ev.biz_id, remote=remote
            )
            return _ACCEPTED[Result.IGNORED]

        span.set_attributes(
            {
                "gme.biz_id": ev.biz_id,
                "gme.room_id": ev.room_id,
                "gme.user_id": ev.user_id,
                "gme.task_id": str(ev.task_id),
                "gme.seq_no": ev.seq_no,
                "gme.event_type": ev.event_name,
            }
        )
        window = self.settings.replay_window_seconds
        if window and abs(now - ev.timestamp) > window:
            return self._invalid(
                "stale",
                remote,
                None,
                biz_id=ev.biz_id,
                room_id=ev.room_id,
                timestamp=ev.timestamp,
                skew_seconds=round(now - ev.timestamp, 3),
            )
        if canary:
            return self._canary(ev, now, remote)

        try:
            out = await self.store.record(ev)
        except StoreUnavailable as exc:
            self.metrics.backend_errors.labels("record").inc()
            self.log.warning(
                "callback_not_stored",
                reason="unavailable",
                error=str(exc),
                biz_id=ev.biz_id,
                room_id=ev.room_id,
                remote=remote,
            )
            return Rejected("unavailable")
        m = self.metrics
        m.count_callback(out.event_type, out.result, out.app_id)
        m.observe_callback_delay(out.event_type, now - ev.timestamp)
        if out.duration is not None:
            m.observe_duration(out.record_mode, out.duration)
        if out.upload_delay is not None:
            m.observe_upload_delay(out.record_mode, out.upload_delay)
        if self._log_accepted:
            self._accepted_log(
                "callback_accepted",
                result=out.result.value,
                event_type=out.event_type,
                biz_id=ev.biz_id,
                room_id=ev.room_id,
                user_id=ev.user_id,
                task_id=str(ev.task_id),
                seq_no=ev.seq_no,
                remote=remote,
            )
        return _ACCEPTED[out.result]
