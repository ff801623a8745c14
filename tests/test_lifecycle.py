"""The lifecycle rules on their own: pure functions of what was seen, when, and the time now.

Every table runs against both copies of the rules: lifecycle.py, and its Lua twin in
stores/redis_lifecycle.lua, whose test-only "rule" op runs one function by name on the session's
real redis-server (``rules`` fixture). The script's constants are held to the Python ones here
too, read from its text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis
from conftest import RedisServer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gme_recwatch import lifecycle
from gme_recwatch.events import RecordMode
from gme_recwatch.lifecycle import (
    INF,
    SEEN_COMPLETED,
    SEEN_STARTED,
    SEEN_UPLOADED,
    STATE_NAMES,
    Applied,
    Check,
    Config,
    Result,
    Settled,
    State,
    events_seen,
    make_key,
    room_of,
    split_key,
)
from gme_recwatch.settings import Settings
from gme_recwatch.stores import redis as redis_store
from gme_recwatch.stores import tallies

CFG = replace(
    Settings().lifecycle(),
    max_recording_seconds=100,
    upload_grace_seconds=50,
    reorder_window_seconds=10,
    retention_seconds=1000,
)
ON = replace(CFG, check_in_cos=True)
S, C, U = SEEN_STARTED, SEEN_COMPLETED, SEEN_UPLOADED
SCRIPT = redis_store._SCRIPT
# Just before a deadline: far above the float resolution of the times used here.
EPS = 1e-3

# The rule functions both copies have (the Lua's RULES table names exactly these).
RULES = (
    "derive_state",
    "start_is_lost",
    "classify",
    "measure",
    "holds_for_check",
    "check_after_event",
    "found_in_cos",
    "check_after_answer",
    "after_blind",
    "blind_marks",
    "start_blind_marks",
    "can_mark",
    "is_expired",
    "apply_event",
    "settle",
    "apply_answer",
    "claimable",
    "retry_after",
    "confirms",
    "deadline_passed",
    "first_heard",
    "stream_of",
    "revealed",
    "tail_due",
)


def _arg(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):  # IntEnums (State, Check) too: their codes
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _opt_float(text: str) -> float | None:
    return None if text == "" else float(text)


def _bool(text: str) -> bool:
    assert text in ("true", "false"), text
    return text == "true"


class LuaRules:
    """The Lua copy of the rules, one function per call of the script's "rule" op. Each method
    takes and returns what its Python twin in lifecycle.py does."""

    def __init__(self, client: redis.Redis) -> None:
        self._script = client.register_script(SCRIPT)

    def _call(self, name: str, cfg: Config, *args: Any) -> list[str]:
        argv = [
            "rule",
            "rule-test:",
            "0",
            *redis_store.cfg_args(cfg),
            name,
            *(_arg(a) for a in args),
        ]
        return [x.decode() for x in self._script(args=argv)]

    def derive_state(
        self, seen: int, r_first: float, r_complete: float, now: float, cfg: Config
    ) -> tuple[State, float]:
        state, nxt = self._call("derive_state", cfg, seen, r_first, r_complete, now)
        return State(int(state)), float(nxt)

    def start_is_lost(self, seen: int, r_first: float, now: float, cfg: Config) -> bool:
        (lost,) = self._call("start_is_lost", cfg, seen, r_first, now)
        return _bool(lost)

    def classify(self, seen: int, bit: int, state: State | None) -> Result:
        (code,) = self._call("classify", CFG, seen, bit, state)
        return redis_store._RESULTS[int(code)]

    def measure(
        self, seen: int, bit: int, ts_start: int, ts_complete: int, ts_upload: int
    ) -> tuple[float | None, float | None]:
        duration, delay = self._call("measure", CFG, seen, bit, ts_start, ts_complete, ts_upload)
        return _opt_float(duration), _opt_float(delay)

    def holds_for_check(self, old: State | None, new: State, check: Check, cfg: Config) -> bool:
        (held,) = self._call("holds_for_check", cfg, old, new, check)
        return _bool(held)

    def check_after_event(self, check: Check, bit: int) -> Check:
        (code,) = self._call("check_after_event", CFG, check, bit)
        return Check(int(code))

    def found_in_cos(self, seen: int) -> tuple[int, int]:
        now_seen, lost = self._call("found_in_cos", CFG, seen)
        return int(now_seen), int(lost)

    def check_after_answer(self, answer: str) -> Check:
        (code,) = self._call("check_after_answer", CFG, answer)
        return Check(int(code))

    def after_blind(self, new: State, blind: bool, cfg: Config, start_blind: bool = False) -> State:
        (code,) = self._call("after_blind", cfg, new, blind, start_blind)
        return State(int(code))

    def start_blind_marks(
        self,
        seen: int,
        state: State | None,
        first_heard: float,
        window_start: float,
        window_end: float,
        cfg: Config,
    ) -> bool:
        (marks,) = self._call("start_blind_marks", cfg, seen, state, first_heard, window_start, window_end)
        return _bool(marks)

    def blind_marks(self, state: State, last_heard: float, window_end: float) -> bool:
        (marks,) = self._call("blind_marks", CFG, state, last_heard, window_end)
        return _bool(marks)

    def can_mark(self, state: State | None) -> bool:
        (marks,) = self._call("can_mark", CFG, state)
        return _bool(marks)

    def is_expired(self, expires: float, now: float) -> bool:
        (expired,) = self._call("is_expired", CFG, expires, now)
        return _bool(expired)

    def apply_event(
        self,
        seen: int,
        bit: int,
        state: State | None,
        check: Check,
        blind: bool,
        r_complete: float,
        expires: float,
        now: float,
        cfg: Config,
    ) -> Applied:
        result, new_seen, chk, still_blind, r_c, exp = self._call(
            "apply_event", cfg, seen, bit, state, check, blind, r_complete, expires, now
        )
        return Applied(
            redis_store._RESULTS[int(result)],
            int(new_seen),
            Check(int(chk)),
            _bool(still_blind),
            float(r_c),
            float(exp),
        )

    def settle(
        self,
        seen: int,
        r_first: float,
        r_complete: float,
        expires: float,
        old: State | None,
        check: Check,
        start_lost: bool,
        blind: bool,
        now: float,
        cfg: Config,
        start_blind: bool = False,
    ) -> Settled:
        state, deadline, chk, lost, entered, expired = self._call(
            "settle", cfg, seen, r_first, r_complete, expires, old, check, start_lost, blind, now, start_blind
        )
        return Settled(
            State(int(state)),
            float(deadline),
            Check(int(chk)),
            _bool(lost),
            None if entered == "" else State(int(entered)),
            _bool(expired),
        )

    def apply_answer(self, seen: int, answer: str) -> tuple[int, int, Check]:
        new_seen, lost, chk = self._call("apply_answer", CFG, seen, answer)
        return int(new_seen), int(lost), Check(int(chk))

    def claimable(self, check: Check) -> bool:
        (ok,) = self._call("claimable", CFG, check)
        return _bool(ok)

    def retry_after(self, answer: str, waited: float, jitter: float, first: float, most: float) -> float:
        (delay,) = self._call("retry_after", CFG, answer, waited, jitter, first, most)
        return float(delay)

    def confirms(self, before: Check, after: Check) -> bool:
        (ok,) = self._call("confirms", CFG, before, after)
        return _bool(ok)

    def first_heard(self, seen: int, r_first: float, now: float) -> float:
        (t,) = self._call("first_heard", CFG, seen, r_first, now)
        return float(t)

    def stream_of(self, key: str) -> str:
        (stream,) = self._call("stream_of", CFG, key)
        return stream

    def revealed(
        self, low_seq: int, next_seq: int, seq_no: int, tracking_since: float, now: float, cfg: Config
    ) -> tuple[int, int]:
        low, high = self._call("revealed", cfg, low_seq, next_seq, seq_no, tracking_since, now)
        return int(low), int(high)

    def tail_due(self, now: float, cfg: Config) -> float:
        (t,) = self._call("tail_due", cfg, now)
        return float(t)

    def deadline_passed(
        self,
        state: State,
        seen: int,
        r_first: float,
        r_complete: float,
        cfg: Config,
        start_blind: bool = False,
        now: float = INF,
    ) -> tuple[str, float] | None:
        out = self._call("deadline_passed", cfg, state, seen, r_first, r_complete, start_blind, now)
        return None if out[0] == "" else (out[0], float(out[1]))


@pytest.fixture(scope="session")
def lua_rules(redis_server: RedisServer) -> Iterator[LuaRules]:
    client = redis.Redis.from_url(redis_server.url)
    yield LuaRules(client)
    client.close()


@pytest.fixture(params=["python", "lua"])
def rules(request: pytest.FixtureRequest) -> Any:
    """The rules under test: lifecycle.py itself, or the script's Lua twin."""
    if request.param == "python":
        return lifecycle
    return request.getfixturevalue("lua_rules")


