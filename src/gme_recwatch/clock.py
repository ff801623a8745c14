"""Time as a parameter: everything with deadlines takes a :class:`Clock`, so tests move time
instead of sleeping."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never jumps: what deadlines run on."""
        ...

    def time(self) -> float:
        """Unix time: what is shown to people and compared with the sender's Timestamps."""
        ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


@dataclass
class FakeClock:
    """A clock for tests and benchmarks: time moves only when told to."""

    mono: float = 1000.0
    wall: float = 1_700_000_000.0

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds
