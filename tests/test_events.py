"""The callback wire format: decoding, validation, unknown event types, encoding."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import load_vectors
from hypothesis import given
from hypothesis import strategies as st

from gme_recwatch.events import (
    COMPLETED,
    MAX_ID_LENGTH,
    MAX_SEQ_NO,
    MAX_TIMESTAMP,
    STARTED,
    UPLOADED,
    Event,
    MalformedCallback,
    UnknownEvent,
    decode,
    encode_callback,
    peek_biz_id,
)

VECTORS: list[dict[str, Any]] = load_vectors()
BY_NAME = {v["name"]: v for v in VECTORS}
TASK_ID = 446946705284000000
FILE_NAME = "1400000000_100_999/2023-02-09-16-16-45_446946705284000000_audio.mp3"
I64_MAX = 2**63 - 1

vector_params = pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])


def _vector_body(name: str) -> bytes:
    return str(BY_NAME[name]["body"]).encode("utf-8")


def _fields(**changes: Any) -> dict[str, Any]:
    """The event1 vector's fields as a dict, with ``changes`` applied (``...`` deletes)."""
    fields: dict[str, Any] = json.loads(_vector_body("event1"))
    for name, value in changes.items():
        if value is ...:
            del fields[name]
        else:
            fields[name] = value
    return fields


def _body(**changes: Any) -> bytes:
    return json.dumps(_fields(**changes)).encode("utf-8")


def _malformed(body: bytes) -> str:
    with pytest.raises(MalformedCallback) as info:
        decode(body)
    return str(info.value)


# --- the shared vectors -----------------------------------------------------------------


@vector_params
def test_vector_body_decodes_to_an_event_with_the_exact_task_id(vector: dict[str, Any]) -> None:
    ev = decode(str(vector["body"]).encode("utf-8"))
    assert isinstance(ev, Event)
    assert type(ev.task_id) is int
    assert ev.task_id == TASK_ID
    assert ev.task_id == 446946705284000000
    assert ev.biz_id == 1400000000
    assert ev.seq_no == 0
    assert ev.record_mode == 1
    assert ev.record_mode_name == "mixed"
    assert ev.file_name == FILE_NAME


def test_event1_vector_is_a_started_event() -> None:
    ev = decode(_vector_body("event1"))
    assert ev == Event(
        biz_id=1400000000,
        room_id="100",
        user_id="999",
        task_id=TASK_ID,
        seq_no=0,
        event_type=STARTED,
        record_mode=1,
        timestamp=1675930605,
        file_name=FILE_NAME,
    )
    assert isinstance(ev, Event) and ev.event_name == "started"


@pytest.mark.parametrize(
    ("name", "event_type", "event_name", "timestamp"),
    [
        ("event1", STARTED, "started", 1675930605),
        ("event2", COMPLETED, "completed", 1675934205),
        ("event3", UPLOADED, "uploaded", 1675934265),
    ],
)
def test_lifecycle_vectors_decode_to_their_event_types(
    name: str,
    event_type: int,
    event_name: str,
    timestamp: int,
) -> None:
    ev = decode(_vector_body(name))
    assert isinstance(ev, Event)
    assert ev.event_type == event_type
    assert ev.event_name == event_name
    assert ev.timestamp == timestamp
    assert (ev.room_id, ev.user_id) == ("100", "999")


def test_utf8_ids_vector_keeps_its_chinese_room_and_user_ids() -> None:
    ev = decode(_vector_body("utf8_ids"))
    assert isinstance(ev, Event)
    assert ev.room_id == "房间-7"
    assert ev.user_id == "玩家42"
    assert ev.task_id == TASK_ID


def test_pretty_printed_body_decodes_like_the_compact_one() -> None:
    assert b"\n" in _vector_body("pretty_printed_body")
    assert decode(_vector_body("pretty_printed_body")) == decode(_vector_body("event1"))


# --- exact integers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task_id",
    [
        9007199254740993,  # 2^53 + 1: the first integer a float64 cannot hold
        2**53 + 3,
        I64_MAX,
        0,
    ],
)
def test_task_id_beyond_float_precision_round_trips_exactly(task_id: int) -> None:
    ev = decode(_body(TaskID=task_id))
    assert isinstance(ev, Event)
    assert ev.task_id == task_id
    assert type(ev.task_id) is int


def test_task_id_written_literally_in_the_body_is_kept_exactly() -> None:
    body = _vector_body("event1").replace(b"446946705284000000,", b"9007199254740993,")
    ev = decode(body)
    assert isinstance(ev, Event)
    assert ev.task_id == 9007199254740993


# --- tolerance: unknown fields and event types ------------------------------------------------


def test_unknown_extra_fields_are_ignored() -> None:
    fields = _fields(NewField="x", Extra={"nested": [1, 2, {"a": None}]}, Version=2.5)
    fields["Detail"]["Duration"] = 12.5
    fields["Detail"]["Size"] = {"bytes": 1}
    assert decode(json.dumps(fields).encode()) == decode(_vector_body("event1"))


@pytest.mark.parametrize("event_type", [0, 4, 99, -1, 2**40])
def test_unknown_event_type_decodes_to_unknown_event(event_type: int) -> None:
    ev = decode(_body(EventType=event_type))
    assert ev == UnknownEvent(event_type=event_type, biz_id=1400000000)


@pytest.mark.parametrize("event_type", [0, 4, 99])
def test_unknown_event_type_needs_no_other_fields(event_type: int) -> None:
    ev = decode(json.dumps({"EventType": event_type}).encode())
    assert ev == UnknownEvent(event_type=event_type, biz_id=None)


def test_unknown_event_type_keeps_the_biz_id_when_given() -> None:
    ev = decode(b'{"EventType":4,"BizID":1400000123,"Something":"new"}')
    assert isinstance(ev, UnknownEvent)
    assert ev.biz_id == 1400000123
    assert ev.event_type == 4


def test_unknown_event_type_with_a_different_detail_shape_is_acknowledged() -> None:
    ev = decode(_body(EventType=4, Detail={"Whatever": [1, 2]}))
    assert isinstance(ev, UnknownEvent)


def test_record_mode_zero_is_single_stream_and_others_unknown() -> None:
    single = decode(_body(RecordMode=0))
    other = decode(_body(RecordMode=7))
    assert isinstance(single, Event) and single.record_mode_name == "single"
    assert isinstance(other, Event) and other.record_mode_name == "unknown"


def test_file_name_may_be_absent_from_detail() -> None:
    ev = decode(_body(Detail={"SeqNo": 3}))
    assert isinstance(ev, Event)
    assert ev.seq_no == 3
    assert ev.file_name == ""


# --- missing and mistyped fields -----------------------------------------------------------


@pytest.mark.parametrize("field", ["BizID", "RoomID", "UserID", "TaskID", "RecordMode", "Timestamp", "Detail"])
def test_missing_required_field_is_malformed_and_named(field: str) -> None:
    message = _malformed(_body(**{field: ...}))
    assert field in message


def test_every_missing_field_is_named_at_once() -> None:
    message = _malformed(b'{"EventType":2,"BizID":1}')
    for field in ("RoomID", "UserID", "TaskID", "RecordMode", "Timestamp", "Detail"):
        assert field in message
    assert "BizID" not in message


def test_missing_event_type_is_malformed_and_named() -> None:
    assert "EventType" in _malformed(_body(EventType=...))


def test_missing_seq_no_in_detail_is_malformed_and_named() -> None:
    message = _malformed(_body(Detail={"FileName": "x.mp3"}))
    assert "SeqNo" in message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("RoomID", 100),
        ("RoomID", None),
        ("RoomID", ["100"]),
        ("UserID", 999),
        ("TaskID", "446946705284000000"),
        ("TaskID", 1.5),
        ("TaskID", 446946705284000000.0),
        ("TaskID", -1),
        ("TaskID", I64_MAX + 1),
        ("BizID", "1400000000"),
        ("BizID", I64_MAX + 1),
        ("BizID", 2**64),
        ("BizID", 2**70),
        ("BizID", -1),
        ("Timestamp", -1),
        ("Timestamp", 1675930605.5),
        ("Timestamp", "1675930605"),
        ("RecordMode", "1"),
        ("RecordMode", 1.0),
        ("EventType", "1"),
        ("EventType", 1.0),
        ("EventType", True),
        ("EventType", None),
        ("Detail", "SeqNo=0"),
        ("Detail", None),
        ("Detail", [0]),
    ],
)
def test_wrongly_typed_field_is_malformed_and_named(field: str, value: Any) -> None:
    message = _malformed(_body(**{field: value}))
    assert field in message


