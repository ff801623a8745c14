"""The lifecycle rules of a recording segment, written once and shared by every store.

Pure: no clock, no storage, no I/O. A store keeps, per segment, which events it has seen, when
it received the first event and the completion, and hands them to these functions; whatever
holds the state (a process's memory, Redis) obeys the same rules, and the conformance tests in
``tests/test_stores.py`` hold every store to them.

A segment is one recorded file, keyed by (BizID, RoomID, UserID, TaskID, SeqNo). Its state is
a function of which events (1 started, 2 completed, 3 uploaded) have been seen, when we
received them, and the time now -- so arrival order does not matter, and a duplicate changes
nothing but a counter.

Two clocks, on purpose:

* Durations (recording length, upload delay) come from the callbacks' ``Timestamp``: the
  sender's clock, stamped when Tencent sent each callback. Our receive times would add
  Tencent's delivery delay and retries to every duration.
* Deadlines (stuck, upload grace, reorder window, TTL) run on *our* clock from when we received
  events: they must fire even if the sender's clock is wrong or no further callback arrives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING, Final, Literal, NamedTuple

from .events import COMPLETED, EVENT_NAMES, STARTED, UPLOADED, Event

INF: Final = math.inf


class State(IntEnum):
    """Where a segment is in its lifecycle. The value is the code stores pack."""

    RECORDING = 0  # started, not completed
    COMPLETED = 1  # completed, upload not seen yet, still within the upload grace
    UPLOADED = 2  # terminal: the file is in COS
    STUCK = 3  # still recording after max_recording_seconds
    UPLOAD_MISSING = 4  # completed, no upload within the upload grace
    ORPHAN = 5  # completed or uploaded, and the start never came within the reorder window
    UNVERIFIED = 6  # would be stuck or upload_missing, but its callback may have been lost blind
    EXPECTED = 7  # a later SeqNo of its stream was heard; none of its own yet (reorder window)
    UNANNOUNCED = 8  # no callback at all by the end of the reorder window, and its file not found

    @property
    def label(self) -> str:
        """The value of the ``state`` label and of the API's ``state`` field."""
        return STATE_NAMES[self]


STATE_NAMES: Final[tuple[str, ...]] = tuple(s.name.lower() for s in State)
if TYPE_CHECKING:
    StateName = str
else:  # for the API's schema: the state names, from the one definition above
    StateName = Literal[STATE_NAMES]

# Segments that count as recording (a stuck one may well still be recording).
LIVE_RECORDING: Final = frozenset({State.RECORDING, State.STUCK})
# States a segment enters on a deadline: an event arriving in one of them is `late`.
PROBLEM_STATES: Final = frozenset({State.STUCK, State.UPLOAD_MISSING, State.ORPHAN, State.UNANNOUNCED})


class Result(StrEnum):
    """What a verified callback did, as counted in ``gme_recording_callbacks_total{result}``."""

    ACCEPTED = "accepted"  # new information, in lifecycle order
    DUPLICATE = "duplicate"  # that event was already seen: nothing changes
    OUT_OF_ORDER = "out_of_order"  # a later event of the lifecycle was seen first
    LATE = "late"  # arrived after a deadline had already declared the segment a problem
    IGNORED = "ignored"  # an EventType this version does not know


RESULTS: Final[tuple[str, ...]] = tuple(r.value for r in Result)
# Where a segment ends when nothing more arrives: the simulator predicts these.
END_STATES: Final = (State.UPLOADED, State.STUCK, State.UPLOAD_MISSING, State.ORPHAN, State.UNANNOUNCED)
# (UNVERIFIED is one too, but only after a blind window, which the simulator never makes.)

# Events seen, as bits of one small int.
SEEN_STARTED: Final = 1
SEEN_COMPLETED: Final = 2
SEEN_UPLOADED: Final = 4
SEEN_BIT: Final = {STARTED: SEEN_STARTED, COMPLETED: SEEN_COMPLETED, UPLOADED: SEEN_UPLOADED}
EVENT_LABEL: Final = EVENT_NAMES


def events_seen(seen: int) -> list[str]:
    """The names of the events in a ``seen`` set, in lifecycle order."""
    return [
        name
        for bit, name in ((SEEN_STARTED, "started"), (SEEN_COMPLETED, "completed"), (SEEN_UPLOADED, "uploaded"))
        if seen & bit
    ]


@dataclass(frozen=True, slots=True)
class Config:
    """What the rules and the stores need to know. Built from the settings, which hold the
    defaults (:meth:`gme_recwatch.settings.Settings.lifecycle`); nothing here has one."""

    max_recording_seconds: float
    upload_grace_seconds: float
    reorder_window_seconds: float
    retention_seconds: float
    max_segments: int
    max_apps: int
    check_in_cos: bool = False
    """Look a file up in COS before calling its segment stuck or its upload missing."""
    tail_quiet_seconds: float = 900.0
    """With COS checks: how long a recording stream stays quiet after its last completion before
    its folder is listed once for files no callback announced (:func:`tail_due`)."""


def derive_state(
    seen: int, r_first: float, r_complete: float, now: float, cfg: Config, expects_start: bool = True
) -> tuple[State, float]:
    """(state, when the segment must next be looked at) from the events seen and when we
    received them: when its state changes by itself, or its start counts as lost; ``INF`` when
    only an event can change it. That time is always after ``now``: a deadline left in the past
    would make every sweep find it due again (and spin).

    ``r_first`` is when we received the segment's first event (which is the start whenever only
    the start has been seen; for a segment that has seen none, when a later SeqNo of its stream
    revealed it), ``r_complete`` when we received the completion. ``expects_start`` is False
    for an app whose starts are never sent (:func:`expects_start`): no start is waited for.
    """
    if not seen:  # revealed by a later SeqNo: its own callbacks may still be on their way
        window = r_first + cfg.reorder_window_seconds
        return (State.EXPECTED, window) if now < window else (State.UNANNOUNCED, INF)
    if seen & SEEN_STARTED or not expects_start:
        if seen & SEEN_UPLOADED:
            return State.UPLOADED, INF
        if not seen & SEEN_COMPLETED:
            d = r_first + cfg.max_recording_seconds
            return (State.STUCK, INF) if now >= d else (State.RECORDING, d)
        d = r_complete + cfg.upload_grace_seconds
        return (State.UPLOAD_MISSING, INF) if now >= d else (State.COMPLETED, d)
    window = r_first + cfg.reorder_window_seconds
    if seen & SEEN_UPLOADED:
        # Within the window a start may still be on its way: the file is in COS all the same.
        return (State.UPLOADED, window) if now < window else (State.ORPHAN, INF)
    d = r_complete + cfg.upload_grace_seconds
    if now >= d:
        # The upload is missing whether or not the start comes (an upload grace shorter than
        # the reorder window ends first); the window still ends later: the start is lost then.
        return State.UPLOAD_MISSING, (window if now < window else INF)
    if now < window:
        return State.COMPLETED, min(window, d)
    return State.ORPHAN, d


def start_is_lost(seen: int, r_first: float, now: float, cfg: Config, expects_start: bool = True) -> bool:
    """True once the reorder window has run out with no start seen: the start counts as lost
    (``gme_recording_orphan_events_total``), once per segment. Never for a segment that has
    seen nothing (an unannounced one's lost callbacks are counted when its file is found) nor
    for an app whose starts are never sent."""
    return (
        expects_start and seen != 0 and not seen & SEEN_STARTED and now >= r_first + cfg.reorder_window_seconds
    )


def expects_start(biz_id: int, apps_without_start: frozenset[int]) -> bool:
    """Whether segments of app ``biz_id`` wait for a start callback. Tencent's custom-recording
    mode pushes only completion status: an app configured so
    (``GME_RECWATCH_APPS_WITHOUT_START_CALLBACKS``) has no orphans and no start counted lost.
    A setting, not a guess: an app whose every start Tencent loses looks the same, and that is
    what orphans are there to show."""
    return biz_id not in apps_without_start


