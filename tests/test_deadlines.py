"""The deadline queue, through its own API."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from gme_recwatch.deadlines import DeadlineQueue
from gme_recwatch.lifecycle import INF


def test_a_slot_is_due_once_its_deadline_has_passed() -> None:
    q = DeadlineQueue()
    q.set(3, 10.0)
    assert not q.has_due(9.9) and q.pop_due(9.9) == []
    assert q.has_due(10.0)
    assert q.pop_due(10.0) == [3]
    assert q.get(3) == INF and len(q) == 0
    assert q.pop_due(100.0) == []  # popped once only


def test_moving_a_deadline_leaves_no_due_entry_at_the_old_time() -> None:
    q = DeadlineQueue()
    q.set(1, 5.0)
    q.set(1, 50.0)
    assert q.pop_due(10.0) == []
    assert q.pop_due(50.0) == [1]


def test_cleared_slot_is_never_due() -> None:
    q = DeadlineQueue()
    q.set(1, 5.0)
    q.clear(1)
    assert len(q) == 0
    assert q.pop_due(10.0) == []


def test_deadlines_within_one_second_share_a_bucket_and_all_come_due() -> None:
    q = DeadlineQueue()
    for slot, when in enumerate((10.1, 10.5, 10.9)):
        q.set(slot, when)
    assert q.entries == 3
    assert sorted(q.pop_due(11.0)) == [0, 1, 2]


def test_budget_limits_a_round_and_the_rest_stays_queued() -> None:
    q = DeadlineQueue()
    for slot in range(25):
        q.set(slot, 1.0)
    rounds = []
    while q.has_due(2.0) and len(rounds) < 10:  # a pop that leaves its slots due would spin
        rounds.append(len(q.pop_due(2.0, budget=10)))
    assert rounds == [10, 10, 5]
    assert len(q) == 0


def test_stale_entries_are_compacted_so_entries_stay_bounded_by_pending_slots() -> None:
    q = DeadlineQueue()
    rng = random.Random(7)
    for i in range(50_000):
        q.set(i % 100, float(rng.randrange(1, 100_000)))  # 100 slots, deadlines moving
        assert q.entries <= 2 * len(q) + 1024
    assert len(q) == 100
    assert sorted(q.pop_due(INF)) == list(range(100))
    assert q.entries == 0


@settings(max_examples=100, deadline=None)
@given(
    ops=st.lists(st.tuples(st.integers(0, 20), st.one_of(st.just(INF), st.floats(0, 100))), max_size=60),
    now=st.floats(0, 120),
)
def test_pop_due_returns_exactly_the_slots_whose_current_deadline_has_passed(
    ops: list[tuple[int, float]], now: float
) -> None:
    """Whatever was set, moved and cleared, the due slots are those whose last deadline <= now,
    taken at whole-second resolution (a deadline is due from the second it rounds up to)."""
    import math

    q = DeadlineQueue()
    last: dict[int, float] = {}
    for slot, when in ops:
        q.set(slot, when)
        last[slot] = when
    expected = sorted(s for s, w in last.items() if w != INF and math.ceil(w) <= now)
    assert sorted(q.pop_due(now)) == expected
    assert len(q) == sum(1 for w in last.values() if w != INF) - len(expected)
