"""The in-memory store's snapshot format: whole columns, versioned, in MessagePack.

Whole columns, free slots included (their key is None): dumping an array is a memcpy, where
gathering live slots one by one took over a second at a million segments. Receive-clock times
are written with the offset that turns them into wall time, so a restore in another process
(another monotonic clock) puts every deadline back where it was, the downtime counted.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Final

import msgspec

from ..lifecycle import split_key
from .columns import COLUMNS, SegmentTable

VERSION: Final = 2


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


class _Version(msgspec.Struct, array_like=True):
    version: int


@dataclass(slots=True)
class Loaded:
    """A decoded snapshot: the keys and the columns by name, all of one length."""

    mono_to_wall: float
    keys: list[str | None]
    columns: dict[str, array[int] | array[float]]


def encode(table: SegmentTable, wall_now: float, mono_now: float) -> bytes:
    return msgspec.msgpack.encode(_SnapshotV2(
        version=VERSION, wall_time=wall_now, mono_to_wall=wall_now - mono_now, keys=table.keys,
        **{name: getattr(table, name).tobytes() for name, _ in COLUMNS},
    ))


def decode(data: bytes) -> Loaded:
    """Decode and check a snapshot; raise ValueError, saying why, if it is not a valid one."""
    try:
        version = msgspec.msgpack.decode(data, type=_Version).version
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"not a gme-recwatch snapshot: {exc}") from None
    if version != VERSION:
        raise ValueError(f"unsupported snapshot version {version}")
    try:
        snap = msgspec.msgpack.decode(data, type=_SnapshotV2)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"not a gme-recwatch snapshot: {exc}") from None
    n = len(snap.keys)
    columns: dict[str, array[int] | array[float]] = {}
    for name, code in COLUMNS:
        col: array[int] | array[float] = array(code)
        try:
            col.frombytes(getattr(snap, name))
        except ValueError as exc:
            raise ValueError(f"snapshot column {name}: {exc}") from None
        if len(col) != n:
            raise ValueError(f"snapshot column {name} has {len(col)} rows, expected {n}")
        columns[name] = col
    for key in snap.keys:
        if key is not None:
            try:
                split_key(key)
            except ValueError:
                raise ValueError("snapshot holds a malformed segment key") from None
    return Loaded(snap.mono_to_wall, snap.keys, columns)
