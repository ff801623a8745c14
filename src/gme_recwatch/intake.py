"""The callback pipeline, one way: bytes -> verified -> decoded event -> store -> metrics/logs.

No HTTP here: the HTTP layer hands over what it read (the body, or why it could not read one)
and the ``Signature`` header, and gets back an :data:`Outcome` -- :class:`Accepted` with the
store's result, or :class:`Rejected` with a reason -- which it maps to a status and a body.
Every rejection is counted here, once, with its reason, and logged at a bounded rate (one line
per reason per ``rejection_log_interval_seconds``, saying how many were left out); a rejected
signature may add one rate-limited ``signature_hint`` line naming the misconfiguration that
explains it. Nothing read from the body is trusted, logged as fact or allowed to change state
before the signature holds. (The body is decoded beforehand only to choose which app's keys to
try and to tell a sender from noise.)

Noise is not a sender: only a well-formed callback (it decodes, has the required fields, names a
BizID we hold a key for) whose signature then fails is an :class:`Unverified` outcome, counted in
``gme_recording_signature_failures_total`` and so in the signature alerts and the ingest SLO.
Anything else that fails verification (no body, not JSON, not a callback, an app without a key,
a Signature on junk) is :class:`Noise`, counted in ``gme_recording_noise_requests_total`` only,
and answered as before (401).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from . import events, signature
from .clock import Clock
from .events import CANARY_ROOM_ID, Event, InvalidReason, MalformedCallback, NoiseReason, UnknownEvent
from .hints import SignatureDoctor
from .lifecycle import Result, key_of
from .logging import level_number
from .metrics import Metrics
from .ratelimit import LogSampler, TokenBucket
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


@dataclass(frozen=True, slots=True)
class Unverified(Rejected):
    """A well-formed callback for an app we hold keys for whose signature did not verify
    (``reason`` missing or mismatch): a real sender on a wrong key, or a forger naming a real
    app. Counted in ``gme_recording_signature_failures_total``. ``event`` is what the body
    claims, unverified: never stored, only a pointer to what it names."""

    event: Event | UnknownEvent | None = None


@dataclass(frozen=True, slots=True)
class Noise(Rejected):
    """A request that failed verification and is not a well-formed callback of an app we hold
    keys for. Answered by ``reason`` (missing, mismatch, unknown_app: as a signature failure
    always was), counted by ``noise`` in ``gme_recording_noise_requests_total`` only."""

    noise: NoiseReason = "not_a_callback"


Outcome = Accepted | Rejected  # Unverified and Noise are Rejected
_ACCEPTED: Final = {r: Accepted(r) for r in Result}
# Callbacks answered 503 whose write may have landed, remembered so that their retry is not
# counted as a duplicate: bounded (oldest forgotten first); Tencent retries within a minute.
UNKNOWN_OUTCOMES_KEPT: Final = 10_000
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
        # Callbacks answered 503 that may have been recorded all the same, by (segment, event):
        # oldest first, bounded.
        self._unknown_outcome: dict[tuple[str, int], float] = {}
        self._accepted_log = getattr(log, settings.accepted_log_level)
        # Building the accepted line's fields costs ~2 us a callback: skip it when its level is
        # filtered out (the default: debug under info).
        self._log_accepted = level_number(settings.accepted_log_level) >= level_number(settings.log_level)
        # Entering even a no-op span's context costs ~10 us a callback: skip it when off.
        self._tracing = not isinstance(tracer, trace.NoOpTracer)
        self._marks = TokenBucket(
            settings.rejection_marks_per_second, settings.rejection_marks_burst, clock.monotonic
        )
        # Told of every verified upload callback: the COS checker's proof that its endpoint sees.
        self.on_uploaded: Callable[[Event], None] | None = None
        # At most one line per rejection reason per interval, saying how many it left out.
        self._sampler = LogSampler(settings.rejection_log_interval_seconds, clock.monotonic)
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
        self._rejected(reason, remote=remote, **({"detail": detail} if detail else {}), **fields)
        return Rejected(reason, detail)

    def _rejected(self, key: str, event: str = "callback_rejected", **fields: Any) -> None:
        """Log a rejection unless one of the same kind was logged within the interval; the line
        says how many were left out since the previous one (the counters have them all)."""
        suppressed = self._sampler.admit(key)
        if suppressed is None:
            return
        self.log.warning(event, **fields, **({"suppressed": suppressed} if suppressed else {}))

    def _noise(
        self,
        body: bytes,
        parsed: Event | UnknownEvent | MalformedCallback,
        answer: FailureReason,
        header: str | None,
        ring: Keyring,
        biz: int | None,
        remote: str,
    ) -> Noise:
        """Not a sender: counted apart, outside every signature alert and SLO."""
        noise: NoiseReason
        if not body.strip():
            noise = "empty"
        elif isinstance(parsed, MalformedCallback):
            noise = "not_json" if str(parsed).startswith("invalid JSON") else "not_a_callback"
        elif biz is None:
            noise = "not_a_callback"
        else:
            noise = "unknown_app"
        self.metrics.noise.labels(noise).inc()
        self._rejected(
            "noise:" + noise,
            "request_rejected",
            reason=noise,
            answer=answer,
            remote=remote,
            body_bytes=len(body),
            **({"claimed_biz_id": biz} if biz is not None else {}),
        )
        # An app with no key of its own, signed with another app's key, is a sender's
        # misconfiguration worth naming (rate-limited like every diagnosis).
        if noise == "unknown_app" and header is not None and answer != "missing" and self.doctor is not None:
            self._explain(body, header, ring, biz, remote)
        return Noise(answer, noise=noise)

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

    async def _mark(self, ev: Event, cause: Literal["signature", "server_error"]) -> None:
        """Mark the live segment ``ev`` names as attributed to us (lifecycle.can_mark), so its
        deadline makes it unverified (or looked up in COS), never a miss nor a page: a
        well-formed callback for a BizID we hold a key for that failed verification
        (``signature``: we refused its event), or a verified one that a bug answered 500
        (``server_error``: Tencent retries, but if every retry meets the bug, we lost it).
        Nothing in an unverified body is trusted beyond naming that one segment; marks are
        bounded by a token bucket (rate and burst) and counted; a segment we do not track is
        left alone."""
        if ev.room_id == CANARY_ROOM_ID:
            return
        marks = self.metrics.segment_marks
        if not self._marks.try_take():
            marks.labels(cause, "refused").inc()
            return
        now = self.clock.time()
        try:
            marked = await self.store.mark_segment(key_of(ev), now, now)
        except StoreUnavailable:
            return  # the store's own outage is counted and marked by its blind window
        marks.labels(cause, "marked" if marked else "not_tracked").inc()

    async def _handle(self, body: bytes, header: str | None, remote: str, span: trace.Span) -> Outcome:
        # Decoded first, trusted never: to pick the app's keys and to tell a sender from noise.
        try:
            parsed: Event | UnknownEvent | MalformedCallback = events.decode(body)
        except MalformedCallback as exc:
            parsed = exc
        if isinstance(parsed, MalformedCallback):
            biz = events.peek_biz_id(body)
        else:
            biz = parsed.biz_id
        ring = self.keys.current
        keys = ring.keys_for(biz)
        try:
            signature.verify(body, header, keys, self.settings.signature_encoding)
        except SignatureError as exc:
            if isinstance(parsed, MalformedCallback) or biz is None or not keys:
                return self._noise(body, parsed, exc.reason, header, ring, biz, remote)
            self.metrics.signature_failures.labels(exc.reason).inc()
            # The BizID is unverified here: logged as a claim, for finding a misconfigured app.
            self._rejected(
                exc.reason, reason=exc.reason, remote=remote, claimed_biz_id=biz, body_bytes=len(body)
            )
            if header is not None and exc.reason != "missing" and self.doctor is not None:
                self._explain(body, header, ring, biz, remote)
            if exc.reason == "mismatch" and isinstance(parsed, Event):
                await self._mark(parsed, "signature")
            return Unverified(exc.reason, event=parsed)

        now = self.clock.time()
        if isinstance(parsed, MalformedCallback):  # signed by a key of ours, yet not a callback
            self.metrics.last_callback.set(now)
            return self._invalid("malformed", remote, str(parsed))
        ev = parsed
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
            return await self._record(ev, now, remote)
        except Exception:
            # A bug between the verified event and its answer: the listener answers 500 and
            # Tencent retries; the segment is marked in case every retry meets the same bug.
            with contextlib.suppress(Exception):
                await self._mark(ev, "server_error")
            raise

    async def _record(self, ev: Event, now: float, remote: str) -> Outcome:
        """Store a verified event and count what it did."""
        try:
            out = await self.store.record(ev)
        except StoreUnavailable as exc:
            self.metrics.backend_errors.labels("record").inc()
            if exc.maybe_applied:
                # Answered 503, yet it may land: its retry is then a duplicate of a write nobody
                # acknowledged, and is counted as the first acknowledgement it is (below).
                self.metrics.callbacks_unknown_outcome.inc()
                self._unknown_outcome[(key_of(ev), ev.event_type)] = now
                while len(self._unknown_outcome) > UNKNOWN_OUTCOMES_KEPT:
                    del self._unknown_outcome[next(iter(self._unknown_outcome))]
            self._rejected(
                "unavailable",
                "callback_not_stored",
                reason="unavailable",
                error=str(exc),
                biz_id=ev.biz_id,
                room_id=ev.room_id,
                remote=remote,
            )
            return Rejected("unavailable")
        if ev.event_type == events.UPLOADED and self.on_uploaded is not None:
            self.on_uploaded(ev)
        m = self.metrics
        if self._unknown_outcome and self._unknown_outcome.pop((key_of(ev), ev.event_type), None) is not None:
            if out.result is Result.DUPLICATE:
                # The 503'd copy landed: this retry is its first acknowledgement, not Tencent
                # sending twice. (On another replica it counts as a duplicate: see the docs.)
                out.result = Result.ACCEPTED
                m.callbacks_retried_after_unknown.inc()
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