def first_heard(seen: int, r_first: float, now: float) -> float:
    """When a segment was first heard of, after an event received ``now``: a segment that had
    seen nothing (revealed by a later SeqNo) is heard of now, and its deadlines run from now."""
    return now if not seen else r_first


def classify(seen: int, bit: int, state: State | None) -> Result:
    """The result of an event with ``bit`` for a segment that had seen ``seen`` and was in
    ``state`` (None: the segment is new)."""
    if seen & bit:
        return Result.DUPLICATE
    if state in PROBLEM_STATES or state == State.UNVERIFIED:
        return Result.LATE
    if seen > bit:  # a later event of the lifecycle was seen first
        return Result.OUT_OF_ORDER
    return Result.ACCEPTED


@dataclass(slots=True)
class Outcome:
    """What one event did: its result, and the durations it completed (sender clock)."""

    result: Result
    event_type: str
    record_mode: str
    app_id: str
    duration: float | None = None
    upload_delay: float | None = None


def measure(
    seen: int, bit: int, ts_start: int, ts_complete: int, ts_upload: int
) -> tuple[float | None, float | None]:
    """The durations (recording, upload delay) that the event with ``bit`` completed, now that
    ``seen`` holds it; None for one it did not complete."""
    duration = upload_delay = None
    if seen & SEEN_STARTED and seen & SEEN_COMPLETED and bit in (SEEN_STARTED, SEEN_COMPLETED):
        duration = float(ts_complete - ts_start)
    if seen & SEEN_COMPLETED and seen & SEEN_UPLOADED and bit in (SEEN_COMPLETED, SEEN_UPLOADED):
        upload_delay = float(ts_upload - ts_complete)
    return duration, upload_delay


@dataclass(frozen=True, slots=True)
class Transition:
    """A segment that crossed a deadline into stuck, upload_missing or orphan."""

    state: str
    biz_id: int
    room_id: str
    user_id: str
    task_id: int
    seq_no: int
    app_id: str
    confirmed: bool | None = None
    """With COS checks: True when the file was looked up and is not there, False when the
    lookup failed; None without checks (and for orphans, which are never looked up)."""
    blind_window: tuple[float, float] | None = None
    """For an unverified segment: the blind window (start, end; Unix times) that caused it."""
    retry_in: float | None = None
    """With COS checks, for a lookup that gave no answer: seconds until its file is looked up
    again (:func:`retry_after`); None when it is not."""


# ------------------------------------------------------------------ checking files in COS
#
# With ``Config.check_in_cos``, a deadline that would make a segment stuck or its upload
# missing does not do so at once: the segment is *held* in the state it is in (its check is
# pending) until its file has been looked up in COS. The lookup runs outside the store, never on
# the request path; its answer is handed back with :func:`resolve`:
#
# * found: the file is in COS, so the completion and the upload happened; the callbacks that
#   never arrived were lost by the sender. The segment becomes uploaded (those events marked
#   seen and lost), and no problem is ever reported for it.
# * not found: the problem stands, confirmed. The segment enters the problem state.
# * error (timeout, 5xx, 403): the problem stands, unconfirmed.
#
# A callback that arrives while a check is pending applies as usual and ends the hold (the
# state is derived anew; a late upload simply resolves the segment). A late start leaves a
# lookup's answer standing: it says nothing about the file.

# States a deadline may only enter after a look in COS.
CHECKED_STATES: Final = frozenset({State.STUCK, State.UPLOAD_MISSING, State.UNANNOUNCED})


class Check(IntEnum):
    """Where a segment's COS check is; the value is the code stores pack (2 bits)."""

    NONE = 0  # not checked (or checks are off)
    PENDING = 1  # a deadline passed: held until its file is looked up
    CONFIRMED = 2  # looked up: the file is not there
    UNCONFIRMED = 3  # the lookup failed: no answer to trust

    @property
    def confirmed(self) -> bool | None:
        """The API's and the log line's ``confirmed``."""
        return {Check.CONFIRMED: True, Check.UNCONFIRMED: False}.get(self)


CheckAnswer = Literal["found", "not_found", "error"]


def holds_for_check(old: State | None, new: State, check: Check, cfg: Config) -> bool:
    """True when a segment about to move from ``old`` to ``new`` must instead stay in ``old``
    until its file is looked up: checks are on, ``new`` is a problem a file in COS disproves,
    and no lookup has answered for it yet. (A new segment, ``old`` None, has a state to enter.)"""
    return (
        cfg.check_in_cos
        and old is not None
        and new in CHECKED_STATES
        and new != old
        and check in (Check.NONE, Check.PENDING)
    )


def check_after_event(check: Check, bit: int) -> Check:
    """A new event ends a pending hold and voids a lookup's answer (the state is derived anew),
    except a start: it says nothing about the file, so an answer about it stands (a late start
    for a segment whose upload was confirmed missing leaves it missing, and confirmed)."""
    if check is Check.PENDING or (check is not Check.NONE and bit != SEEN_STARTED):
        return Check.NONE
    return check


def found_in_cos(seen: int) -> tuple[int, int]:
    """The events seen once a file is found in COS (it was completed and uploaded), and those
    whose callback never arrived, lost by the sender (as ``seen`` bits: see
    :func:`events_seen`). A segment that had seen nothing (unannounced) lost its start too; one
    that had seen something counts a missing start as an orphan's, at its reorder window."""
    lost = (SEEN_COMPLETED | SEEN_UPLOADED) & ~seen
    if not seen:
        lost |= SEEN_STARTED
    return seen | lost, lost


def check_after_answer(answer: CheckAnswer) -> Check:
    """What a lookup's answer makes of a pending check (a found file ends it)."""
    return {"found": Check.NONE, "not_found": Check.CONFIRMED, "error": Check.UNCONFIRMED}[answer]


@dataclass(frozen=True, slots=True)
class Claim:
    """A segment whose file is to be looked up: what the lookup needs, and what it is about
    to become (``pending``: stuck or upload_missing)."""

    key: str
    pending: str
    file_name: str
    app_id: str
    anchor_seq: int = -1
    """For an unannounced segment (``pending`` unannounced): its own file name is unknown, and
    ``file_name`` is the latest file of its stream heard of by callback, of SeqNo
    ``anchor_seq`` -- its folder, and where the segment falls beside it; -1 otherwise."""
    record_mode: int = -1
    """The segment's RecordMode (its stream's folder layout depends on it)."""


@dataclass(frozen=True, slots=True)
class TailClaim:
    """A recording stream quiet for ``tail_quiet_seconds``: its folder is to be listed once for
    files of SeqNo ``next_seq`` and above that no callback announced (see :func:`tail_due`)."""

    stream: str
    record_mode: int
    next_seq: int
    file_name: str
    """The latest file of the stream heard of by callback ("" if none carried one)."""
    anchor_seq: int
    app_id: str


@dataclass(frozen=True, slots=True)
class Reconciled:
    """A segment whose file was found in COS: it is uploaded, and ``lost`` names the events
    whose callbacks never arrived."""

    biz_id: int
    room_id: str
    user_id: str
    task_id: int
    seq_no: int
    app_id: str
    lost: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Retrying:
    """A segment whose lookup gave no answer again: still unconfirmed (already reported so),
    looked up again in ``retry_in`` seconds."""

    key: str
    retry_in: float


# What a store makes of a lookup's answer: the segment was reconciled, entered its problem state
# (or its unconfirmed problem was confirmed), is to be looked up again, or nothing (it moved on
# meanwhile -- a callback arrived -- or was forgotten).
Resolution = Reconciled | Transition | Retrying | None


