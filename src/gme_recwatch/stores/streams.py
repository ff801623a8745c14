"""The recording streams the in-memory store knows (:mod:`gme_recwatch.lifecycle`, "segments
never announced"): per stream, the next SeqNo it expects, when it was last heard from, when its
folder is due to be listed for a last segment no callback announced, and the latest file a
callback named (where its folder is). The Redis script keeps the same in its ``sr`` hash.

Few heap entries per stream: a callback moves a stream's due time later (its expiry, its tail),
which needs no entry -- one that comes due early is pushed again at the stream's real due time --
and earlier only when its tail was listed since (the entry then waits for its expiry), which
pushes one. So the heap stays O(streams), never O(callbacks).

At most ``max_segments`` streams are kept (a flood of distinct tasks must not grow memory past the
store's capacity): the one heard from longest ago goes first, and the store then counts its
tracking as begun anew (lifecycle.revealed: a stream it forgot is not taken for a new one whose
earlier SeqNos it could have heard). ``by_key`` is in the order last heard from.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

from ..lifecycle import INF, Config, tail_due

# What a snapshot keeps of a stream: next SeqNo, record mode, app index, last heard, tail due,
# the latest file named, its SeqNo, the lowest SeqNo accounted for.
StreamState = tuple[int, int, int, float, float, str, int, int]


@dataclass(slots=True)
class Stream:
    next_seq: int
    """SeqNos from ``low_seq`` up to this one (excluded) are accounted for (lifecycle.revealed)."""
    mode: int
    app: int
    last_heard: float
    """On the store's receive clock, as every time here."""
    tail_at: float
    """When its folder is to be listed (INF: not due: no COS checks, or listed since)."""
    hint: str = ""
    hint_seq: int = -1
    low_seq: int = 0
    queued: float = INF
    """When the earliest entry of the heap that names it comes due (INF: none does)."""

    def due(self, retention: float) -> float:
        expiry = self.last_heard + retention
        return self.tail_at if self.tail_at < expiry else expiry


class Streams:
    """The streams of one in-memory store, their deadlines and their tail listings."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.by_key: dict[str, Stream] = {}
        self._heap: list[tuple[float, str]] = []
        self._tails: deque[str] = deque()  # due to be listed, oldest first
        self._leases: dict[str, float] = {}  # claimed: when the claim runs out
        self._retries: list[tuple[float, str]] = []  # listings that failed: when to try again

    def __len__(self) -> int:
        return len(self.by_key)

    def get(self, stream: str) -> Stream | None:
        return self.by_key.get(stream)

    def heard(
        self, stream: str, seq_no: int, low: int, mode: int, app: int, file_name: str, now: float
    ) -> tuple[Stream, bool]:
        """A callback of ``stream`` with ``seq_no``, received ``now``, that revealed SeqNos from
        ``low``: SeqNos from the lowest of those up to it are accounted for, it is due for a
        tail listing ``tail_quiet_seconds`` from now, and it remembers the latest file named.
        Also True when another stream was forgotten to make room for it."""
        rec = self.by_key.pop(stream, None)
        evicted = False
        if rec is None:
            if len(self.by_key) >= self.cfg.max_segments:
                oldest = next(iter(self.by_key))
                del self.by_key[oldest]
                self._leases.pop(oldest, None)
                evicted = True
            rec = Stream(seq_no + 1, mode, app, now, tail_due(now, self.cfg), low_seq=low)
        else:
            rec.low_seq = min(rec.low_seq, low, seq_no)
            rec.next_seq = max(rec.next_seq, seq_no + 1)
            rec.last_heard = now
            rec.tail_at = tail_due(now, self.cfg)
        if file_name and seq_no >= rec.hint_seq:
            rec.hint, rec.hint_seq = file_name, seq_no
        self.by_key[stream] = rec  # last heard from: at the end
        self._queue(stream, rec)
        return rec, evicted

    def _queue(self, stream: str, rec: Stream) -> None:
        due = rec.due(self.cfg.retention_seconds)
        if due < rec.queued:
            rec.queued = due
            heapq.heappush(self._heap, (due, stream))
            if len(self._heap) > 2 * len(self.by_key) + 1024:
                self._rebuild()

    def _rebuild(self) -> None:
        """The heap without the entries of streams forgotten (at capacity) or superseded: one an
        entry, so it stays O(streams) whatever the flood of tasks."""
        self._heap = []
        for stream, rec in self.by_key.items():
            rec.queued = rec.due(self.cfg.retention_seconds)
            self._heap.append((rec.queued, stream))
        heapq.heapify(self._heap)

    def sweep(self, now: float) -> None:
        """Forget the streams whose retention ran out; queue the tails that came due."""
        retention = self.cfg.retention_seconds
        while self._heap and self._heap[0][0] <= now:
            at, stream = heapq.heappop(self._heap)
            rec = self.by_key.get(stream)
            if rec is None or at != rec.queued:
                continue  # forgotten, or an entry superseded by an earlier one
            rec.queued = INF
            if rec.last_heard + retention <= now:
                del self.by_key[stream]
                self._leases.pop(stream, None)
                continue
            if rec.tail_at <= now:
                rec.tail_at = INF  # listed once; a callback arms it again
                self._tails.append(stream)
            self._queue(stream, rec)

    def claim(self, limit: int, lease: float, now: float) -> list[tuple[str, Stream]]:
        """Up to ``limit`` streams due for a listing, each claimed for ``lease`` seconds."""
        for stream in [s for s, until in self._leases.items() if until <= now]:
            del self._leases[stream]  # its claimant never answered: hand it out again
            self._tails.appendleft(stream)
        while self._retries and self._retries[0][0] <= now:
            self._tails.append(heapq.heappop(self._retries)[1])
        out: list[tuple[str, Stream]] = []
        while self._tails and len(out) < limit:
            stream = self._tails.popleft()
            rec = self.by_key.get(stream)
            if rec is None or stream in self._leases:
                continue
            self._leases[stream] = now + lease
            out.append((stream, rec))
        return out

    def listed(self, stream: str, retry_at: float | None) -> Stream | None:
        """A claimed listing is done (``retry_at`` None) or failed, to be tried again then."""
        if self._leases.pop(stream, None) is None:
            return None
        rec = self.by_key.get(stream)
        if rec is not None and retry_at is not None:
            heapq.heappush(self._retries, (retry_at, stream))
        return rec

    def pending_tails(self) -> int:
        return len(self._tails) + len(self._leases) + len(self._retries)

    def dump(self) -> dict[str, StreamState]:
        """The streams as a snapshot keeps them. A listing queued, claimed or waiting for its
        retry is written as due (when its quiet time ended): a restore lists it again, as it
        looks up the segments whose checks were pending, rather than never."""
        listing = {*self._tails, *self._leases, *(stream for _, stream in self._retries)}
        quiet = self.cfg.tail_quiet_seconds
        return {
            k: (
                r.next_seq,
                r.mode,
                r.app,
                r.last_heard,
                r.last_heard + quiet if k in listing else r.tail_at,
                r.hint,
                r.hint_seq,
                r.low_seq,
            )
            for k, r in self.by_key.items()
        }

    def load(self, state: dict[str, StreamState]) -> None:
        self.by_key = {k: Stream(*v) for k, v in state.items()}
        self._heap = []
        for stream, rec in self.by_key.items():
            self._queue(stream, rec)