@pytest.mark.parametrize("literal", [b"1e3", b"1E3", b"1.0", b"1.5", b"-0.0", b"4.469467052840000e17"])
def test_task_id_written_as_a_json_float_is_malformed(literal: bytes) -> None:
    body = _vector_body("event1").replace(b"446946705284000000,", literal + b",")
    assert "TaskID" in _malformed(body)


@pytest.mark.parametrize("value", [-1, 1.5, "0", None, I64_MAX + 1])
def test_wrongly_typed_seq_no_is_malformed_and_named(value: Any) -> None:
    message = _malformed(_body(Detail={"SeqNo": value, "FileName": "x"}))
    assert "SeqNo" in message


def test_file_name_of_wrong_type_is_malformed() -> None:
    assert "FileName" in _malformed(_body(Detail={"SeqNo": 0, "FileName": 5}))


@pytest.mark.parametrize("field", ["RoomID", "UserID"])
def test_empty_id_is_malformed(field: str) -> None:
    assert field in _malformed(_body(**{field: ""}))


@pytest.mark.parametrize("field", ["RoomID", "UserID"])
def test_overlong_id_is_malformed(field: str) -> None:
    assert field in _malformed(_body(**{field: "x" * (MAX_ID_LENGTH + 1)}))
    ev = decode(_body(**{field: "x" * MAX_ID_LENGTH}))
    assert isinstance(ev, Event)


def test_largest_int64_ids_are_accepted() -> None:
    ev = decode(_body(BizID=I64_MAX, TaskID=I64_MAX, Detail={"SeqNo": MAX_SEQ_NO}))
    assert isinstance(ev, Event)
    assert (ev.biz_id, ev.task_id, ev.seq_no) == (I64_MAX, I64_MAX, MAX_SEQ_NO)


def test_a_seqno_beyond_what_the_redis_script_holds_exactly_is_malformed() -> None:
    """The Redis script's numbers are doubles: a SeqNo above 2**53 - 1 would name another
    segment's key there (and be written 1e+14 in a key); no real task has that many segments."""
    assert "SeqNo" in _malformed(_body(Detail={"SeqNo": MAX_SEQ_NO + 1}))
    assert "SeqNo" in _malformed(_body(Detail={"SeqNo": I64_MAX}))


def test_timestamp_is_accepted_up_to_the_year_9999_and_malformed_beyond() -> None:
    ev = decode(_body(Timestamp=MAX_TIMESTAMP))
    assert isinstance(ev, Event) and ev.timestamp == MAX_TIMESTAMP
    assert "Timestamp" in _malformed(_body(Timestamp=MAX_TIMESTAMP + 1))
    assert "Timestamp" in _malformed(_body(Timestamp=I64_MAX))


@pytest.mark.parametrize("field", ["RoomID", "UserID"])
@pytest.mark.parametrize("value", ["\x00", "100\x00", "\x00100", "1\x000"])
def test_nul_character_in_an_id_is_malformed_and_named(field: str, value: str) -> None:
    message = _malformed(_body(**{field: value}))
    assert field in message
    assert "NUL" in message


# --- bodies that are not a callback at all ----------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b" ",
        b"not json",
        b"{",
        b'{"EventType":1',
        b"[]",
        b"[1,2,3]",
        b"null",
        b"true",
        b"1",
        b'"a string"',
        b"\xff\xfe\x00",
        b'{"EventType":1}{"EventType":1}',
        b'{"EventType":1,}',
        b"{'EventType': 1}",
        b'{"EventType":NaN}',
        b'{"EventType":1,"RoomID":"\\ud800"}',
    ],
)
def test_body_that_is_not_a_json_object_is_malformed(body: bytes) -> None:
    _malformed(body)


def test_json_array_body_says_it_expected_an_object() -> None:
    assert "object" in _malformed(_vector_body("event1").join([b"[", b"]"]))


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _with_extra(value: bytes) -> list[bytes]:
    """Bodies that carry ``value`` in an unknown field, at the top level and inside Detail."""
    return [
        b'{"EventType":1,"Extra":' + value + b"}",
        b'{"Extra":' + value + b',"EventType":4}',
        _vector_body("event1")[:-1] + b',"Extra":' + value + b"}",
        _vector_body("event1")[:-2] + b',"Extra":' + value + b"}}",
    ]


def test_shallow_nesting_in_unknown_fields_is_ignored() -> None:
    bodies = _with_extra(_nested(50))
    assert "missing" in _malformed(bodies[0])
    assert isinstance(decode(bodies[1]), UnknownEvent)
    assert decode(bodies[2]) == decode(bodies[3]) == decode(_vector_body("event1"))


@pytest.mark.parametrize("depth", [10_000, 200_000])
def test_deeply_nested_json_is_malformed_and_nothing_else(depth: int) -> None:
    _malformed(_nested(depth))
    _malformed(b'{"a":' * depth + b"1" + b"}" * depth)
    for body in _with_extra(_nested(depth)):
        _malformed(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"EventType":1,"RoomID":"\xff"}',
        b'{"EventType":4,"RoomID":"\xff"}',
        b'{"BizID":1400000000,"RoomID":"100","UserID":"\xc3","TaskID":1,"RecordMode":1,'
        b'"Timestamp":1,"EventType":1,"Detail":{"SeqNo":0}}',
        b'{"BizID":1400000000,"RoomID":"100","UserID":"999","TaskID":1,"RecordMode":1,'
        b'"Timestamp":1,"EventType":1,"Detail":{"SeqNo":0,"FileName":"\xed\xa0\x80"}}',
    ],
)
def test_invalid_utf8_inside_a_string_is_malformed(body: bytes) -> None:
    # A signed body with bad UTF-8 must be answered as malformed (400), not crash the handler.
    _malformed(body)


@given(st.binary(max_size=300))
def test_decode_of_arbitrary_bytes_raises_only_malformed_callback(body: bytes) -> None:
    try:
        ev = decode(body)
    except MalformedCallback:
        return
    assert isinstance(ev, (Event, UnknownEvent))


# Only what JSON can say: json.dumps writes infinities as `Infinity`, which is not JSON, and
# a body that is not JSON says nothing about how decoding treats a JSON object. Few leaves keep
# generation cheap on a loaded 2-core machine (a slow-generation health check once failed CI).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
field_names = st.sampled_from(
    ["BizID", "RoomID", "UserID", "TaskID", "RecordMode", "Timestamp", "EventType", "Detail", "X"]
)


@given(st.dictionaries(field_names, json_values, max_size=8))
def test_decode_of_arbitrary_json_objects_raises_only_malformed_callback(obj: dict[str, Any]) -> None:
    try:
        ev = decode(json.dumps(obj, allow_nan=False).encode())
    except MalformedCallback:
        return
    assert isinstance(ev, (Event, UnknownEvent))


def test_malformed_callback_is_a_value_error() -> None:
    assert issubclass(MalformedCallback, ValueError)


# --- encode_callback ---------------------------------------------------------------------


def test_encode_callback_reproduces_the_vector_body_byte_for_byte() -> None:
    body = encode_callback(
        biz_id=1400000000,
        room_id="100",
        user_id="999",
        task_id=TASK_ID,
        seq_no=0,
        event_type=STARTED,
        record_mode=1,
        timestamp=1675930605,
        file_name=FILE_NAME,
    )
    assert body == _vector_body("event1")


def test_encode_callback_writes_utf8_ids_unescaped() -> None:
    body = encode_callback(
        biz_id=1400000000,
        room_id="房间-7",
        user_id="玩家42",
        task_id=TASK_ID,
        seq_no=0,
        event_type=STARTED,
        record_mode=1,
        timestamp=1675930605,
        file_name=FILE_NAME,
    )
    assert body == _vector_body("utf8_ids")