# ------------------------------------------------------------------ states and deadlines


@pytest.mark.parametrize(
    ("seen", "r_first", "r_complete", "now", "state", "next_change"),
    [
        (S, 0, 0, 99, State.RECORDING, 100),  # recording until the maximum duration
        (S, 0, 0, 100, State.STUCK, INF),  # then stuck, until an event says otherwise
        (S | C, 0, 20, 69, State.COMPLETED, 70),  # completed, within the upload grace
        (S | C, 0, 20, 70, State.UPLOAD_MISSING, INF),
        (S | C | U, 0, 20, 10**6, State.UPLOADED, INF),
        (S | U, 0, 0, 5, State.UPLOADED, INF),  # an upload implies the file is done
        (C, 0, 0, 5, State.COMPLETED, 10),  # no start yet: within the reorder window
        (U, 0, 0, 5, State.UPLOADED, 10),
        (C, 0, 0, 10, State.ORPHAN, 50),  # the start is lost; the upload still awaited
        (C, 0, 0, 50, State.UPLOAD_MISSING, INF),
        (U, 0, 0, 10, State.ORPHAN, INF),
        (C | U, 0, 0, 10, State.ORPHAN, INF),
        (C | U, 0, 0, 5, State.UPLOADED, 10),
    ],
)
def test_state_and_next_change_follow_the_documented_table(
    rules: Any, seen: int, r_first: float, r_complete: float, now: float, state: State, next_change: float
) -> None:
    assert rules.derive_state(seen, r_first, r_complete, now, CFG) == (state, next_change)


# Each deadline just before, exactly at, and just after it: a deadline is reached *at* its time.
@pytest.mark.parametrize(
    ("seen", "r_complete", "deadline", "before", "at"),
    [
        (S, 0, 100, State.RECORDING, State.STUCK),  # max_recording_seconds
        (S | C, 20, 70, State.COMPLETED, State.UPLOAD_MISSING),  # upload grace, from the completion
        (C, 0, 10, State.COMPLETED, State.ORPHAN),  # reorder window, from the first event
        (U, 0, 10, State.UPLOADED, State.ORPHAN),
        (C, 5, 55, State.ORPHAN, State.UPLOAD_MISSING),  # an orphan's upload grace
    ],
)
def test_every_deadline_is_reached_exactly_at_its_time(
    rules: Any, seen: int, r_complete: float, deadline: float, before: State, at: State
) -> None:
    assert rules.derive_state(seen, 0.0, r_complete, deadline - EPS, CFG) == (before, deadline)
    assert rules.derive_state(seen, 0.0, r_complete, deadline, CFG)[0] is at
    assert rules.derive_state(seen, 0.0, r_complete, deadline + EPS, CFG)[0] is at


def test_the_start_counts_as_lost_only_once_the_reorder_window_ran_out_without_it(rules: Any) -> None:
    assert not rules.start_is_lost(C, 0.0, 10 - EPS, CFG)
    assert rules.start_is_lost(C, 0.0, 10.0, CFG)
    assert rules.start_is_lost(U, 0.0, 10 + EPS, CFG)
    assert not rules.start_is_lost(S | C, 0.0, 1000.0, CFG)


def test_a_segment_is_forgotten_exactly_when_its_retention_runs_out(rules: Any) -> None:
    assert not rules.is_expired(1000.0, 1000 - EPS)
    assert rules.is_expired(1000.0, 1000.0)
    assert rules.is_expired(1000.0, 1000 + EPS)


GRACE_SHORTER = replace(CFG, upload_grace_seconds=5, reorder_window_seconds=60)


@pytest.mark.parametrize(
    ("now", "state", "next_change"),
    [
        (4.0, State.COMPLETED, 5),  # within both
        (5.0, State.UPLOAD_MISSING, 60),  # the grace ran out first: missing; the window still ends
        (30.0, State.UPLOAD_MISSING, 60),  # (the old rule said completed, next change 5: past)
        (60.0, State.UPLOAD_MISSING, INF),
    ],
)
def test_with_an_upload_grace_shorter_than_the_reorder_window_no_deadline_is_in_the_past(
    rules: Any, now: float, state: State, next_change: float
) -> None:
    """#19.3: a completion without a start whose upload grace ran out inside the reorder window
    was given a next change already past, so every sweep found it due again."""
    assert rules.derive_state(C, 0.0, 0.0, now, GRACE_SHORTER) == (state, next_change)


# ------------------------------------------------------------------ events


@pytest.mark.parametrize(
    ("seen", "bit", "state", "result"),
    [
        (0, S, None, Result.ACCEPTED),
        (S, S, State.RECORDING, Result.DUPLICATE),
        (S, C, State.RECORDING, Result.ACCEPTED),
        (U, S, State.UPLOADED, Result.OUT_OF_ORDER),  # a later event was seen first
        (C, S, State.COMPLETED, Result.OUT_OF_ORDER),
        (S | U, C, State.UPLOADED, Result.OUT_OF_ORDER),
        (S, C, State.STUCK, Result.LATE),  # after a deadline declared a problem
        (C, S, State.ORPHAN, Result.LATE),
        (S | C, U, State.UPLOAD_MISSING, Result.LATE),
        (S, C, State.UNVERIFIED, Result.LATE),
        (S | C, C, State.UPLOAD_MISSING, Result.DUPLICATE),  # a duplicate is never late
        (S | C, S, State.COMPLETED, Result.DUPLICATE),
        (S | C | U, U, State.UPLOADED, Result.DUPLICATE),
    ],
)
def test_result_classification(rules: Any, seen: int, bit: int, state: State | None, result: Result) -> None:
    assert rules.classify(seen, bit, state) is result


@pytest.mark.parametrize(
    ("seen", "bit", "durations"),
    [
        (S | C, C, (300.0, None)),
        (S | C | U, S, (300.0, None)),  # the start arrived last: its duration is known now
        (C | U, U, (None, 12.0)),
        (S | C | U, C, (300.0, 12.0)),  # the completion completes both
        (S | U, U, (None, None)),
        (S, S, (None, None)),
    ],
)
def test_durations_are_measured_when_the_event_completing_them_arrives(
    rules: Any, seen: int, bit: int, durations: tuple[float | None, float | None]
) -> None:
    assert rules.measure(seen, bit, 1000, 1300, 1312) == durations


def test_an_event_is_added_and_restarts_the_retention(rules: Any) -> None:
    a = rules.apply_event(S, C, State.RECORDING, Check.NONE, True, 0.0, 1000.0, 40.0, CFG)
    assert a == Applied(Result.ACCEPTED, S | C, Check.NONE, False, 40.0, 1040.0)
    # Not a completion: when the completion came stays as it was.
    a = rules.apply_event(S | C, U, State.UPLOAD_MISSING, Check.NONE, False, 40.0, 1040.0, 95.0, CFG)
    assert a == Applied(Result.LATE, S | C | U, Check.NONE, False, 40.0, 1095.0)


def test_a_duplicate_changes_nothing(rules: Any) -> None:
    a = rules.apply_event(S | C, C, State.COMPLETED, Check.PENDING, True, 40.0, 1040.0, 90.0, ON)
    assert a == Applied(Result.DUPLICATE, S | C, Check.PENDING, True, 40.0, 1040.0)


@pytest.mark.parametrize(
    ("check", "bit", "after"),
    [
        (Check.NONE, S, Check.NONE),
        (Check.PENDING, S, Check.NONE),  # a new event ends a hold: the state is derived anew
        (Check.PENDING, U, Check.NONE),
        (Check.CONFIRMED, S, Check.CONFIRMED),  # a start says nothing about the file
        (Check.UNCONFIRMED, S, Check.UNCONFIRMED),
        (Check.CONFIRMED, U, Check.NONE),  # a late upload voids the answer
        (Check.UNCONFIRMED, C, Check.NONE),
    ],
)
def test_an_event_ends_a_hold_and_voids_an_answer_except_a_start(
    rules: Any, check: Check, bit: int, after: Check
) -> None:
    assert rules.check_after_event(check, bit) is after
    a = rules.apply_event(0 if bit != S else C, bit, State.COMPLETED, check, False, 0.0, 1000.0, 5.0, ON)
    assert a.check is after


# ------------------------------------------------------------------ settling (the order)


def test_settling_a_new_segment_enters_its_state_and_is_due_at_its_next_change(rules: Any) -> None:
    s = rules.settle(S, 0.0, 0.0, 1000.0, None, Check.NONE, False, False, 0.0, CFG)
    assert s == Settled(State.RECORDING, 100.0, Check.NONE, False, None, False)


def test_a_deadline_reports_the_problem_state_entered_once(rules: Any) -> None:
    s = rules.settle(S, 0.0, 0.0, 1000.0, State.RECORDING, Check.NONE, False, False, 100.0, CFG)
    assert s == Settled(State.STUCK, 1000.0, Check.NONE, False, State.STUCK, False)
    again = rules.settle(S, 0.0, 0.0, 1000.0, State.STUCK, Check.NONE, False, False, 200.0, CFG)
    assert again.entered is None


def test_a_segment_due_and_expired_at_once_reports_its_problem_then_is_forgotten(rules: Any) -> None:
    s = rules.settle(S, 0.0, 0.0, 100.0, State.RECORDING, Check.NONE, False, False, 100.0, CFG)
    assert (s.state, s.entered, s.expired, s.deadline) == (State.STUCK, State.STUCK, True, 100.0)


def test_the_lost_start_is_marked_at_the_reorder_window_and_stays_marked(rules: Any) -> None:
    before = rules.settle(C, 0.0, 0.0, 1000.0, State.COMPLETED, Check.NONE, False, False, 10 - EPS, CFG)
    assert (before.state, before.start_lost, before.deadline) == (State.COMPLETED, False, 10.0)
    at = rules.settle(C, 0.0, 0.0, 1000.0, State.COMPLETED, Check.NONE, False, False, 10.0, CFG)
    assert (at.state, at.start_lost, at.entered) == (State.ORPHAN, True, State.ORPHAN)
    kept = rules.settle(C | S, 0.0, 0.0, 1000.0, State.ORPHAN, Check.NONE, True, False, 20.0, CFG)
    assert kept.start_lost  # a late start does not unmark it: it was counted


def test_a_blind_mark_makes_a_deadline_unverified_without_checks(rules: Any) -> None:
    s = rules.settle(S, 0.0, 0.0, 1000.0, State.RECORDING, Check.NONE, False, True, 100.0, CFG)
    assert (s.state, s.entered) == (State.UNVERIFIED, State.UNVERIFIED)
    # Only stuck and upload_missing: an orphan is not a silence a lost callback explains.
    s = rules.settle(C, 0.0, 0.0, 1000.0, State.COMPLETED, Check.NONE, False, True, 10.0, CFG)
    assert s.state is State.ORPHAN


@pytest.mark.parametrize(
    ("new", "blind", "cfg", "after"),
    [
        (State.STUCK, True, CFG, State.UNVERIFIED),
        (State.UPLOAD_MISSING, True, CFG, State.UNVERIFIED),
        (State.ORPHAN, True, CFG, State.ORPHAN),
        (State.RECORDING, True, CFG, State.RECORDING),
        (State.STUCK, False, CFG, State.STUCK),
        (State.STUCK, True, ON, State.STUCK),  # with checks, COS decides (the segment is held)
    ],
)
def test_after_blind(rules: Any, new: State, blind: bool, cfg: Config, after: State) -> None:
    assert rules.after_blind(new, blind, cfg) is after


@pytest.mark.parametrize(
    ("state", "last_heard", "marks"),
    [
        (State.RECORDING, 99.0, True),
        (State.COMPLETED, 100.0, True),  # heard from as the window ended: still in it
        (State.RECORDING, 100.5, False),  # heard from after it: a callback clears a mark
        (State.COMPLETED, 101.0, False),
        (State.UPLOADED, 50.0, False),
        (State.STUCK, 50.0, False),
        (State.UPLOAD_MISSING, 50.0, False),
        (State.ORPHAN, 50.0, False),
        (State.UNVERIFIED, 50.0, False),
    ],
)
def test_blind_marks(rules: Any, state: State, last_heard: float, marks: bool) -> None:
    assert rules.blind_marks(state, last_heard, 100.0) is marks


@pytest.mark.parametrize(
    ("new", "blind", "start_blind", "cfg", "after"),
    [
        (State.ORPHAN, False, True, CFG, State.UNVERIFIED),  # its start may have been ours to lose
        (State.ORPHAN, False, True, ON, State.UNVERIFIED),  # COS says nothing about a start
        (State.ORPHAN, False, False, CFG, State.ORPHAN),
        (State.UPLOAD_MISSING, False, True, CFG, State.UPLOAD_MISSING),  # the upload is missing all the same
        (State.STUCK, False, True, CFG, State.STUCK),
        (State.UPLOADED, False, True, CFG, State.UPLOADED),
        (State.COMPLETED, False, True, CFG, State.COMPLETED),
    ],
)
def test_after_blind_makes_an_orphan_whose_start_may_be_ours_unverified(
    rules: Any, new: State, blind: bool, start_blind: bool, cfg: Config, after: State
) -> None:
    assert rules.after_blind(new, blind, cfg, start_blind) is after


