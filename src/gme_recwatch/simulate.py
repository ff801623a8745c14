"""Tencent's recording-callback sender, simulated: ``gme-recwatch simulate``.

Many concurrent rooms, each with one recording task. A single-stream task records one file
per user, a mixed-stream task one file for the room; every file is cut into segments
(SeqNo 0, 1, ...), and each segment sends started (1), completed (2) and uploaded (3).

Two halves, so that tests can check one without the other:

* :func:`make_plan` is pure and deterministic for a seed: which segments exist, what becomes
  of them (never completed, never uploaded), which events the sender gives up on (dropped),
  which arrive out of order, which are retried after delivery (duplicates) and which copies
  carry a bad signature, and when (in simulated seconds) each request is due.
* :func:`run` delivers a plan like Tencent's sender: ``Timestamp`` is the sender clock when
  each attempt is sent, a 5 s response timeout, and retries with back-off for about a minute
  until it gets HTTP 200. Its :class:`Summary` counts exactly what the service answered, so
  a test can compare the service's metrics with it.

Simulated time runs ``time_scale`` times faster than real time; ``Timestamp`` is always the
real sender clock, so durations the service measures shrink by the same factor.

With ``--s3-bucket`` (and ``--s3-endpoint`` for anything but COS itself), the sender also
writes each recorded file it "uploads" to an S3-compatible bucket, as GME writes recordings to
COS: at a time between the segment's completion and its "uploaded" callback, whether or not
that callback then gets through. Segments that never complete or never upload leave no file.
So a bucket and the service can be compared end to end: a file whose callback was lost is
there, a file that never uploaded is not (``files_uploaded``,
``uploaded_files_without_callback`` in the summary). A file is named in its stream's folder and
stamped with its segment's start, so a folder's names sort in SeqNo order (``--file-layout``).

Silent segments (``--silent-fraction``, #28) send no callback at all while their files still
land: the service can know of one only from its stream's other SeqNos (a gap) or by listing the
stream's folder (the tail), and :func:`summarise` expects what it then makes of each
(unannounced, or uploaded with its three callbacks lost; docs/simulator.md has the table).

Corpus format (``--write-corpus``), for load tools: one request per line,
``<Signature>\\t<body>\\n``. A compact JSON body never contains a tab or a newline, so a line
splits at its first tab (see ``benchmarks/corpus.lua``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Final, Literal

import httpx

from . import lifecycle
from .cos import CosConfig, Credentials, object_key, open_client
from .events import COMPLETED, EVENT_NAMES, STARTED, UPLOADED, encode_callback
from .settings import key_template_problem
from .signature import parse_secret_list, sign

Copy = Literal["original", "duplicate", "bad_signature"]
FORGED_SUFFIX: Final = "-forged"  # the room of a wrong-signature copy: a segment nobody tracks
Fate = Literal["normal", "never_complete", "never_upload"]
FileLayout = Literal["seq", "spec"]
FILE_LAYOUTS: Final[tuple[FileLayout, ...]] = ("seq", "spec")
EVENT_TYPES: Final = (STARTED, COMPLETED, UPLOADED)
_EVENT_LABELS: Final = tuple(EVENT_NAMES[et] for et in EVENT_TYPES)
_LIFECYCLE_END_STATES: Final = tuple(s.label for s in lifecycle.END_STATES)
# "unannounced" (#28: a segment of which Tencent sent no callback at all, found missing from its
# stream's SeqNos) is appended here until lifecycle has State.UNANNOUNCED among its END_STATES;
# the guard keeps it listed once whichever lands first.
END_STATES: Final = _LIFECYCLE_END_STATES + (() if "unannounced" in _LIFECYCLE_END_STATES else ("unannounced",))
_EPOCH: Final = 1_700_000_000  # the wall-clock second that simulated time 0 stands for in file names
_FIRST_TASK_ID: Final = 446946705284000000  # above 2**53, like Tencent's


@dataclass(frozen=True, slots=True)
class SimConfig:
    """What traffic to make. Times are simulated seconds unless a name says otherwise."""

    rooms: int = 20
    """Concurrent rooms, one recording task each."""
    users_per_room: int = 3
    """Users in a room: single-stream tasks record one file per user."""
    segments_per_task: int = 2
    """Segments (SeqNo 0..n-1) each recorded file is cut into."""
    mixed_fraction: float = 0.3
    """Fraction of tasks in mixed-stream mode (one file per room)."""
    rate: float = 200.0
    """Most callbacks per real second the sender starts."""
    spread: float = 60.0
    """Tasks start at uniformly random times within this many seconds."""
    duration_min: float = 60.0
    """Shortest segment."""
    duration_max: float = 600.0
    """Longest segment."""
    upload_delay_min: float = 1.0
    """Shortest time from completion to upload."""
    upload_delay_max: float = 30.0
    """Longest time from completion to upload."""
    time_scale: float = 1.0
    """Simulated seconds per real second."""
    reorder_fraction: float = 0.05
    """Fraction of segments with one event delivered after the next one."""
    reorder_delay: float = 5.0
    """Longest extra delay of such an event behind its successor."""
    duplicate_fraction: float = 0.02
    """Fraction of delivered events the sender sends again (a retry whose 200 it missed)."""
    duplicate_delay: float = 10.0
    """Longest time from an event to its duplicate."""
    drop_fraction: float = 0.01
    """Fraction of events the sender gives up on: never sent."""
    never_complete_fraction: float = 0.01
    """Fraction of segments that start and never complete (expected to end stuck)."""
    never_upload_fraction: float = 0.02
    """Fraction of segments that complete and never upload (expected upload_missing)."""
    bad_signature_fraction: float = 0.005
    """Extra requests, as a fraction of events, that copy an event with a wrong signature."""
    silent_fraction: float = 0.0
    """Fraction of segments with SeqNo >= 1 of which the sender loses every callback; their
    files still land in the bucket as their fate says (never SeqNo 0: see docs/simulator.md)."""
    silent: tuple[tuple[int, int, int], ...] = ()
    """Further silent segments by (room index, user index, SeqNo >= 1), for tests; a mixed
    task's one stream is user index 0."""
    file_layout: FileLayout = "seq"
    """File names: ``seq`` = ``{stamp}_{task}_{seq}_{kind}.mp3``, ``spec`` = Tencent's sample,
    ``{stamp}_{task}_audio.mp3``; either way in the stream's folder, stamped with the segment's
    start, so that a folder's names sort in SeqNo order."""
    biz_id: int = 1400000000
    """BizID (AppID) of every callback."""
    seed: int = 0
    """Seed of the plan; also part of room ids so that runs with other seeds do not collide.
    The command picks a fresh one unless ``--seed`` is given (:func:`fresh_seed`)."""

    def validate(self) -> SimConfig:
        for name in (
            "reorder_fraction",
            "duplicate_fraction",
            "drop_fraction",
            "mixed_fraction",
            "never_complete_fraction",
            "never_upload_fraction",
            "bad_signature_fraction",
            "silent_fraction",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within 0..1")
        if self.never_complete_fraction + self.never_upload_fraction > 1.0:
            raise ValueError("never_complete_fraction + never_upload_fraction must be <= 1")
        for name in ("rooms", "users_per_room", "segments_per_task"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in ("rate", "time_scale"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if not 0 <= self.duration_min <= self.duration_max:
            raise ValueError("need 0 <= duration_min <= duration_max")
        if not 0 <= self.upload_delay_min <= self.upload_delay_max:
            raise ValueError("need 0 <= upload_delay_min <= upload_delay_max")
        if min(self.spread, self.reorder_delay, self.duplicate_delay) < 0:
            raise ValueError("spread and delays must be >= 0")
        if self.file_layout not in FILE_LAYOUTS:
            raise ValueError(f"file_layout must be one of {', '.join(FILE_LAYOUTS)}")
        for room, user, seq in self.silent:
            if not (0 <= room < self.rooms and 0 <= user < self.users_per_room):
                raise ValueError(f"silent segment {(room, user, seq)}: no such room or user")
            if not 1 <= seq < self.segments_per_task:
                # SeqNo 0 is never silent: it would lie below the first SeqNo the service hears,
                # where what it finds depends on how long it has tracked the stream, which the
                # expectation cannot say (docs/simulator.md).
                raise ValueError(f"silent segment {(room, user, seq)}: SeqNo must be 1..segments_per_task-1")
        return self


@dataclass(frozen=True, slots=True)
class Segment:
    """One recorded file (segment) and what becomes of it."""

    room_id: str
    user_id: str
    task_id: int
    seq_no: int
    record_mode: int
    file_name: str
    fate: Fate


@dataclass(frozen=True, slots=True)
class Send:
    """One request the sender makes, ``at`` simulated seconds after the run starts."""

    at: float
    segment: int
    event_type: int
    copy: Copy = "original"


@dataclass(slots=True)
class Plan:
    config: SimConfig
    segments: list[Segment]
    sends: list[Send]
    """Every request, ordered by ``at``."""
    generated: set[tuple[int, int]]
    """(segment, event type) pairs that happen at all, fate permitting."""
    dropped: set[tuple[int, int]]
    """Events the sender gives up on: generated but never sent."""
    reordered: int = 0
    uploads: list[tuple[float, int]] = field(default_factory=list)
    """(simulated time, segment) of every file that reaches the bucket, ordered by time:
    segments that upload, whether their "uploaded" callback is then sent or not."""
    silent: set[int] = field(default_factory=set)
    """Segments of which the sender sends no callback at all (``silent_fraction``, ``silent``);
    all their events are in ``dropped``."""

    def identity(self, seg: int) -> dict[str, str | int]:
        """A segment's key as the service's API shows it (ids as strings)."""
        s = self.segments[seg]
        return {
            "biz_id": str(self.config.biz_id),
            "room_id": s.room_id,
            "user_id": s.user_id,
            "task_id": str(s.task_id),
            "seq_no": s.seq_no,
        }

    def body(self, send: Send, timestamp: int) -> bytes:
        s = self.segments[send.segment]
        return encode_callback(
            biz_id=self.config.biz_id,
            # A wrong-signature copy names a room nobody records (FORGED_SUFFIX): a forger's copy.
            # A refused callback that names a live segment marks it as ours to explain (it ends
            # unverified, not stuck or missing its upload), which the plan's expectation does not
            # model; the service's tests of marks send theirs by hand.
            room_id=s.room_id + FORGED_SUFFIX if send.copy == "bad_signature" else s.room_id,
            user_id=s.user_id,
            task_id=s.task_id,
            seq_no=s.seq_no,
            event_type=send.event_type,
            record_mode=s.record_mode,
            timestamp=timestamp,
            file_name=s.file_name,
        )


def make_plan(cfg: SimConfig) -> Plan:
    """The whole run, decided up front from ``cfg.seed``: no randomness is left for later."""
    cfg.validate()
    rng = random.Random(cfg.seed)  # noqa: S311 - a reproducible plan, not a secret
    segments: list[Segment] = []
    sends: list[Send] = []
    generated: set[tuple[int, int]] = set()
    dropped: set[tuple[int, int]] = set()
    uploads: list[tuple[float, int]] = []
    silent: set[int] = set()
    chosen = set(cfg.silent)
    # Silence has its own generator, so that a plan with silent segments is the plan without
    # them but for those segments' callbacks (same segments, times, drops and files).
    hush = random.Random(f"silent-{cfg.seed}")  # noqa: S311 - a reproducible plan, not a secret
    reordered = 0
    for r in range(cfg.rooms):
        room_id = f"sim{cfg.seed}-room{r}"
        task_id = _FIRST_TASK_ID + cfg.seed % 1_000_000 * 1_000_000 + r
        mode = 1 if rng.random() < cfg.mixed_fraction else 0
        users = [f"sim{cfg.seed}-user{r}-{u}" for u in range(cfg.users_per_room)]
        task_start = rng.uniform(0, cfg.spread)
        for u, user in enumerate(users if mode == 0 else users[:1]):
            t = task_start + rng.uniform(0, 1.0)  # users join a moment apart
            last_stamp = -1
            for seq in range(cfg.segments_per_task):
                drawn = seq >= 1 and hush.random() < cfg.silent_fraction
                is_silent = drawn or (r, u, seq) in chosen
                chosen.discard((r, u, seq))
                x = rng.random()
                fate: Fate = (
                    "never_complete"
                    if x < cfg.never_complete_fraction
                    else "never_upload"
                    if x < cfg.never_complete_fraction + cfg.never_upload_fraction
                    else "normal"
                )
                base = f"{cfg.biz_id}_{room_id}_{user}" if mode == 0 else f"{cfg.biz_id}_{room_id}"
                # Stamped with the segment's own start, a second after its predecessor's at least
                # (zero-length test segments), so a stream's names are distinct and sort by SeqNo.
                last_stamp = max(int(_EPOCH + t), last_stamp + 1)
                stamp = time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime(last_stamp))
                if cfg.file_layout == "spec":
                    name = f"{base}/{stamp}_{task_id}_audio.mp3"
                else:
                    name = f"{base}/{stamp}_{task_id}_{seq}_{'audio' if mode == 0 else 'mix'}.mp3"
                seg = len(segments)
                segments.append(Segment(room_id, user, task_id, seq, mode, name, fate))
                duration = rng.uniform(cfg.duration_min, cfg.duration_max)
                times = {
                    STARTED: t,
                    COMPLETED: t + duration,
                    UPLOADED: t + duration + rng.uniform(cfg.upload_delay_min, cfg.upload_delay_max),
                }
                t += duration
                happen = (
                    [STARTED]
                    if fate == "never_complete"
                    else ([STARTED, COMPLETED] if fate == "never_upload" else list(EVENT_TYPES))
                )
                if UPLOADED in happen:  # the file lands while the upload is under way
                    uploads.append(((times[COMPLETED] + times[UPLOADED]) / 2, seg))
                sent = []
                for et in happen:
                    generated.add((seg, et))
                    if rng.random() < cfg.drop_fraction:
                        dropped.add((seg, et))
                    else:
                        sent.append(et)
                # Out of order: one event goes out shortly after the one that follows it.
                if len(sent) >= 2 and rng.random() < cfg.reorder_fraction:
                    i = rng.randrange(len(sent) - 1)
                    times[sent[i]] = times[sent[i + 1]] + rng.uniform(0.001, max(cfg.reorder_delay, 0.001))
                    reordered += not is_silent
                requests = []
                for et in sent:
                    requests.append(Send(times[et], seg, et))
                    if rng.random() < cfg.duplicate_fraction:
                        requests.append(
                            Send(times[et] + rng.uniform(0, cfg.duplicate_delay), seg, et, "duplicate")
                        )
                for et in happen:
                    if rng.random() < cfg.bad_signature_fraction:
                        requests.append(Send(times[et] + rng.uniform(0, 1.0), seg, et, "bad_signature"))
                if is_silent:
                    # Every callback lost, forged copies included (a copy of nothing sent); the
                    # draws above were still made, to leave the rest of the plan as it was.
                    silent.add(seg)
                    dropped.update((seg, et) for et in happen)
                else:
                    sends.extend(requests)
    if chosen:
        raise ValueError(f"silent segments {sorted(chosen)} do not exist (a mixed task has user index 0 only)")
    sends.sort(key=lambda s: s.at)
    uploads.sort()
    return Plan(cfg, segments, sends, generated, dropped, reordered, uploads, silent)


# ----------------------------------------------------------------------------- summary

Silence = Literal["unannounced", "found", "tail_found", "tail", "below", "unheard_stream"]
"""What the service makes of a segment none of whose callbacks arrived (:func:`summarise`)."""


def silence_text(silence: Silence, bucket: bool) -> str:
    """What the service should make of a silent segment, and why, in a sentence."""
    return {
        "unannounced": "unannounced, "
        + (
            "confirmed: a later SeqNo of its stream arrived and its folder has no file for it"
            if bucket
            else "unconfirmed: a later SeqNo of its stream arrived, and no bucket says whether the file exists"
        ),
        "found": "uploaded: a later SeqNo of its stream arrived and its file is in the stream's folder; "
        "started, completed and uploaded counted lost",
        "tail_found": "uploaded: no later SeqNo arrived, but listing its stream's folder once the stream "
        "went quiet finds its file; started, completed and uploaded counted lost",
        "tail": "untracked: no later SeqNo of its stream arrived and "
        + ("its folder has no file for it" if bucket else "there is no bucket to list")
        + ": nobody can know of it",
        "below": "untracked: below the first SeqNo its stream delivered",
        "unheard_stream": "untracked: no callback of its stream arrived at all",
    }[silence]


@dataclass(slots=True)
class EventCounts:
    generated: int = 0
    """Events that happened (fate permitting)."""
    dropped: int = 0
    """Events the sender gave up on by plan: never sent."""
    delivered: int = 0
    """Distinct events answered 200 at least once."""
    duplicates: int = 0
    """Further 200s for events already delivered (the service counts them `duplicate`)."""
    undelivered: int = 0
    """Events sent but never answered 200 within the retry budget."""
    bad_signature: int = 0
    """Requests with a wrong signature that the service answered (expected 401 mismatch)."""


@dataclass(slots=True)
class Summary:
    """Exactly what the sender got across, and what the service should end up showing."""

    seed: int
    segments: int
    events: dict[str, EventCounts]
    bad_signature_requests: int
    """Wrong-signature requests answered by the service (all reasons `mismatch`)."""
    expected_end_states: dict[str, int]
    """Segments by the state they end in once every deadline has passed."""
    untracked_segments: int
    """Segments none of whose events arrived: the service never hears of them."""
    orphan_segments: int
    """Segments seen without their start: each counts once in orphan_events_total."""
    completed_segments: int
    """Segments whose completion arrived: segments_completed_total."""
    reordered_segments: int
    requests: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    transport_errors: int = 0
    timeouts: int = 0
    retries: int = 0
    elapsed_seconds: float = 0.0
    max_lateness_seconds: float = 0.0
    """How far behind the plan the sender got an event through at worst: the latest first 200
    of an event after the real time the plan gave it (rate slots and retries included). The plan's timing
    holds at the service only to within this: on a loaded machine a segment's events can reach
    the service this much further apart than planned, and so reach a deadline the plan did not."""
    files_uploaded: int = 0
    """Files written to the bucket (``--s3-bucket``); 0 without one."""
    upload_errors: int = 0
    """Files the bucket refused or did not answer for."""
    uploaded_files_without_callback: int = 0
    """Files in the bucket whose "uploaded" callback never got its 200: what a COS lookup
    finds although the service was never told."""
    expected_reconciled: int = 0
    """Segments that would end stuck or upload_missing on their callbacks alone but whose file
    is in the bucket: a service that looks files up there (``GME_RECWATCH_COS_BUCKET``) finds
    them and counts the lost callbacks instead (``expected_end_states`` already says so)."""

    silent_segments: int = 0
    """Segments the plan made silent (``silent_fraction``): the sender sent none of their
    callbacks."""
    expected_unannounced: int = 0
    """Segments expected to end unannounced: no callback of theirs arrived, but one of a later
    SeqNo of their stream did (a gap), and no file was found for them (confirmed missing with
    a bucket, unconfirmed without)."""
    expected_unannounced_found: int = 0
    """Gaps (as above) whose file the bucket holds: expected uploaded, all three callbacks lost."""
    expected_tail_found: int = 0
    """Segments with no callback and no later delivered SeqNo in their stream (a task's last
    segment, say) whose file the bucket holds: found by listing the stream's folder once the
    stream went quiet, expected uploaded, all three callbacks lost."""
    expected_lost_callbacks: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_EVENT_LABELS, 0))
    """By event type, what ``gme_recording_callbacks_lost_total`` should total: the callbacks of
    segments found in the bucket that never arrived (completed and uploaded for a segment the
    service tracked, all three for a silent one); all zeros without a bucket."""

    expected_segments: dict[str, list[dict[str, str | int]]] = field(default_factory=dict)
    """The segments behind each problem count of ``expected_end_states`` (stuck,
    upload_missing, orphan, unannounced), by their key, so each can be looked up in the
    service; not in the printed summary (see :func:`write_expected`)."""
    silences: list[tuple[dict[str, str | int], Silence]] = field(default_factory=list)
    """Each of the plan's silent segments by its key, and what the service should make of it
    (:func:`silence_text`); not in the printed summary (the command prints it on stderr)."""

    def to_json(self) -> str:
        out = asdict(self)
        del out["expected_segments"], out["silences"]
        return json.dumps(out, indent=2, sort_keys=True)


