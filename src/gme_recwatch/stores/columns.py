"""Segment storage for the in-memory store: one slot per segment across typed columns.

A million segments are the design point. One object per segment with ``__slots__`` would cost
about 1.4x these columns (measured: benchmarks/memory.py), and the columns make a snapshot a
memcpy per column. Per slot:

* ``meta``: the packed small fields (events seen, state, record mode, the start-lost mark, the
  app label index, and in the top bits the COS check and the events found lost); read and
  written only through the accessors below.
* ``ts_start`` / ``ts_complete`` / ``ts_upload``: the sender's Timestamps (durations).
* ``r_first`` / ``r_complete``: when we received the first event and the completion
  (deadlines), on the store's monotonic clock.
* ``expires``: when the segment is forgotten (retention), on the same clock.

Beside the columns, ``file_names``: each segment's FileName, kept only when files are looked
up in COS (otherwise every entry is the one empty string).
"""

from __future__ import annotations

from array import array
from typing import Final

from ..events import RecordMode
from ..lifecycle import SEEN_STARTED, Check, State

# Layout of `meta`: bits 0-2 events seen, 3-5 state, 6-7 record mode, 8 start lost, 9+ app.
_SEEN_MASK: Final = 0b111
_STATE_SHIFT: Final = 3
_STATE_MASK: Final = 0b111 << _STATE_SHIFT
_MODE_SHIFT: Final = 6
_MODE_MASK: Final = 0b11 << _MODE_SHIFT
_START_LOST: Final = 1 << 8
_APP_SHIFT: Final = 9
# The top bits, clear in snapshots written before COS checks: the check, and the lost events.
_CHECK_SHIFT: Final = 56
_CHECK_MASK: Final = 0b11 << _CHECK_SHIFT
_LOST_SHIFT: Final = 57  # the `seen` bits of completed (2) and uploaded (4) land on 58 and 59
_LOST_MASK: Final = 0b110 << _LOST_SHIFT
_APP_MASK: Final = (1 << (_CHECK_SHIFT - _APP_SHIFT)) - 1
# Above them, clear in snapshots written before unannounced segments: the state's fourth bit
# (states 8 and up), and a start found lost (an unannounced segment whose file was found).
_STATE_HIGH: Final = 1 << 60
_LOST_START: Final = 1 << 61
_CHECKS: Final = tuple(Check)
_STATES: Final = tuple(State)
_MODES: Final = tuple(RecordMode)

COLUMNS: Final = (
    ("meta", "q"),
    ("ts_start", "q"),
    ("ts_complete", "q"),
    ("ts_upload", "q"),
    ("r_first", "d"),
    ("r_complete", "d"),
    ("expires", "d"),
)


