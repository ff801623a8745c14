"""Blind windows: stretches of time in which callbacks may have been sent and never recorded.

Pure arithmetic on wall-clock times (Unix seconds): no clock, no I/O. The service hands in what
it knows -- when its state was last saved and whether it stopped cleanly, when the store
stopped and started answering -- and gets back the window, if any, that the sender's retries
(``GME_RECWATCH_SENDER_RETRY_SECONDS``) cannot cover.

* After a clean stop (SIGTERM, final snapshot written with the clean marker), every callback
  acknowledged before the stop is in the snapshot, and a callback sent while the service was
  down is retried by Tencent for ``retry`` seconds: only the downtime beyond that is blind.
  A restart quicker than the retry horizon has no window.
* After a crash (no clean marker), every callback acknowledged since the last snapshot is lost,
  whatever the length of the downtime: Tencent got its 200 and will not retry. The window
  opens at that snapshot and closes at the restart.
* On the shared Redis store nothing acknowledged is ever lost; what is lost is what nobody
  answered. Every replica writes a heartbeat (Redis ``TIME``) every few seconds and the last
  one to stop cleanly notes its stop time: a replica that starts while no heartbeat is fresher
  than two periods (every replica was down) is blind from the last sign of life (the newest
  heartbeat, or that clean stop) plus ``retry`` until now.
* During a store outage callbacks are answered 503 and retried for ``retry`` seconds: only
  the part of the outage beyond the retry horizon is blind.
* A shared store that comes back empty (its epoch marker gone: a restart without persistence,
  a failover to an empty replica, FLUSHALL) lost what was acknowledged since the marker was
  last seen, as after a crash: Tencent got its 200s and will not retry. The window opens then
  and closes when the loss is found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Cause = Literal[
    "restart_after_crash", "restart_after_clean_stop", "all_replicas_down", "store_unreachable", "store_reset"
]
CAUSES: Final[tuple[Cause, ...]] = (
    "restart_after_crash",
    "restart_after_clean_stop",
    "all_replicas_down",
    "store_unreachable",
    "store_reset",
)


@dataclass(frozen=True, slots=True)
class Window:
    """A blind window: from ``start`` to ``end`` (Unix seconds), and why."""

    start: float
    end: float
    cause: Cause

    @property
    def seconds(self) -> float:
        return self.end - self.start


def after_restart(saved_at: float, clean: bool, now: float, retry: float) -> Window | None:
    """The window of a restart whose state was saved at ``saved_at``: by a clean stop (the
    final snapshot) or, after a crash, by the last periodic snapshot. None when nothing was
    lost."""
    if clean:
        return _beyond_retries(saved_at, now, retry, "restart_after_clean_stop")
    if now <= saved_at:  # a clock stepped back: nothing to measure
        return None
    return Window(saved_at, now, "restart_after_crash")


def after_all_down(
    newest_beat: float | None, stopped: float | None, now: float, retry: float, period: float
) -> Window | None:
    """The window of a start on a shared store whose newest heartbeat (of another replica) is
    ``newest_beat`` and whose last clean stop of the last replica was ``stopped`` (None: not
    known). None while another replica is alive, or when nothing ever ran before."""
    if newest_beat is not None and now - newest_beat <= 2 * period:
        return None  # someone was listening
    known = [t for t in (newest_beat, stopped) if t is not None]
    if not known:
        return None
    return _beyond_retries(max(known), now, retry, "all_replicas_down")


def after_outage(failing_since: float, recovered_at: float, retry: float) -> Window | None:
    """The window of a store outage from ``failing_since`` to ``recovered_at``: what was
    answered 503 for longer than the sender retries. None for a shorter outage."""
    return _beyond_retries(failing_since, recovered_at, retry, "store_unreachable")


def after_reset(last_seen: float, found_at: float) -> Window | None:
    """The window of a shared store found empty at ``found_at`` whose epoch marker was last seen
    at ``last_seen``: whatever was acknowledged in between may be gone. None when the clock
    stepped back."""
    if found_at <= last_seen:
        return None
    return Window(last_seen, found_at, "store_reset")


def _beyond_retries(since: float, until: float, retry: float, cause: Cause) -> Window | None:
    start = since + retry
    return Window(start, until, cause) if until > start else None