# Window 1000..1010; CFG: longest recording 100 + upload grace 50, reorder window 10.
@pytest.mark.parametrize(
    ("seen", "state", "first_heard", "marks"),
    [
        (C, None, 1020.0, True),  # created after the window by a completion: its start may be in it
        (U, None, 1150.0, True),  # first heard 150 s after it: recording + grace reach back to 1000
        (C, None, 1160.0 + EPS, False),  # a start more than recording + grace before: not in the window
        (S, None, 1020.0, False),  # created by its start: no start is missing
        (C | S, State.COMPLETED, 1020.0, False),
        (C, State.COMPLETED, 990.0 - EPS, False),  # its reorder window ended before the window opened
        (C, State.COMPLETED, 990.0, True),  # its start could still have come in the window
        (U, State.UPLOADED, 1005.0, True),
        (C, State.UPLOAD_MISSING, 1005.0, True),
        (C, State.ORPHAN, 1005.0, False),  # reported already: a mark changes nothing
    ],
)
def test_start_blind_marks(rules: Any, seen: int, state: State | None, first_heard: float, marks: bool) -> None:
    assert rules.start_blind_marks(seen, state, first_heard, 1000.0, 1010.0, CFG) is marks


def test_a_start_that_may_be_ours_is_never_counted_lost_and_the_segment_ends_unverified(rules: Any) -> None:
    # An upload whose start never came: past its reorder window it is an orphan, unless its start
    # may have gone into a blind window of ours.
    plain = rules.settle(U, 0.0, 0.0, 1000.0, State.UPLOADED, Check.NONE, False, False, 10.0, CFG)
    assert (plain.state, plain.start_lost, plain.entered) == (State.ORPHAN, True, State.ORPHAN)
    ours = rules.settle(U, 0.0, 0.0, 1000.0, State.UPLOADED, Check.NONE, False, False, 10.0, CFG, True)
    assert (ours.state, ours.start_lost, ours.entered) == (State.UNVERIFIED, False, State.UNVERIFIED)
    # A completion alone: unverified once its window ends, then its upload missing (a problem).
    c = rules.settle(C, 0.0, 0.0, 1000.0, State.COMPLETED, Check.NONE, False, False, 10.0, CFG, True)
    assert (c.state, c.start_lost, c.entered, c.deadline) == (State.UNVERIFIED, False, State.UNVERIFIED, 50.0)
    m = rules.settle(C, 0.0, 0.0, 1000.0, State.UNVERIFIED, Check.NONE, False, False, 50.0, CFG, True)
    assert (m.state, m.start_lost, m.entered) == (State.UPLOAD_MISSING, False, State.UPLOAD_MISSING)
    # A late start makes the mark moot: paged as any segment.
    s = rules.settle(S | C, 0.0, 0.0, 1000.0, State.UNVERIFIED, Check.NONE, False, False, 20.0, CFG, True)
    assert (s.state, s.entered) == (State.COMPLETED, None)


@pytest.mark.parametrize(
    ("state", "marks"),
    [
        (None, False),  # never heard of: a refused callback creates nothing
        (State.RECORDING, True),
        (State.COMPLETED, True),
        (State.UPLOADED, False),
        (State.STUCK, False),
        (State.UPLOAD_MISSING, False),
        (State.UNVERIFIED, False),
        (State.ORPHAN, False),
    ],
)
def test_can_mark(rules: Any, state: State | None, marks: bool) -> None:
    assert rules.can_mark(state) is marks


def test_with_checks_a_deadline_holds_the_segment_and_marks_its_check_pending(rules: Any) -> None:
    for blind in (False, True):
        s = rules.settle(S, 0.0, 0.0, 1000.0, State.RECORDING, Check.NONE, False, blind, 100.0, ON)
        assert s == Settled(State.RECORDING, 1000.0, Check.PENDING, False, None, False)
    s = rules.settle(S, 0.0, 0.0, 1000.0, State.RECORDING, Check.CONFIRMED, False, False, 100.0, ON)
    assert (s.state, s.check, s.entered) == (State.STUCK, Check.CONFIRMED, State.STUCK)
    # A new segment already past a deadline (a restore) has a state to enter: not held.
    s = rules.settle(S, 0.0, 0.0, 1000.0, None, Check.NONE, False, False, 100.0, ON)
    assert (s.state, s.check) == (State.STUCK, Check.NONE)


def test_a_deadline_into_stuck_or_upload_missing_holds_for_a_check_only_with_checks_on(rules: Any) -> None:
    for new in (State.STUCK, State.UPLOAD_MISSING):
        assert rules.holds_for_check(State.RECORDING, new, Check.NONE, ON)
        assert rules.holds_for_check(State.RECORDING, new, Check.PENDING, ON)
        assert not rules.holds_for_check(State.RECORDING, new, Check.NONE, CFG)
        # Once the lookup answered (not there, or no answer), the problem stands.
        assert not rules.holds_for_check(State.RECORDING, new, Check.CONFIRMED, ON)
        assert not rules.holds_for_check(State.RECORDING, new, Check.UNCONFIRMED, ON)
        assert not rules.holds_for_check(new, new, Check.NONE, ON)  # already there
    # Orphans and uploads are never held: a file in COS would not change them.
    assert not rules.holds_for_check(State.COMPLETED, State.ORPHAN, Check.NONE, ON)
    assert not rules.holds_for_check(State.COMPLETED, State.UPLOADED, Check.NONE, ON)
    assert not rules.holds_for_check(None, State.STUCK, Check.NONE, ON)


# ------------------------------------------------------------------ COS answers


def test_a_file_found_in_cos_completes_and_uploads_the_segment_and_names_what_was_lost(rules: Any) -> None:
    assert rules.found_in_cos(S) == (S | C | U, C | U)
    assert rules.found_in_cos(S | C) == (S | C | U, U)
    assert rules.found_in_cos(C) == (C | U, U)
    seen, lost = rules.found_in_cos(S | C)
    assert rules.derive_state(seen, 0.0, 0.0, 1e9, CFG) == (State.UPLOADED, INF)
    assert events_seen(lost) == ["uploaded"]


