"""The in-memory store's snapshot format: versioned MessagePack, whole columns.

Version 3 (written now) holds everything the store keeps -- the columns, the deadline queue's
buckets, the tallies, the eviction order -- so that a restore is a memcpy per column and per
bucket plus one dict rebuild, never a per-segment recomputation: a million segments come back
in a fraction of a second. Deadlines that fell due while the service was down are applied by
the first sweep after the restart, as if the sweep had only been late.

Times are kept on the store's receive clock together with the offset that turns it into wall
time; a restored store sets its own clock so that the old values stay valid (the downtime
counts against every deadline).

Version 3 snapshots may end with a clean-stop marker (``clean``), written only by the final
snapshot of a clean stop: without it a restart counts as one after a crash (a blind window
from the snapshot's ``wall_time``, :mod:`gme_recwatch.blind`). Snapshots written before the
marker existed lack it, and read as a crash's.

Version 2 (written until this change) holds the columns only; it is still read, more slowly,
by re-inserting each segment.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Final

import msgspec

from ..lifecycle import State, split_key
from .columns import COLUMNS, SegmentTable
from .tallies import TallyState

VERSION: Final = 3
READABLE: Final = (2, 3)


class _Version(msgspec.Struct, array_like=True):
    version: int


class _SnapshotV2(msgspec.Struct, array_like=True):
    version: int
    wall_time: float
    mono_to_wall: float  # add to the receive-clock columns to get wall-clock times
    keys: list[str | None]  # None for a free slot
    meta: bytes
    ts_start: bytes
    ts_complete: bytes
    ts_upload: bytes
    r_first: bytes
    r_complete: bytes
    expires: bytes


class SnapshotV3(_SnapshotV2):
    """Version 2's fields, then what makes a restore a memcpy."""

    deadlines: bytes  # the deadline queue's per-slot column
    buckets: dict[int, bytes]  # and its buckets: whole second -> slots
    terminal: list[str]  # uploaded segments, oldest first: the first evicted at capacity
    tallies: TallyState
    file_names: list[str] | None = None  # per slot, with COS checks on; older ones lack it
    clean: bool = False  # written by a clean stop (the final snapshot); older ones lack it
    blind: dict[str, tuple[float, float]] | None = None  # segments marked blind -> the window
    start_blind: dict[str, tuple[float, float]] | None = None  # starts that may be ours -> the window
    latest_blind: tuple[float, float] | None = None  # the latest blind window marked
    # Recording streams: stream -> (next SeqNo, mode, app, last heard, tail due, file, its SeqNo,
    # lowest SeqNo)
    streams: dict[str, tuple[int, int, int, float, float, str, int, int]] | None = None
    since: float | None = None  # tracking since (receive clock); older ones lack it


@dataclass(slots=True)
class Loaded:
    """A decoded snapshot of either version; ``v3`` is None for a version 2 one."""

    version: int
    wall_time: float  # when it was written
    clean: bool  # by a clean stop
    mono_to_wall: float
    keys: list[str | None]
    columns: dict[str, bytes]
    v3: SnapshotV3 | None


def encode(snap: SnapshotV3) -> bytes:
    return msgspec.msgpack.encode(snap)


def decode(data: bytes) -> Loaded:
    """Decode and check a snapshot; raise ValueError, saying why, if it is not a valid one."""
    try:
        version = msgspec.msgpack.decode(data, type=_Version).version
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"not a gme-recwatch snapshot: {exc}") from None
    if version not in READABLE:
        raise ValueError(
            f"unsupported snapshot version {version} (this version reads {', '.join(map(str, READABLE))})"
        )
    kind: type[SnapshotV3] | type[_SnapshotV2] = SnapshotV3 if version == 3 else _SnapshotV2
    try:
        snap = msgspec.msgpack.decode(data, type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"not a gme-recwatch snapshot: {exc}") from None
    n = len(snap.keys)
    columns = {}
    for name, code in COLUMNS:
        raw = getattr(snap, name)
        if len(raw) != n * array(code).itemsize:
            raise ValueError(f"snapshot column {name} has {len(raw)} bytes for {n} rows")
        columns[name] = raw
    if isinstance(snap, SnapshotV3):
        _check_v3(snap, n)
    else:
        for key in snap.keys:
            if key is not None:
                try:
                    split_key(key)
                except ValueError:
                    raise ValueError("snapshot holds a malformed segment key") from None
    return Loaded(
        version,
        snap.wall_time,
        isinstance(snap, SnapshotV3) and snap.clean,
        snap.mono_to_wall,
        snap.keys,
        columns,
        snap if isinstance(snap, SnapshotV3) else None,
    )


def _check_v3(snap: SnapshotV3, n: int) -> None:
    # Cheap checks of what a restore would otherwise trust: sizes and bounds, not every key.
    if len(snap.deadlines) != 8 * n:
        raise ValueError(f"snapshot deadlines have {len(snap.deadlines)} bytes for {n} rows")
    for sec, raw in snap.buckets.items():
        if len(raw) % 8:
            raise ValueError(f"snapshot bucket {sec} is not whole slots")
        if raw and max(array("q", raw)) >= n:
            raise ValueError(f"snapshot bucket {sec} names a slot beyond {n}")
    t = snap.tallies
    apps = len(t.labels)
    per_app = (
        t.active,
        t.active_rooms,
        t.stuck,
        t.stuck_total,
        t.missing,
        t.missing_total,
        t.completed_total,
        t.starts,
    )
    if any(len(col) != apps for col in per_app) or not 6 <= len(t.by_state) <= len(State):
        raise ValueError("snapshot tallies do not match its apps")
    meta = array("q", snap.meta)
    top = max(meta) if meta else 0
    if top >= 1 << 56:  # some hold a COS check in the top bits: look at each (slower)
        top = max(SegmentTable.meta_app(m) for m in meta) << 9
    if meta and top >> 9 >= max(apps, 1):
        raise ValueError("snapshot holds a segment of an app it does not list")
    if snap.file_names is not None and len(snap.file_names) != n:
        raise ValueError(f"snapshot has {len(snap.file_names)} file names for {n} rows")