def summarise(
    plan: Plan,
    delivered: Counter[tuple[int, int]],
    bad_answered: Counter[int],
    sent: set[tuple[int, int]] | None = None,
    in_bucket: set[int] | None = None,
) -> Summary:
    """The summary for a plan, given how often each (segment, event type) was answered 200.

    End states follow the lifecycle rules: with the start, the furthest event seen decides
    (uploaded, else upload_missing, else stuck); without it the segment is an orphan, which
    ends upload_missing if only its completion arrived. ``in_bucket``: the segments whose file
    the bucket holds, for a service that looks files up in it before calling a segment stuck
    or missing its upload; a file found there completes and uploads the segment
    (:func:`gme_recwatch.lifecycle.found_in_cos`), so it ends uploaded (orphan without its
    start) and counts in ``expected_reconciled``.

    A segment none of whose callbacks arrived is placed within its recording stream (BizID,
    RoomID, UserID, TaskID, RecordMode) by the SeqNos that did arrive:

    * between the lowest and the highest (a gap the service sees when the later one arrives):
      uploaded if its file is in the bucket (all three callbacks lost), else unannounced;
    * above the highest (the stream's tail): uploaded if its file is in the bucket, found by
      listing the stream's folder once the stream went quiet; else untracked;
    * below the lowest, or in a stream of which nothing arrived: untracked.
    """
    counts = {EVENT_NAMES[et]: EventCounts() for et in EVENT_TYPES}
    for _, et in plan.generated:
        counts[EVENT_NAMES[et]].generated += 1
    for _, et in plan.dropped:
        counts[EVENT_NAMES[et]].dropped += 1
    for (_, et), n in delivered.items():
        if n:
            counts[EVENT_NAMES[et]].delivered += 1
            counts[EVENT_NAMES[et]].duplicates += n - 1
    attempted = (
        sent
        if sent is not None
        else {(s.segment, s.event_type) for s in plan.sends if s.copy != "bad_signature"}
    )
    for key in attempted:
        if not delivered.get(key):
            counts[EVENT_NAMES[key[1]]].undelivered += 1
    for et, n in bad_answered.items():
        counts[EVENT_NAMES[et]].bad_signature += n

    ends = dict.fromkeys(END_STATES, 0)
    problems: dict[str, list[dict[str, str | int]]] = {state: [] for state in END_STATES if state != "uploaded"}
    lost = dict.fromkeys(_EVENT_LABELS, 0)
    silences: list[tuple[dict[str, str | int], Silence]] = []
    untracked = orphans = completed = reconciled = gaps_found = tails_found = 0
    found = in_bucket or set()
    heard = [any(delivered.get((seg, et), 0) > 0 for et in EVENT_TYPES) for seg in range(len(plan.segments))]
    span = _heard_span(plan, heard)
    for seg in range(len(plan.segments)):
        s, c, u = (delivered.get((seg, et), 0) > 0 for et in EVENT_TYPES)
        completed += c
        if not heard[seg]:
            silence = _silence(plan.segments[seg], span, seg in found)
            if seg in plan.silent:
                silences.append((plan.identity(seg), silence))
            if silence in ("found", "tail_found"):
                end = "uploaded"
                gaps_found += silence == "found"
                tails_found += silence == "tail_found"
                for label in _EVENT_LABELS:
                    lost[label] += 1
            elif silence == "unannounced":
                end = "unannounced"
            else:
                untracked += 1
                continue
        else:
            if seg in found and not u:  # looked up at its deadline, and there
                if not c:
                    lost[EVENT_NAMES[COMPLETED]] += 1
                lost[EVENT_NAMES[UPLOADED]] += 1
                c = u = True
                reconciled += 1
            if s:
                end = "uploaded" if u else "upload_missing" if c else "stuck"
            else:
                orphans += 1
                end = "orphan" if u else "upload_missing"
        ends[end] += 1
        if end in problems:
            problems[end].append(plan.identity(seg))
    return Summary(
        seed=plan.config.seed,
        segments=len(plan.segments),
        events=counts,
        bad_signature_requests=sum(bad_answered.values()),
        expected_end_states=ends,
        untracked_segments=untracked,
        orphan_segments=orphans,
        completed_segments=completed,
        reordered_segments=plan.reordered,
        expected_segments=problems,
        expected_reconciled=reconciled,
        silent_segments=len(plan.silent),
        expected_unannounced=ends["unannounced"],
        expected_unannounced_found=gaps_found,
        expected_tail_found=tails_found,
        expected_lost_callbacks=lost,
        silences=silences,
    )


_Stream = tuple[str, str, int, int]


def _stream(s: Segment) -> _Stream:
    """A segment's recording stream: the service's key without the SeqNo (BizID is the plan's)."""
    return (s.room_id, s.user_id, s.task_id, s.record_mode)


def _heard_span(plan: Plan, heard: list[bool]) -> dict[_Stream, tuple[int, int]]:
    """Per stream the lowest and the highest SeqNo of which a callback arrived; streams of
    which nothing arrived are not in it."""
    span: dict[_Stream, tuple[int, int]] = {}
    for seg, s in enumerate(plan.segments):
        if heard[seg]:
            key = _stream(s)
            low, high = span.get(key, (s.seq_no, s.seq_no))
            span[key] = (min(low, s.seq_no), max(high, s.seq_no))
    return span


def _silence(s: Segment, span: dict[_Stream, tuple[int, int]], file_there: bool) -> Silence:
    """Where a segment with no callback lies in its stream, and so what the service makes of it."""
    if _stream(s) not in span:
        return "unheard_stream"
    low, high = span[_stream(s)]
    if s.seq_no < low:
        # Below the first SeqNo heard the service looks only once it has tracked the stream long
        # enough to tell a missing segment from one recorded before it started watching.
        return "below"
    if s.seq_no < high:
        return "found" if file_there else "unannounced"
    return "tail_found" if file_there else "tail"


def write_expected(summary: Summary, path: str) -> None:
    """Write the segments expected to end in each problem state (JSON: state -> keys, ids as
    strings as the service's API gives them), to check one by one against the service."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(summary.expected_segments, fh, indent=2)
        fh.write("\n")


# ----------------------------------------------------------------------------- sending


@dataclass(frozen=True, slots=True)
class S3Target:
    """The S3-compatible bucket the simulated recordings are written to, as GME writes to COS."""

    bucket: str
    endpoint: str = ""
    """Empty = COS itself, ``https://cos.<region>.myqcloud.com``."""
    region: str = "ap-guangzhou"
    key_template: str = "{file_name}"
    """The object key, as the service's ``GME_RECWATCH_COS_KEY_TEMPLATE``."""
    credentials: Credentials | None = None
    create_bucket: bool = False
    concurrency: int = 8

    def config(self) -> CosConfig:
        return CosConfig(
            region=self.region,
            default_bucket=self.bucket,
            endpoint=self.endpoint,
            key_template=self.key_template,
            credentials=self.credentials,
            max_concurrency=self.concurrency,
            timeout=10.0,
        )


def _recording(plan: Plan, seg: int) -> bytes:
    """A stand-in for the recorded audio: small, and says what it stands for."""
    return f"gme-recwatch simulate: {plan.segments[seg].file_name}\n".encode()


async def _upload_all(plan: Plan, target: S3Target, started: float, tally: Counter[str]) -> set[int]:
    """Write every planned file at its time; the segments whose file is in the bucket."""
    from botocore.exceptions import BotoCoreError, ClientError

    cfg = plan.config
    loop = asyncio.get_running_loop()
    done: set[int] = set()
    sem = asyncio.Semaphore(target.concurrency)
    async with open_client(target.config()) as s3:
        if target.create_bucket:
            try:
                await s3.create_bucket(
                    Bucket=target.bucket, CreateBucketConfiguration={"LocationConstraint": target.region}
                )
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    # Every put will fail the same way and be counted; say why once.
                    print(
                        f"gme-recwatch simulate: cannot create bucket {target.bucket}: {code}", file=sys.stderr
                    )
            except (BotoCoreError, OSError) as exc:
                print(
                    f"gme-recwatch simulate: cannot reach {target.config().endpoint_url}: {type(exc).__name__}",
                    file=sys.stderr,
                )

        async def put(seg: int) -> None:
            s = plan.segments[seg]
            key = object_key(
                target.key_template,
                biz_id=cfg.biz_id,
                file_name=s.file_name,
                room_id=s.room_id,
                user_id=s.user_id,
                task_id=s.task_id,
                seq_no=s.seq_no,
            )
            try:
                async with sem:
                    await s3.put_object(Bucket=target.bucket, Key=key, Body=_recording(plan, seg))
            except (ClientError, BotoCoreError, OSError):
                tally["upload_errors"] += 1
                return
            tally["files_uploaded"] += 1
            done.add(seg)

        tasks = []
        for at, seg in plan.uploads:
            wait = started + at / cfg.time_scale - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(put(seg)))
        await asyncio.gather(*tasks)
    return done


