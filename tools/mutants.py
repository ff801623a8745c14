"""Mutation check of the lifecycle rules, in both copies: lifecycle.py and redis_lifecycle.lua,
and of the bookkeeping around them (``books-*``: pages, restores, app labels, key TTLs, caches).

Each mutant is one small wrong change to a rule (a deadline boundary, the duplicate check, a
state, a tally, a COS answer, a blind mark...). For each, the tests that should notice it run
against a copy of the tree with that change made: the mutant is

* ``killed`` when a test fails on an assertion (what a mutant must do);
* ``survived`` when every test passes: no test pins that rule;
* ``timeout`` when a test ran into pytest-timeout or the run into its hard limit: a suite that
  hangs is a broken suite, not a kill;
* ``error`` when the run failed some other way (collection, a fixture, pytest's own usage).

The real tree is never modified: the tree is copied (git's tracked and unignored files under
src/ and tests/, and pyproject.toml) into a temporary directory once per worker, mutants are
made there, and the copy is deleted at the end, also on Ctrl-C (which also kills the test run
and every process it started). Exits 0 only if every mutant selected was killed.

    python tools/mutants.py                 # every mutant
    python tools/mutants.py --list          # what they are
    python tools/mutants.py --only 'lua-*'  # those whose id matches (fnmatch; comma-separated)
    python tools/mutants.py --jobs 2        # two at a time, each in its own copy
    python tools/mutants.py --only 'py-retention-*' --tests tests/test_stores.py  # other tests
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from queue import Queue

ROOT = Path(__file__).resolve().parent.parent
PY = "src/gme_recwatch/lifecycle.py"
LUA = "src/gme_recwatch/stores/redis_lifecycle.lua"
TALLIES = "src/gme_recwatch/stores/tallies.py"

# The modules that should kill a mutant of the rules, cheapest and most direct first (pytest -x
# stops at the first failure): the rule tables (run against both copies), the deadline
# boundaries in both stores, then the conformance suite.
RULES = ("tests/test_lifecycle.py", "tests/test_stores_boundaries.py", "tests/test_stores.py")
STORES = ("tests/test_stores_boundaries.py", "tests/test_stores.py")


@dataclass(frozen=True)
class Mutant:
    id: str
    path: str
    old: str
    """Text that occurs exactly once in ``path``..."""
    new: str
    """...and what it becomes."""
    what: str
    tests: tuple[str, ...] = RULES


MUTANTS: tuple[Mutant, ...] = (
    # ---- each deadline's boundary: reached at its time, not after it
    Mutant(
        "py-stuck-boundary",
        PY,
        "(State.STUCK, INF) if now >= d",
        "(State.STUCK, INF) if now > d",
        "stuck only after max_recording, not at it",
    ),
    Mutant(
        "lua-stuck-boundary",
        LUA,
        "if now >= d then return STUCK, INF end",
        "if now > d then return STUCK, INF end",
        "stuck only after max_recording, not at it",
    ),
    Mutant(
        "py-grace-boundary",
        PY,
        "(State.UPLOAD_MISSING, INF) if now >= d",
        "(State.UPLOAD_MISSING, INF) if now > d",
        "upload missing only after the grace",
    ),
    Mutant(
        "lua-grace-boundary",
        LUA,
        "if now >= d then return UPLOAD_MISSING, INF end",
        "if now > d then return UPLOAD_MISSING, INF end",
        "upload missing only after the grace",
    ),
    Mutant(
        "py-window-boundary",
        PY,
        "(State.UPLOADED, window) if now < window",
        "(State.UPLOADED, window) if now <= window",
        "orphan only after the reorder window",
    ),
    Mutant(
        "lua-window-boundary",
        LUA,
        "if now < window then return UPLOADED, window end",
        "if now <= window then return UPLOADED, window end",
        "orphan only after the reorder window",
    ),
    Mutant(
        "py-start-lost-boundary",
        PY,
        "now >= r_first + cfg.reorder_window_seconds",
        "now > r_first + cfg.reorder_window_seconds",
        "the start counted lost after the window",
    ),
    Mutant(
        "lua-start-lost-boundary",
        LUA,
        "now >= r_first + WINDOW",
        "now > r_first + WINDOW",
        "the start counted lost after the window",
    ),
    Mutant(
        "py-retention-boundary",
        PY,
        "return expires <= now",
        "return expires < now",
        "forgotten only after the retention, not at it",
    ),
    Mutant(
        "lua-retention-boundary",
        LUA,
        "return expires <= now",
        "return expires < now",
        "forgotten only after the retention, not at it",
    ),
    # ---- the duplicate check and the results
    Mutant(
        "py-duplicate",
        PY,
        "    if seen & bit:\n        return Result.DUPLICATE",
        "    if seen == bit:\n        return Result.DUPLICATE",
        "a duplicate only when it is the only event seen",
    ),
    Mutant(
        "lua-duplicate",
        LUA,
        "if has(seen, b) then return DUPLICATE end",
        "if seen == b then return DUPLICATE end",
        "a duplicate only when it is the only event seen",
    ),
    Mutant(
        "py-late-unverified",
        PY,
        "if state in PROBLEM_STATES or state == State.UNVERIFIED:",
        "if state in PROBLEM_STATES:",
        "an event for an unverified segment is not late",
    ),
    Mutant(
        "lua-late-unverified",
        LUA,
        "(PROBLEM_STATES[state] or state == UNVERIFIED) then return LATE",
        "(PROBLEM_STATES[state]) then return LATE",
        "an event for an unverified segment is not late",
    ),
    # ---- states swapped
    Mutant(
        "py-swap-orphan-uploaded",
        PY,
        "if now < window else (State.ORPHAN, INF)",
        "if now < window else (State.UPLOADED, INF)",
        "an upload whose start never came is uploaded, not orphan",
    ),
    Mutant(
        "lua-swap-orphan-uploaded",
        LUA,
        "if now < window then return UPLOADED, window end\n    return ORPHAN, INF",
        "if now < window then return UPLOADED, window end\n    return UPLOADED, INF",
        "an upload whose start never came is uploaded, not orphan",
    ),
    Mutant(
        "py-swap-stuck-missing",
        PY,
        "return (State.STUCK, INF) if now >= d",
        "return (State.UPLOAD_MISSING, INF) if now >= d",
        "a recording past its maximum is upload_missing",
    ),
    Mutant(
        "lua-swap-stuck-missing",
        LUA,
        "if now >= d then return STUCK, INF end",
        "if now >= d then return UPLOAD_MISSING, INF end",
        "a recording past its maximum is upload_missing",
    ),
    # ---- #19.3: the deadline of a completion whose grace ran out inside the window
    Mutant(
        "py-deadline-in-the-past",
        PY,
        "return State.UPLOAD_MISSING, (window if now < window else INF)",
        "return ((State.COMPLETED, min(window, d)) if now < window\n"
        "                else (State.UPLOAD_MISSING, INF))",
        "the old rule: a next change already past (the sweep spins)",
    ),
    Mutant(
        "lua-deadline-in-the-past",
        LUA,
        "if now < window then return UPLOAD_MISSING, window end",
        "if now < window then return COMPLETED, math.min(window, d) end",
        "the old rule: a next change already past (the sweep spins)",
    ),
    # ---- durations
    Mutant(
        "py-measure",
        PY,
        "duration = float(ts_complete - ts_start)",
        "duration = float(ts_start - ts_complete)",
        "a recording's duration negated",
    ),
    Mutant(
        "lua-measure", LUA, "duration = ts_c - ts_s", "duration = ts_s - ts_c", "a recording's duration negated"
    ),
    # ---- what an event does
    Mutant(
        "py-retention-restart",
        PY,
        "        now + cfg.retention_seconds,\n    )",
        "        expires,\n    )",
        "the retention counts from the first event, not the last",
    ),
    Mutant(
        "lua-retention-restart",
        LUA,
        "false, r_complete, now + RETENTION",
        "false, r_complete, expires",
        "the retention counts from the first event, not the last",
    ),
    Mutant(
        "py-blind-cleared",
        PY,
        "check_after_event(check, bit),\n        False,",
        "check_after_event(check, bit),\n        blind,",
        "a new event leaves the blind mark",
    ),
    Mutant(
        "lua-blind-cleared",
        LUA,
        "check_after_event(check, b), false,",
        "check_after_event(check, b), blind,",
        "a new event leaves the blind mark",
    ),
    Mutant(
        "py-check-after-event",
        PY,
        "(check is not Check.NONE and bit != SEEN_STARTED)",
        "(check is not Check.NONE)",
        "a late start voids a lookup's answer",
    ),
    Mutant(
        "lua-check-after-event",
        LUA,
        "(check ~= CHECK_NONE and b ~= SEEN_STARTED)",
        "(check ~= CHECK_NONE)",
        "a late start voids a lookup's answer",
    ),
    # ---- settling
    Mutant(
        "py-start-lost",
        PY,
        "and not seen & SEEN_STARTED and now >= r_first",
        "and now >= r_first",
        "a segment whose start came counts its start lost",
    ),
    Mutant(
        "lua-start-lost",
        LUA,
        "and not has(seen, SEEN_STARTED) and now >=",
        "and now >=",
        "a segment whose start came counts its start lost",
    ),
    Mutant(
        "py-blind-unverified",
        PY,
        "if blind and not cfg.check_in_cos and new in CHECKED_STATES:",
        "if blind and new in CHECKED_STATES:",
        "with COS checks, a blind segment is unverified instead of looked up",
    ),
    Mutant(
        "lua-blind-unverified",
        LUA,
        "if blind and not CHECK_IN_COS and CHECKED_STATES[new]",
        "if blind and CHECKED_STATES[new]",
        "with COS checks, a blind segment is unverified instead of looked up",
    ),
    Mutant(
        "py-blind-marked",
        PY,
        "BLIND_MARKED: Final = frozenset({State.RECORDING, State.COMPLETED})",
        "BLIND_MARKED: Final = frozenset({State.RECORDING})",
        "a blind window leaves segments awaiting their upload unmarked",
        STORES,
    ),
    Mutant(
        "lua-blind-marked",
        LUA,
        "local BLIND_MARKED = {[RECORDING] = true, [COMPLETED] = true}",
        "local BLIND_MARKED = {[RECORDING] = true}",
        "a blind window leaves segments awaiting their upload unmarked",
    ),
    Mutant(
        "py-holds-answered",
        PY,
        "and check in (Check.NONE, Check.PENDING)\n    )",
        "and check in (Check.NONE, Check.PENDING, Check.CONFIRMED)\n    )",
        "a confirmed answer holds the segment again instead of letting the problem stand",
    ),
    Mutant(
        "lua-holds-answered",
        LUA,
        "(check == CHECK_NONE or check == CHECK_PENDING)",
        "(check ~= CHECK_UNCONFIRMED)",
        "a confirmed answer holds the segment again instead of letting the problem stand",
    ),
    Mutant(
        "py-entered-once",
        PY,
        "entered = new if new != old and (",
        "entered = new if (",
        "a problem state is reported at every settle, not once",
    ),
    Mutant(
        "lua-entered-once",
        LUA,
        "if new ~= old and (PROBLEM_STATES[new] or new == UNVERIFIED) then entered",
        "if (PROBLEM_STATES[new] or new == UNVERIFIED) then entered",
        "a problem state is reported at every settle, not once",
    ),
    Mutant(
        "py-deadline-expiry",
        PY,
        "deadline = next_change if next_change < expires else expires",
        "deadline = next_change",
        "a segment with no next change is never looked at again",
    ),
    Mutant(
        "lua-deadline-expiry",
        LUA,
        "return new, math.min(next_change, expires),",
        "return new, next_change,",
        "a segment with no next change is never looked at again",
    ),
    # ---- COS answers
    Mutant(
        "py-answer-not-found",
        PY,
        '"not_found": Check.CONFIRMED',
        '"not_found": Check.UNCONFIRMED',
        "a file not found leaves the problem unconfirmed",
    ),
    Mutant(
        "lua-answer-not-found",
        LUA,
        'if answer == "not_found" then return CHECK_CONFIRMED end',
        'if answer == "not_found" then return CHECK_UNCONFIRMED end',
        "a file not found leaves the problem unconfirmed",
    ),
    Mutant(
        "py-found-lost",
        PY,
        "lost = (SEEN_COMPLETED | SEEN_UPLOADED) & ~seen",
        "lost = SEEN_UPLOADED & ~seen",
        "a file found does not complete the segment",
    ),
    Mutant(
        "lua-found-lost",
        LUA,
        "local lost = band(bor(SEEN_COMPLETED, SEEN_UPLOADED), bnot(seen))",
        "local lost = band(SEEN_UPLOADED, bnot(seen))",
        "a file found does not complete the segment",
    ),
    # ---- retrying a lookup that gave no answer (lifecycle.retry_after, lifecycle.claimable)
    Mutant(
        "py-retry-no-growth",
        PY,
        "bound = waited if waited > first else first",
        "bound = first",
        "the wait before a failed lookup is retried never grows",
    ),
    Mutant(
        "lua-retry-no-growth",
        LUA,
        "local bound = waited > first and waited or first",
        "local bound = first",
        "the wait before a failed lookup is retried never grows",
    ),
    Mutant(
        "py-retry-unclaimable",
        PY,
        "return check is Check.PENDING or check is Check.UNCONFIRMED",
        "return check is Check.PENDING",
        "a failed lookup is never claimed again",
    ),
    Mutant(
        "lua-retry-unclaimable",
        LUA,
        "return check == CHECK_PENDING or check == CHECK_UNCONFIRMED",
        "return check == CHECK_PENDING",
        "a failed lookup is never claimed again",
    ),
    # ---- tallies
    Mutant(
        "py-tally-stuck-decrement",
        TALLIES,
        "            self._stuck[app] -= 1",
        "            self._stuck[app] -= 0",
        "the stuck gauge never goes down",
        STORES,
    ),
    Mutant(
        "lua-tally-stuck-decrement",
        LUA,
        'if old == STUCK then redis.call("HINCRBY", T, "s:" .. app, -1)',
        'if old == STUCK then redis.call("HINCRBY", T, "s:" .. app, 0)',
        "the stuck gauge never goes down",
        STORES,
    ),
    Mutant(
        "py-tally-recording-ended",
        TALLIES,
        "        self._active[app][mode] -= 1",
        "        self._active[app][mode] -= 0",
        "a recording that ended stays active",
        STORES,
    ),
    Mutant(
        "lua-tally-recording-ended",
        LUA,
        'redis.call("HINCRBY", T, "a:" .. app .. ":" .. mode, -1)',
        'redis.call("HINCRBY", T, "a:" .. app .. ":" .. mode, 0)',
        "a recording that ended stays active",
        STORES,
    ),
    # ---- the eviction order and the blind marks (lifecycle.EVICTED_FIRST, lifecycle.blind_marks)
    Mutant(
        "py-evicted-first",
        PY,
        "EVICTED_FIRST: Final = frozenset({State.UPLOADED})",
        "EVICTED_FIRST: Final = frozenset({State.COMPLETED})",
        "capacity evicts segments awaiting their upload first, not uploaded ones",
        STORES,
    ),
    Mutant(
        "lua-evicted-first",
        LUA,
        "local EVICTED_FIRST = {[UPLOADED] = true}",
        "local EVICTED_FIRST = {[COMPLETED] = true}",
        "capacity evicts segments awaiting their upload first, not uploaded ones",
        STORES,
    ),
    Mutant(
        "py-blind-marks-heard-since",
        PY,
        "return state in BLIND_MARKED and last_heard <= window_end",
        "return state in BLIND_MARKED",
        "a segment heard from after the window ended is marked all the same",
    ),
    Mutant(
        "lua-blind-marks-heard-since",
        LUA,
        "return BLIND_MARKED[state] == true and last_heard <= window_end",
        "return BLIND_MARKED[state] == true",
        "a segment heard from after the window ended is marked all the same",
    ),
    # ---- starts lost in a blind window of ours (#27.3: lifecycle.start_blind_marks)
    Mutant(
        "py-start-blind-orphan",
        PY,
        "if start_blind and new == State.ORPHAN:",
        "if start_blind and new == State.UPLOADED:",
        "an orphan whose start may be ours is paged as Tencent's loss",
    ),
    Mutant(
        "lua-start-blind-orphan",
        LUA,
        "if start_blind and new == ORPHAN then return UNVERIFIED end",
        "if start_blind and new == UPLOADED then return UNVERIFIED end",
        "an orphan whose start may be ours is paged as Tencent's loss",
    ),
    Mutant(
        "py-start-blind-counted",
        PY,
        "start_lost = start_lost or (not start_blind and "
        "start_is_lost(seen, r_first, now, cfg, expects_start))",
        "start_lost = start_lost or start_is_lost(seen, r_first, now, cfg, expects_start)",
        "a start that may be ours is counted as lost by Tencent",
    ),
    Mutant(
        "lua-start-blind-counted",
        LUA,
        "start_lost = start_lost or (not start_blind and start_is_lost(seen, r_first, now, expects_start))",
        "start_lost = start_lost or start_is_lost(seen, r_first, now, expects_start)",
        "a start that may be ours is counted as lost by Tencent",
    ),
    Mutant(
        "py-start-blind-span",
        PY,
        "earliest = first_heard - cfg.max_recording_seconds - cfg.upload_grace_seconds",
        "earliest = first_heard - cfg.max_recording_seconds",
        "a segment first heard of by its upload is not held against a window its start fell in",
    ),
    Mutant(
        "lua-start-blind-span",
        LUA,
        "local earliest = first_heard - MAX_REC - GRACE",
        "local earliest = first_heard - MAX_REC",
        "a segment first heard of by its upload is not held against a window its start fell in",
    ),
    Mutant(
        "books-py-start-blind-created-later",
        "src/gme_recwatch/stores/memory.py",
        "            self._start_blind[key] = latest\n",
        "            pass\n",
        "a segment created after the reset was found is not held against its window",
        ("tests/test_stores.py",),
    ),
    Mutant(
        "books-lua-start-blind-created-later",
        LUA,
        'redis.call("HSET", P .. "sb", key, latest)',
        "local _ = latest",
        "a segment created after the reset was found is not held against its window",
        STORES,
    ),
    # ---- segments never announced (#28: lifecycle.revealed, derive_state, found_in_cos)
    Mutant(
        "py-expected-window",
        PY,
        "return (State.EXPECTED, window) if now < window",
        "return (State.EXPECTED, window) if now <= window",
        "an unannounced segment waits past its reorder window",
    ),
    Mutant(
        "lua-expected-window",
        LUA,
        "if now < window then return EXPECTED, window end",
        "if now <= window then return EXPECTED, window end",
        "an unannounced segment waits past its reorder window",
    ),
    Mutant(
        "py-unannounced-checked",
        PY,
        "CHECKED_STATES: Final = frozenset({State.STUCK, State.UPLOAD_MISSING, State.UNANNOUNCED})",
        "CHECKED_STATES: Final = frozenset({State.STUCK, State.UPLOAD_MISSING})",
        "an unannounced segment is reported missing without looking in COS",
    ),
    Mutant(
        "lua-unannounced-checked",
        LUA,
        "local CHECKED_STATES = {[STUCK] = true, [UPLOAD_MISSING] = true, [UNANNOUNCED] = true}",
        "local CHECKED_STATES = {[STUCK] = true, [UPLOAD_MISSING] = true}",
        "an unannounced segment is reported missing without looking in COS",
    ),
    Mutant(
        "py-unannounced-start-lost",
        PY,
        "    if not seen:\n        lost |= SEEN_STARTED",
        "    if False:\n        lost |= SEEN_STARTED",
        "an unannounced segment found in COS does not count its start lost",
    ),
    Mutant(
        "lua-unannounced-start-lost",
        LUA,
        "if seen == 0 then lost = bor(lost, SEEN_STARTED) end",
        "if false then lost = bor(lost, SEEN_STARTED) end",
        "an unannounced segment found in COS does not count its start lost",
    ),
    Mutant(
        "py-revealed-tracking",
        PY,
        "if tracking_since + seq_no * cfg.max_recording_seconds + cfg.upload_grace_seconds <= now",
        "if True",
        "a service deployed mid-task calls the SeqNos before it missing",
    ),
    Mutant(
        "lua-revealed-tracking",
        LUA,
        "if tracking_since + seq_no * MAX_REC + GRACE <= now then low = 0 end",
        "low = 0",
        "a service deployed mid-task calls the SeqNos before it missing",
    ),
    Mutant(
        "py-revealed-below",
        PY,
        "    if seq_no < low_seq:",
        "    if seq_no < low_seq - 1:",
        "a late lower SeqNo does not reveal the one just above it",
    ),
    Mutant(
        "lua-revealed-below",
        LUA,
        "  if seq_no < low_seq then",
        "  if seq_no < low_seq - 1 then",
        "a late lower SeqNo does not reveal the one just above it",
    ),
    Mutant(
        "books-py-streams-forgotten",
        "src/gme_recwatch/stores/memory.py",
        "        if forgot:  # a stream forgotten may come back: not to be taken for a new one\n"
        "            self._since = now",
        "        if forgot:  # a stream forgotten may come back: not to be taken for a new one\n"
        "            pass",
        "a stream forgotten at capacity comes back as a new one and its SeqNos below are called missing",
        ("tests/test_stores.py",),
    ),
    Mutant(
        "books-lua-streams-forgotten",
        LUA,
        '    redis.call("SET", P .. "since", string.format("%.17g", now))\n'
        '  end\n  redis.call("ZADD", P .. "slru"',
        '  end\n  redis.call("ZADD", P .. "slru"',
        "a stream forgotten at capacity comes back as a new one and its SeqNos below are called missing",
        STORES,
    ),
    # ---- the bookkeeping around the rules (#27.8): each pinned by a test
    Mutant(
        "books-page-order",
        "src/gme_recwatch/stores/base.py",
        "chosen = heapq.nsmallest(limit + 1, matches, key=lambda m: (m[0], m[1]))",
        "chosen = heapq.nsmallest(limit + 1, matches, key=lambda m: m[1])",
        "pages ordered by key, not by first receipt",
        ("tests/test_stores.py",),
    ),
    Mutant(
        "books-page-cursor",
        "src/gme_recwatch/stores/base.py",
        "chosen = heapq.nsmallest(limit + 1, matches",
        "chosen = heapq.nsmallest(limit, matches",
        "a full page never says where the next one starts (the API's overflow cursor)",
        ("tests/test_stores.py",),
    ),
    Mutant(
        "books-page-after",
        "src/gme_recwatch/stores/base.py",
        "matches = [m for m in matches if (m[0], m[1]) > after]",
        "matches = [m for m in matches if (m[0], m[1]) >= after]",
        "the next page repeats the last segment of the one before",
        ("tests/test_stores.py",),
    ),
    Mutant(
        "books-restore-count",
        "src/gme_recwatch/stores/memory.py",
        "self._index = {k: i for i, k in enumerate(loaded.keys) if k is not None}",
        "self._index = {k: i for i, k in enumerate(loaded.keys)}  # type: ignore[misc]",
        "a restore counts the free slots of the snapshot as segments",
        ("tests/test_snapshots.py", "tests/test_stores_memory.py"),
    ),
    Mutant(
        "books-reset-apps",
        "src/gme_recwatch/service.py",
        "            await self.store.register_apps(self.keys.current.app_ids(), self.settings.without_start)\n"
        "            await self.mark_blind()",
        "            await self.mark_blind()",
        "after a store reset the keyring's apps have no labels until their next callback",
        ("tests/test_service.py",),
    ),
    Mutant(
        "books-redis-no-ttl",
        LUA,
        "seg.ts_u, seg.r_first, seg.r_complete, seg.expires) .. seg.file)",
        'seg.ts_u, seg.r_first, seg.r_complete, seg.expires) .. seg.file, "PX", 4600000)',
        "segment keys expire on their own again, behind the sweep's back",
        ("tests/test_stores_redis.py",),
    ),
    Mutant(
        "books-bucket-cache-ttl",
        "src/gme_recwatch/cos.py",
        "if known is None or now - known[1] >= self._bucket_ttl:",
        "if known is None:",
        "what was learnt of a bucket is kept for ever",
        ("tests/test_cos_buckets.py",),
    ),
    Mutant(
        "books-delivery-error-states",
        "src/gme_recwatch/reconcile.py",
        "EXEMPLAR_STATES: Final = frozenset({State.STUCK.label, State.UPLOAD_MISSING.label, "
        "State.UNANNOUNCED.label})",
        "EXEMPLAR_STATES: Final = frozenset({State.STUCK.label, State.UPLOAD_MISSING.label, "
        "State.UNANNOUNCED.label, State.ORPHAN.label})",
        "an orphan (a lost start) counts as a delivery error of the SLO",
        ("tests/test_reconcile.py",),
    ),
)


def check_mutants(root: Path = ROOT) -> list[str]:
    """Problems with the list itself: ids not unique, a text not found exactly once."""
    problems = []
    ids = [m.id for m in MUTANTS]
    problems += [f"{i}: id used twice" for i in sorted({i for i in ids if ids.count(i) > 1})]
    for m in MUTANTS:
        n = (root / m.path).read_text(encoding="utf-8").count(m.old)
        if n != 1:
            problems.append(f"{m.id}: {m.old!r} occurs {n} times in {m.path}")
    return problems


# ------------------------------------------------------------------ running


@dataclass
class Outcome:
    mutant: Mutant
    verdict: str  # killed, survived, timeout, error
    seconds: float
    detail: str = ""


_RUNNING: set[subprocess.Popen[bytes]] = set()
_LOCK = threading.Lock()
_STOP = threading.Event()


def _files() -> list[str]:
    git = shutil.which("git") or "git"
    listed = subprocess.run(  # noqa: S603
        [
            git,
            "ls-files",
            "-co",
            "--exclude-standard",
            "--",
            "src",
            "tests",
            "pyproject.toml",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    return [f for f in listed if f and (ROOT / f).is_file()]


def make_copy(into: Path, files: list[str]) -> Path:
    """A copy of the tree (what the tests need) at ``into/<name>``, beside a link to the
    ``shared/`` folder the tests expect next to the checkout."""
    tree = into / ROOT.name
    for f in files:
        (tree / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, tree / f)
    shared = ROOT.parent / "shared"
    if shared.exists():
        (into / "shared").symlink_to(shared.resolve())
    return tree


def _env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree / "src") + os.pathsep + env.get("PYTHONPATH", "")
    # Never a bytecode cache: two mutants of one file can have the same size and mtime second.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # Only the plugins these modules use (the others cost seconds of start-up per mutant).
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], limit: float) -> int | None:
    """Run ``cmd`` in a process group of its own; None if it ran past ``limit`` (killed)."""
    with _LOCK:
        if _STOP.is_set():
            return None
        proc = subprocess.Popen(  # noqa: S603
            cmd,
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _RUNNING.add(proc)
    try:
        return proc.wait(limit)
    except subprocess.TimeoutExpired:
        return None
    finally:
        _kill(proc)
        with _LOCK:
            _RUNNING.discard(proc)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill the run and whatever it started (redis-server): its whole process group."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def pytest_cmd(tests: tuple[str, ...], junit: Path, timeout: float) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-o",
        "addopts=",
        "-p",
        "pytest_timeout",
        "-p",
        "_hypothesis_pytestplugin",
        "-p",
        "no:cacheprovider",
        f"--timeout={timeout:g}",
        "--timeout-method=signal",
        f"--junitxml={junit}",
        *tests,
    ]


def judge(code: int | None, junit: Path) -> tuple[str, str]:
    """(verdict, the first failure) from pytest's exit code and its JUnit report."""
    if code is None:
        return "timeout", "the run went past its hard limit"
    if code == 0:
        return "survived", ""
    try:
        cases = ET.parse(junit).getroot().iter("testcase")  # noqa: S314 - pytest's own report
    except (OSError, ET.ParseError):
        return "error", f"pytest exited {code} without a report"
    for case in cases:
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        for kind in ("failure", "error"):
            el = case.find(kind)
            if el is None:
                continue
            message = (el.get("message") or "").strip().splitlines()
            first = message[0] if message else ""
            if first.startswith("Failed: Timeout"):
                return "timeout", f"{name}: {first}"
            if kind == "error" or code != 1:
                return "error", f"{name}: {first}"
            return "killed", f"{name}: {first[:160]}"
    return "error", f"pytest exited {code} with no failing test"


def run_mutant(m: Mutant, tree: Path, timeout: float, limit: float) -> Outcome:
    target = tree / m.path
    original = target.read_text(encoding="utf-8")
    started = time.monotonic()
    junit = tree / f".mutant-{m.id}.xml"
    try:
        target.write_text(original.replace(m.old, m.new, 1), encoding="utf-8")
        code = _run(pytest_cmd(m.tests, junit, timeout), tree, _env(tree), limit)
        verdict, detail = judge(code, junit)
    finally:
        target.write_text(original, encoding="utf-8")
        junit.unlink(missing_ok=True)
    return Outcome(m, verdict, time.monotonic() - started, detail)


def imports_the_copy(tree: Path) -> str | None:
    """Why the tests in ``tree`` would not import its own package, or None."""
    probe = subprocess.run(
        [sys.executable, "-c", "import gme_recwatch; print(gme_recwatch.__file__)"],
        cwd=tree,
        env=_env(tree),
        capture_output=True,
        text=True,
    )
    if probe.stdout.strip().startswith(str(tree)):
        return None
    return f"the copy's package is not the one imported: {probe.stdout.strip() or probe.stderr}"


def baseline(tree: Path, tests: tuple[str, ...], timeout: float, limit: float) -> str | None:
    """Why the unmutated copy fails its tests, or None: a mutant can only be judged by tests
    that pass without it."""
    junit = tree / ".baseline.xml"
    code = _run(pytest_cmd(tests, junit, timeout), tree, _env(tree), limit)
    verdict, detail = judge(code, junit)
    return None if verdict == "survived" else f"{verdict}: {detail}"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--only", default="", help="ids to run (fnmatch patterns, comma-separated)")
    ap.add_argument("--jobs", type=int, default=1, help="mutants run at once, each in a copy")
    ap.add_argument("--timeout", type=float, default=60, help="pytest-timeout per test (s)")
    ap.add_argument("--limit", type=float, default=300, help="hard limit per mutant run (s)")
    ap.add_argument(
        "--tests", default="", help="run these test modules (comma-separated) instead of each mutant's own"
    )
    ap.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip checking that the unmutated copy passes the tests first (CI: `make test` just did)",
    )
    args = ap.parse_args(argv)

    problems = check_mutants()
    if problems:
        print("the mutant list does not fit the code:\n  " + "\n  ".join(problems))
        return 2
    patterns = [p for p in args.only.split(",") if p]
    chosen = [m for m in MUTANTS if not patterns or any(fnmatch.fnmatch(m.id, p) for p in patterns)]
    if args.tests:
        chosen = [replace(m, tests=tuple(t for t in args.tests.split(",") if t)) for m in chosen]
    if args.list:
        for m in chosen:
            print(f"{m.id:28} {m.path.rsplit('/', 1)[-1]:22} {m.what}")
        return 0
    if not chosen:
        print(f"no mutant matches {args.only!r}")
        return 2
    if shutil.which("redis-server") is None:  # the Lua copy runs in it: its mutants would skip
        print("redis-server is not installed (Debian package redis-server; make system-deps)")
        return 2

    # Ctrl-C, and a CI job's TERM or HUP, stop the run the same way: the test runs are killed
    # (they are in sessions of their own, so no signal reaches them otherwise) and the copies go.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    started = time.monotonic()
    files = _files()
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="gme-mutants-") as tmp:
        try:
            trees: Queue[Path] = Queue()
            jobs = max(1, min(args.jobs, len(chosen)))
            for i in range(jobs):
                (Path(tmp) / str(i)).mkdir()
                trees.put(make_copy(Path(tmp) / str(i), files))
            tree = trees.get()
            trees.put(tree)
            why = imports_the_copy(tree)
            if why:
                print(why)
                return 2
            if not args.no_baseline:
                tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
                why = baseline(tree, tests, args.timeout, args.limit)
                if why:
                    print(f"the tests fail without any mutant, so none can be judged: {why}")
                    return 2
                print(f"baseline: {' '.join(tests)} pass ({time.monotonic() - started:.0f} s)")

            def one(m: Mutant) -> Outcome | None:
                if _STOP.is_set():
                    return None
                tree = trees.get()
                try:
                    out = run_mutant(m, tree, args.timeout, args.limit)
                finally:
                    trees.put(tree)
                if not _STOP.is_set():
                    print(f"{out.verdict:9} {m.id:28} {out.seconds:5.1f} s  {out.detail}", flush=True)
                return out

            pool = ThreadPoolExecutor(jobs)
            try:
                outcomes = [o for o in pool.map(one, chosen) if o is not None]
            finally:
                # On Ctrl-C: stop what runs (each worker then puts its copy's file back) and
                # start nothing more, before the copies are deleted.
                _STOP.set()
                with _LOCK:
                    for proc in list(_RUNNING):
                        _kill(proc)
                pool.shutdown(wait=True, cancel_futures=True)
        except KeyboardInterrupt:
            print("interrupted: the real tree was never changed; the copies are deleted")
            return 130
    counts = {v: sum(o.verdict == v for o in outcomes) for v in ("killed", "survived", "timeout", "error")}
    print(
        f"\n{counts['killed']}/{len(outcomes)} mutants killed by a failing assertion"
        f" ({counts['survived']} survived, {counts['timeout']} timed out, {counts['error']}"
        f" errors) in {time.monotonic() - started:.0f} s"
    )
    for o in outcomes:
        if o.verdict != "killed":
            print(f"  {o.verdict}: {o.mutant.id} ({o.mutant.what})")
    return 0 if counts["killed"] == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
