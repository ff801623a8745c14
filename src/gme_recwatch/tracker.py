"""The recording lifecycle state machine and its TTL/deadline store. Pure: no HTTP, no I/O.

A segment is one recorded file, keyed by (BizID, RoomID, UserID, TaskID, SeqNo). Its state
is a function of which events (1 started, 2 completed, 3 uploaded) have been seen, when we
received them, and the clock -- so arrival order does not matter and a duplicate changes
nothing but a counter. See :func:`derive_state`.

Two clocks, on purpose:
* Durations (recording length, upload delay) come from the callbacks' ``Timestamp``: the
  sender's clock, stamped when Tencent sent each callback. Our receive times would add
  Tencent's delivery delay and retries to every duration.
* Deadlines (stuck, upload grace, reorder window, TTL) run on *our* monotonic clock from when
  we received events: they must fire even if the sender's clock is wrong or no further
  callback ever arrives, and must not jump when the wall clock is stepped.

Storage is struct-of-arrays: one slot per segment across typed ``array`` columns, a dict
from a compact key string to the slot, and a timer wheel of one-second buckets. That keeps
a segment to a few hundred bytes (a million objects with attributes would cost several
times more), makes every transition O(1), and every gauge an incrementally kept tally.
"""

from __future__ import annotations

import heapq
import math
import time
from array import array
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Protocol

import msgspec

from .events import COMPLETED, STARTED, UPLOADED, Event

# State codes, in the order of metrics.STATES.
RECORDING: Final = 0
COMPLETED_STATE: Final = 1
UPLOADED_STATE: Final = 2
STUCK: Final = 3
UPLOAD_MISSING: Final = 4
ORPHAN: Final = 5
STATE_NAMES: Final = ("recording", "completed", "uploaded", "stuck", "upload_missing", "orphan")
MODE_NAMES: Final = ("single", "mixed", "unknown")
EVENT_LABELS: Final = {STARTED: "started", COMPLETED: "completed", UPLOADED: "uploaded"}

# Bits of the "seen" set.
SEEN_S: Final = 1
SEEN_C: Final = 2
SEEN_U: Final = 4
_BIT = {STARTED: SEEN_S, COMPLETED: SEEN_C, UPLOADED: SEEN_U}

# Layout of the packed per-slot `meta` column.
_SEEN_MASK = 0b111
_STATE_SHIFT, _STATE_MASK = 3, 0b111
_MODE_SHIFT, _MODE_MASK = 6, 0b11
_ORPHANED = 1 << 8  # the reorder window ran out without a start: counted once
_APP_SHIFT = 9

_LIVE_RECORDING = (RECORDING, STUCK)
_LATE_STATES = (STUCK, UPLOAD_MISSING, ORPHAN)
INF: Final = math.inf
SEP: Final = "\x00"  # events.decode rejects NUL in ids, so it cannot occur inside a part
SNAPSHOT_VERSION: Final = 2


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def time(self) -> float: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    max_recording_seconds: float = 21600
    upload_grace_seconds: float = 900
    reorder_window_seconds: float = 120
    retention_seconds: float = 86400
    max_segments: int = 1_000_000
    max_apps: int = 50


@dataclass(slots=True)
class Outcome:
    """What one event did: the `result` label, and durations to observe (sender clock)."""

    result: str
    event_type: str
    record_mode: str
    app_id: str
    duration: float | None = None
    upload_delay: float | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """A segment that crossed a deadline into stuck, upload_missing or orphan."""

    state: str
    biz_id: int
    room_id: str
    user_id: str
    task_id: int
    seq_no: int
    app_id: str


@dataclass(slots=True)
class TrackerStats:
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


@dataclass(slots=True)
class SegmentView:
    """One segment as the drill-down API shows it."""

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