@dataclass(frozen=True, slots=True)
class SenderConfig:
    """How the sender behaves on the wire; Tencent's own budget by default."""

    url: str
    secret: str
    timeout: float = 5.0
    """Seconds to wait for a response before the attempt counts as failed."""
    retry_seconds: float = 60.0
    """Retry a failed event for about this long after its first attempt, then give up."""
    backoff: float = 1.0
    """First retry delay; doubles per attempt up to 10 s."""
    concurrency: int = 64
    """Most requests in flight."""
    encoding: Literal["base64", "hex"] = "base64"
    also_urls: tuple[str, ...] = ()
    """Further replicas: a first attempt goes to one of ``url`` and these at random, as a load
    balancer would spread Tencent's deliveries; a retry goes to the next one in turn, as a
    balancer that stops sending to an endpoint which failed would send it."""


async def run(
    plan: Plan,
    sender: SenderConfig,
    client: httpx.AsyncClient | None = None,
    s3: S3Target | None = None,
    progress: Callable[[str], None] | None = None,
    progress_every: float = 2.0,
) -> Summary:
    """Deliver ``plan`` to ``sender.url``, writing its files to ``s3`` if given; return what
    the service answered (and what the bucket took). ``progress`` is told how far it got
    every ``progress_every`` seconds."""
    cfg = plan.config
    own = client is None
    http = client or httpx.AsyncClient(
        timeout=sender.timeout, limits=httpx.Limits(max_connections=sender.concurrency)
    )
    delivered: Counter[tuple[int, int]] = Counter()
    bad_answered: Counter[int] = Counter()
    statuses: Counter[str] = Counter()
    tally = Counter[str]()
    sem = asyncio.Semaphore(sender.concurrency)
    wrong_key = "not-" + sender.secret
    urls = (sender.url, *sender.also_urls)
    spread = random.Random(cfg.seed)  # noqa: S311 - load spreading, not a secret

    def pick_url() -> int:
        return 0 if len(urls) == 1 else spread.randrange(len(urls))

    loop = asyncio.get_running_loop()

    async def attempt(send: Send, url: int) -> int | None:
        body = plan.body(send, int(time.time()))
        key = wrong_key if send.copy == "bad_signature" else sender.secret
        headers = {"Signature": sign(body, key, sender.encoding), "Content-Type": "application/json"}
        tally["requests"] += 1
        try:
            async with sem:
                resp = await http.post(urls[url], content=body, headers=headers, timeout=sender.timeout)
        except httpx.TimeoutException:
            tally["timeouts"] += 1
            return None
        except httpx.HTTPError:
            tally["transport_errors"] += 1
            return None
        statuses[str(resp.status_code)] += 1
        return resp.status_code

    lateness = [0.0]

    async def deliver(send: Send, due: float) -> None:
        if send.copy == "bad_signature":
            # A forged or corrupted copy: the rejection is the expected answer, not retried.
            if await attempt(send, pick_url()) is not None:
                bad_answered[send.event_type] += 1
            return
        first = loop.time()
        delay = sender.backoff
        url = pick_url()
        while True:
            if await attempt(send, url) == 200:
                if send.copy == "original":
                    lateness[0] = max(lateness[0], loop.time() - due)
                delivered[(send.segment, send.event_type)] += 1
                return
            if loop.time() + delay - first > sender.retry_seconds:
                return
            tally["retries"] += 1
            url = (url + 1) % len(urls)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    started = loop.time()
    tasks: list[asyncio.Task[None]] = []
    uploading = asyncio.create_task(_upload_all(plan, s3, started, tally)) if s3 else None

    async def report() -> None:
        assert progress is not None
        while True:
            await asyncio.sleep(progress_every)
            unanswered = tally["transport_errors"] + tally["timeouts"]
            progress(
                f"{loop.time() - started:.0f} s: {tally['requests']} requests sent "
                f"({len(plan.sends)} planned, plus retries), {statuses.get('200', 0)} "
                "answered 200, "
                f"{tally['retries']} retries, {unanswered} without an answer"
            )

    reporting = asyncio.create_task(report()) if progress is not None else None
    gap = 1.0 / cfg.rate
    next_slot = started
    try:
        for send in plan.sends:
            due = max(started + send.at / cfg.time_scale, next_slot)
            next_slot = due + gap
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            # Lateness counts from the plan's time, not from the rate's slot: a slot is a delay
            # the plan did not give the event either.
            tasks.append(asyncio.create_task(deliver(send, started + send.at / cfg.time_scale)))
            if len(tasks) >= 4096:  # keep the list of finished tasks short on long runs
                tasks = [t for t in tasks if not t.done()]
        await asyncio.gather(*tasks)
        in_bucket = await uploading if uploading is not None else set()
    finally:
        for task in (uploading, reporting):
            if task is not None and not task.done():
                task.cancel()
        if own:
            await http.aclose()
    # With a bucket, the expectation is that of a service looking files up in it.
    summary = summarise(plan, delivered, bad_answered, in_bucket=in_bucket if s3 is not None else None)
    summary.requests = tally["requests"]
    summary.statuses = dict(sorted(statuses.items()))
    summary.transport_errors = tally["transport_errors"]
    summary.timeouts = tally["timeouts"]
    summary.retries = tally["retries"]
    summary.elapsed_seconds = round(loop.time() - started, 3)
    summary.max_lateness_seconds = round(lateness[0], 3)
    summary.files_uploaded = tally["files_uploaded"]
    summary.upload_errors = tally["upload_errors"]
    summary.uploaded_files_without_callback = sum(1 for seg in in_bucket if not delivered.get((seg, UPLOADED)))
    return summary


