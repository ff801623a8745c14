"""The in-memory store's running counts: every gauge kept up to date as segments move, so a
scrape costs O(apps x states) however many segments there are.

Also the bounded app labels: each BizID gets its own ``app_id`` label value up to ``max_apps``,
then every further app is ``other``, so no label grows with what callers send.
"""

from __future__ import annotations

import heapq

import msgspec

from ..events import MODE_NAMES, RecordMode
from ..lifecycle import LIVE_RECORDING, STATE_NAMES, State
from .base import StoreStats

OTHER = "other"


class TallyState(msgspec.Struct, array_like=True):
    """Every tally, for a snapshot: restored as is, so a restart recounts nothing."""

    labels: list[str]
    app_index: dict[int, int]
    other: int | None
    app_overflow: int
    by_state: list[int]
    active: list[list[int]]
    rooms: dict[str, int]
    active_rooms: list[int]
    stuck: list[int]
    stuck_total: list[int]
    missing: list[int]
    missing_total: list[int]
    completed_total: list[int]
    starts: list[dict[int, int]]
    orphan_events: dict[str, int]
    evictions: list[tuple[str, str, int]]


class Tallies:
    """Counts per app label and per state, moved by :meth:`move` and nothing else."""

    def __init__(self, max_apps: int) -> None:
        self.max_apps = max_apps
        self.labels: list[str] = []
        self._app_index: dict[int, int] = {}
        self._other: int | None = None
        self.app_overflow = 0
        self.by_state = [0] * len(State)
        self._active: list[list[int]] = []
        self._rooms: dict[str, int] = {}  # room -> its segments recording
        self._active_rooms: list[int] = []
        self._stuck: list[int] = []
        self._stuck_total: list[int] = []
        self._missing: list[int] = []
        self._missing_total: list[int] = []
        self.completed_total: list[int] = []
        # Oldest recording start, per app: how many recording segments started in each second,
        # and a lazy min-heap of those seconds. Nothing per segment: recordings that started in
        # the same second share one entry.
        self._starts: list[dict[int, int]] = []
        self._start_heap: list[list[int]] = []
        self.orphan_events = {"completed": 0, "uploaded": 0}
        self.evictions: dict[tuple[str, str], int] = {
            (r, s): 0 for r in ("ttl", "capacity") for s in STATE_NAMES
        }

    # ------------------------------------------------------------ app labels

    def app(self, biz_id: int) -> int:
        """The label index of a BizID; past ``max_apps`` apps, the index of ``other``."""
        idx = self._app_index.get(biz_id)
        if idx is not None:
            return idx
        if len(self.labels) - (self._other is not None) >= self.max_apps:
            if self._other is None:
                self._other = self._new_label(OTHER)
            self.app_overflow += 1
            return self._other
        idx = self._app_index[biz_id] = self._new_label(str(biz_id))
        return idx

    def _new_label(self, label: str) -> int:
        self.labels.append(label)
        for col in (
            self._active_rooms,
            self._stuck,
            self._stuck_total,
            self._missing,
            self._missing_total,
            self.completed_total,
        ):
            col.append(0)
        self._active.append([0] * len(RecordMode))
        self._starts.append({})
        self._start_heap.append([])
        return len(self.labels) - 1

    # ------------------------------------------------------------ moves

    def move(
        self, app: int, mode: RecordMode, room: str, ts_start: int, old: State | None, new: State | None
    ) -> None:
        """A segment went from ``old`` to ``new`` (None: it did not exist / no longer does)."""
        if old is not None:
            self.by_state[old] -= 1
        if new is not None:
            self.by_state[new] += 1
        was_rec, is_rec = old in LIVE_RECORDING, new in LIVE_RECORDING
        if was_rec != is_rec:
            if is_rec:
                self._recording_began(app, mode, room, ts_start)
            else:
                self._recording_ended(app, mode, room, ts_start)
        if old == State.STUCK:
            self._stuck[app] -= 1
        elif old == State.UPLOAD_MISSING:
            self._missing[app] -= 1
        if new == State.STUCK:
            self._stuck[app] += 1
            self._stuck_total[app] += 1
        elif new == State.UPLOAD_MISSING:
            self._missing[app] += 1
            self._missing_total[app] += 1

    def _recording_began(self, app: int, mode: RecordMode, room: str, ts_start: int) -> None:
        self._active[app][mode] += 1
        n = self._rooms.get(room, 0)
        self._rooms[room] = n + 1
        if n == 0:
            self._active_rooms[app] += 1
        starts = self._starts[app]
        n = starts.get(ts_start, 0)
        starts[ts_start] = n + 1
        if n == 0:
            heap = self._start_heap[app]
            heapq.heappush(heap, ts_start)
            if len(heap) > 2 * len(starts) + 64:  # seconds that emptied and came back
                self._start_heap[app] = heap = list(starts)
                heapq.heapify(heap)

    def _recording_ended(self, app: int, mode: RecordMode, room: str, ts_start: int) -> None:
        self._active[app][mode] -= 1
        starts = self._starts[app]
        left = starts[ts_start] - 1
        if left:
            starts[ts_start] = left
        else:
            del starts[ts_start]  # its heap entry goes lazily
        n = self._rooms[room] - 1
        if n:
            self._rooms[room] = n
        else:
            del self._rooms[room]
            self._active_rooms[app] -= 1

    # ------------------------------------------------------------ snapshots

    def dump(self) -> TallyState:
        """A copy of every tally (shallow copies: the caller encodes it elsewhere)."""
        return TallyState(
            list(self.labels),
            dict(self._app_index),
            self._other,
            self.app_overflow,
            list(self.by_state),
            [list(row) for row in self._active],
            dict(self._rooms),
            list(self._active_rooms),
            list(self._stuck),
            list(self._stuck_total),
            list(self._missing),
            list(self._missing_total),
            list(self.completed_total),
            [dict(s) for s in self._starts],
            dict(self.orphan_events),
            [(r, st, n) for (r, st), n in self.evictions.items()],
        )

    def load(self, state: TallyState) -> None:
        self.labels = state.labels
        self._app_index = state.app_index
        self._other = state.other
        self.app_overflow = state.app_overflow
        # Older snapshots know fewer states: the states added since start at 0.
        self.by_state = state.by_state + [0] * (len(State) - len(state.by_state))
        self._active = state.active
        self._rooms = state.rooms
        self._active_rooms = state.active_rooms
        self._stuck, self._stuck_total = state.stuck, state.stuck_total
        self._missing, self._missing_total = state.missing, state.missing_total
        self.completed_total = state.completed_total
        self._starts = state.starts
        self._start_heap = [list(s) for s in state.starts]
        for heap in self._start_heap:
            heapq.heapify(heap)
        self.orphan_events = state.orphan_events
        self.evictions = {(r, st): n for r, st, n in state.evictions}

    # ------------------------------------------------------------ read side

    def _oldest_start(self, app: int) -> float:
        heap, starts = self._start_heap[app], self._starts[app]
        while heap and heap[0] not in starts:
            heapq.heappop(heap)
        return float(heap[0]) if heap else 0.0

    def stats(self, capacity: int, segments: int) -> StoreStats:
        labels = list(self.labels)
        return StoreStats(
            app_labels=labels,
            active_recordings={
                (labels[a], MODE_NAMES[m]): n for a, row in enumerate(self._active) for m, n in enumerate(row)
            },
            active_rooms=dict(zip(labels, self._active_rooms, strict=True)),
            stuck=dict(zip(labels, self._stuck, strict=True)),
            stuck_total=dict(zip(labels, self._stuck_total, strict=True)),
            missing_uploads=dict(zip(labels, self._missing, strict=True)),
            missing_uploads_total=dict(zip(labels, self._missing_total, strict=True)),
            completed_total=dict(zip(labels, self.completed_total, strict=True)),
            oldest_start={labels[a]: self._oldest_start(a) for a in range(len(labels))},
            orphan_events=dict(self.orphan_events),
            by_state=dict(zip(STATE_NAMES, self.by_state, strict=True)),
            evictions=dict(self.evictions),
            capacity=capacity,
            app_overflow=self.app_overflow,
            segments=segments,
        )
