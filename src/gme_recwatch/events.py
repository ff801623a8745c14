"""The callback wire format: msgspec Structs, decoding and validation.

Decoding happens only after the signature holds. ``TaskID`` stays an exact Python int (it
exceeds 2^53, so it must never pass through a float). Unknown fields are ignored. An
unknown ``EventType`` decodes to :class:`UnknownEvent` without requiring the other fields,
so that a new event type from Tencent is answered 200 instead of causing retry storms.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Annotated, Final, Literal

import msgspec
from msgspec import UNSET, Meta, Raw, Struct, UnsetType

STARTED: Final = 1
COMPLETED: Final = 2
UPLOADED: Final = 3
EVENT_NAMES: Final = {STARTED: "started", COMPLETED: "completed", UPLOADED: "uploaded"}


class RecordMode(IntEnum):
    """Tencent's ``RecordMode``, with anything unexpected kept apart as ``unknown``."""

    SINGLE = 0
    MIXED = 1
    UNKNOWN = 2

    @classmethod
    def of(cls, wire: int) -> RecordMode:
        return cls(wire) if wire in (0, 1) else cls.UNKNOWN

    @property
    def label(self) -> str:
        return MODE_NAMES[self]


MODE_NAMES: Final[tuple[str, ...]] = tuple(m.name.lower() for m in RecordMode)

# Why a callback was refused before its signature was even looked at, or after it held:
# the body is not a callback, it is too large, or its Timestamp is outside the replay window.
InvalidReason = Literal["malformed", "too_large", "stale"]
# Why a request that failed verification is noise rather than a sender: no body, not JSON, JSON
# but not a callback (a required field missing or invalid, no BizID), or a BizID with no key.
NoiseReason = Literal["empty", "not_json", "not_a_callback", "unknown_app"]

# Bounds that keep one hostile-but-signed body from costing unbounded memory.
MAX_ID_LENGTH: Final = 256
_I64: Final = 2**63 - 1  # ids and times are stored in int64 columns

_Id = Annotated[str, Meta(min_length=1, max_length=MAX_ID_LENGTH)]
_Count = Annotated[int, Meta(ge=0, le=_I64)]
# A Unix time up to the year 9999: anything later is garbage, and would break date formatting.
MAX_TIMESTAMP: Final = 253402300799
_Time = Annotated[int, Meta(ge=0, le=MAX_TIMESTAMP)]


class MalformedCallback(ValueError):
    """The body is not a well-formed callback; the message says which field and why."""


# A SeqNo the Redis script holds exactly (its numbers are doubles): far beyond any real segment
# count (one a few seconds for a century is under 2**31).
MAX_SEQ_NO: Final = 2**53 - 1
_SeqNo = Annotated[int, Meta(ge=0, le=MAX_SEQ_NO)]


class _Detail(Struct):
    SeqNo: _SeqNo
    FileName: Annotated[str, Meta(max_length=4096)] = ""


class _Wire(Struct):
    EventType: int
    BizID: _Count | UnsetType = UNSET
    RoomID: _Id | UnsetType = UNSET
    UserID: _Id | UnsetType = UNSET
    TaskID: _Count | UnsetType = UNSET
    RecordMode: int | UnsetType = UNSET
    Timestamp: _Time | UnsetType = UNSET
    Detail: Raw | UnsetType = UNSET


class _BizOnly(Struct):
    BizID: int | None = None


class Event(Struct, frozen=True, gc=False):
    """A verified, decoded recording event (1 started, 2 completed, 3 uploaded)."""

    biz_id: int
    room_id: str
    user_id: str
    task_id: int
    seq_no: int
    event_type: int
    record_mode: int
    timestamp: int
    file_name: str = ""

    @property
    def event_name(self) -> str:
        return EVENT_NAMES[self.event_type]

    @property
    def record_mode_name(self) -> str:
        return MODE_NAMES[RecordMode.of(self.record_mode)]


class UnknownEvent(Struct, frozen=True, gc=False):
    """A verified callback whose EventType this version does not know; acknowledged, counted."""

    event_type: int
    biz_id: int | None = None


_wire_decoder = msgspec.json.Decoder(_Wire)
_detail_decoder = msgspec.json.Decoder(_Detail)
_biz_decoder = msgspec.json.Decoder(_BizOnly)
_REQUIRED = ("BizID", "RoomID", "UserID", "TaskID", "RecordMode", "Timestamp", "Detail")


def peek_biz_id(body: bytes) -> int | None:
    """BizID, only to choose which key to verify with; never trusted beyond that."""
    try:
        return _biz_decoder.decode(body).BizID
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError):
        return None


def decode(body: bytes) -> Event | UnknownEvent:
    """Decode a verified body, or raise :class:`MalformedCallback`."""
    try:
        wire = _wire_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise MalformedCallback(str(exc)) from None
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise MalformedCallback(f"invalid JSON: {exc}") from None
    if wire.EventType not in EVENT_NAMES:
        return UnknownEvent(wire.EventType, None if wire.BizID is UNSET else wire.BizID)
    missing = [name for name in _REQUIRED if getattr(wire, name) is UNSET]
    if missing:
        raise MalformedCallback("missing required field(s): " + ", ".join(missing))
    assert not isinstance(wire.Detail, UnsetType)
    try:
        detail = _detail_decoder.decode(wire.Detail)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise MalformedCallback(f"Detail: {exc}") from None
    for name in ("RoomID", "UserID"):
        if "\x00" in getattr(wire, name):
            raise MalformedCallback(f"{name} contains a NUL character")
    return Event(
        biz_id=wire.BizID,  # type: ignore[arg-type]
        room_id=wire.RoomID,  # type: ignore[arg-type]
        user_id=wire.UserID,  # type: ignore[arg-type]
        task_id=wire.TaskID,  # type: ignore[arg-type]
        seq_no=detail.SeqNo,
        event_type=wire.EventType,
        record_mode=wire.RecordMode,  # type: ignore[arg-type]
        timestamp=wire.Timestamp,  # type: ignore[arg-type]
        file_name=detail.FileName,
    )


# The room `gme-recwatch canary` sends from. A verified callback for it proves the public path
# (DNS, Ingress, TLS, the listener, the key) works; it is counted apart and never tracked.
CANARY_ROOM_ID: Final = "__gme_recwatch_canary__"


def canary_callback(biz_id: int, timestamp: int) -> bytes:
    """The synthetic callback ``gme-recwatch canary`` sends: a start in the canary room."""
    return encode_callback(
        biz_id=biz_id,
        room_id=CANARY_ROOM_ID,
        user_id="canary",
        task_id=0,
        seq_no=0,
        event_type=STARTED,
        record_mode=1,
        timestamp=timestamp,
        file_name="",
    )


def encode_callback(
    *,
    biz_id: int,
    room_id: str,
    user_id: str,
    task_id: int,
    seq_no: int,
    event_type: int,
    record_mode: int,
    timestamp: int,
    file_name: str = "",
) -> bytes:
    """A body in Tencent's layout (field order of the sample callback), for `send` and tests."""
    return msgspec.json.encode(
        {
            "BizID": biz_id,
            "RoomID": room_id,
            "UserID": user_id,
            "TaskID": task_id,
            "RecordMode": record_mode,
            "Timestamp": timestamp,
            "EventType": event_type,
            "Detail": {"SeqNo": seq_no, "FileName": file_name},
        }
    )