class SegmentTable:
    """Typed columns indexed by slot; freed slots are reused."""

    __slots__ = (
        "_free",
        "expires",
        "file_names",
        "keys",
        "meta",
        "r_complete",
        "r_first",
        "ts_complete",
        "ts_start",
        "ts_upload",
    )

    def __init__(self) -> None:
        self.keys: list[str | None] = []  # None marks a free slot
        self.file_names: list[str] = []
        self._free = array("q")
        self.meta = array("q")
        self.ts_start = array("q")
        self.ts_complete = array("q")
        self.ts_upload = array("q")
        self.r_first = array("d")
        self.r_complete = array("d")
        self.expires = array("d")

    def __len__(self) -> int:
        """Slots, free ones included."""
        return len(self.keys)

    @classmethod
    def from_columns(cls, keys: list[str | None], columns: dict[str, bytes]) -> SegmentTable:
        """A table holding whole columns read back from a snapshot (a memcpy each)."""
        t = cls()
        t.keys = keys
        t.file_names = [""] * len(keys)
        for name, _ in COLUMNS:
            getattr(t, name).frombytes(columns[name])
        t._free = array("q", [i for i, k in enumerate(keys) if k is None])
        return t

    def allocate(self, key: str, app: int, mode: RecordMode, now: float, expires: float) -> int:
        """A slot for a new segment that has seen nothing yet, received ``now``."""
        if self._free:
            slot = self._free.pop()
            self.keys[slot] = key
            self.file_names[slot] = ""
        else:
            slot = len(self.keys)
            self.keys.append(key)
            self.file_names.append("")
            for col in (self.meta, self.ts_start, self.ts_complete, self.ts_upload):
                col.append(0)
            for dcol in (self.r_first, self.r_complete, self.expires):
                dcol.append(0.0)
        self.meta[slot] = (app << _APP_SHIFT) | (mode << _MODE_SHIFT)
        self.ts_start[slot] = self.ts_complete[slot] = self.ts_upload[slot] = 0
        self.r_first[slot] = self.r_complete[slot] = now
        self.expires[slot] = expires
        return slot

    def release(self, slot: int) -> None:
        self.keys[slot] = None
        self.file_names[slot] = ""
        self._free.append(slot)

    # ------------------------------------------------------------ the packed fields

    def seen(self, slot: int) -> int:
        return self.meta[slot] & _SEEN_MASK

    def set_seen(self, slot: int, seen: int) -> None:
        self.meta[slot] = (self.meta[slot] & ~_SEEN_MASK) | seen

    def state(self, slot: int) -> State:
        m = self.meta[slot]
        return _STATES[((m & _STATE_MASK) >> _STATE_SHIFT) | (8 if m & _STATE_HIGH else 0)]

    def set_state(self, slot: int, state: State) -> None:
        m = self.meta[slot] & ~(_STATE_MASK | _STATE_HIGH)
        self.meta[slot] = m | ((state & 7) << _STATE_SHIFT) | (_STATE_HIGH if state & 8 else 0)

    def mode(self, slot: int) -> RecordMode:
        return _MODES[(self.meta[slot] & _MODE_MASK) >> _MODE_SHIFT]

    def app(self, slot: int) -> int:
        return (self.meta[slot] >> _APP_SHIFT) & _APP_MASK

    def check(self, slot: int) -> Check:
        return _CHECKS[(self.meta[slot] & _CHECK_MASK) >> _CHECK_SHIFT]

    def set_check(self, slot: int, check: Check) -> None:
        self.meta[slot] = (self.meta[slot] & ~_CHECK_MASK) | (check << _CHECK_SHIFT)

    def lost(self, slot: int) -> int:
        """The events (as `seen` bits) whose callbacks were lost: found in COS instead."""
        m = self.meta[slot]
        return ((m & _LOST_MASK) >> _LOST_SHIFT) | (SEEN_STARTED if m & _LOST_START else 0)

    def set_lost(self, slot: int, lost: int) -> None:
        m = self.meta[slot] & ~(_LOST_MASK | _LOST_START)
        start = _LOST_START if lost & SEEN_STARTED else 0
        self.meta[slot] = m | ((lost & ~SEEN_STARTED) << _LOST_SHIFT) | start

    def start_lost(self, slot: int) -> bool:
        return bool(self.meta[slot] & _START_LOST)

    def mark_start_lost(self, slot: int) -> None:
        self.meta[slot] |= _START_LOST

    def restore_meta(self, slot: int, meta: int) -> None:
        """Take the events seen, the start-lost mark, the check and the lost events of a
        snapshot's ``meta``; the state is derived anew, and the app and mode are the ones
        :meth:`allocate` was given."""
        kept = _SEEN_MASK | _START_LOST | _CHECK_MASK | _LOST_MASK | _LOST_START
        self.meta[slot] = (self.meta[slot] & ~kept) | (meta & kept)

    @staticmethod
    def meta_app(meta: int) -> int:
        """The app label index packed in a ``meta`` value read from a snapshot."""
        return (meta >> _APP_SHIFT) & _APP_MASK

    @staticmethod
    def meta_mode(meta: int) -> RecordMode:
        """The record mode packed in a ``meta`` value read from a snapshot."""
        return _MODES[(meta & _MODE_MASK) >> _MODE_SHIFT]
