"""What every store offers: the interface the intake, the service and the API use.

A store holds the tracked segments and applies :mod:`gme_recwatch.lifecycle` to them. The
methods are async because a store may be across a network; the in-memory store answers
without ever suspending. Nothing above this interface knows which store is in use.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar, runtime_checkable

from ..events import Event
from ..lifecycle import Backoff, CheckAnswer, Claim, Outcome, Reconciled, Resolution, TailClaim, Transition

T = TypeVar("T")


class StoreUnavailable(Exception):
    """The store could not be reached, or did not answer in time. The message names the
    operation and the error type, never a URL.

    ``maybe_applied``: the request may have reached the store, which may still apply it (a
    timeout after it was sent: Redis runs a script it received whatever became of the client).
    A write that failed so may have been recorded; a retry of it is safe (a duplicate changes
    nothing). False only when the request surely never left (no connection)."""

    def __init__(self, message: str, *, maybe_applied: bool = False) -> None:
        super().__init__(message)
        self.maybe_applied = maybe_applied


@dataclass(slots=True)
class StoreStats:
    """The tallies the gauges and counters are exported from; O(apps x states) to produce."""

    app_labels: list[str]
    active_recordings: dict[tuple[str, str], int]
    active_rooms: dict[str, int]
    stuck: dict[str, int]
    stuck_total: dict[str, int]
    missing_uploads: dict[str, int]
    missing_uploads_total: dict[str, int]
    completed_total: dict[str, int]
    oldest_start: dict[str, float]
    orphan_events: dict[str, int]
    by_state: dict[str, int]
    evictions: dict[tuple[str, str], int]
    capacity: int
    app_overflow: int
    segments: int = 0
    checks_pending: int = 0
    """Segments held until their file is looked up in COS (claimed or not)."""
    segments_vanished: int = 0
    """Segments whose record vanished from a shared store behind the service's back (an
    evicting Redis, a manual delete), found and taken out of the count by the sweep or an
    eviction; always 0 in memory. Their share of the other tallies is lost with them."""
    evicted_keys: int = 0
    """Keys the shared store's Redis evicted since it started (``INFO stats``; any key of that
    Redis, ours or not): growth means an evicting ``maxmemory-policy`` under memory pressure, a
    store fault. Always 0 in memory."""


@dataclass(frozen=True, slots=True)
class CheckNote:
    """What a COS lookup of a segment's file said, kept beside the segment (never in its packed
    state) by :meth:`Store.note_check`, for the drill-down API."""

    checked_at: float
    """Unix time the answer was applied."""
    result: str
    """found, not_found or error."""
    bucket: str = ""
    object_key: str = ""
    check_error: str = ""
    """Why the lookup gave no answer to trust (timeout, forbidden, no_file_name, ...)."""
    check_detail: str = ""


@dataclass(slots=True)
class SegmentView:
    """One segment as the drill-down API shows it; times are Unix times."""

    biz_id: int
    room_id: str
    user_id: str
    task_id: int
    seq_no: int
    app_id: str
    state: str
    record_mode: str
    events_seen: list[str]
    started_at: float | None
    completed_at: float | None
    uploaded_at: float | None
    first_received_at: float
    next_deadline_at: float | None
    expires_at: float
    confirmed: bool | None = None
    """With COS checks, for a stuck or upload_missing segment: True when its file was looked up
    and is not there, False when the lookup failed; None otherwise."""
    lost_events: list[str] = field(default_factory=list)
    """Events whose callbacks never arrived though the file was found in COS."""
    blind_window_start: float | None = None
    """For a segment live when a blind window opened (and not heard from since): the window's
    start and end. An ``unverified`` segment always has one: the window that caused it."""
    blind_window_end: float | None = None
    deadline: str | None = None
    """For a problem (or unverified) segment: the deadline that passed (``max_recording_seconds``,
    ``upload_grace_seconds`` or ``reorder_window_seconds``); None otherwise."""
    state_since: float | None = None
    """For a problem (or unverified) segment: since when it is in that state (Unix time): when
    the deadline passed, or when its COS lookup answered."""
    check: CheckNote | None = None
    """The COS lookup that settled this segment, while its answer stands."""


@dataclass(slots=True)
class SegmentPage:
    """One page of matching segments, oldest first, with how many match in all."""

    segments: list[SegmentView]
    total: int
    after: tuple[float, str] | None = None
    """Where the next page starts (pass it as ``after``); None on the last page."""


def page_of(
    matches: list[tuple[float, str, T]], limit: int, after: tuple[float, str] | None
) -> tuple[list[tuple[float, str, T]], int, tuple[float, str] | None]:
    """The page of ``matches`` ((first received, key, anything), in any order) after the
    position ``after``, at most ``limit`` long, oldest first; the total; the next position."""
    total = len(matches)
    if after is not None:
        matches = [m for m in matches if (m[0], m[1]) > after]
    chosen = heapq.nsmallest(limit + 1, matches, key=lambda m: (m[0], m[1]))
    more = len(chosen) > limit
    chosen = chosen[:limit]
    return chosen, total, (chosen[-1][0], chosen[-1][1]) if more and chosen else None


@dataclass(slots=True)
class Sweep:
    """One round of deadlines: the segments that became a problem, and whether more are due."""

    transitions: list[Transition] = field(default_factory=list)
    more: bool = False


@runtime_checkable
class Store(Protocol):
    """Where segment state lives. Every method obeys the lifecycle rules; see the module doc."""

    async def record(self, ev: Event) -> Outcome:
        """Apply one verified event. When this returns, its effect is stored."""
        ...

    async def sweep(self, budget: int) -> Sweep:
        """Apply deadlines that have passed (state changes, retention), at most ``budget`` of
        them; each transition is reported exactly once."""
        ...

    async def claim(self, limit: int, lease: float) -> list[Claim]:
        """Up to ``limit`` segments whose check is pending and not claimed by anyone else, each
        claimed for ``lease`` seconds: a claim not resolved by then is handed out again (its
        claimant died). Oldest first; then the lookups to retry whose time has come."""
        ...

    async def resolve(self, key: str, answer: CheckAnswer, backoff: Backoff | None = None) -> Resolution:
        """Apply a lookup's answer to a claimed segment; None if it moved on meanwhile. With a
        ``backoff``, an answer that is no answer (error) schedules the next lookup
        (:func:`~gme_recwatch.lifecycle.retry_after`): the segment is claimable again then."""
        ...

    async def stats(self) -> StoreStats: ...

    async def mark_blind(self, start: float, end: float) -> int:
        """Mark every live segment (recording, or awaiting its upload) with the blind window
        ``start``-``end`` (Unix times): its deadline will not page it on silence alone (see
        :func:`gme_recwatch.lifecycle.after_blind`). Returns how many were marked."""
        ...

    async def mark_segment(self, key: str, start: float, end: float) -> bool:
        """Mark the one live segment ``key`` with the window ``start``..``end``, as
        :meth:`mark_blind` marks them all (:func:`gme_recwatch.lifecycle.can_mark`): for a
        well-formed callback of it that we refused. False when no live segment has that key:
        a refused callback never creates one."""
        ...

    async def count(self) -> int:
        """Segments tracked."""
        ...

    async def register_apps(self, biz_ids: list[int], without_start: frozenset[int] = frozenset()) -> None:
        """Give apps known in advance (from the keyring) their label, so their series exist; and
        name the apps whose start callbacks are never sent (:func:`~gme_recwatch.lifecycle.expects_start`)."""
        ...

    async def claim_tails(self, limit: int, lease: float) -> list[TailClaim]:
        """Up to ``limit`` recording streams quiet long enough for their folder to be listed once
        for a last segment no callback announced (:func:`~gme_recwatch.lifecycle.tail_due`), each
        claimed for ``lease`` seconds (by one replica, as :meth:`claim` does)."""
        ...

    async def adopt(
        self, stream: str, files: list[tuple[int, str]], retry_in: float | None = None
    ) -> list[Reconciled]:
        """The answer to a claimed tail listing: ``files`` (SeqNo, file name) of ``stream`` that
        no callback announced become segments found in COS, every callback of theirs lost;
        those a callback announced meanwhile are left alone. With ``retry_in`` the listing gave
        no answer: it is claimable again that many seconds from now."""
        ...

    async def segments(
        self,
        *,
        state: str | None = None,
        app_id: str | None = None,
        room_id: str | None = None,
        limit: int = 100,
    ) -> list[SegmentView]:
        """Matching segments, oldest first (by when we first heard of them): for the API."""
        ...

    async def page(
        self,
        *,
        state: str | None = None,
        app_id: str | None = None,
        room_id: str | None = None,
        limit: int = 100,
        after: tuple[float, str] | None = None,
    ) -> SegmentPage:
        """:meth:`segments` a page at a time: those after the position ``after`` (a page's
        ``after``), with the total matching."""
        ...

    async def note_check(self, key: str, note: CheckNote) -> None:
        """Keep what the lookup of a segment's file said (where, and why it failed), beside the
        segment and for no longer than it lives, for the API."""
        ...

    async def close(self) -> None: ...


EpochStatus = Literal["same", "adopted", "created", "reset", "changed"]


@dataclass(frozen=True, slots=True)
class Epoch:
    """What a shared store's epoch marker says (see :meth:`SharedStore.epoch`)."""

    status: EpochStatus
    """``same``: the marker the caller knew; ``adopted``: the caller knew none and takes the
    store's; ``created``: there was none and the caller knew none (a store used for the first
    time, as far as anyone can tell); ``reset``: the marker the caller knew is gone -- the data
    went with it -- and the caller alone reports it (it set the new marker, or is the first
    that knew the old one to see the marker a new replica set on the emptied store);
    ``changed``: the marker is another than the caller knew, and the reset is reported
    already."""
    marker: str
    segments: int
    """Segments tracked, read in the same step."""
    now: float
    """The store's clock (Unix time) when it answered."""