@pytest.mark.parametrize(
    ("seen", "answer", "after"),
    [
        (S, "found", (S | C | U, C | U, Check.NONE)),
        (S | C, "found", (S | C | U, U, Check.NONE)),
        (S, "not_found", (S, 0, Check.CONFIRMED)),
        (S | C, "error", (S | C, 0, Check.UNCONFIRMED)),
    ],
)
def test_a_lookup_answer_completes_the_segment_or_makes_its_problem_stand(
    rules: Any, seen: int, answer: str, after: tuple[int, int, Check]
) -> None:
    assert rules.apply_answer(seen, answer) == after


def test_a_lookup_answer_confirms_or_leaves_the_problem_unconfirmed(rules: Any) -> None:
    assert rules.check_after_answer("found") is Check.NONE
    assert rules.check_after_answer("not_found").confirmed is True
    assert rules.check_after_answer("error").confirmed is False
    assert Check.NONE.confirmed is None and Check.PENDING.confirmed is None


# ------------------------------------------------------------------ the Lua copy itself


def _lua_numbers() -> dict[str, int]:
    """Every `local A, B = 1, 2` of the script (numeric constants only)."""
    found: dict[str, int] = {}
    for names, values in re.findall(r"^local ([A-Z_][A-Z_, ]*) = ([-0-9][-0-9, ]*)$", SCRIPT, re.M):
        found.update(
            zip((n.strip() for n in names.split(",")), (int(v) for v in values.split(",")), strict=True)
        )
    return found


def _lua_sets() -> dict[str, set[str]]:
    """Every `local NAME = {[A] = true, [B] = true}` of the script."""
    return {
        name: set(re.findall(r"\[([A-Z_]+)\] = true", body))
        for name, body in re.findall(r"^local ([A-Z_]+) = \{(\[[^}]*)\}$", SCRIPT, re.M)
    }


def test_the_lua_constants_are_the_python_ones() -> None:
    lua = _lua_numbers()
    assert {s.name: lua[s.name] for s in State} == {s.name: s.value for s in State}
    assert {c.name: lua["CHECK_" + c.name] for c in Check} == {c.name: c.value for c in Check}
    # The script answers a result as its index in _RESULTS: every result it can give, in order.
    assert [lua[r.name] for r in redis_store._RESULTS] == list(range(len(redis_store._RESULTS)))
    assert set(redis_store._RESULTS) == set(Result) - {Result.IGNORED}
    assert (lua["SEEN_STARTED"], lua["SEEN_COMPLETED"], lua["SEEN_UPLOADED"]) == (S, C, U)
    assert (lua["FLAG_START_LOST"], lua["FLAG_CHECK_SHIFT"], lua["FLAG_LOST_SHIFT"]) == (
        redis_store._FLAG_START_LOST,
        redis_store._FLAG_CHECK_SHIFT,
        redis_store._FLAG_LOST_SHIFT,
    )
    # The check's 2 bits lie between the start-lost mark and the lost events.
    check_shift, lost_shift = redis_store._FLAG_CHECK_SHIFT, redis_store._FLAG_LOST_SHIFT
    assert max(Check) < 4 and redis_store._FLAG_START_LOST < 1 << check_shift
    assert C << lost_shift == 1 << (check_shift + 2)
    sets = _lua_sets()
    for name in ("BLIND_MARKED", "PROBLEM_STATES", "LIVE_RECORDING", "CHECKED_STATES", "EVICTED_FIRST"):
        assert {State[s] for s in sets[name]} == getattr(lifecycle, name), name
    (fmt,) = re.findall(r'^local FORMAT = "([^"]+)"$', SCRIPT, re.M)
    assert fmt == redis_store._FORMAT.format


def test_every_lua_rule_is_marked_with_its_python_twin_and_the_twin_exists() -> None:
    for name in re.findall(r"^-- lifecycle\.(\w+)", SCRIPT, re.M):
        assert hasattr(lifecycle, name), name
    marked = re.findall(r"^-- lifecycle\.(\w+)\b.*\nlocal function (\w+)\(", SCRIPT, re.M)
    assert {python for python, _ in marked} == set(RULES)
    for python, lua in marked:
        assert python == lua and callable(getattr(lifecycle, python))
    (table,) = re.findall(r"^local RULES = \{(.*?)^\}", SCRIPT, re.M | re.S)
    assert set(re.findall(r"(\w+) = \w+", table)) == set(RULES)
    for path in re.findall(r"^-- tallies\.([\w.]+)", SCRIPT, re.M):
        obj: Any = tallies
        for part in path.split("."):
            obj = getattr(obj, part)  # the marker names something that exists
    assert len(re.findall(r"^-- tallies\.", SCRIPT, re.M)) == 4