ids = st.text(min_size=1, max_size=MAX_ID_LENGTH).filter(lambda s: "\x00" not in s)
int64s = st.integers(min_value=0, max_value=I64_MAX)


@given(
    biz_id=int64s,
    room_id=ids,
    user_id=ids,
    task_id=int64s,
    seq_no=st.integers(0, MAX_SEQ_NO),
    event_type=st.sampled_from([STARTED, COMPLETED, UPLOADED]),
    record_mode=st.integers(min_value=-(2**63), max_value=I64_MAX),
    timestamp=st.integers(min_value=0, max_value=MAX_TIMESTAMP),
    file_name=st.text(max_size=200),
)
def test_encode_callback_output_decodes_to_the_same_values(
    biz_id: int,
    room_id: str,
    user_id: str,
    task_id: int,
    seq_no: int,
    event_type: int,
    record_mode: int,
    timestamp: int,
    file_name: str,
) -> None:
    body = encode_callback(
        biz_id=biz_id,
        room_id=room_id,
        user_id=user_id,
        task_id=task_id,
        seq_no=seq_no,
        event_type=event_type,
        record_mode=record_mode,
        timestamp=timestamp,
        file_name=file_name,
    )
    assert decode(body) == Event(
        biz_id=biz_id,
        room_id=room_id,
        user_id=user_id,
        task_id=task_id,
        seq_no=seq_no,
        event_type=event_type,
        record_mode=record_mode,
        timestamp=timestamp,
        file_name=file_name,
    )
    assert peek_biz_id(body) == biz_id


# --- peek_biz_id ---------------------------------------------------------------------------


@vector_params
def test_peek_biz_id_reads_the_vector_biz_id(vector: dict[str, Any]) -> None:
    assert peek_biz_id(str(vector["body"]).encode("utf-8")) == 1400000000


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"BizID":1400000001}', 1400000001),
        (b'{"X":[1,{"BizID":5}],"BizID":7}', 7),
        (b'{"BizID":0}', 0),
        (b"{}", None),
        (b'{"BizID":null}', None),
        (b'{"BizID":"1400000000"}', None),
        (b'{"BizID":1.5}', None),
        (b'{"BizID":true}', None),
        (b"", None),
        (b"[]", None),
        (b"garbage", None),
        (b'{"BizID":1', None),
        (b"[" * 100_000, None),
        (b'{"BizID":1,"Deep":' + b"[" * 200_000 + b"]" * 200_000 + b"}", None),
        (b'{"BizID":"\xff"}', None),
    ],
)
def test_peek_biz_id_returns_the_biz_id_or_none(body: bytes, expected: int | None) -> None:
    assert peek_biz_id(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        b'{"BizID":1,"RoomID":"\xff"}',
        b'{"BizID":1,"\xff":1}',
        b'{"BizID":1,"RoomID":"\\ud800"}',
        b'{"BizID":' + b"9" * 5000 + b"}",
    ],
)
def test_peek_biz_id_does_not_raise_on_hostile_bodies(body: bytes) -> None:
    result = peek_biz_id(body)
    assert result is None or type(result) is int


@given(st.binary(max_size=512))
def test_peek_biz_id_never_raises_on_arbitrary_bytes(body: bytes) -> None:
    result = peek_biz_id(body)
    assert result is None or type(result) is int


@given(st.dictionaries(field_names, json_values, max_size=8))
def test_peek_biz_id_never_raises_on_arbitrary_json_objects(obj: dict[str, Any]) -> None:
    result = peek_biz_id(json.dumps(obj, allow_nan=False).encode())
    if isinstance(obj.get("BizID"), int) and not isinstance(obj.get("BizID"), bool):
        assert result == obj["BizID"]
    else:
        assert result is None


def test_decoded_event_is_immutable() -> None:
    ev = decode(_vector_body("event1"))
    with pytest.raises(AttributeError):
        ev.task_id = 1  # type: ignore[misc]