def derive_state(seen: int, r_first: float, r_complete: float, now: float,
                 cfg: TrackerConfig) -> tuple[int, float]:
    """(state, next state deadline) from the events seen and when we received them.

    ``r_first`` is when we received the segment's first event (which is the start whenever
    only the start has been seen), ``r_complete`` when we received the completion.
    """
    s, c, u = seen & SEEN_S, seen & SEEN_C, seen & SEEN_U
    if s:
        if u:
            return UPLOADED_STATE, INF
        if not c:
            d = r_first + cfg.max_recording_seconds
            return (STUCK, INF) if now >= d else (RECORDING, d)
        d = r_complete + cfg.upload_grace_seconds
        return (UPLOAD_MISSING, INF) if now >= d else (COMPLETED_STATE, d)
    window = r_first + cfg.reorder_window_seconds
    if now < window:
        # A start may still be on its way: show the segment as what the events say so far.
        if u:
            return UPLOADED_STATE, window
        return COMPLETED_STATE, min(window, r_complete + cfg.upload_grace_seconds)
    if u:
        return ORPHAN, INF
    d = r_complete + cfg.upload_grace_seconds
    return (UPLOAD_MISSING, INF) if now >= d else (ORPHAN, d)


def make_key(biz_id: int, room_id: str, user_id: str, task_id: int, seq_no: int) -> str:
    return f"{biz_id}{SEP}{room_id}{SEP}{user_id}{SEP}{task_id}{SEP}{seq_no}"


def split_key(key: str) -> tuple[int, str, str, int, int]:
    biz, room, user, task, seq = key.split(SEP)
    return int(biz), room, user, int(task), int(seq)


def _room_of(key: str) -> str:
    return key[: key.index(SEP, key.index(SEP) + 1)]


class _Snapshot(msgspec.Struct, array_like=True):
    """Whole columns, free slots included (their key is None): dumping an array is a memcpy,
    where gathering live slots one by one took over a second at a million segments."""

    version: int
    wall_time: float
    mono_to_wall: float  # add to the receive-clock columns to get wall-clock times
    keys: list[str | None]  # None for a free slot
    meta: bytes
    ts_start: bytes
    ts_complete: bytes
    ts_upload: bytes
    r_first: bytes
    r_complete: bytes
    expires: bytes