def test_the_rule_op_changes_nothing_in_redis(lua_rules: LuaRules, redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    before = client.dbsize()
    lua_rules.settle(S, 0.0, 0.0, 1000.0, State.RECORDING, Check.NONE, False, True, 100.0, ON)
    lua_rules.apply_event(S, C, State.RECORDING, Check.NONE, True, 0.0, 1000.0, 4.0, ON)
    assert client.keys("rule-test:*") == [] and client.dbsize() == before
    client.close()


# ------------------------------------------------------------------ names and keys


def test_state_and_mode_names_are_the_label_values() -> None:
    assert STATE_NAMES == (
        "recording",
        "completed",
        "uploaded",
        "stuck",
        "upload_missing",
        "orphan",
        "unverified",
        "expected",
        "unannounced",
    )
    assert [s.label for s in State] == list(STATE_NAMES)
    assert [RecordMode.of(m).label for m in (0, 1, 2, -1, 7)] == [
        "single",
        "mixed",
        "unknown",
        "unknown",
        "unknown",
    ]


def test_segment_keys_round_trip_and_name_their_room() -> None:
    key = make_key(1400000000, "room 1", "user:1", 2**63 - 1, 7)
    assert split_key(key) == (1400000000, "room 1", "user:1", 2**63 - 1, 7)
    assert room_of(key) == room_of(make_key(1400000000, "room 1", "other", 1, 0))
    assert room_of(key) != room_of(make_key(1400000001, "room 1", "user:1", 1, 0))


# ------------------------------------------------------------------ any settings, any time

CONFIGS = st.builds(
    lambda m, g, w, r, chk: replace(
        CFG,
        max_recording_seconds=m,
        upload_grace_seconds=g,
        reorder_window_seconds=w,
        retention_seconds=r,
        check_in_cos=chk,
    ),
    st.integers(1, 200),
    st.integers(1, 200),
    st.integers(1, 200),
    st.integers(1, 400),
    st.booleans(),
)
# Whole seconds mostly (deadlines are whole seconds: that is where boundaries are), any float too.
TIMES = st.one_of(st.integers(0, 300).map(float), st.floats(0, 500, allow_nan=False))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cfg=CONFIGS,
    seen=st.integers(1, 7),
    r_first=TIMES,
    gap=TIMES,
    later=TIMES,
    old=st.sampled_from([None, *State]),
    check=st.sampled_from(Check),
    blind=st.booleans(),
)
@example(
    cfg=GRACE_SHORTER,
    seen=C,
    r_first=0.0,
    gap=0.0,
    later=30.0,
    old=State.COMPLETED,
    check=Check.NONE,
    blind=False,
)  # #19.3
def test_a_settled_segment_is_never_due_again_at_once(
    rules: Any,
    cfg: Config,
    seen: int,
    r_first: float,
    gap: float,
    later: float,
    old: State | None,
    check: Check,
    blind: bool,
) -> None:
    """Whatever the settings, events and time: once settled, a segment's next look is after
    now, or it is forgotten now. (A deadline left in the past makes the sweep spin.)"""
    r_complete = r_first + gap if seen & C else r_first
    now = r_complete + later
    expires = r_complete + cfg.retention_seconds
    _, nxt = rules.derive_state(seen, r_first, r_complete, now, cfg)
    assert nxt > now
    s = rules.settle(seen, r_first, r_complete, expires, old, check, False, blind, now, cfg)
    assert s.deadline > now or s.expired
    assert s.deadline == min(nxt, expires)


# ------------------------------------------------------------------ retrying a failed lookup


@pytest.mark.parametrize(
    ("answer", "waited", "jitter", "delay"),
    [
        ("found", 500, 0.5, -1),  # an answer stands: never looked up again
        ("not_found", 500, 0.5, -1),
        ("error", 0, 1.0, 30),  # no answer: at least `first` as the bound
        ("error", 10, 0.5, 15),  # the bound never below `first`
        ("error", 45, 1.0, 45),  # then as long as already waited (so it grows with the outage)
        ("error", 100, 0.25, 25),  # full jitter: a share of the bound
        ("error", 899, 1.0, 899),
        ("error", 5000, 1.0, 900),  # never above `most`
        ("error", 5000, 0.0, 0),
    ],
)
def test_a_lookup_without_an_answer_is_retried_with_a_jittered_wait_that_grows_to_a_cap(
    rules: Any, answer: str, waited: float, jitter: float, delay: float
) -> None:
    assert rules.retry_after(answer, waited, jitter, 30, 900) == pytest.approx(delay)


def test_the_bound_on_the_wait_at_most_doubles_per_retry_until_the_cap(rules: Any) -> None:
    waited, bounds = 0.0, []
    for _ in range(8):  # each retry at the end of its wait: the fastest the bound may grow
        bound = rules.retry_after("error", waited, 1.0, 30, 900)
        bounds.append(bound)
        waited += bound
    assert bounds == [30, 30, 60, 120, 240, 480, 900, 900]


@pytest.mark.parametrize(
    ("check", "ok"),
    [(Check.NONE, False), (Check.PENDING, True), (Check.CONFIRMED, False), (Check.UNCONFIRMED, True)],
)
def test_a_pending_or_unconfirmed_check_is_claimable(rules: Any, check: Check, ok: bool) -> None:
    assert rules.claimable(check) is ok


@pytest.mark.parametrize(("before", "after"), [(b, a) for b in Check for a in Check])
def test_only_a_confirmation_of_an_unconfirmed_problem_is_reported_anew(
    rules: Any, before: Check, after: Check
) -> None:
    assert rules.confirms(before, after) is (before is Check.UNCONFIRMED and after is Check.CONFIRMED)


@pytest.mark.parametrize(
    ("state", "seen", "passed"),
    [
        (State.STUCK, S, ("max_recording_seconds", 105)),
        (State.UPLOAD_MISSING, S | C, ("upload_grace_seconds", 70)),
        (State.ORPHAN, C, ("reorder_window_seconds", 15)),
        (State.RECORDING, S, None),
        (State.UPLOADED, S | C | U, None),
    ],
)
def test_the_deadline_a_problem_passed_is_named_with_its_time(
    rules: Any, state: State, seen: int, passed: tuple[str, float] | None
) -> None:
    assert rules.deadline_passed(state, seen, 5, 20, CFG) == passed


