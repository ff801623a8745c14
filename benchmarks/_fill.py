"""Shared by the in-process benchmarks: realistic segment events for filling a store."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

from gme_recwatch.events import COMPLETED, STARTED, UPLOADED, Event

BIZ = 1400000000
TASK0 = 446946705284000000
USERS_PER_ROOM = 4
STATE_MIX = (
    ("recording", (STARTED,)),
    ("completed", (STARTED, COMPLETED)),
    ("uploaded", (STARTED, COMPLETED, UPLOADED)),
)


def events(n: int, lifecycle: tuple[int, ...] = (STARTED,), ts0: int = 1_700_000_000) -> Iterator[Event]:
    """Events taking ``n`` segments through ``lifecycle``; 4 users a room, one task a room."""
    for i in range(n):
        room = i // USERS_PER_ROOM
        for et in lifecycle:
            yield Event(
                biz_id=BIZ,
                room_id=f"room-{room:07d}",
                user_id=f"user-{i % USERS_PER_ROOM}-{room}",
                task_id=TASK0 + room,
                seq_no=0,
                event_type=et,
                record_mode=0,
                timestamp=ts0 + 60 * (et - 1),
                file_name="",
            )


def mixed_events(start: int, n: int) -> Iterator[Event]:
    """Segments start..start+n: half left recording, a quarter completed, a quarter uploaded."""
    for i in range(start, start + n):
        room = i // USERS_PER_ROOM
        life = (
            (STARTED,) if i % 4 < 2 else (STARTED, COMPLETED) if i % 4 == 2 else (STARTED, COMPLETED, UPLOADED)
        )
        for et in life:
            yield Event(
                biz_id=BIZ,
                room_id=f"room-{room:07d}",
                user_id=f"user-{i % USERS_PER_ROOM}-{room}",
                task_id=TASK0 + room,
                seq_no=0,
                event_type=et,
                record_mode=i % 2,
                timestamp=1_700_000_000 + 60 * (et - 1),
                file_name="",
            )


def machine() -> dict[str, object]:
    model = next(
        (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "unknown"
    )
    return {"nproc": os.cpu_count(), "cpu": model, "python": sys.version.split()[0]}


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
