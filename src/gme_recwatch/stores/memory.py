"""The embedded store: every segment in this process's memory. The default; needs nothing.

Every transition is O(1) (apart from an occasional capacity eviction), every gauge an
incrementally kept tally (:mod:`.tallies`), deadlines a bucket queue (:mod:`..deadlines`),
segments typed columns (:mod:`.columns`). State survives a restart through a snapshot file
(:mod:`.snapshot`), written by the service.
"""

from __future__ import annotations

import heapq
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import replace

from ..clock import Clock, SystemClock
from ..deadlines import DeadlineQueue
from ..events import MODE_NAMES, Event, RecordMode
from ..lifecycle import (
    EVENT_LABEL,
    EVICTED_FIRST,
    INF,
    MAX_GAP,
    SEEN_BIT,
    SEEN_COMPLETED,
    SEEN_STARTED,
    SEEN_UPLOADED,
    SEP,
    Backoff,
    Check,
    CheckAnswer,
    Claim,
    Config,
    Outcome,
    Reconciled,
    Resolution,
    Result,
    Retrying,
    Settled,
    State,
    TailClaim,
    Transition,
    apply_answer,
    apply_event,
    blind_marks,
    can_mark,
    claimable,
    confirms,
    deadline_passed,
    derive_state,
    events_seen,
    expects_start,
    first_heard,
    found_in_cos,
    key_of,
    measure,
    retry_after,
    revealed,
    room_of,
    settle,
    split_key,
    start_blind_marks,
    stream_of,
)
from . import snapshot as snapshot_format
from .base import CheckNote, SegmentPage, SegmentView, StoreStats, Sweep, page_of
from .columns import COLUMNS, SegmentTable
from .streams import Streams
from .tallies import Tallies