# ------------------------------------------------------------------ retrying a lookup
#
# A lookup that gave no answer to trust (timeout, 5xx, throttling, 403) leaves the problem
# standing, unconfirmed -- and the file is looked up again later, until an answer comes (found:
# the segment becomes uploaded; not found: the problem is confirmed) or the segment is
# forgotten. The retry time lives in the store, beside the pending checks, so the claim and its
# lease hand each retry to one replica. The wait is exponential with full jitter: drawn
# uniformly from [0, d], where d is the time already waited since the deadline passed, at least
# ``first`` and at most ``most`` seconds -- each wait at most as long as all before it, so the
# bound grows by a factor of 1 to 2 per lookup, 1.5 on average, until it reaches ``most`` (no
# attempt counter to keep).


class Backoff(NamedTuple):
    """How a store schedules the next lookup after one that gave no answer."""

    first: float
    """The smallest bound on the wait (seconds)."""
    most: float
    """The largest (seconds)."""
    jitter: float
    """A uniform draw in [0, 1): the share of the bound to wait."""


def claimable(check: Check) -> bool:
    """A segment whose file is (still) to be looked up: held for its first lookup, or its last
    lookup gave no answer."""
    return check is Check.PENDING or check is Check.UNCONFIRMED


def retry_after(answer: CheckAnswer, waited: float, jitter: float, first: float, most: float) -> float:
    """Seconds until a file is looked up again after ``answer``, when ``waited`` seconds passed
    since its segment's deadline; -1 when the answer stands (found, not found)."""
    if answer != "error":
        return -1.0
    bound = waited if waited > first else first
    return jitter * (bound if bound < most else most)


def confirms(before: Check, after: Check) -> bool:
    """True when an answer confirms a problem that stood unconfirmed: reported anew, confirmed
    (it may page now)."""
    return before is Check.UNCONFIRMED and after is Check.CONFIRMED


# ------------------------------------------------------------------ blind windows
#
# A blind window (:mod:`gme_recwatch.blind`) is time in which a callback may have been sent and
# never recorded. When one is detected, every segment still *live* then -- recording, or
# completed and awaiting its upload -- is marked with it: its next callback may have been the
# one lost. Such a segment is not paged on the strength of silence alone:
#
# * with COS checks on, its deadline holds it for a lookup as for any segment (found: uploaded;
#   not found: the problem stands, confirmed);
# * without, a deadline that would make it stuck or its upload missing makes it
#   ``unverified`` instead: its own state, counted and logged, never paged.
#
# Any new event for a marked segment clears the mark: we are hearing from it again, and what
# follows is paged as usual. An event for an unverified segment is ``late`` and the state is
# derived anew (a late upload makes it uploaded, a late completion puts it back to waiting for
# its upload), as for the other problem states.

BLIND_MARKED: Final = frozenset({State.RECORDING, State.COMPLETED})


def can_mark(state: State | None) -> bool:
    """Whether a segment in ``state`` (None: not tracked) may be marked as attributed to an
    incident of ours, one by one (a well-formed callback for it that we refused): only a live
    one, as a blind window marks them. A segment we never heard of gets no state from a
    refused callback, and a settled one is past what a mark changes."""
    return state is not None and state in BLIND_MARKED


def blind_marks(state: State, last_heard: float, window_end: float) -> bool:
    """True when a blind window ending at ``window_end`` marks a segment in ``state`` that was
    last heard from (its last new event received) at ``last_heard``: it is live, and nothing
    was heard from it since the window ended (a callback after the window clears a mark, so a
    segment heard from meanwhile -- while a store marks page by page -- is not marked)."""
    return state in BLIND_MARKED and last_heard <= window_end


# ------------------------------------------------------------------ capacity eviction
#
# When the store is full, a new segment makes room by evicting one, in the same order in every
# store: first the segments that reached ``EVICTED_FIRST`` (uploaded: the file is in COS, only
# late duplicates are still absorbed), in the order they first got there; when none is left,
# the oldest of all, in the order they were first heard of. Never "the one due soonest": that
# would drop a completed segment still waiting for its upload before an old recording.
# Counted in ``gme_recording_evictions_total{reason="capacity", state}``.

EVICTED_FIRST: Final = frozenset({State.UPLOADED})


