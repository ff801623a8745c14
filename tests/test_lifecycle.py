"""The lifecycle rules on their own: pure functions of what was seen, when, and the time now."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gme_recwatch.events import RecordMode
from gme_recwatch.lifecycle import (
    INF,
    SEEN_COMPLETED,
    SEEN_STARTED,
    SEEN_UPLOADED,
    STATE_NAMES,
    Check,
    Outcome,
    Result,
    State,
    check_after_answer,
    classify,
    derive_state,
    events_seen,
    found_in_cos,
    holds_for_check,
    make_key,
    measure,
    room_of,
    split_key,
    start_is_lost,
)
from gme_recwatch.settings import Settings

CFG = replace(Settings().lifecycle(), max_recording_seconds=100, upload_grace_seconds=50,
              reorder_window_seconds=10)
S, C, U = SEEN_STARTED, SEEN_COMPLETED, SEEN_UPLOADED


@pytest.mark.parametrize(("seen", "r_first", "r_complete", "now", "state", "next_change"), [
    (S, 0, 0, 99, State.RECORDING, 100),         # recording until the maximum duration
    (S, 0, 0, 100, State.STUCK, INF),             # then stuck, until an event says otherwise
    (S | C, 0, 20, 69, State.COMPLETED, 70),      # completed, within the upload grace
    (S | C, 0, 20, 70, State.UPLOAD_MISSING, INF),
    (S | C | U, 0, 20, 10**6, State.UPLOADED, INF),
    (S | U, 0, 0, 5, State.UPLOADED, INF),        # an upload implies the file is done
    (C, 0, 0, 5, State.COMPLETED, 10),            # no start yet: within the reorder window
    (U, 0, 0, 5, State.UPLOADED, 10),
    (C, 0, 0, 10, State.ORPHAN, 50),              # the start is lost; the upload still awaited
    (C, 0, 0, 50, State.UPLOAD_MISSING, INF),
    (U, 0, 0, 10, State.ORPHAN, INF),
    (C | U, 0, 0, 10, State.ORPHAN, INF),
])
def test_state_and_next_change_follow_the_documented_table(
        seen: int, r_first: float, r_complete: float, now: float, state: State,
        next_change: float) -> None:
    assert derive_state(seen, r_first, r_complete, now, CFG) == (state, next_change)


@pytest.mark.parametrize(("seen", "bit", "state", "result"), [
    (0, S, None, Result.ACCEPTED),
    (S, S, State.RECORDING, Result.DUPLICATE),
    (S, C, State.RECORDING, Result.ACCEPTED),
    (U, S, State.UPLOADED, Result.OUT_OF_ORDER),    # a later event was seen first
    (C, S, State.COMPLETED, Result.OUT_OF_ORDER),
    (S, C, State.STUCK, Result.LATE),               # after a deadline declared a problem
    (C, S, State.ORPHAN, Result.LATE),
    (S | C, U, State.UPLOAD_MISSING, Result.LATE),
    (S | C, C, State.UPLOAD_MISSING, Result.DUPLICATE),  # a duplicate is never late
])
def test_result_classification(seen: int, bit: int, state: State | None, result: Result) -> None:
    assert classify(seen, bit, state) is result


def test_the_start_counts_as_lost_only_once_the_reorder_window_ran_out_without_it() -> None:
    assert not start_is_lost(C, 0, 9.9, CFG)
    assert start_is_lost(C, 0, 10, CFG)
    assert not start_is_lost(S | C, 0, 1000, CFG)


def test_durations_are_measured_when_the_event_completing_them_arrives() -> None:
    out = Outcome(Result.ACCEPTED, "completed", "mixed", "1")
    measure(out, S | C, C, 1000, 1300, 0)
    assert (out.duration, out.upload_delay) == (300.0, None)
    out = Outcome(Result.ACCEPTED, "started", "mixed", "1")
    measure(out, S | C | U, S, 1000, 1300, 1312)  # the start arrived last: both known now
    assert (out.duration, out.upload_delay) == (300.0, None)
    out = Outcome(Result.ACCEPTED, "uploaded", "mixed", "1")
    measure(out, C | U, U, 0, 1300, 1312)
    assert (out.duration, out.upload_delay) == (None, 12.0)


def test_state_and_mode_names_are_the_label_values() -> None:
    assert STATE_NAMES == ("recording", "completed", "uploaded", "stuck", "upload_missing", "orphan",
                           "unverified")
    assert [s.label for s in State] == list(STATE_NAMES)
    assert [RecordMode.of(m).label for m in (0, 1, 2, -1, 7)] == [
        "single", "mixed", "unknown", "unknown", "unknown"]


def test_segment_keys_round_trip_and_name_their_room() -> None:
    key = make_key(1400000000, "room 1", "user:1", 2**63 - 1, 7)
    assert split_key(key) == (1400000000, "room 1", "user:1", 2**63 - 1, 7)
    assert room_of(key) == room_of(make_key(1400000000, "room 1", "other", 1, 0))
    assert room_of(key) != room_of(make_key(1400000001, "room 1", "user:1", 1, 0))


# ------------------------------------------------------------------ COS checks

def test_a_deadline_into_stuck_or_upload_missing_holds_for_a_check_only_with_checks_on() -> None:
    on = replace(CFG, check_in_cos=True)
    for new in (State.STUCK, State.UPLOAD_MISSING):
        assert holds_for_check(State.RECORDING, new, Check.NONE, on)
        assert holds_for_check(State.RECORDING, new, Check.PENDING, on)
        assert not holds_for_check(State.RECORDING, new, Check.NONE, CFG)
        # Once the lookup answered (not there, or no answer), the problem stands.
        assert not holds_for_check(State.RECORDING, new, Check.CONFIRMED, on)
        assert not holds_for_check(State.RECORDING, new, Check.UNCONFIRMED, on)
        assert not holds_for_check(new, new, Check.NONE, on)  # already there
    # Orphans and uploads are never held: a file in COS would not change them.
    assert not holds_for_check(State.COMPLETED, State.ORPHAN, Check.NONE, on)
    assert not holds_for_check(State.COMPLETED, State.UPLOADED, Check.NONE, on)
    assert not holds_for_check(None, State.STUCK, Check.NONE, on)


def test_a_file_found_in_cos_completes_and_uploads_the_segment_and_names_what_was_lost() -> None:
    assert found_in_cos(SEEN_STARTED) == (SEEN_STARTED | SEEN_COMPLETED | SEEN_UPLOADED,
                                          SEEN_COMPLETED | SEEN_UPLOADED)
    assert found_in_cos(SEEN_STARTED | SEEN_COMPLETED) == (
        SEEN_STARTED | SEEN_COMPLETED | SEEN_UPLOADED, SEEN_UPLOADED)
    seen, lost = found_in_cos(SEEN_STARTED | SEEN_COMPLETED)
    assert derive_state(seen, 0, 0, 1e9, CFG) == (State.UPLOADED, INF)
    assert events_seen(lost) == ["uploaded"]


def test_a_lookup_answer_confirms_or_leaves_the_problem_unconfirmed() -> None:
    assert check_after_answer("found") is Check.NONE
    assert check_after_answer("not_found").confirmed is True
    assert check_after_answer("error").confirmed is False
    assert Check.NONE.confirmed is None and Check.PENDING.confirmed is None