@pytest.mark.parametrize(
    ("seen", "now", "passed", "unmarked"),
    [
        # An upload without its start, which may be ours: the reorder window made it unverified.
        (U, 30.0, ("reorder_window_seconds", 15), ("max_recording_seconds", 105)),
        (C, 30.0, ("reorder_window_seconds", 15), ("upload_grace_seconds", 70)),  # within its grace
        (C, 70.0, ("upload_grace_seconds", 70), ("upload_grace_seconds", 70)),  # a live mark's, past it
        (S | C, 70.0, ("upload_grace_seconds", 70), ("upload_grace_seconds", 70)),
    ],
)
def test_an_unverified_segment_whose_start_may_be_ours_names_the_reorder_window(
    rules: Any, seen: int, now: float, passed: tuple[str, float], unmarked: tuple[str, float]
) -> None:
    assert rules.deadline_passed(State.UNVERIFIED, seen, 5, 20, CFG, True, now) == passed
    assert rules.deadline_passed(State.UNVERIFIED, seen, 5, 20, CFG, False, now) == unmarked


# ------------------------------------------------------------------ segments never announced (#28)


@pytest.mark.parametrize(
    ("seen", "now", "state", "deadline"),
    [
        (0, 0.0, State.EXPECTED, 10.0),  # revealed: its own callbacks may still come
        (0, 10 - EPS, State.EXPECTED, 10.0),
        (0, 10.0, State.UNANNOUNCED, INF),  # none came by the end of the reorder window
        (0, 500.0, State.UNANNOUNCED, INF),
    ],
)
def test_a_segment_that_has_seen_nothing_is_expected_then_unannounced(
    rules: Any, seen: int, now: float, state: State, deadline: float
) -> None:
    assert rules.derive_state(seen, 0.0, 0.0, now, CFG) == (state, deadline)


def test_an_unannounced_segment_is_a_problem_held_for_a_lookup_with_checks_and_found_loses_everything(
    rules: Any,
) -> None:
    s = rules.settle(0, 0.0, 0.0, 1000.0, State.EXPECTED, Check.NONE, False, False, 10.0, CFG)
    assert (s.state, s.entered, s.start_lost) == (State.UNANNOUNCED, State.UNANNOUNCED, False)
    held = rules.settle(0, 0.0, 0.0, 1000.0, State.EXPECTED, Check.NONE, False, False, 10.0, ON)
    assert (held.state, held.check, held.entered) == (State.EXPECTED, Check.PENDING, None)
    assert rules.found_in_cos(0) == (S | C | U, S | C | U)
    assert rules.found_in_cos(C) == (C | U, U)  # a start not seen is an orphan's, not found here
    assert rules.classify(0, C, State.EXPECTED) is Result.ACCEPTED
    assert rules.classify(0, C, State.UNANNOUNCED) is Result.LATE
    assert rules.deadline_passed(State.UNANNOUNCED, 0, 5, 5, CFG) == ("reorder_window_seconds", 15)


@pytest.mark.parametrize(
    ("blind_start", "cfg", "state"),
    [
        (True, CFG, State.UNVERIFIED),  # its callbacks may have gone into a window of ours
        (True, ON, State.UNANNOUNCED),  # COS tells (held for the lookup before this)
        (False, CFG, State.UNANNOUNCED),
    ],
)
def test_an_unannounced_segment_whose_callbacks_may_be_ours_is_unverified_without_cos(
    rules: Any, blind_start: bool, cfg: Config, state: State
) -> None:
    assert rules.after_blind(State.UNANNOUNCED, False, cfg, blind_start) is state


def test_a_segment_first_heard_of_now_runs_its_deadlines_from_now(rules: Any) -> None:
    assert rules.first_heard(0, 5.0, 30.0) == 30.0
    assert rules.first_heard(C, 5.0, 30.0) == 5.0


def test_a_stream_is_the_key_without_its_seqno(rules: Any) -> None:
    # (Not a real BizID first: the test-only "rule" op would read a key that begins with digits
    # as a number, as Lua's tonumber stops at the NUL; the script itself never converts keys.)
    key = lifecycle.SEP.join(("app", "r_1", "u_1", "446946705284000000", "12"))
    assert rules.stream_of(key) == lifecycle.SEP.join(("app", "r_1", "u_1", "446946705284000000"))


@pytest.mark.parametrize(
    ("low_seq", "next_seq", "seq_no", "since", "now", "gap"),
    [
        (0, 3, 5, 0.0, 0.0, (3, 5)),  # 3 and 4 revealed
        (0, 5, 5, 0.0, 0.0, (5, 5)),  # the next one: nothing
        (0, 7, 5, 0.0, 0.0, (5, 5)),  # accounted for already (revealed, or late): nothing
        (4, 7, 1, 0.0, 0.0, (2, 4)),  # below the lowest heard (late arrival): 2 and 3 revealed
        (4, 7, 3, 0.0, 0.0, (4, 4)),
        (0, 1, 1000, 0.0, 0.0, (1000 - lifecycle.MAX_GAP, 1000)),  # bounded, above
        (1000, 1001, 0, 0.0, 0.0, (1, 1 + lifecycle.MAX_GAP)),  # and below
        # A new stream, tracked since before its first could start (3 segments of at most 100 s,
        # and this callback an upload up to the 50 s grace later) ...
        (-1, -1, 3, 0.0, 350.0, (0, 3)),
        (-1, -1, 3, 0.0, 350.0 - EPS, (3, 3)),  # ... or not: nothing below it is called missing
        (-1, -1, 0, 0.0, 0.0, (0, 0)),
    ],
)
def test_a_callback_reveals_the_seqnos_its_stream_never_announced(
    rules: Any, low_seq: int, next_seq: int, seq_no: int, since: float, now: float, gap: tuple[int, int]
) -> None:
    assert rules.revealed(low_seq, next_seq, seq_no, since, now, CFG) == gap


def test_a_stream_is_listed_once_quiet_only_with_checks(rules: Any) -> None:
    assert rules.tail_due(100.0, replace(ON, tail_quiet_seconds=60)) == 160.0
    assert rules.tail_due(100.0, CFG) == INF