def after_blind(new: State, blind: bool, cfg: Config, start_blind: bool = False) -> State:
    """The state a segment enters instead of ``new`` when it is marked blind (``blind``), or
    its start may have been lost in a blind window of ours (``start_blind``: see
    :func:`start_blind_marks`)."""
    if blind and not cfg.check_in_cos and new in CHECKED_STATES:
        return State.UNVERIFIED
    if start_blind and new == State.ORPHAN:
        return State.UNVERIFIED
    if start_blind and new == State.UNANNOUNCED and not cfg.check_in_cos:
        return State.UNVERIFIED  # its callbacks may have gone into the window: COS would tell
    return new


# ------------------------------------------------------------------ starts we may have lost
#
# A blind window also swallows *starts*: after a store reset (Redis back empty), a crash that
# lost acknowledged callbacks, or every replica down, the completions and uploads of recordings
# that were in progress arrive at a store that never heard their start. Left alone, each would
# become an orphan when its reorder window runs out -- which reads as Tencent losing start
# callbacks, and is counted and alerted as that. So a segment that has seen no start, whose start
# may have been sent during a blind window, is marked *start-blind*: if the start never comes it
# is ``unverified`` (ours to explain), never ``orphan``, and its start is not counted lost.
#
# Unlike a live segment's blind mark, later callbacks do not clear this one: a completion or an
# upload arriving after the window says nothing about a start sent during it. A start arriving
# makes it moot (the segment is no orphan then).
#
# A store applies the rule twice: to the segments it holds when a window is detected (the
# completions that reached the emptied store before the reset was found), and to every segment
# created later whose first event is not a start, against the latest window it knows.


def start_blind_marks(
    seen: int, state: State | None, first_heard: float, window_start: float, window_end: float, cfg: Config
) -> bool:
    """True when the blind window ``window_start``..``window_end`` may hold the start of a
    segment that has seen ``seen``, is in ``state`` (None: being created) and was first heard
    from at ``first_heard`` (all Unix times): no start seen, not already reported as an orphan,
    and the window overlaps the span in which its start was sent -- from the longest recording
    plus its upload grace before we first heard of it (its first event may be its upload) to the
    end of its reorder window."""
    if seen & SEEN_STARTED or state == State.ORPHAN:
        return False
    earliest = first_heard - cfg.max_recording_seconds - cfg.upload_grace_seconds
    return window_end >= earliest and window_start <= first_heard + cfg.reorder_window_seconds


# ------------------------------------------------------------------ composition
#
# What an event does to a segment, what a deadline does, and what a lookup's answer does: the
# rules above composed in the one order every store follows. A store keeps the books (where the
# fields live, the tallies, its queues and indexes) and calls these; whatever they return is the
# segment's new truth.


def is_expired(expires: float, now: float) -> bool:
    """True once a segment's retention has run out: it is forgotten (after being settled, so a
    segment that became a problem in time is reported in that state)."""
    return expires <= now


class Applied(NamedTuple):
    """A segment after one event (see :func:`apply_event`)."""

    result: Result
    seen: int
    check: Check
    blind: bool
    """Still marked by a blind window: any new event clears the mark (we hear from it again)."""
    r_complete: float
    expires: float


