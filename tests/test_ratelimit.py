"""The token bucket, on a clock the tests move."""

from __future__ import annotations

import pytest

from gme_recwatch.clock import FakeClock
from gme_recwatch.ratelimit import TokenBucket


def test_a_full_bucket_gives_its_burst_at_once_then_nothing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, 5, clock.monotonic)
    assert [bucket.try_take() for _ in range(6)] == [True] * 5 + [False]


def test_tokens_come_back_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(4.0, 1, clock.monotonic)
    assert bucket.try_take() and not bucket.try_take()
    clock.advance(0.24)
    assert not bucket.try_take()
    clock.advance(0.01)
    assert bucket.try_take() and not bucket.try_take()


def test_over_a_long_flood_takes_never_exceed_rate_times_time_plus_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(3.0, 5, clock.monotonic)
    taken = 0
    for _ in range(100_000):  # 100 s of attempts every millisecond
        taken += bucket.try_take()
        clock.advance(0.001)
    assert 300 <= taken <= 3 * 100 + 5


def test_an_idle_bucket_saves_up_no_more_than_its_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, 3, clock.monotonic)
    clock.advance(3600)
    assert sum(bucket.try_take() for _ in range(10)) == 3


def test_a_refused_take_costs_nothing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1.0, 1, clock.monotonic)
    assert bucket.try_take()
    for _ in range(1000):
        assert not bucket.try_take()
    clock.advance(1.0)
    assert bucket.try_take()


def test_delay_says_when_the_next_token_is_there_and_takes_nothing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, 2, clock.monotonic)
    assert bucket.delay() == 0.0
    assert bucket.try_take() and bucket.try_take() and not bucket.try_take()
    assert bucket.delay() == pytest.approx(0.1)
    assert bucket.delay() == pytest.approx(0.1)  # asking again does not push it back
    clock.advance(bucket.delay())
    assert bucket.delay() == 0.0 and bucket.try_take() and not bucket.try_take()


def test_waiters_that_wake_late_still_pass_one_interval_apart() -> None:
    clock = FakeClock()
    bucket = TokenBucket(5.0, 1, clock.monotonic)
    assert bucket.try_take()
    clock.advance(10.0)  # a stalled loop: every waiter wakes at once, long after its turn
    taken = [bucket.try_take() for _ in range(10)]
    assert taken == [True] + [False] * 9
    assert bucket.delay() == pytest.approx(0.2)


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_a_bucket_that_could_never_give_a_token_is_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket(rate, burst, FakeClock().monotonic)