@runtime_checkable
class SharedStore(Protocol):
    """A store that several replicas share (Redis): they say they are alive, and they watch
    the store's epoch marker, whose loss means the store came back empty."""

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the store answers."""
        ...

    async def heartbeat(self, replica: str) -> None:
        """``replica`` is alive, on the store's clock (see :func:`gme_recwatch.blind.after_all_down`)."""
        ...

    async def last_alive(self) -> tuple[float | None, float | None, float]:
        """(the newest heartbeat, the last replica's clean stop, now): None when not known."""
        ...

    async def leave(self, replica: str, period: float) -> None:
        """A clean stop: ``replica``'s heartbeat goes; if it was the last one alive, its stop
        time is noted."""
        ...

    async def epoch(self, known: str) -> Epoch:
        """Compare the store's epoch marker with ``known`` (the one last seen, "" for none) and
        set a new one when it is missing, atomically: one replica sees a reset as ``reset``."""
        ...

    async def check_online(self) -> str:
        """For ``serve --check --online``: connect, authenticate, check the server's version and
        load the scripts, writing nothing; a one-line description of the store, or
        :class:`StoreUnavailable` naming what failed."""
        ...


@runtime_checkable
class Snapshottable(Protocol):
    """A store whose whole state can be written to a file and read back at start."""

    def snapshot(self, clean: bool = False) -> bytes:
        """The whole state; ``clean`` marks the final snapshot of a clean stop."""
        ...

    def prepare_snapshot(self) -> Callable[[], bytes]:
        """Copy the state now; the returned call encodes the copy (on a worker thread)."""
        ...

    def restore(self, data: bytes) -> int: ...

    @property
    def restored_from(self) -> tuple[float, bool] | None:
        """(when, clean) of the snapshot restored: its wall time, and whether a clean stop
        wrote it; None before a restore."""
        ...

    def __len__(self) -> int: ...