class Tracker:
    """In-memory lifecycle store for up to ``max_segments`` segments."""

    def __init__(self, config: TrackerConfig | None = None, clock: Clock | None = None) -> None:
        self.cfg = config or TrackerConfig()
        self.clock: Clock = clock or SystemClock()
        self._index: dict[str, int] = {}
        self._keys: list[str | None] = []
        self._free: array[int] = array("q")
        self._meta = array("q")
        self._ts_start = array("q")
        self._ts_complete = array("q")
        self._ts_upload = array("q")
        self._r_first = array("d")
        self._r_complete = array("d")
        self._deadline = array("d")  # next time the sweep must look at the slot: state or TTL
        self._expires = array("d")
        # Timer wheel: second -> slots due then, plus a heap of the seconds that have a bucket.
        self._buckets: dict[int, array[int]] = {}
        self._bucket_heap: list[int] = []
        self._bucket_entries = 0  # live and stale entries together, for compaction
        self._terminal_fifo: deque[str] = deque()
        self._creation_fifo: deque[str] = deque()
        # Bounded app labels: index -> label; the last index is "other" once max_apps is hit.
        self._app_index: dict[int, int] = {}
        self._app_labels: list[str] = []
        self._other: int | None = None
        self._app_overflow = 0
        # Incrementally maintained tallies (lists indexed by app index / state code).
        self._by_state = [0] * len(STATE_NAMES)
        self._active: list[list[int]] = []
        self._rooms: dict[str, int] = {}
        self._active_rooms: list[int] = []
        self._stuck: list[int] = []
        self._stuck_total: list[int] = []
        self._missing: list[int] = []
        self._missing_total: list[int] = []
        self._completed_total: list[int] = []
        # Oldest recording start, per app: how many recording segments started in each second,
        # and a lazy min-heap of those seconds. Nothing per segment: recordings that start in the
        # same second share one entry, and there are at most `retention_seconds` seconds.
        self._starts: list[dict[int, int]] = []
        self._start_heap: list[list[int]] = []
        self._orphan_events = {"completed": 0, "uploaded": 0}
        self._evictions: dict[tuple[str, str], int] = {
            (r, s): 0 for r in ("ttl", "capacity") for s in STATE_NAMES
        }

    # ----------------------------------------------------------------- app labels

    def app_slot(self, biz_id: int) -> int:
        """The bounded label index for a BizID; beyond ``max_apps`` every app is ``other``."""
        idx = self._app_index.get(biz_id)
        if idx is not None:
            return idx
        if len(self._app_labels) - (self._other is not None) >= self.cfg.max_apps:
            if self._other is None:
                self._other = self._new_app_label("other")
            self._app_overflow += 1
            return self._other
        idx = self._new_app_label(str(biz_id))
        self._app_index[biz_id] = idx
        return idx

    def _new_app_label(self, label: str) -> int:
        self._app_labels.append(label)
        for col in (self._active_rooms, self._stuck, self._stuck_total, self._missing,
                    self._missing_total, self._completed_total):
            col.append(0)
        self._active.append([0, 0, 0])
        self._starts.append({})
        self._start_heap.append([])
        return len(self._app_labels) - 1

    def register_apps(self, biz_ids: list[int]) -> None:
        """Create zero-valued series for apps known in advance (from the keyring)."""
        for b in biz_ids:
            self.app_slot(b)

    # ----------------------------------------------------------------- events

    def __len__(self) -> int:
        return len(self._index)

    def record(self, ev: Event) -> Outcome:
        """Apply one verified event; O(1) apart from an occasional capacity eviction."""
        now = self.clock.monotonic()
        bit = _BIT[ev.event_type]
        label = EVENT_LABELS[ev.event_type]
        mode = ev.record_mode if ev.record_mode in (0, 1) else 2
        key = make_key(ev.biz_id, ev.room_id, ev.user_id, ev.task_id, ev.seq_no)
        slot = self._index.get(key)
        if slot is None:
            app = self.app_slot(ev.biz_id)
            slot = self._insert(key, app, mode, now)
            old_state = -1
            seen = 0
        else:
            key = self._keys[slot]  # type: ignore[assignment]  # the stored copy: no second string kept
            meta = self._meta[slot]
            app = meta >> _APP_SHIFT
            seen = meta & _SEEN_MASK
            old_state = (meta >> _STATE_SHIFT) & _STATE_MASK
            mode = (meta >> _MODE_SHIFT) & _MODE_MASK
        out = Outcome("duplicate", label, MODE_NAMES[mode], self._app_labels[app])
        if seen & bit:
            return out
        if old_state in _LATE_STATES:
            out.result = "late"
        elif seen > bit:  # a later event of the lifecycle was seen first
            out.result = "out_of_order"
        else:
            out.result = "accepted"

        seen |= bit
        if bit == SEEN_S:
            self._ts_start[slot] = ev.timestamp
        elif bit == SEEN_C:
            self._ts_complete[slot] = ev.timestamp
            self._r_complete[slot] = now
            self._completed_total[app] += 1
        else:
            self._ts_upload[slot] = ev.timestamp
        if seen & SEEN_S and seen & SEEN_C and bit in (SEEN_S, SEEN_C):
            out.duration = float(self._ts_complete[slot] - self._ts_start[slot])
        if seen & SEEN_C and seen & SEEN_U and bit in (SEEN_C, SEEN_U):
            out.upload_delay = float(self._ts_upload[slot] - self._ts_complete[slot])

        meta = self._meta[slot]
        self._meta[slot] = (meta & ~_SEEN_MASK) | seen
        self._expires[slot] = now + self.cfg.retention_seconds
        self._settle(slot, key, old_state, now)
        return out

    def _insert(self, key: str, app: int, mode: int, now: float) -> int:
        if len(self._index) >= self.cfg.max_segments:
            self._evict_for_capacity()
        if self._free:
            slot = self._free.pop()
            self._keys[slot] = key
        else:
            slot = len(self._keys)
            self._keys.append(key)
            for col in (self._meta, self._ts_start, self._ts_complete, self._ts_upload):
                col.append(0)
            for dcol in (self._r_first, self._r_complete, self._deadline, self._expires):
                dcol.append(0.0)
        self._meta[slot] = (app << _APP_SHIFT) | (mode << _MODE_SHIFT)
        self._ts_start[slot] = self._ts_complete[slot] = self._ts_upload[slot] = 0
        self._r_first[slot] = now
        self._r_complete[slot] = now
        self._deadline[slot] = INF
        self._expires[slot] = now + self.cfg.retention_seconds
        self._index[key] = slot
        self._creation_fifo.append(key)
        return slot

    def _settle(self, slot: int, key: str, old_state: int, now: float) -> Transition | None:
        """Recompute a slot's state and next deadline; update every tally it changes."""
        meta = self._meta[slot]
        seen = meta & _SEEN_MASK
        new_state, state_deadline = derive_state(
            seen, self._r_first[slot], self._r_complete[slot], now, self.cfg)
        transition = None
        if not seen & SEEN_S and not meta & _ORPHANED and now >= (
                self._r_first[slot] + self.cfg.reorder_window_seconds):
            meta |= _ORPHANED
            self._orphan_events["uploaded" if seen & SEEN_U else "completed"] += 1
        if new_state != old_state:
            self._move(slot, key, meta, old_state, new_state)
            if new_state in _LATE_STATES:
                transition = self._transition(key, new_state, meta >> _APP_SHIFT)
        self._meta[slot] = (meta & ~(_STATE_MASK << _STATE_SHIFT)) | (new_state << _STATE_SHIFT)
        self._schedule(slot, min(state_deadline, self._expires[slot]))
        return transition

    def _move(self, slot: int, key: str, meta: int, old: int, new: int) -> None:
        app = meta >> _APP_SHIFT
        mode = (meta >> _MODE_SHIFT) & _MODE_MASK
        if old >= 0:
            self._by_state[old] -= 1
        if new >= 0:
            self._by_state[new] += 1
        was_rec, is_rec = old in _LIVE_RECORDING, new in _LIVE_RECORDING
        if was_rec != is_rec:
            room = _room_of(key)
            if is_rec:
                self._active[app][mode] += 1
                n = self._rooms.get(room, 0)
                self._rooms[room] = n + 1
                if n == 0:
                    self._active_rooms[app] += 1
                ts = self._ts_start[slot]
                starts = self._starts[app]
                n = starts.get(ts, 0)
                starts[ts] = n + 1
                if n == 0:
                    heap = self._start_heap[app]
                    heapq.heappush(heap, ts)
                    if len(heap) > 2 * len(starts) + 64:  # seconds that emptied and came back
                        self._start_heap[app] = heap = list(starts)
                        heapq.heapify(heap)
            else:
                self._active[app][mode] -= 1
                ts = self._ts_start[slot]
                starts = self._starts[app]
                left = starts[ts] - 1
                if left:
                    starts[ts] = left
                else:
                    del starts[ts]  # its heap entry goes lazily
                n = self._rooms[room] - 1
                if n:
                    self._rooms[room] = n
                else:
                    del self._rooms[room]
                    self._active_rooms[app] -= 1
        if old == STUCK:
            self._stuck[app] -= 1
        elif old == UPLOAD_MISSING:
            self._missing[app] -= 1
        if new == STUCK:
            self._stuck[app] += 1
            self._stuck_total[app] += 1
        elif new == UPLOAD_MISSING:
            self._missing[app] += 1
            self._missing_total[app] += 1
        elif new == UPLOADED_STATE:
            self._terminal_fifo.append(key)

    def _transition(self, key: str, state: int, app: int) -> Transition:
        biz, room, user, task, seq = split_key(key)
        return Transition(STATE_NAMES[state], biz, room, user, task, seq, self._app_labels[app])

    # ----------------------------------------------------------------- deadlines

    def _schedule(self, slot: int, when: float) -> None:
        old = self._deadline[slot]
        self._deadline[slot] = when
        if when == INF:
            return
        sec = math.ceil(when)
        if old != INF and math.ceil(old) == sec:
            return  # already in that bucket
        bucket = self._buckets.get(sec)
        if bucket is None:
            bucket = self._buckets[sec] = array("q")
            heapq.heappush(self._bucket_heap, sec)
        bucket.append(slot)
        self._bucket_entries += 1
        if self._bucket_entries > 2 * len(self._index) + 1024:
            self._compact_wheel()

    def _compact_wheel(self) -> None:
        # A moved deadline or a removed segment leaves its old entry until that second comes
        # round, hours later: under a flood of new keys the stale entries would outgrow the
        # capacity bound. Rebuild from the live deadlines once they dominate (amortised O(1)).
        buckets: dict[int, array[int]] = {}
        for slot in self._index.values():
            deadline = self._deadline[slot]
            if deadline != INF:
                sec = math.ceil(deadline)
                bucket = buckets.get(sec)
                if bucket is None:
                    bucket = buckets[sec] = array("q")
                bucket.append(slot)
        self._buckets = buckets
        self._bucket_heap = list(buckets)
        heapq.heapify(self._bucket_heap)
        self._bucket_entries = sum(len(b) for b in buckets.values())

    def sweep(self, budget: int | None = None) -> list[Transition]:
        """Apply every deadline that has passed: state changes and TTL expiry.

        Called about once a second; costs O(segments due), never a scan of all segments.
        With a ``budget``, at most that many due entries are handled and the rest stay queued
        (see :meth:`has_due`), so a caller can yield between rounds. Returns the segments that
        became stuck, upload_missing or orphan, for logging.
        """
        now = self.clock.monotonic()
        out: list[Transition] = []
        left = budget if budget is not None else -1
        # No local alias of the heap: settling can reschedule, and a reschedule can compact the
        # wheel, which replaces both the heap and the buckets.
        while self._bucket_heap and self._bucket_heap[0] <= now and left != 0:
            sec = heapq.heappop(self._bucket_heap)
            bucket = self._buckets.pop(sec, None)
            if bucket is None:
                continue
            self._bucket_entries -= len(bucket)
            if 0 < left < len(bucket):
                self._buckets[sec] = bucket[left:]  # the rest waits for the next round
                self._bucket_entries += len(bucket) - left
                heapq.heappush(self._bucket_heap, sec)
                bucket = bucket[:left]
            left = max(left - len(bucket), 0) if left > 0 else left
            for slot in bucket:
                key = self._keys[slot]
                deadline = self._deadline[slot]
                # Stale entries (the deadline moved, or the slot was freed and reused) skip.
                if key is None or deadline > now or math.ceil(deadline) != sec:
                    continue
                self._deadline[slot] = INF  # force re-bucketing of the next deadline
                meta = self._meta[slot]
                # Settle first: a segment that got stuck (or lost its upload) before its TTL ran
                # out is reported and evicted in that state, even if the sweep fell behind.
                t = self._settle(slot, key, (meta >> _STATE_SHIFT) & _STATE_MASK, now)
                if t is not None:
                    out.append(t)
                if self._expires[slot] <= now:
                    self._remove(slot, key, "ttl")
        return out

    def has_due(self) -> bool:
        return bool(self._bucket_heap) and self._bucket_heap[0] <= self.clock.monotonic()

    # ----------------------------------------------------------------- eviction

    def _remove(self, slot: int, key: str, reason: str) -> None:
        meta = self._meta[slot]
        state = (meta >> _STATE_SHIFT) & _STATE_MASK
        self._move(slot, key, meta, state, -1)
        self._evictions[(reason, STATE_NAMES[state])] += 1
        del self._index[key]
        self._keys[slot] = None
        self._deadline[slot] = INF
        self._free.append(slot)

    def _evict_for_capacity(self) -> None:
        """Make room for one segment: the oldest terminal segment, else the oldest of all."""
        self._compact_fifos()
        for fifo, terminal_only in ((self._terminal_fifo, True), (self._creation_fifo, False)):
            while fifo:
                key = fifo.popleft()
                slot = self._index.get(key)
                if slot is None:
                    continue
                state = (self._meta[slot] >> _STATE_SHIFT) & _STATE_MASK
                if terminal_only and state != UPLOADED_STATE:
                    continue
                self._remove(slot, key, "capacity")
                return

    def _compact_fifos(self) -> None:
        # The FIFOs keep keys of removed segments until they reach the front; rebuild them when
        # stale entries dominate, so their size stays O(segments) (amortised O(1) per insert).
        limit = 2 * len(self._index) + 1024
        if len(self._creation_fifo) > limit:
            self._creation_fifo = deque(self._index)
        if len(self._terminal_fifo) > limit:
            self._terminal_fifo = deque(
                k for k, s in self._index.items()
                if (self._meta[s] >> _STATE_SHIFT) & _STATE_MASK == UPLOADED_STATE)

    # ----------------------------------------------------------------- read side

    def _oldest_start(self, app: int) -> float:
        heap, starts = self._start_heap[app], self._starts[app]
        while heap and heap[0] not in starts:
            heapq.heappop(heap)
        return float(heap[0]) if heap else 0.0

    def stats(self) -> TrackerStats:
        """Current tallies; O(apps x states), independent of the number of segments."""
        labels = list(self._app_labels)
        return TrackerStats(
            app_labels=labels,
            active_recordings={(labels[a], MODE_NAMES[m]): n
                               for a, row in enumerate(self._active) for m, n in enumerate(row)},
            active_rooms=dict(zip(labels, self._active_rooms, strict=True)),
            stuck=dict(zip(labels, self._stuck, strict=True)),
            stuck_total=dict(zip(labels, self._stuck_total, strict=True)),
            missing_uploads=dict(zip(labels, self._missing, strict=True)),
            missing_uploads_total=dict(zip(labels, self._missing_total, strict=True)),
            completed_total=dict(zip(labels, self._completed_total, strict=True)),
            oldest_start={labels[a]: self._oldest_start(a) for a in range(len(labels))},
            orphan_events=dict(self._orphan_events),
            by_state=dict(zip(STATE_NAMES, self._by_state, strict=True)),
            evictions=dict(self._evictions),
            capacity=self.cfg.max_segments,
            app_overflow=self._app_overflow,
            segments=len(self._index),
        )

    def recount(self) -> TrackerStats:
        """The gauges recomputed from scratch by a full scan: for tests and self-checks only."""
        labels = list(self._app_labels)
        active: dict[tuple[str, str], int] = {(a, m): 0 for a in labels for m in MODE_NAMES}
        rooms: dict[str, set[str]] = {a: set() for a in labels}
        stuck = dict.fromkeys(labels, 0)
        missing = dict.fromkeys(labels, 0)
        oldest: dict[str, float] = dict.fromkeys(labels, 0.0)
        by_state = dict.fromkeys(STATE_NAMES, 0)
        for key, slot in self._index.items():
            meta = self._meta[slot]
            state = (meta >> _STATE_SHIFT) & _STATE_MASK
            app = labels[meta >> _APP_SHIFT]
            by_state[STATE_NAMES[state]] += 1
            if state in _LIVE_RECORDING:
                active[(app, MODE_NAMES[(meta >> _MODE_SHIFT) & _MODE_MASK])] += 1
                rooms[app].add(_room_of(key))
                ts = float(self._ts_start[slot])
                oldest[app] = ts if not oldest[app] else min(oldest[app], ts)
            stuck[app] += state == STUCK
            missing[app] += state == UPLOAD_MISSING
        s = self.stats()
        s.active_recordings, s.by_state, s.stuck, s.missing_uploads = active, by_state, stuck, missing
        s.active_rooms = {a: len(r) for a, r in rooms.items()}
        s.oldest_start = oldest
        return s

    def _view(self, key: str, slot: int) -> SegmentView:
        meta = self._meta[slot]
        seen = meta & _SEEN_MASK
        biz, room, user, task, seq = split_key(key)
        mono_now, wall_now = self.clock.monotonic(), self.clock.time()

        def wall(t: float) -> float:
            return wall_now - (mono_now - t)

        deadline = self._deadline[slot]
        return SegmentView(
            biz_id=biz, room_id=room, user_id=user, task_id=task, seq_no=seq,
            app_id=self._app_labels[meta >> _APP_SHIFT],
            state=STATE_NAMES[(meta >> _STATE_SHIFT) & _STATE_MASK],
            record_mode=MODE_NAMES[(meta >> _MODE_SHIFT) & _MODE_MASK],
            events_seen=[n for b, n in ((SEEN_S, "started"), (SEEN_C, "completed"),
                                        (SEEN_U, "uploaded")) if seen & b],
            started_at=float(self._ts_start[slot]) if seen & SEEN_S else None,
            completed_at=float(self._ts_complete[slot]) if seen & SEEN_C else None,
            uploaded_at=float(self._ts_upload[slot]) if seen & SEEN_U else None,
            first_received_at=wall(self._r_first[slot]),
            next_deadline_at=None if deadline == INF else wall(deadline),
            expires_at=wall(self._expires[slot]),
        )

    def segments(self, *, state: str | None = None, app_id: str | None = None,
                 room_id: str | None = None, limit: int = 100) -> list[SegmentView]:
        """Matching segments, oldest first (by when we first heard of them).

        A scan: this serves the admin drill-down API, never the callback path or a scrape.
        """
        want_state = STATE_NAMES.index(state) if state is not None else -1
        matches: list[tuple[float, str, int]] = []
        for key, slot in self._index.items():
            meta = self._meta[slot]
            if want_state >= 0 and (meta >> _STATE_SHIFT) & _STATE_MASK != want_state:
                continue
            if app_id is not None and self._app_labels[meta >> _APP_SHIFT] != app_id and (
                    not key.startswith(app_id + SEP)):
                continue
            if room_id is not None and key.split(SEP, 2)[1] != room_id:
                continue
            matches.append((self._r_first[slot], key, slot))
        return [self._view(k, s) for _, k, s in heapq.nsmallest(limit, matches)]

    def iter_keys(self) -> Iterator[str]:
        return iter(self._index)

    # ----------------------------------------------------------------- snapshots

    def snapshot(self) -> bytes:
        """Serialise every segment, with the offset that turns receive-clock times into wall time."""
        mono_now, wall_now = self.clock.monotonic(), self.clock.time()
        return msgspec.msgpack.encode(_Snapshot(
            version=SNAPSHOT_VERSION, wall_time=wall_now, mono_to_wall=wall_now - mono_now,
            keys=self._keys, meta=self._meta.tobytes(), ts_start=self._ts_start.tobytes(),
            ts_complete=self._ts_complete.tobytes(), ts_upload=self._ts_upload.tobytes(),
            r_first=self._r_first.tobytes(), r_complete=self._r_complete.tobytes(),
            expires=self._expires.tobytes(),
        ))

    def restore(self, data: bytes) -> int:
        """Load a snapshot into an empty tracker; raise ValueError if it is not a valid one.

        Time that passed while the service was down counts against every deadline.
        """
        if self._index:
            raise ValueError("restore needs an empty tracker")
        try:
            snap = msgspec.msgpack.decode(data, type=_Snapshot)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ValueError(f"not a gme-recwatch snapshot: {exc}") from None
        if snap.version != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported snapshot version {snap.version}")
        keys = snap.keys
        n = len(keys)
        if len(snap.meta) != 8 * n:
            raise ValueError(f"snapshot has {n} keys for {len(snap.meta) // 8} rows")
        cols = {}
        for name, code in (("meta", "q"), ("ts_start", "q"), ("ts_complete", "q"),
                           ("ts_upload", "q"), ("r_first", "d"), ("r_complete", "d"),
                           ("expires", "d")):
            a = array(code)
            try:
                a.frombytes(getattr(snap, name))
            except ValueError as exc:
                raise ValueError(f"snapshot column {name}: {exc}") from None
            if len(a) != n:
                raise ValueError(f"snapshot column {name} has {len(a)} rows, expected {n}")
            cols[name] = a
        for key in keys:
            if key is None:
                continue
            try:
                split_key(key)
            except ValueError:
                raise ValueError("snapshot holds a malformed segment key") from None
        now = self.clock.monotonic()
        # old receive-clock time -> wall time -> this process's receive clock
        shift = snap.mono_to_wall + (now - self.clock.time())
        restored = 0
        for i, key in enumerate(keys):
            if key is None or key in self._index:
                continue
            app = self.app_slot(split_key(key)[0])
            meta = cols["meta"][i]
            mode = (meta >> _MODE_SHIFT) & _MODE_MASK
            slot = self._insert(key, app, mode, now)
            self._meta[slot] = (meta & (_SEEN_MASK | _ORPHANED)) | (mode << _MODE_SHIFT) | (
                app << _APP_SHIFT)
            self._ts_start[slot] = cols["ts_start"][i]
            self._ts_complete[slot] = cols["ts_complete"][i]
            self._ts_upload[slot] = cols["ts_upload"][i]
            self._r_first[slot] = cols["r_first"][i] + shift
            self._r_complete[slot] = cols["r_complete"][i] + shift
            self._expires[slot] = cols["expires"][i] + shift
            self._settle(slot, key, -1, now)
            restored += 1
        return restored


@dataclass
class FakeClock:
    """A clock for tests: time moves only when told to."""

    mono: float = 1000.0
    wall: float = 1_700_000_000.0

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds
