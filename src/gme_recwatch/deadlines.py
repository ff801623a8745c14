"""When each tracked segment next needs looking at: a queue of deadlines in one-second buckets.

Each slot (a small int a store gives a segment) has at most one deadline. Deadlines are kept in
buckets, one per whole second, with a min-heap of the seconds that have a bucket: scheduling is
O(1) amortised, finding what is due is O(due), and a million segments due in the same second
cost one heap entry. A deadline that moves leaves its old entry behind; entries are checked
against the slot's current deadline when their second comes, and rebuilt away once stale ones
outnumber live ones, so memory stays proportional to the slots.
"""

from __future__ import annotations

import heapq
import math
from array import array

from .lifecycle import INF


class DeadlineQueue:
    """Per-slot deadlines on a monotonic clock, popped when due."""

    def __init__(self) -> None:
        self._when = array("d")  # slot -> its deadline, INF for none
        self._buckets: dict[int, array[int]] = {}  # whole second -> slots due then
        self._heap: list[int] = []  # the seconds that have a bucket
        self._entries = 0  # bucket entries, live and stale
        self._pending = 0  # slots with a deadline

    def __len__(self) -> int:
        """Slots with a deadline."""
        return self._pending

    @property
    def entries(self) -> int:
        """Bucket entries, stale ones included: bounded by about twice the pending slots."""
        return self._entries

    def get(self, slot: int) -> float:
        return self._when[slot] if slot < len(self._when) else INF

    def set(self, slot: int, when: float) -> None:
        """Give ``slot`` the deadline ``when`` (INF: none), replacing any it had."""
        if slot >= len(self._when):
            self._when.extend([INF] * (slot + 1 - len(self._when)))
        old = self._when[slot]
        self._when[slot] = when
        self._pending += (when != INF) - (old != INF)
        if when == INF:
            return
        sec = math.ceil(when)
        if old != INF and math.ceil(old) == sec:
            return  # already in that bucket
        bucket = self._buckets.get(sec)
        if bucket is None:
            bucket = self._buckets[sec] = array("q")
            heapq.heappush(self._heap, sec)
        bucket.append(slot)
        self._entries += 1
        if self._entries > 2 * self._pending + 1024:
            self._compact()

    def clear(self, slot: int) -> None:
        self.set(slot, INF)

    def has_due(self, now: float) -> bool:
        return bool(self._heap) and self._heap[0] <= now

    def pop_due(self, now: float, budget: int | None = None) -> list[int]:
        """The slots whose deadline has passed, their deadlines cleared; at most ``budget``
        bucket entries are looked at (the rest stay queued), so a caller can yield between
        rounds."""
        out: list[int] = []
        left = budget if budget is not None else -1
        when = self._when
        while self._heap and self._heap[0] <= now and left != 0:
            sec = heapq.heappop(self._heap)
            bucket = self._buckets.pop(sec)
            self._entries -= len(bucket)
            if 0 < left < len(bucket):
                self._buckets[sec] = bucket[left:]  # the rest waits for the next round
                self._entries += len(bucket) - left
                heapq.heappush(self._heap, sec)
                bucket = bucket[:left]
            left = max(left - len(bucket), 0) if left > 0 else left
            for slot in bucket:
                deadline = when[slot]
                # Stale entries (the deadline moved or was cleared since) are skipped.
                if deadline == INF or deadline > now or math.ceil(deadline) != sec:
                    continue
                when[slot] = INF
                self._pending -= 1
                out.append(slot)
        return out

    def dump(self) -> tuple[bytes, dict[int, bytes]]:
        """Everything, as bytes: the per-slot deadlines and the buckets (for a snapshot)."""
        return self._when.tobytes(), {sec: b.tobytes() for sec, b in self._buckets.items()}

    @classmethod
    def load(cls, when: bytes, buckets: dict[int, bytes]) -> DeadlineQueue:
        """The queue :meth:`dump` described, rebuilt with a memcpy per bucket, not per slot."""
        q = cls()
        q._when.frombytes(when)
        for sec, raw in buckets.items():
            bucket = array("q")
            bucket.frombytes(raw)
            q._buckets[sec] = bucket
            q._entries += len(bucket)
        q._heap = list(q._buckets)
        heapq.heapify(q._heap)
        q._pending = len(q._when) - q._when.count(INF)
        return q

    def _compact(self) -> None:
        # Rebuild the buckets from the live deadlines once stale entries dominate: under a flood
        # of new keys, entries of evicted slots would otherwise outgrow every bound until their
        # second came round, hours later (amortised O(1) per schedule).
        buckets: dict[int, array[int]] = {}
        for slot, deadline in enumerate(self._when):
            if deadline != INF:
                sec = math.ceil(deadline)
                bucket = buckets.get(sec)
                if bucket is None:
                    bucket = buckets[sec] = array("q")
                bucket.append(slot)
        self._buckets = buckets
        self._heap = list(buckets)
        heapq.heapify(self._heap)
        self._entries = self._pending
