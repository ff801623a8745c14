"""Reconciliation: look a file up in COS before calling its segment stuck or its upload missing.

With a COS bucket configured, a deadline does not make a segment a problem at once: the store
holds it where it is, its check pending (:func:`gme_recwatch.lifecycle.holds_for_check`).
:class:`Reconciler` runs beside the sweep, never on the request path: it claims pending checks
from the store (with several replicas on Redis, each segment is claimed by one of them, under a
lease that hands it out again if that replica dies), looks each file up with
:class:`~gme_recwatch.cos.CosChecker` (bounded concurrency and rate, timeout, one retry) and
hands the answer back to the store, then counts and logs what it made of it:

* found: ``segment_reconciled`` (info) with the full key and the events whose callbacks the
  sender lost, counted in ``gme_recording_callbacks_lost_total{event_type}`` and
  ``gme_recording_segments_reconciled_total``; no stuck or missing-upload count, gauge or page.
* not found: ``segment_stuck`` / ``segment_upload_missing`` with ``confirmed=true``.
* lookup failed: the same line with ``confirmed=false`` and why, and the error class counted in
  ``gme_recording_reconcile_errors_total{bucket, reason}``; the store schedules the next
  lookup (:func:`gme_recwatch.lifecycle.retry_after`: back-off with full jitter, the ``retry``
  bounds), counted in ``gme_recording_reconcile_retries_total``, and the retry is claimed like
  a first lookup, until it gets an answer (found: reconciled; not found: the problem reported
  anew, confirmed) or the segment is forgotten.

Every segment that enters a problem state is counted once, by the replica that settled it, in
``gme_recording_problem_segments_total{app_id, state, confirmed}`` (:func:`report_problem`): the
pages read only ``confirmed!="false"``, so a COS outage is a ticket naming COS, never a page
saying recordings are missing.

Where it looked and why it could not tell is also handed to the store
(:meth:`~gme_recwatch.stores.Store.note_check`), beside the segment, for the drill-down API.

A flood of due segments (a fleet-wide outage) waits in the store: at most ``max_claims``
segments are claimed at a time, so the checker's queue stays short, claims do not outlive their
lease waiting for a turn, and COS sees no more than the checker's rate.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Final

from .clock import Clock
from .cos import CheckError, CheckResult, CosChecker, Found, Listing, NotFound, locate, result_name, tail
from .lifecycle import (
    SEP,
    Backoff,
    CheckAnswer,
    Claim,
    Reconciled,
    Retrying,
    State,
    TailClaim,
    Transition,
    split_key,
    stream_of,
)
from .metrics import Metrics, exemplar_labels
from .stores import CheckNote, Store, StoreUnavailable

# Problem states whose counters carry the last segment that entered them as an exemplar.
EXEMPLAR_STATES: Final = frozenset({State.STUCK.label, State.UPLOAD_MISSING.label, State.UNANNOUNCED.label})
UNANNOUNCED: Final = State.UNANNOUNCED.label
CLAIMS_PER_LOOKUP_SLOT: Final = 4  # claims held per concurrent lookup: a short queue, never idle
RETRY_SECONDS: Final = (30.0, 900.0)  # a failed lookup's wait bound: at least, at most (settings)


def report_problem(t: Transition, metrics: Metrics, log: Any, clock: Clock, **extra: Any) -> None:
    """Count, log (and note as an exemplar) a segment that entered a problem state."""
    if t.state in EXEMPLAR_STATES:
        metrics.count_problem(t.app_id, t.state, t.confirmed)
        metrics.store.note(
            t.state, t.app_id, exemplar_labels(t.room_id, t.user_id, t.task_id, t.seq_no), 1, clock.time()
        )
    if t.state == UNANNOUNCED:
        metrics.unannounced.labels(t.app_id, "missing" if t.confirmed else "unconfirmed").inc()
    if t.confirmed is not None:
        extra["confirmed"] = t.confirmed
    log.warning(
        f"segment_{t.state}",
        state=t.state,
        app_id=t.app_id,
        biz_id=t.biz_id,
        room_id=t.room_id,
        user_id=t.user_id,
        task_id=str(t.task_id),
        seq_no=t.seq_no,
        **extra,
    )


def lease_seconds(checker: CosChecker, max_claims: int) -> float:
    """How long a claim lasts: the time the last of ``max_claims`` claims waits for its turn
    at the checker's rate, plus two timed-out attempts and the back-off, four times over, and
    never under a minute. Only a replica that died leaves a claim to run out."""
    c = checker.config
    worst = max_claims / c.requests_per_second + 2 * c.timeout + 1.0
    return max(60.0, 4 * worst)


class Reconciler:
    """Claims pending checks, looks their files up, hands the answers to the store."""

    def __init__(
        self,
        store: Store,
        checker: CosChecker,
        metrics: Metrics,
        log: Any,
        clock: Clock,
        *,
        max_claims: int | None = None,
        lease: float | None = None,
        retry: tuple[float, float] = RETRY_SECONDS,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.checker = checker
        self.metrics = metrics
        self.log = log
        self.clock = clock
        self.max_claims = max_claims or CLAIMS_PER_LOOKUP_SLOT * checker.config.max_concurrency
        self.lease = lease if lease is not None else lease_seconds(checker, self.max_claims)
        self.retry = retry
        self._rng = rng or random.Random()  # noqa: S311  # jitter, not a secret
        self._checking: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        c = checker.config
        metrics.touch_buckets(sorted({c.default_bucket, *c.buckets.values()} - {""}))

    @property
    def in_flight(self) -> int:
        """Claims being looked up now (queued at the checker or in a request)."""
        return len(self._checking)

    def wake(self) -> None:
        """Claim again now (the sweep held segments, or a lookup freed a place)."""
        self._wake.set()

    async def run(self, interval: float) -> None:
        """Claim and look up, for ever: at least every ``interval`` seconds, and at once when
        woken. A failed round is logged; the next one tries again."""
        while True:
            try:
                await self.round()
            except StoreUnavailable as exc:
                self.log.error("reconcile_claim_failed", error=str(exc))
            except Exception as exc:  # the loop must outlive one bad round
                self.log.error("background_task_failed", task="reconcile", error=type(exc).__name__)
            self._wake.clear()
            try:
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def round(self) -> int:
        """Claim as many pending checks as there is room for and start their lookups; returns
        how many were claimed."""
        room = self.max_claims - len(self._checking)
        if room <= 0:
            return 0
        claims = await self.store.claim(room, self.lease)
        for claim in claims:
            task = asyncio.create_task(self._check(claim))
            self._checking.add(task)
            task.add_done_callback(self._done)
        room -= len(claims)
        tails = await self.store.claim_tails(room, self.lease) if room > 0 else []
        for tail_claim in tails:
            task = asyncio.create_task(self._list_tail(tail_claim))
            self._checking.add(task)
            task.add_done_callback(self._done)
        return len(claims) + len(tails)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._checking.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Unexpected: the claim stays leased, and is looked up again when its lease ends.
            self.log.error(
                "background_task_failed", task="reconcile_check", error=type(task.exception()).__name__
            )
        self.wake()

    async def drain(self) -> None:
        """Wait for every lookup started so far (tests, and a graceful stop)."""
        while self._checking:
            await asyncio.gather(*self._checking, return_exceptions=True)

    async def stop(self) -> None:
        """Abandon lookups in flight: their claims stay pending in the store (a snapshot keeps
        them; in Redis their lease runs out), so another round looks them up again."""
        for task in list(self._checking):
            task.cancel()
        await asyncio.gather(*self._checking, return_exceptions=True)

    async def _check(self, claim: Claim) -> None:
        biz, room, user, task, seq = split_key(claim.key)
        result: CheckResult | None = None
        if claim.pending == UNANNOUNCED:  # no file name of its own: its stream's folder is listed
            result = await self._locate(claim)
            answer: CheckAnswer = result_name(result)
            if isinstance(result, CheckError):
                self.metrics.reconcile_errors.labels(result.bucket, result.reason).inc()
            backoff: Backoff | None = Backoff(*self.retry, self._rng.random())
        elif claim.file_name:
            result = await self.checker.check(
                biz, claim.file_name, room_id=room, user_id=user, task_id=task, seq_no=seq
            )
            answer = result_name(result)
            if isinstance(result, CheckError):
                self.metrics.reconcile_errors.labels(result.bucket, result.reason).inc()
            # No answer to trust: looked up again later (the store keeps when), until one comes.
            backoff = Backoff(*self.retry, self._rng.random())
        else:  # no callback carried a FileName: nothing to look up, nothing confirmed, no retry
            answer, backoff = "error", None
        try:
            resolution = await self.store.resolve(claim.key, answer, backoff)
        except StoreUnavailable as exc:
            # The claim's lease runs out and the segment is looked up again.
            self.log.error("reconcile_resolve_failed", error=str(exc))
            return
        if resolution is None:
            return
        if isinstance(resolution, Retrying) or (
            isinstance(resolution, Transition) and resolution.retry_in is not None
        ):
            self.metrics.reconcile_retries.inc()
        why = _why(result, claim)
        try:  # for the API: where it was looked for, and why no answer could be trusted
            await self.store.note_check(
                claim.key,
                CheckNote(
                    self.clock.time(),
                    answer,
                    why.get("bucket", ""),
                    why.get("object_key", ""),
                    why.get("check_error", ""),
                    why.get("check_detail", ""),
                ),
            )
        except StoreUnavailable as exc:  # the answer stands; only the API's detail is missing
            self.log.error("reconcile_note_failed", error=str(exc))
        if isinstance(resolution, Reconciled):
            if claim.pending == UNANNOUNCED:
                self.metrics.unannounced.labels(resolution.app_id, "found").inc()
            self._reconciled(resolution, result, unannounced=claim.pending == UNANNOUNCED)
        elif isinstance(resolution, Transition):
            if resolution.retry_in is not None:
                why["retry_in"] = round(resolution.retry_in, 3)
            report_problem(resolution, self.metrics, self.log, self.clock, **why)
        else:  # still no answer: already reported unconfirmed; only the next lookup's time
            self.log.debug("reconcile_retry_scheduled", retry_in=round(resolution.retry_in, 3), **why)

    async def _locate(self, claim: Claim) -> CheckResult:
        """Look an unannounced segment up by listing its stream's folder (:func:`cos.locate`):
        found, not found, or an error (the listing failed, or cannot tell: ``ambiguous``)."""
        task, seq = split_key(claim.key)[3:]
        # Counted below, by what the listing says of this segment.
        listing = await self._list(stream_of(claim.key), claim.record_mode, claim.file_name)
        result: CheckResult
        if isinstance(listing, CheckError):
            result = listing
        else:
            self.metrics.count_unknown_names(claim.app_id, listing.unknown)
            where = _folder(listing)
            located = locate(listing, task, seq, claim.file_name, claim.anchor_seq)
            if located.result == "found" and located.file is not None:
                result = Found(listing.bucket, located.file.key)
            elif located.result == "not_found":
                result = NotFound(listing.bucket, where)
            else:
                result = CheckError("ambiguous", listing.bucket, where, located.why)
        self.metrics.reconcile_checks.labels(result_name(result)).inc()
        return result

    async def _list(self, stream: str, record_mode: int, hint: str) -> Listing | CheckError:
        """A recording stream's COS folder, listed (:meth:`cos.CosChecker.list_stream`); not
        counted as a lookup: the caller counts what it made of it."""
        biz, room, user, task, _ = split_key(stream + SEP + "0")
        return await self.checker.list_stream(
            biz, room_id=room, user_id=user, record_mode=record_mode, task_id=task, hint=hint, count=False
        )

    async def _list_tail(self, claim: TailClaim) -> None:
        """List a quiet stream's folder once (:func:`cos.tail`) and hand the files of SeqNos no
        callback announced to the store, which adopts them as found; a listing that gives no
        answer (an error: not an ambiguous one) is tried again after the back-off."""
        _, room, user, task, _ = split_key(claim.stream + SEP + "0")
        listing = await self._list(claim.stream, claim.record_mode, claim.file_name)
        files: list[tuple[int, str]] | None = None
        why = ""
        if isinstance(listing, CheckError):
            self.metrics.reconcile_errors.labels(listing.bucket, listing.reason).inc()
            why = listing.reason
        else:
            self.metrics.count_unknown_names(claim.app_id, listing.unknown)
            found = tail(
                listing,
                task,
                claim.next_seq - 1,
                claim.file_name if claim.anchor_seq == claim.next_seq - 1 else "",
            )
            # A listing that cannot tell stays so until a callback changes the stream (and arms
            # its tail again): done, not retried every back-off until the stream expires.
            files = [] if found is None else [(seq, f.name) for seq, f in found]
            if found is None:
                self.log.info("tail_listing_ambiguous", task_id=str(task), room_id=room, user_id=user)
        try:
            if files is None:
                retry = Backoff(*self.retry, self._rng.random())
                await self.store.adopt(claim.stream, [], retry.jitter * retry.most)
                self.metrics.tail_listings.labels("error").inc()
                self.log.warning(
                    "tail_listing_failed", stream_task=str(task), room_id=room, user_id=user, reason=why
                )
                return
            made = await self.store.adopt(claim.stream, files)
        except StoreUnavailable as exc:  # its claim runs out and the stream is listed again
            self.log.error("reconcile_resolve_failed", error=str(exc))
            return
        self.metrics.tail_listings.labels("found" if made else "nothing").inc()
        for r in made:
            self.metrics.unannounced.labels(r.app_id, "tail_found").inc()
            self._reconciled(r, None, unannounced=True)

    def _reconciled(self, r: Reconciled, result: CheckResult | None, *, unannounced: bool = False) -> None:
        for event in r.lost:
            self.metrics.callbacks_lost.labels(event).inc()
        self.metrics.segments_reconciled.inc()
        where: dict[str, Any] = {} if result is None else {"bucket": result.bucket, "object_key": result.key}
        if unannounced:
            where["unannounced"] = True
        self.log.info(
            "segment_reconciled",
            app_id=r.app_id,
            biz_id=r.biz_id,
            room_id=r.room_id,
            user_id=r.user_id,
            task_id=str(r.task_id),
            seq_no=r.seq_no,
            lost_callbacks=list(r.lost),
            **where,
        )


def _folder(listing: Listing) -> str:
    """Where a listing looked: its last prefix (where the task's files were, if anywhere)."""
    return listing.prefixes[-1] if listing.prefixes else ""


def _why(result: CheckResult | None, claim: Claim) -> dict[str, Any]:
    """What the problem line says of the lookup: where, and why it is unconfirmed."""
    if result is None:
        return {"check_error": "no_file_name", "check_detail": "no callback of this segment carried a FileName"}
    out: dict[str, Any] = {"bucket": result.bucket, "object_key": result.key}
    if isinstance(result, CheckError):
        out["check_error"] = result.reason
        out["check_detail"] = result.detail
    return out