class MemoryStore:
    """In-memory lifecycle store for up to ``cfg.max_segments`` segments."""

    def __init__(self, cfg: Config, clock: Clock | None = None) -> None:
        self.cfg = cfg
        self.clock: Clock = clock or SystemClock()
        # The store's receive clock is the monotonic clock plus this offset: 0, until a restore
        # sets it so that the snapshot's times stay valid as they are.
        self._offset = 0.0
        self._buffers: dict[str, bytearray] = {}
        self._buffers_busy = False
        self._index: dict[str, int] = {}
        self._table = SegmentTable()
        self._deadlines = DeadlineQueue()
        self._tallies = Tallies(cfg.max_apps)
        # Capacity eviction order (lifecycle.EVICTED_FIRST): segments in the order they first
        # reached an evicted-first state, then all in the order first heard of. An entry is the
        # very key object of the slot it names: one left by an earlier segment with the same
        # key (evicted or expired, then heard of anew) is passed over (`is`, not `==`).
        self._terminal_fifo: deque[str] = deque()
        self._creation_fifo: deque[str] = deque()
        # COS checks: keys whose check is pending, oldest first (stale entries are skipped when
        # claimed), the claims handed out with when their lease ends, and how many are pending.
        self._checks: deque[str] = deque()
        self._leases: dict[str, float] = {}
        self._pending_checks = 0
        # Lookups that gave no answer, to retry (lifecycle.retry_after): key -> when, and a heap
        # of (when, key) whose entries that no longer match are passed over.
        self._retry_at: dict[str, float] = {}
        self._retries: list[tuple[float, str]] = []
        self._restored_from: tuple[float, bool] | None = None
        # Segments live when a blind window opened and not heard from since -> that window.
        self._blind: dict[str, tuple[float, float]] = {}
        # Segments whose start may have been lost in a blind window of ours -> that window
        # (lifecycle.start_blind_marks; a callback does not clear it), and the latest window
        # marked, which every segment created later without a start is held against.
        self._start_blind: dict[str, tuple[float, float]] = {}
        self._latest_blind: tuple[float, float] | None = None
        # What the last COS lookup of a segment said (read side only: for the API); dropped
        # with the segment, shown only while the lookup's answer stands.
        self._check_notes: dict[str, CheckNote] = {}
        # Recording streams (lifecycle, "segments never announced"), and since when this store
        # has been tracking: its first callback (on the receive clock; a restore keeps the
        # snapshot's), as the Redis script's `since`.
        self._streams = Streams(cfg)
        self._since: float | None = None
        # Apps whose starts are never sent (lifecycle.expects_start): BizIDs, from the settings.
        self._without_start: frozenset[int] = frozenset()

    def __len__(self) -> int:
        return len(self._index)

    # ------------------------------------------------------------ the Store interface

    async def record(self, ev: Event) -> Outcome:
        return self.record_now(ev)

    async def sweep(self, budget: int) -> Sweep:
        transitions = self.sweep_now(budget)
        return Sweep(transitions, self._deadlines.has_due(self._now()))

    async def stats(self) -> StoreStats:
        return self.stats_now()

    async def claim(self, limit: int, lease: float) -> list[Claim]:
        return self.claim_now(limit, lease)

    async def resolve(self, key: str, answer: CheckAnswer, backoff: Backoff | None = None) -> Resolution:
        return self.resolve_now(key, answer, backoff)

    async def mark_blind(self, start: float, end: float) -> int:
        return self.mark_blind_now(start, end)

    async def mark_segment(self, key: str, start: float, end: float) -> bool:
        slot = self._index.get(key)
        if slot is None or not can_mark(self._table.state(slot)):
            return False
        self._blind[key] = (start, end)
        return True

    async def count(self) -> int:
        return len(self._index)

    async def register_apps(self, biz_ids: list[int], without_start: frozenset[int] = frozenset()) -> None:
        for biz_id in biz_ids:
            self._tallies.app(biz_id)
        self._without_start = without_start

    async def claim_tails(self, limit: int, lease: float) -> list[TailClaim]:
        return self.claim_tails_now(limit, lease)

    async def adopt(
        self, stream: str, files: list[tuple[int, str]], retry_in: float | None = None
    ) -> list[Reconciled]:
        return self.adopt_now(stream, files, retry_in)

    async def segments(
        self,
        *,
        state: str | None = None,
        app_id: str | None = None,
        room_id: str | None = None,
        limit: int = 100,
    ) -> list[SegmentView]:
        return self.find(state=state, app_id=app_id, room_id=room_id, limit=limit)

    async def page(
        self,
        *,
        state: str | None = None,
        app_id: str | None = None,
        room_id: str | None = None,
        limit: int = 100,
        after: tuple[float, str] | None = None,
    ) -> SegmentPage:
        return self.find_page(state=state, app_id=app_id, room_id=room_id, limit=limit, after=after)

    async def note_check(self, key: str, note: CheckNote) -> None:
        if key in self._index:  # forgotten meanwhile: nothing to describe
            self._check_notes[key] = note

    async def close(self) -> None:
        return None

    # ------------------------------------------------------------ events

    def _now(self) -> float:
        return self.clock.monotonic() + self._offset

    def record_now(self, ev: Event) -> Outcome:
        """:meth:`record`, for callers that are not coroutines (benchmarks, the snapshot)."""
        now = self._now()
        t = self._table
        bit = SEEN_BIT[ev.event_type]
        key = key_of(ev)
        slot = self._index.get(key)
        if slot is None:
            app = self._tallies.app(ev.biz_id)
            mode = RecordMode.of(ev.record_mode)
            slot = self._insert(key, app, mode, now)
            old: State | None = None
        else:
            key = t.keys[slot]  # type: ignore[assignment]  # the stored copy: no second string kept
            app, mode, old = t.app(slot), t.mode(slot), t.state(slot)
        if not t.seen(slot):  # heard of for the first time: new, or revealed by a later SeqNo
            t.r_first[slot] = first_heard(0, t.r_first[slot], now)
            self._held_against_latest_window(key, bit)
        blind = key in self._blind if self._blind else False
        check = t.check(slot)
        a = apply_event(
            t.seen(slot), bit, old, check, blind, t.r_complete[slot], t.expires[slot], now, self.cfg
        )
        out = Outcome(a.result, EVENT_LABEL[ev.event_type], MODE_NAMES[mode], self._tallies.labels[app])
        if a.result is Result.DUPLICATE:
            return out
        if blind and not a.blind:
            del self._blind[key]
        if self.cfg.check_in_cos and ev.file_name and not t.file_names[slot]:
            t.file_names[slot] = ev.file_name
        if a.check is not check:
            self._set_check(slot, a.check)
        if bit == SEEN_COMPLETED:
            t.ts_complete[slot] = ev.timestamp
            self._tallies.completed_total[app] += 1
        elif bit == SEEN_UPLOADED:
            t.ts_upload[slot] = ev.timestamp
        else:
            t.ts_start[slot] = ev.timestamp
        out.duration, out.upload_delay = measure(
            a.seen, bit, t.ts_start[slot], t.ts_complete[slot], t.ts_upload[slot]
        )
        t.set_seen(slot, a.seen)
        t.r_complete[slot] = a.r_complete
        t.expires[slot] = a.expires
        self._settle(slot, key, old, now)
        self._heard(key, ev, app, mode, now)
        return out

    def _heard(self, key: str, ev: Event, app: int, mode: RecordMode, now: float) -> None:
        """The stream of ``key`` heard from: the SeqNos below ``ev``'s that it reveals and that
        this store does not hold are expected from now (lifecycle.revealed)."""
        stream = stream_of(key)
        rec = self._streams.get(stream)
        if self._since is None:
            self._since = now
        low, high = revealed(
            -1 if rec is None else rec.low_seq,
            -1 if rec is None else rec.next_seq,
            ev.seq_no,
            self._since,
            now,
            self.cfg,
        )
        file_name = ev.file_name if self.cfg.check_in_cos else ""
        _, forgot = self._streams.heard(stream, ev.seq_no, low, mode, app, file_name, now)
        if forgot:  # a stream forgotten may come back: not to be taken for a new one
            self._since = now
        self._expect(stream, range(low, high), app, mode, now)

    def _expect(self, stream: str, seqs: range, app: int, mode: RecordMode, now: float) -> None:
        """The SeqNos ``seqs`` of ``stream`` that this store does not hold: segments that have
        seen nothing, expected from ``now`` (the Lua twin is `expect`)."""
        for seq in seqs:
            gap = f"{stream}{SEP}{seq}"
            if gap in self._index:
                continue
            slot = self._insert(gap, app, mode, now)
            self._held_against_latest_window(gap, 0)
            self._settle(slot, gap, None, now)

    def _held_against_latest_window(self, key: str, bit: int) -> None:
        """A segment heard of for the first time by an event with ``bit`` (0: revealed by a later
        SeqNo): its start may have gone into the latest blind window
        (lifecycle.start_blind_marks; the Lua twin is held_against_latest_window)."""
        latest = self._latest_blind
        if latest is not None and start_blind_marks(bit, None, self.clock.time(), *latest, self.cfg):
            self._start_blind[key] = latest

    def _insert(self, key: str, app: int, mode: RecordMode, now: float) -> int:
        if len(self._index) >= self.cfg.max_segments:
            self._evict_for_capacity()
        slot = self._table.allocate(key, app, mode, now, now + self.cfg.retention_seconds)
        self._index[key] = slot
        self._creation_fifo.append(key)
        return slot

    def _settle(self, slot: int, key: str, old: State | None, now: float, *, schedule: bool = True) -> Settled:
        """Settle a slot (:func:`~gme_recwatch.lifecycle.settle`) and keep the books: its
        columns, the tallies, the check queue, and (with ``schedule``) its deadline."""
        t = self._table
        window = self._blind.get(key) if self._blind else None
        marked, check = t.start_lost(slot), t.check(slot)
        s = settle(
            t.seen(slot),
            t.r_first[slot],
            t.r_complete[slot],
            t.expires[slot],
            old,
            check,
            marked,
            window is not None,
            now,
            self.cfg,
            key in self._start_blind if self._start_blind else False,
            expects_start(int(key[: key.index(SEP)]), self._without_start) if self._without_start else True,
        )
        if s.start_lost and not marked:
            t.mark_start_lost(slot)
            seen = t.seen(slot)
            self._tallies.orphan_events["uploaded" if seen & SEEN_UPLOADED else "completed"] += 1
        if s.check is not check:
            self._set_check(slot, s.check)
            if s.check is Check.PENDING:  # held: its file is to be looked up, oldest first
                self._checks.append(key)
        if s.state != old:
            self._tallies.move(t.app(slot), t.mode(slot), room_of(key), t.ts_start[slot], old, s.state)
            if s.state in EVICTED_FIRST:
                self._terminal_fifo.append(key)
            t.set_state(slot, s.state)
        if schedule:
            self._deadlines.set(slot, s.deadline)
        return s

    def _transition(self, slot: int, key: str, s: Settled) -> Transition | None:
        """The problem a settle entered, to report; None if it entered none."""
        if s.entered is None:
            return None
        biz, room, user, task, seq = split_key(key)
        window = self._blind.get(key) or self._start_blind.get(key) if s.entered == State.UNVERIFIED else None
        return Transition(
            s.entered.label,
            biz,
            room,
            user,
            task,
            seq,
            self._tallies.labels[self._table.app(slot)],
            s.check.confirmed,
            window,
        )

    # ------------------------------------------------------------ deadlines

    def sweep_now(self, budget: int | None = None) -> list[Transition]:
        """Apply every deadline that has passed: state changes and retention expiry.

        Costs O(segments due), never a scan. With a ``budget``, at most that many due entries
        are handled and the rest stay queued. Returns the segments that became stuck,
        upload_missing or orphan, for logging.
        """
        now = self._now()
        out: list[Transition] = []
        t = self._table
        self._streams.sweep(now)
        for slot in self._deadlines.pop_due(now, budget):
            key = t.keys[slot]
            if key is None:
                continue
            # Settle first: a segment that got stuck (or lost its upload) before its TTL ran out
            # is reported and evicted in that state, even if the sweep fell behind.
            s = self._settle(slot, key, t.state(slot), now, schedule=False)
            moved = self._transition(slot, key, s)
            if moved is not None:
                out.append(moved)
            if s.expired:
                self._remove(slot, key, "ttl")
            else:  # (an expired one is not queued again: it would look due, and go stale)
                self._deadlines.set(slot, s.deadline)
        return out

    def mark_blind_now(self, start: float, end: float) -> int:
        """:meth:`mark_blind` without the coroutine. A scan, once per window."""
        t = self._table
        marked = 0
        if self._latest_blind is None or self._latest_blind[1] < end:
            self._latest_blind = (start, end)  # segments created from now on are held against it
        # Receive-clock times in the window's wall time; last heard from is the last new event.
        mono_to_wall = self.clock.time() - self._now()
        to_wall = mono_to_wall - self.cfg.retention_seconds
        for key, slot in self._index.items():
            state = t.state(slot)
            if blind_marks(state, t.expires[slot] + to_wall, end):
                self._blind[key] = (start, end)
                marked += 1
            if start_blind_marks(t.seen(slot), state, t.r_first[slot] + mono_to_wall, start, end, self.cfg):
                self._start_blind[key] = (start, end)
        return marked

    def has_due(self) -> bool:
        return self._deadlines.has_due(self._now())

    # ------------------------------------------------------------ COS checks

    def _set_check(self, slot: int, check: Check) -> None:
        t = self._table
        old = t.check(slot)
        if old is check:
            return
        self._pending_checks += (check is Check.PENDING) - (old is Check.PENDING)
        if old is Check.UNCONFIRMED:  # no longer waiting for a retry
            self._retry_at.pop(t.keys[slot], None)  # type: ignore[arg-type]
        t.set_check(slot, check)

    def claim_now(self, limit: int, lease: float) -> list[Claim]:
        """:meth:`claim` without the coroutine."""
        now = self._now()
        expired = [k for k, until in self._leases.items() if until <= now]
        for key in expired:  # their claimant never answered: hand them out again, first
            del self._leases[key]
            self._checks.appendleft(key)
        while self._retries and self._retries[0][0] <= now:  # retries due, after the first looks
            at, key = heapq.heappop(self._retries)
            if self._retry_at.get(key) == at:
                del self._retry_at[key]
                self._checks.append(key)
        t = self._table
        out: list[Claim] = []
        while self._checks and len(out) < limit:
            key = self._checks.popleft()
            slot = self._index.get(key)
            if slot is None or key in self._leases or not claimable(t.check(slot)):
                continue  # forgotten, already claimed, or moved on since it was queued
            self._leases[key] = now + lease
            pending, _ = derive_state(t.seen(slot), t.r_first[slot], t.r_complete[slot], now, self.cfg)
            file_name, anchor = t.file_names[slot], -1
            if not t.seen(slot):  # unannounced: its stream's latest file says where to look
                rec = self._streams.get(stream_of(key))
                file_name, anchor = ("", -1) if rec is None else (rec.hint, rec.hint_seq)
            app = self._tallies.labels[t.app(slot)]
            out.append(Claim(key, pending.label, file_name, app, anchor, int(t.mode(slot))))
        return out

    def claim_tails_now(self, limit: int, lease: float) -> list[TailClaim]:
        """:meth:`claim_tails` without the coroutine."""
        labels = self._tallies.labels
        return [
            TailClaim(stream, rec.mode, rec.next_seq, rec.hint, rec.hint_seq, labels[rec.app])
            for stream, rec in self._streams.claim(limit, lease, self._now())
        ]

    def adopt_now(
        self, stream: str, files: list[tuple[int, str]], retry_in: float | None = None
    ) -> list[Reconciled]:
        """:meth:`adopt` without the coroutine."""
        now = self._now()
        rec = self._streams.listed(stream, None if retry_in is None else now + retry_in)
        if rec is None or retry_in is not None:
            return []
        out: list[Reconciled] = []
        t = self._table
        for seq, file_name in sorted(files):
            key = f"{stream}{SEP}{seq}"
            if seq < rec.next_seq or key in self._index:
                continue  # announced since, or revealed (and looked up) as a gap
            # A file of SeqNo n says 0..n-1 exist: those between with no file are expected too.
            low = rec.next_seq if rec.next_seq > seq - MAX_GAP else seq - MAX_GAP
            self._expect(stream, range(low, seq), rec.app, RecordMode(rec.mode), now)
            slot = self._insert(key, rec.app, RecordMode(rec.mode), now)
            seen, lost = found_in_cos(0)
            t.set_seen(slot, seen)
            t.set_lost(slot, lost)
            if self.cfg.check_in_cos:
                t.file_names[slot] = file_name
            self._settle(slot, key, None, now)
            rec.next_seq = max(rec.next_seq, seq + 1)
            biz, room, user, task, _ = split_key(key)
            out.append(
                Reconciled(biz, room, user, task, seq, self._tallies.labels[rec.app], tuple(events_seen(lost)))
            )
        return out

    def resolve_now(self, key: str, answer: CheckAnswer, backoff: Backoff | None = None) -> Resolution:
        """:meth:`resolve` without the coroutine."""
        self._leases.pop(key, None)
        slot = self._index.get(key)
        t = self._table
        before = Check.NONE if slot is None else t.check(slot)
        if slot is None or not claimable(before):
            return None
        key = t.keys[slot]  # type: ignore[assignment]  # the stored copy (see _terminal_fifo)
        now = self._now()
        seen, lost, check = apply_answer(t.seen(slot), answer)
        if lost:
            t.set_seen(slot, seen)
            t.set_lost(slot, lost)
        self._set_check(slot, check)
        s = self._settle(slot, key, t.state(slot), now)
        retry = -1.0
        if backoff is not None and s.check is Check.UNCONFIRMED:
            passed = deadline_passed(s.state, t.seen(slot), t.r_first[slot], t.r_complete[slot], self.cfg)
            waited = now - (now if passed is None else passed[1])
            retry = retry_after(answer, waited, backoff.jitter, backoff.first, backoff.most)
        self._retry_at.pop(key, None)
        if retry >= 0:  # claimed again then
            self._retry_at[key] = now + retry
            heapq.heappush(self._retries, (now + retry, key))
        if confirms(before, s.check):  # an unconfirmed problem, confirmed now
            biz, room, user, task, seq = split_key(key)
            app = self._tallies.labels[t.app(slot)]
            return Transition(s.state.label, biz, room, user, task, seq, app, True)
        if answer != "found":
            moved = self._transition(slot, key, s)
            if moved is None:
                return Retrying(key, retry) if retry >= 0 else None
            return moved if retry < 0 else replace(moved, retry_in=retry)
        biz, room, user, task, seq = split_key(key)
        return Reconciled(
            biz, room, user, task, seq, self._tallies.labels[t.app(slot)], tuple(events_seen(lost))
        )

    # ------------------------------------------------------------ eviction

    def _remove(self, slot: int, key: str, reason: str) -> None:
        t = self._table
        state = t.state(slot)
        self._tallies.move(t.app(slot), t.mode(slot), room_of(key), t.ts_start[slot], state, None)
        self._tallies.evictions[(reason, state.label)] += 1
        self._set_check(slot, Check.NONE)
        self._retry_at.pop(key, None)
        self._blind.pop(key, None)
        self._start_blind.pop(key, None)
        self._check_notes.pop(key, None)
        del self._index[key]
        t.release(slot)
        self._deadlines.clear(slot)

    def _evict_for_capacity(self) -> None:
        """Make room for one segment, in the order of :data:`~gme_recwatch.lifecycle.EVICTED_FIRST`
        (the Redis script's evict_one keeps the same)."""
        self._compact_fifos()
        for fifo, first_only in ((self._terminal_fifo, True), (self._creation_fifo, False)):
            while fifo:
                key = fifo.popleft()
                slot = self._index.get(key)
                if slot is None or self._table.keys[slot] is not key:
                    continue  # gone, or an earlier segment's entry
                if first_only and self._table.state(slot) not in EVICTED_FIRST:
                    continue  # left the state since: passed over
                self._remove(slot, key, "capacity")
                return

    def _live_entries(self, fifo: deque[str]) -> deque[str]:
        """``fifo`` without the entries eviction would pass over as gone, in its order, each
        segment at its first place."""
        t, index = self._table, self._index
        live = (k for k in fifo if (s := index.get(k)) is not None and t.keys[s] is k)
        return deque(dict.fromkeys(live))

    def _compact_fifos(self) -> None:
        # The FIFOs keep keys of removed segments until they reach the front; rebuild them when
        # stale entries dominate, so their size stays O(segments) (amortised O(1) per insert).
        limit = 2 * len(self._index) + 1024
        if len(self._creation_fifo) > limit:
            self._creation_fifo = self._live_entries(self._creation_fifo)
        if len(self._terminal_fifo) > limit:
            self._terminal_fifo = self._live_entries(self._terminal_fifo)

    # ------------------------------------------------------------ read side

    def stats_now(self) -> StoreStats:
        """Current tallies; O(apps x states), independent of the number of segments."""
        stats = self._tallies.stats(self.cfg.max_segments, len(self._index))
        stats.checks_pending = self._pending_checks
        return stats

    def _view(self, key: str, slot: int) -> SegmentView:
        t = self._table
        seen, lost, state = t.seen(slot), t.lost(slot), t.state(slot)
        biz, room, user, task, seq = split_key(key)
        mono_now, wall_now = self._now(), self.clock.time()

        def wall(mono: float) -> float:
            return wall_now - (mono_now - mono)

        deadline = self._deadlines.get(slot)
        start_window = self._start_blind.get(key)
        window = self._blind.get(key) or (start_window if not seen & SEEN_STARTED else None)
        confirmed = t.check(slot).confirmed
        note = self._check_notes.get(key) if confirmed is not None or lost else None
        passed = deadline_passed(
            state, seen, t.r_first[slot], t.r_complete[slot], self.cfg, start_window is not None, mono_now
        )
        return SegmentView(
            biz_id=biz,
            room_id=room,
            user_id=user,
            task_id=task,
            seq_no=seq,
            app_id=self._tallies.labels[t.app(slot)],
            state=state.label,
            record_mode=MODE_NAMES[t.mode(slot)],
            events_seen=events_seen(seen & ~lost),
            started_at=float(t.ts_start[slot]) if seen & SEEN_STARTED and not lost & SEEN_STARTED else None,
            completed_at=(
                float(t.ts_complete[slot]) if seen & SEEN_COMPLETED and not lost & SEEN_COMPLETED else None
            ),
            uploaded_at=(
                float(t.ts_upload[slot]) if seen & SEEN_UPLOADED and not lost & SEEN_UPLOADED else None
            ),
            first_received_at=wall(t.r_first[slot]),
            next_deadline_at=None if deadline == INF else wall(deadline),
            expires_at=wall(t.expires[slot]),
            confirmed=confirmed,
            lost_events=events_seen(lost),
            blind_window_start=window[0] if window else None,
            blind_window_end=window[1] if window else None,
            deadline=passed[0] if passed else None,
            state_since=(
                note.checked_at
                if note is not None and passed is not None
                else wall(passed[1])
                if passed
                else None
            ),
            check=note,
        )

    def find(
        self,
        *,
        state: str | None = None,
        app_id: str | None = None,
        room_id: str | None = None,
        limit: int = 100,
    ) -> list[SegmentView]:
        """:meth:`segments` without the coroutine."""
        return self.find_page(state=state, app_id=app_id, room_id=room_id, limit=limit).segments

    def find_page(
        self,
        *,
        state: str | None = None,
        app_id: str | None = None,
        room_id: str | None = None,
        limit: int = 100,
        after: tuple[float, str] | None = None,
    ) -> SegmentPage:
        """:meth:`page` without the coroutine. A scan: it serves the admin drill-down API,
        never the callback path or a scrape."""
        t = self._table
        labels = self._tallies.labels
        matches: list[tuple[float, str, int]] = []
        for key, slot in self._index.items():
            if state is not None and t.state(slot).label != state:
                continue
            if app_id is not None and labels[t.app(slot)] != app_id and (not key.startswith(app_id + SEP)):
                continue
            if room_id is not None and key.split(SEP, 2)[1] != room_id:
                continue
            matches.append((t.r_first[slot], key, slot))
        chosen, total, nxt = page_of(matches, limit, after)
        return SegmentPage([self._view(k, s) for _, k, s in chosen], total, nxt)

    def keys(self) -> list[str]:
        return list(self._index)

    # ------------------------------------------------------------ snapshots

    def snapshot(self, clean: bool = False) -> bytes:
        """Every segment, in the format of :mod:`.snapshot`; ``clean`` marks the final snapshot
        of a clean stop."""
        return self.prepare_snapshot(clean)()

    @property
    def restored_from(self) -> tuple[float, bool] | None:
        return self._restored_from

    def prepare_snapshot(self, clean: bool = False) -> Callable[[], bytes]:
        """Copy what a snapshot needs now (cheap: a memcpy per column and bucket), and return
        the encoding of that copy, to run anywhere (a worker thread) while the store goes on."""
        t = self._table
        when, buckets = self._deadlines.dump()
        wall_now = self.clock.time()
        # The columns are copied into buffers kept from the last snapshot: a memcpy into pages
        # already mapped is several times faster than into new ones (28 -> 8 ms at 1M), and
        # this copy is what holds the event loop. A snapshot still being encoded keeps its own.
        reuse = not self._buffers_busy
        self._buffers_busy = True
        columns = {name: self._copy(name, getattr(t, name), reuse) for name, _ in COLUMNS}
        snap = snapshot_format.SnapshotV3(
            version=snapshot_format.VERSION,
            wall_time=wall_now,
            mono_to_wall=wall_now - self._now(),
            keys=list(t.keys),
            **columns,  # type: ignore[arg-type]  # bytearrays encode as bytes
            deadlines=when,
            buckets=buckets,
            terminal=list(self._terminal_fifo),
            tallies=self._tallies.dump(),
            file_names=list(t.file_names) if self.cfg.check_in_cos else None,
            clean=clean,
            blind=dict(self._blind) or None,
            start_blind=dict(self._start_blind) or None,
            latest_blind=self._latest_blind,
            streams=self._streams.dump() or None,
            since=self._since,
        )

        def encode() -> bytes:
            try:
                return snapshot_format.encode(snap)
            finally:
                if reuse:
                    self._buffers_busy = False

        return encode

    def _copy(self, name: str, column: array[int] | array[float], reuse: bool) -> bytearray:
        size = len(column) * column.itemsize
        buf = self._buffers.get(name) if reuse else None
        if buf is None or len(buf) != size:
            buf = bytearray(size)
            if reuse:
                self._buffers[name] = buf
        memoryview(buf)[:] = memoryview(column).cast("B")  # a memcpy
        return buf

    def restore(self, data: bytes) -> int:
        """Load a snapshot into an empty store; raise ValueError if it is not a valid one.

        Time that passed while the service was down counts against every deadline: segments
        whose deadline passed meanwhile are settled by the next sweep.
        """
        if self._index:
            raise ValueError("restore needs an empty store")
        loaded = snapshot_format.decode(data)
        self._restored_from = (loaded.wall_time, loaded.clean)
        # This store's clock continues the snapshot's: old receive times stay as they are.
        self._offset = self.clock.time() - loaded.mono_to_wall - self.clock.monotonic()
        if loaded.v3 is None:
            return self._restore_by_insertion(loaded)
        snap = loaded.v3
        self._table = SegmentTable.from_columns(loaded.keys, loaded.columns)
        self._index = {k: i for i, k in enumerate(loaded.keys) if k is not None}
        self._deadlines = DeadlineQueue.load(snap.deadlines, snap.buckets)
        self._tallies.load(snap.tallies)
        self._tallies.max_apps = self.cfg.max_apps
        # The stored key objects (see _terminal_fifo); a key the snapshot holds twice keeps
        # its first place.
        keys = self._table.keys
        self._terminal_fifo = deque(
            dict.fromkeys(keys[self._index[k]] for k in snap.terminal if k in self._index)  # type: ignore[misc]
        )
        self._creation_fifo = deque(self._index)
        if snap.file_names is not None:
            self._table.file_names = snap.file_names
        self._blind = {k: w for k, w in (snap.blind or {}).items() if k in self._index}
        self._start_blind = {k: w for k, w in (snap.start_blind or {}).items() if k in self._index}
        self._latest_blind = snap.latest_blind
        self._streams.load(snap.streams or {})
        # Older snapshots did not say: from the restore on, never calling missing what we were
        # not tracking then.
        self._since = snap.since if snap.since is not None or not self._index else self._now()
        self._requeue_checks()
        while len(self._index) > self.cfg.max_segments:  # the capacity was lowered since
            self._evict_for_capacity()
        return len(self._index)

    def _restore_by_insertion(self, loaded: snapshot_format.Loaded) -> int:
        """A version 2 snapshot: columns only, so each segment is inserted and settled anew."""
        cols = {name: array(code, loaded.columns[name]) for name, code in COLUMNS}
        now = self._now()
        t = self._table
        restored = 0
        for i, key in enumerate(loaded.keys):
            if key is None or key in self._index:
                continue
            meta = int(cols["meta"][i])
            slot = self._insert(key, self._tallies.app(split_key(key)[0]), SegmentTable.meta_mode(meta), now)
            t.restore_meta(slot, meta)
            t.ts_start[slot] = int(cols["ts_start"][i])
            t.ts_complete[slot] = int(cols["ts_complete"][i])
            t.ts_upload[slot] = int(cols["ts_upload"][i])
            t.r_first[slot] = cols["r_first"][i]
            t.r_complete[slot] = cols["r_complete"][i]
            t.expires[slot] = cols["expires"][i]
            self._settle(slot, key, None, now)
            restored += 1
        self._requeue_checks()
        return restored

    def _requeue_checks(self) -> None:
        """After a restore: every pending check is looked up again (claims die with a process)."""
        t = self._table
        pending = sorted((t.r_first[s], k) for k, s in self._index.items() if t.check(s) is Check.PENDING)
        if not self.cfg.check_in_cos:  # checks were turned off since: no segment stays held
            for _, k in pending:
                t.set_check(self._index[k], Check.NONE)
            pending = []
        self._checks = deque(k for _, k in pending)
        # Lookups that gave no answer before the restart are retried at once (their retry
        # times died with the process).
        self._retry_at, self._retries = {}, []
        if self.cfg.check_in_cos:
            self._checks.extend(k for k, s in self._index.items() if t.check(s) is Check.UNCONFIRMED)
        self._pending_checks = len(pending)
