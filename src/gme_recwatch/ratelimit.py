"""A token bucket on a monotonic clock, for work that must stay rare whatever arrives.

Two users: the signature diagnosis (``hints.py``), which skips work over its rate, and the COS
checker (``cos.py``), which waits for a token (:meth:`TokenBucket.delay`, then
:meth:`TokenBucket.try_take`). Both take the clock as a parameter, so tests
move time instead of sleeping.

The bucket is kept as one number, the time at which it will next be full again (GCRA, the
"generic cell rate algorithm"): a take is O(1), needs no timer, and never drifts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

# Sums of 1/rate drift by a few ulps: a token due within a nanosecond counts as due now.
_SLACK: Final = 1e-9


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; starts full."""

    __slots__ = ("_interval", "_monotonic", "_tat", "_tolerance", "burst", "rate")

    def __init__(self, rate: float, burst: float, monotonic: Callable[[], float]) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._interval = 1.0 / rate
        self._tolerance = (burst - 1) * self._interval
        self._monotonic = monotonic
        self._tat = monotonic()  # "theoretical arrival time": when the bucket is full again

    def try_take(self) -> bool:
        """Take a token if there is one now; False (and nothing taken) if not."""
        now = self._monotonic()
        tat = max(self._tat, now)
        if tat - self._tolerance > now + _SLACK:
            return False
        self._tat = tat + self._interval
        return True

    def delay(self) -> float:
        """Seconds until a token is there (0 when one is now); nothing is taken.

        A waiter sleeps this long and tries again: tokens are taken when they are used, so a
        stalled event loop that wakes many waiters late still lets them through one interval
        apart, never in a burst.
        """
        wait = max(self._tat, self._monotonic()) - self._tolerance - self._monotonic()
        return wait if wait > _SLACK else 0.0


class LogSampler:
    """At most one log line per key per ``interval`` seconds; the rest are counted, and the next
    line that gets through says how many were left out. For rejections, which anyone on the
    internet can cause at line rate: the counters stay exact, the log stays readable and small.

    Keys must come from a small fixed set (the rejection reasons): one entry is kept per key.
    ``interval`` 0 lets every line through.
    """

    __slots__ = ("_monotonic", "_next", "_suppressed", "interval")

    def __init__(self, interval: float, monotonic: Callable[[], float]) -> None:
        self.interval = interval
        self._monotonic = monotonic
        self._next: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def admit(self, key: str) -> int | None:
        """None: do not log this one (it is counted). Otherwise log it, with this many left out
        since the previous line of ``key``."""
        if self.interval <= 0:
            return 0
        now = self._monotonic()
        if now < self._next.get(key, -float("inf")):
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._next[key] = now + self.interval
        return self._suppressed.pop(key, 0)