def apply_event(
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
    """What the event with ``bit``, received at ``now``, does to a segment that had seen
    ``seen`` and was in ``state`` (None: it is new). A duplicate changes nothing; any other
    event is added, ends a hold or voids an answer (:func:`check_after_event`), clears a blind
    mark, and restarts the retention; a completion is received now. The segment's state is then
    :func:`settle`'s to say."""
    result = classify(seen, bit, state)
    if result is Result.DUPLICATE:
        return Applied(result, seen, check, blind, r_complete, expires)
    return Applied(
        result,
        seen | bit,
        check_after_event(check, bit),
        False,
        now if bit == SEEN_COMPLETED else r_complete,
        now + cfg.retention_seconds,
    )


class Settled(NamedTuple):
    """A segment settled at a time (see :func:`settle`)."""

    state: State
    """Its state (held in the old one while its file is to be looked up)."""
    deadline: float
    """When the sweep must next look at it: its next change or its expiry, whichever is first."""
    check: Check
    start_lost: bool
    """Its start counts as lost (the mark stays; a store counts it when it is set)."""
    entered: State | None
    """The problem state (stuck, upload_missing, orphan, unverified) it entered just now."""
    expired: bool
    """Its retention ran out: the store forgets it, once it reported what it entered."""


def settle(
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
    expects_start: bool = True,
) -> Settled:
    """A segment in ``old`` (None: new), settled at ``now``, after an event or at a deadline.

    In this order: the state the events and the time say (:func:`derive_state`); unverified
    instead of a problem for a segment marked blind, or instead of an orphan for one whose
    start may be ours (``start_blind``; :func:`after_blind`); the start counted lost once the
    reorder window ran out (:func:`start_is_lost`), unless it may be ours; held where it is
    while its file is to be looked up (:func:`holds_for_check`)."""
    new, next_change = derive_state(seen, r_first, r_complete, now, cfg, expects_start)
    new = after_blind(new, blind, cfg, start_blind)
    start_lost = start_lost or (not start_blind and start_is_lost(seen, r_first, now, cfg, expects_start))
    if old is not None and holds_for_check(old, new, check, cfg):
        check, new = Check.PENDING, old
    entered = new if new != old and (new in PROBLEM_STATES or new == State.UNVERIFIED) else None
    deadline = next_change if next_change < expires else expires  # min(), without its call
    return Settled(new, deadline, check, start_lost, entered, is_expired(expires, now))


def apply_answer(seen: int, answer: CheckAnswer) -> tuple[int, int, Check]:
    """(events seen, events found lost, check) once a pending lookup answered ``answer``: a
    found file completes and uploads the segment (:func:`found_in_cos`); otherwise the problem
    stands, confirmed or not (:func:`check_after_answer`). The store then settles it."""
    if answer == "found":
        seen, lost = found_in_cos(seen)
        return seen, lost, check_after_answer(answer)
    return seen, 0, check_after_answer(answer)


# ------------------------------------------------------------------ segments never announced
#
# Tencent numbers the segments of a recording stream 0, 1, 2... (``Detail.SeqNo``; a new one
# every 2 h, on each microphone toggle in single-stream mode, after the task restarts itself).
# A callback of SeqNo n says segments 0..n-1 exist. One that never got a callback of its own is
# tracked from when a later one arrives: the store creates it having seen nothing, ``expected``
# (:func:`derive_state`), its reorder window running from then. If none of its own callbacks
# comes by the end of it, it is ``unannounced``: with COS checks it is held for a lookup like
# stuck and upload_missing (its file name is unknown, so the lookup lists its stream's folder):
# found means Tencent lost every callback of it (all three counted lost, the segment uploaded,
# no page); not found means a recording is missing (confirmed, in the delivery SLO). Without a
# bucket it is unannounced, unconfirmed (a ticket, as every miss nobody can confirm).
#
# A gap never reveals a stream's lost *last* segment: when a stream has been quiet for
# ``tail_quiet_seconds`` since its last callback, its folder is listed once (:func:`tail_due`)
# and the files no callback announced are adopted as found.
#
# The stream is (BizID, RoomID, UserID, TaskID) -- RecordMode rides along, the same on every
# callback of a task. SeqNo counts per recorded file, and in single-stream mode each user of a
# task records a file of its own; should real traffic show SeqNo counting per task across its
# users, :func:`stream_of` is the one place to change (and the Lua twin's ``stream_of``).

MAX_GAP: Final = 64
"""SeqNos one callback may reveal at most: a sender that jumps by a million creates 64
segments, not a million."""


def stream_of(key: str) -> str:
    """The recording stream of a segment key (:func:`make_key`): everything but its SeqNo."""
    return key[: key.rindex(SEP)]


def revealed(
    low_seq: int, next_seq: int, seq_no: int, tracking_since: float, now: float, cfg: Config
) -> tuple[int, int]:
    """The SeqNos, as a range ``(low, high)``, that a callback of ``seq_no`` reveals may never
    have been announced, in a stream whose SeqNos ``low_seq`` up to ``next_seq`` (excluded) are
    accounted for (``next_seq`` -1: a stream not heard of yet): those between it and them --
    above them up to it, or below them down to just above it -- at most :data:`MAX_GAP`. The
    store creates those it does not hold, and accounts for the range and ``seq_no``. For a
    stream heard of for the first time, the SeqNos below it count only when the store has been
    tracking (since ``tracking_since``) since before the first of them could have started --
    each segment lasts at most ``max_recording_seconds`` -- so a service deployed, or a store
    emptied, in the middle of a recording never calls missing what it could not have heard."""
    if next_seq < 0:
        low = (
            0
            if tracking_since + seq_no * cfg.max_recording_seconds + cfg.upload_grace_seconds <= now
            else seq_no
        )
        return (low if low > seq_no - MAX_GAP else seq_no - MAX_GAP), seq_no
    if seq_no >= next_seq:
        return (next_seq if next_seq > seq_no - MAX_GAP else seq_no - MAX_GAP), seq_no
    if seq_no < low_seq:
        return seq_no + 1, (low_seq if low_seq < seq_no + 1 + MAX_GAP else seq_no + 1 + MAX_GAP)
    return seq_no, seq_no


def tail_due(now: float, cfg: Config) -> float:
    """When a stream heard from ``now`` is to have its folder listed for a last segment no
    callback announced, unless it is heard from again first; ``INF`` without COS checks."""
    return now + cfg.tail_quiet_seconds if cfg.check_in_cos else INF


# ------------------------------------------------------------------ segment identity

SEP: Final = "\x00"  # events.decode rejects NUL in ids, so it cannot occur inside a part


def make_key(biz_id: int, room_id: str, user_id: str, task_id: int, seq_no: int) -> str:
    """One string per segment: compact, and a prefix (BizID, room) per room."""
    return f"{biz_id}{SEP}{room_id}{SEP}{user_id}{SEP}{task_id}{SEP}{seq_no}"


def key_of(ev: Event) -> str:
    return make_key(ev.biz_id, ev.room_id, ev.user_id, ev.task_id, ev.seq_no)


def split_key(key: str) -> tuple[int, str, str, int, int]:
    biz, room, user, task, seq = key.split(SEP)
    return int(biz), room, user, int(task), int(seq)


def room_of(key: str) -> str:
    """The (BizID, RoomID) prefix of a key: what ``active_rooms`` counts."""
    return key[: key.index(SEP, key.index(SEP) + 1)]


# ------------------------------------------------------------------ why a segment is a problem

# The deadline that made a segment stuck, upload_missing, orphan or unverified: the name of the
# Config field (and of the setting).
Deadline = Literal["max_recording_seconds", "upload_grace_seconds", "reorder_window_seconds"]


def deadline_passed(
    state: State,
    seen: int,
    r_first: float,
    r_complete: float,
    cfg: Config,
    start_blind: bool = False,
    now: float = INF,
) -> tuple[Deadline, float] | None:
    """For a segment in a problem state (or unverified): which deadline passed, and when (on
    the store's receive clock), from the same stored times :func:`derive_state` reads. None
    for a segment in no problem state. ``start_blind`` and ``now`` tell an unverified segment
    that would be an orphan (:func:`after_blind`) from one that would be a problem."""
    orphan = state == State.UNVERIFIED and start_blind and not seen & SEEN_STARTED
    if orphan and not seen & SEEN_UPLOADED and now >= r_complete + cfg.upload_grace_seconds:
        orphan = False  # its upload is missing as well: that is the deadline that made it
    if state in (State.ORPHAN, State.UNANNOUNCED) or orphan or (state == State.UNVERIFIED and not seen):
        return "reorder_window_seconds", r_first + cfg.reorder_window_seconds
    if state not in CHECKED_STATES and state != State.UNVERIFIED:
        return None
    if seen & SEEN_COMPLETED:
        return "upload_grace_seconds", r_complete + cfg.upload_grace_seconds
    return "max_recording_seconds", r_first + cfg.max_recording_seconds