def write_corpus(
    plan: Plan, path: str, secret: str, encoding: Literal["base64", "hex"] = "base64", start: int | None = None
) -> int:
    """Write every request of ``plan`` pre-signed, one ``<Signature>\\t<body>`` line each.

    ``Timestamp`` is ``start`` (default now) plus the request's simulated time. Returns the
    number of lines written.
    """
    t0 = int(time.time()) if start is None else start
    wrong_key = "not-" + secret
    with open(path, "wb") as fh:
        for send in plan.sends:
            body = plan.body(send, t0 + int(send.at))
            key = wrong_key if send.copy == "bad_signature" else secret
            fh.write(sign(body, key, encoding).encode("ascii") + b"\t" + body + b"\n")
    return len(plan.sends)


# ----------------------------------------------------------------------------- command line

_FLAGS: Final = {  # SimConfig field -> help, in --help order
    "rooms": "concurrent rooms (one task each)",
    "users_per_room": "users per room (single-stream: one file each)",
    "segments_per_task": "segments per recorded file",
    "mixed_fraction": "fraction of mixed-stream tasks",
    "rate": "most callbacks per second",
    "spread": "tasks start within this many simulated seconds",
    "duration_min": "shortest segment, simulated seconds",
    "duration_max": "longest segment, simulated seconds",
    "upload_delay_min": "shortest completion-to-upload delay, simulated seconds",
    "upload_delay_max": "longest completion-to-upload delay, simulated seconds",
    "time_scale": "simulated seconds per real second (e.g. 100 for short tests)",
    "reorder_fraction": "fraction of segments with an event delivered out of order",
    "reorder_delay": "longest delay of an out-of-order event behind its successor, simulated s",
    "duplicate_fraction": "fraction of events sent again after delivery",
    "duplicate_delay": "longest delay of a duplicate, simulated seconds",
    "drop_fraction": "fraction of events never sent",
    "never_complete_fraction": "fraction of segments that never complete (stuck)",
    "never_upload_fraction": "fraction of segments that never upload (upload_missing)",
    "bad_signature_fraction": "extra wrong-signature requests, naming rooms nobody records (per event)",
    "silent_fraction": "fraction of segments (SeqNo >= 1) that send no callback at all; their files "
    "still land in the bucket (the service should find them unannounced or in the bucket)",
    "file_layout": "file names: seq = {stamp}_{task}_{seq}_{kind}.mp3, spec = Tencent's sample "
    "{stamp}_{task}_audio.mp3 (no SeqNo; a stream's names sort in SeqNo order either way)",
    "biz_id": "BizID of every callback",
    "seed": "seed of the plan (same seed, same plan)",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `simulate` subcommand's flags."""
    p.add_argument("--url", default="http://127.0.0.1:8080/callback")
    p.add_argument(
        "--also-url",
        action="append",
        default=[],
        metavar="URL",
        help="another replica's callback URL; deliveries are spread at random over "
        "--url and these, and a retry goes to the next one (repeatable)",
    )
    p.add_argument("--secret", help="SecretKey (default: first of $GME_RECWATCH_SECRET_KEY)")
    defaults = SimConfig()
    for name, help_text in _FLAGS.items():
        default = getattr(defaults, name)
        if name == "seed":  # a second run must not replay the first one's segments as duplicates
            p.add_argument(
                "--seed", type=int, default=None, help=f"{help_text} [default: a fresh one, printed]"
            )
            continue
        p.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=type(default),
            default=default,
            choices=FILE_LAYOUTS if name == "file_layout" else None,
            help=f"{help_text} [default {default}]",
        )
    p.add_argument("--timeout", type=float, default=5.0, help="response timeout, s [default 5]")
    p.add_argument(
        "--retry-seconds", type=float, default=60.0, help="retry a failed event for this long, s [default 60]"
    )
    p.add_argument("--backoff", type=float, default=1.0, help="first retry delay, s [default 1]")
    p.add_argument("--concurrency", type=int, default=64, help="most requests in flight [default 64]")
    p.add_argument("--encoding", default="base64", choices=("base64", "hex"))
    p.add_argument("--summary-file", help="also write the JSON summary here")
    p.add_argument(
        "--expected-file",
        default="simulate-expected.json",
        metavar="FILE",
        help="where to write the segments expected to end stuck, upload_missing, "
        "orphan or unannounced, to check one by one [default simulate-expected.json]; "
        "'' = do not write it",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    s3 = p.add_argument_group(
        "recordings in a bucket",
        "also write each file the sender 'uploads' to an S3-compatible "
        "bucket, as GME writes recordings to COS; the API key comes from TENCENTCLOUD_SECRET_ID "
        "/ TENCENTCLOUD_SECRET_KEY (anonymous without)",
    )
    s3.add_argument("--s3-bucket", metavar="BUCKET", help="bucket to write the files to")
    s3.add_argument(
        "--s3-endpoint",
        metavar="URL",
        default="",
        help="S3 endpoint, e.g. http://127.0.0.1:5000 [default: COS in --s3-region]",
    )
    s3.add_argument("--s3-region", default="ap-guangzhou", help="region [default ap-guangzhou]")
    s3.add_argument(
        "--s3-key-template",
        default="{file_name}",
        help="object key, as GME_RECWATCH_COS_KEY_TEMPLATE [default {file_name}]",
    )
    s3.add_argument(
        "--s3-create-bucket",
        action="store_true",
        help="create the bucket first if it does not exist (test servers)",
    )
    p.add_argument(
        "--write-corpus",
        metavar="FILE",
        help="write the plan's requests pre-signed (`<Signature>\\t<body>` lines) instead of sending them",
    )


def fresh_seed() -> int:
    """A seed for a run that gave none: its rooms, users and tasks are new to the service."""
    return random.SystemRandom().randrange(1, 1_000_000)


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """The plan the flags ask for; without ``--seed``, a fresh seed (``args.seed`` is set to
    it, so the caller can print it)."""
    if args.seed is None:
        args.seed = fresh_seed()
    return SimConfig(**{name: getattr(args, name) for name in _FLAGS}).validate()


def s3_target_from_args(args: argparse.Namespace, env: dict[str, str] | None = None) -> S3Target | None:
    """The bucket the flags name, or None; ValueError (no key material in it) when they do not
    fit together."""
    if not args.s3_bucket:
        if args.s3_endpoint:
            raise ValueError("--s3-endpoint needs --s3-bucket")
        return None
    problem = key_template_problem(args.s3_key_template)
    if problem:
        raise ValueError(f"--s3-key-template {problem}")
    source = os.environ if env is None else env
    secret_id = source.get("TENCENTCLOUD_SECRET_ID", "").strip()
    secret_key = source.get("TENCENTCLOUD_SECRET_KEY", "").strip()
    if bool(secret_id) != bool(secret_key):
        raise ValueError("TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY go together")
    return S3Target(
        bucket=args.s3_bucket,
        endpoint=args.s3_endpoint.rstrip("/"),
        region=args.s3_region,
        key_template=args.s3_key_template,
        credentials=Credentials(secret_id, secret_key) if secret_id else None,
        create_bucket=args.s3_create_bucket,
    )


def main(args: argparse.Namespace) -> int:
    """Run `gme-recwatch simulate`; 0 when every event that was sent got its 200."""
    keys = parse_secret_list(args.secret or os.environ.get("GME_RECWATCH_SECRET_KEY", ""))
    if not keys:
        print("gme-recwatch simulate: pass --secret or set GME_RECWATCH_SECRET_KEY", file=sys.stderr)
        return 2
    try:
        plan = make_plan(config_from_args(args))
    except ValueError as exc:
        print(f"gme-recwatch simulate: {exc}", file=sys.stderr)
        return 2
    try:
        target = s3_target_from_args(args)
    except ValueError as exc:
        print(f"gme-recwatch simulate: {exc}", file=sys.stderr)
        return 2
    if args.write_corpus:
        if target is not None:
            print(
                "gme-recwatch simulate: --s3-* writes files while sending; not with --write-corpus",
                file=sys.stderr,
            )
            return 2
        n = write_corpus(plan, args.write_corpus, keys[0], args.encoding)
        print(json.dumps({"corpus": args.write_corpus, "requests": n, "segments": len(plan.segments)}))
        return 0
    sender = SenderConfig(
        url=args.url,
        secret=keys[0],
        timeout=args.timeout,
        retry_seconds=args.retry_seconds,
        backoff=args.backoff,
        concurrency=args.concurrency,
        encoding=args.encoding,
        also_urls=tuple(args.also_url),
    )
    problem = unreachable(args.url, args.timeout)
    if problem is not None:
        print(
            f"gme-recwatch simulate: nothing answers at {args.url} ({problem}): is the "
            "service running there (`make run`), on that port?",
            file=sys.stderr,
        )
        return 3

    def say(line: str) -> None:
        print(f"gme-recwatch simulate: {line}", file=sys.stderr, flush=True)

    say(
        f"seed {plan.config.seed} (--seed {plan.config.seed} replays this run): "
        f"{len(plan.segments)} segments, {len(plan.sends)} requests to {args.url}, about "
        f"{max((s.at for s in plan.sends), default=0) / plan.config.time_scale:.0f} s"
    )
    summary = asyncio.run(run(plan, sender, s3=target, progress=None if args.quiet else say))
    text = summary.to_json()
    print(text)
    if args.summary_file:
        with open(args.summary_file, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    if args.expected_file:
        write_expected(summary, args.expected_file)
        ends = summary.expected_end_states
        cos = (
            f" (with {target.bucket} looked up by the service: {summary.expected_reconciled} found there)"
            if target is not None
            else ""
        )
        say(
            f"expected once the deadlines pass{cos}: stuck {ends['stuck']}, upload_missing "
            f"{ends['upload_missing']}, orphan {ends['orphan']}, unannounced {ends['unannounced']}; "
            f"their keys are in {os.path.abspath(args.expected_file)}"
        )
    for line in silence_report(summary, bucket=target is not None):
        say(line)
    lost = sum(c.undelivered for c in summary.events.values())
    if lost:
        say(
            f"{lost} events were never answered 200 within the retries "
            f"({summary.transport_errors} transport errors, {summary.timeouts} timeouts, "
            f"answers: {summary.statuses})"
        )
    if summary.upload_errors:
        say(f"{summary.upload_errors} files could not be written to the bucket")
    return 1 if lost or summary.upload_errors else 0


def silence_report(summary: Summary, bucket: bool, most: int = 20) -> list[str]:
    """Lines naming the plan's silent segments (at most ``most``) and what the service should
    make of each; none without silent segments."""
    if not summary.silences:
        return []
    lost = ", ".join(f"{et} {n}" for et, n in summary.expected_lost_callbacks.items())
    lines = [
        f"{len(summary.silences)} segments sent no callback at all (--silent-fraction): "
        f"expected unannounced {summary.expected_unannounced}, found in the bucket "
        f"{summary.expected_unannounced_found} (gaps) + {summary.expected_tail_found} (tails); "
        f"callbacks counted lost: {lost}"
    ]
    for key, silence in summary.silences[:most]:
        lines.append(
            f"  room {key['room_id']} user {key['user_id']} task {key['task_id']} seq {key['seq_no']}: "
            + silence_text(silence, bucket)
        )
    if len(summary.silences) > most:
        lines.append(f"  ... and {len(summary.silences) - most} more")
    return lines


def unreachable(url: str, timeout: float) -> str | None:
    """Why nothing answers HTTP at ``url`` (any status is an answer), or None."""
    try:
        httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return None
