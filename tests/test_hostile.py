"""Hostile input, in process: generated bodies and headers against the instrumented callback app,
schemathesis against both listeners' OpenAPI schemas, and a flood of distinct segment keys.

The invariants every test here checks:

* a POST to the callback path is answered 2xx or 4xx, never 5xx;
* it is counted exactly once: ``signature_failures + callbacks_invalid + callbacks + noise_requests``
  grows by one (noise: answered as a signature failure, counted apart);
* a rejection (4xx) names its reason in the body and leaves the store exactly as it was;
* the secret and the signatures it produced never appear in logs, metrics, bodies or schemas.

Set ``GME_RECWATCH_FIGURES=<path>`` to append the figures quoted in docs/reliability.md (JSON lines),
``GME_RECWATCH_FLOOD_SEGMENTS=1000000`` to push a million distinct keys into a 100k store (the
default is 100k into 10k), and ``GME_RECWATCH_FLOOD_CALLBACKS=1000000`` to push the full million
through the signed intake (about 30 s; the default is 100k).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import logging
import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import structlog
from conftest import figures_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gme_recwatch import logging as gme_logging
from gme_recwatch import signature as signature_mod
from gme_recwatch.app import build_apps
from gme_recwatch.clock import FakeClock
from gme_recwatch.events import MAX_TIMESTAMP, Event, encode_callback
from gme_recwatch.intake import Accepted
from gme_recwatch.service import Service
from gme_recwatch.settings import Settings
from gme_recwatch.signature import sign
from gme_recwatch.stores import MemoryStore

SECRET = "hostile-test-SECRET-4f1c9e27d3"
BIZ_ID = 1400000000
MAX_BODY = 4096  # small, so that oversized bodies are cheap to generate
EXAMPLES = 400
SIGNATURE_REASONS = ("missing", "mismatch", "unknown_app")
INVALID_REASONS = ("malformed", "too_large", "stale")
FIGURES: dict[str, Any] = {}


def figure(name: str, value: Any) -> None:
    """Record a figure for docs/reliability.md (written at the end of the module if asked to)."""
    FIGURES[name] = value


@pytest.fixture(scope="module", autouse=True)
def _write_figures() -> Iterator[None]:
    yield from figures_writer("test_hostile", FIGURES)


# --------------------------------------------------------------------------- the service


@dataclass
class World:
    """One in-process service: both instrumented ASGI apps, a loop to drive them, captured logs."""

    service: Service
    callback: Any
    admin: Any
    loop: asyncio.AbstractEventLoop
    logs: io.StringIO
    signatures: set[str] = field(default_factory=set)  # every correct Signature we sent
    error_bodies: list[bytes] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def request(
        self,
        app: Any,
        method: str,
        path: str,
        *,
        content: Any = None,
        headers: list[tuple[str, str | bytes]] | None = None,
    ) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://gme.test") as c:
                return await c.request(method, path, content=content, headers=headers)

        return self.loop.run_until_complete(go())

    def post(self, body: Any, headers: list[tuple[str, str | bytes]]) -> httpx.Response:
        return self.request(self.callback, "POST", "/callback", content=body, headers=headers)

    def admin_get(self, path: str) -> httpx.Response:
        return self.request(self.admin, "GET", path)

    def counted(self) -> dict[str, float]:
        """Every callback outcome counter, by `metric:reason`; their sum is the callbacks answered."""
        m = self.service.metrics
        out: dict[str, float] = {}
        for metric in (m.signature_failures, m.invalid, m.callbacks, m.noise):
            for fam in metric.collect():
                for s in fam.samples:
                    if s.name.endswith("_total"):
                        key = f"{s.name}:{s.labels.get('reason') or s.labels.get('result')}"
                        out[key] = out.get(key, 0.0) + s.value
        return out

    def store_state(self) -> tuple[Any, ...]:
        t = self.service.store
        assert isinstance(t, MemoryStore)
        return (len(t), t.stats_now(), frozenset(t.keys()))

    def bump(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    logs = io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    # Logging is configured before the service is built: the intake binds its logger then.
    gme_logging.configure(level="debug", fmt="json", stream=logs)
    service = Service(Settings(secret_key=SECRET, max_body_bytes=MAX_BODY, log_level="debug"))
    callback, admin = build_apps(service)
    loop = asyncio.new_event_loop()
    w = World(service, callback, admin, loop, logs)
    # Some state that a rejected request must not touch: recording, completed and uploaded.
    for room, events in (("seed-a", (1,)), ("seed-b", (1, 2)), ("seed-c", (1, 2, 3)), ("seed-d", (3,))):
        for et in events:
            body = encode_callback(
                biz_id=BIZ_ID,
                room_id=room,
                user_id="u",
                task_id=1,
                seq_no=0,
                event_type=et,
                record_mode=1,
                timestamp=int(time.time()),
            )
            assert w.post(body, [("Signature", sign(body, SECRET))]).status_code == 200
    yield w
    loop.close()
    structlog.reset_defaults()
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def exchange(w: World, body: Any, headers: list[tuple[str, str | bytes]], *, signed: bool) -> httpx.Response:
    """POST one callback and check every invariant; return the response."""
    before, state = w.counted(), w.store_state()
    r = w.post(body, headers)
    after = w.counted()
    assert 200 <= r.status_code < 500, (r.status_code, r.text)
    grown = {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k, 0.0)}
    assert sum(grown.values()) == 1, grown  # counted exactly once
    if r.status_code >= 400:
        doc = r.json()
        reason = doc["error"]
        assert reason in SIGNATURE_REASONS + INVALID_REASONS, doc
        metric = (
            "gme_recording_signature_failures_total"
            if reason in SIGNATURE_REASONS
            else "gme_recording_callbacks_invalid_total"
        )
        (key,) = grown
        if key.startswith("gme_recording_noise_requests_total:"):  # junk, not a sender
            assert reason in SIGNATURE_REASONS, (reason, grown)
        else:
            assert grown == {f"{metric}:{reason}": 1.0}
        assert r.status_code == {"too_large": 413, "malformed": 400, "stale": 400}.get(reason, 401)
        assert w.store_state() == state, "a rejected callback changed the store"
        w.error_bodies.append(r.content)
        w.bump(f"{'signed' if signed else 'unsigned'}:{r.status_code}:{reason}")
    else:
        assert r.status_code == 200 and r.json() == {"code": 0}
        (key,) = grown
        assert key.startswith("gme_recording_callbacks_total:"), grown
        w.bump(f"{'signed' if signed else 'unsigned'}:200:{key.split(':')[1]}")
    return r


# --------------------------------------------------------------------------- hostile bodies

_NUMBERS = [
    "0",
    "-1",
    "-0",
    "1.5",
    "-2.5e3",
    "1e400",
    "-1e400",
    "NaN",
    "Infinity",
    "-Infinity",
    "1E2",
    "0x10",
    "01",
    "+1",
    ".5",
    "1.",
    str(2**53 + 1),
    str(2**63 - 1),
    str(2**63),
    str(2**64),
    str(-(2**63)),
    str(-(2**63) - 1),
    "9" * 400,
    "253402300800",
    "2e9",
]
_SCALARS = [
    '"1400000000"',
    '""',
    "null",
    "true",
    "false",
    "[]",
    "{}",
    "[1400000000]",
    '{"a":1}',
    '"\\u0000"',
    '"a\\u0000b"',
    '"\\ud800"',
    '"\\udc00x"',
    '"' + "x" * 300 + '"',
    '"\\"',
    '"\\x41"',
    '"\u00e9\u4e2d\U0001f600"',
    '"\\/\\b\\f\\n\\r\\t"',
    '"room\\u0000user"',
]
HOSTILE_VALUES = _NUMBERS + _SCALARS


def _json_text(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


_any_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
).map(_json_text)

_value = st.one_of(st.sampled_from(HOSTILE_VALUES), _any_json)


def _nest(depth: int, kind: str) -> str:
    if kind == "array":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


_deep = st.builds(_nest, st.integers(1, 2000), st.sampled_from(["array", "object"]))


@st.composite
def callback_text(draw: st.DrawFn) -> str:
    """A callback-shaped JSON text with some fields hostile, missing, duplicated or extra."""
    event_type = draw(st.sampled_from(["1", "2", "3", "1", "2", "3", "0", "4", "99"]))
    detail: dict[str, list[str]] = {
        "SeqNo": [draw(st.sampled_from(["0", "1", "2"]))],
        "FileName": ['"1400000000_r_u/2023-02-09-16-16-45_446946705284000000_audio.mp3"'],
    }
    fields: dict[str, list[str]] = {
        "BizID": [str(BIZ_ID)],
        "RoomID": [_json_text(draw(st.sampled_from(["r1", "r2", "room-\u00e9"])))],
        "UserID": [_json_text(draw(st.sampled_from(["u1", "u2"])))],
        "TaskID": [str(446946705284000000 + draw(st.integers(0, 2)))],
        "RecordMode": [draw(st.sampled_from(["0", "1", "2", "-1"]))],
        "Timestamp": [str(int(time.time()))],
        "EventType": [event_type],
    }
    for target in (fields, detail):
        for name in draw(st.lists(st.sampled_from(sorted(target)), max_size=3, unique=True)):
            action = draw(st.sampled_from(["hostile", "hostile", "drop", "duplicate", "deep"]))
            if action == "hostile":
                target[name] = [draw(_value)]
            elif action == "drop":
                del target[name]
            elif action == "duplicate":  # the same key twice, different values
                target[name] = [*target[name], draw(_value)]
            else:
                target[name] = [draw(_deep)]
        for extra in draw(st.lists(st.text(max_size=6), max_size=2)):
            target[extra] = [draw(_value)]
    detail_object = "{" + ",".join(f"{_json_text(k)}:{v}" for k, vs in detail.items() for v in vs) + "}"
    detail_text = draw(st.one_of(st.just(detail_object), st.just(detail_object), _value, _deep))
    if draw(st.integers(0, 9)):  # now and then no Detail at all
        fields["Detail"] = [detail_text]
    pairs = [(k, v) for k, vs in fields.items() for v in vs]
    pairs = draw(st.permutations(pairs))
    return "{" + ",".join(f"{_json_text(k)}:{v}" for k, v in pairs) + "}"


@st.composite
def corrupt(draw: st.DrawFn, text: str) -> bytes:
    """UTF-8 bytes of ``text``, sometimes truncated, padded, prefixed or with invalid UTF-8 inside."""
    data = text.encode("utf-8", "surrogatepass")
    how = draw(
        st.sampled_from(
            [
                "none",
                "none",
                "none",
                "truncate",
                "invalid_utf8",
                "bom",
                "trailing",
                "whitespace",
                "wrap_array",
                "latin1",
            ]
        )
    )
    if how == "truncate" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif how == "invalid_utf8":
        at = draw(st.integers(0, len(data)))
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\x80"]))
        data = data[:at] + bad + data[at:]
    elif how == "bom":
        data = b"\xef\xbb\xbf" + data
    elif how == "trailing":
        data = data + draw(st.sampled_from([b"x", b"}", b"{}", b"\x00", b",", b"[]"]))
    elif how == "whitespace":
        data = b" \n\t" + data + b"\r\n "
    elif how == "wrap_array":
        data = b"[" + data + b"]"
    elif how == "latin1":
        data = text.encode("latin-1", "replace")
    return data


hostile_bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=512),
    st.binary(min_size=MAX_BODY + 1, max_size=MAX_BODY + 64),
    _deep.map(str.encode),
    st.integers(1, 40000).map(lambda n: b'{"EventType":1,"Detail":' + b"[" * n + b"]" * n + b"}"),
    _any_json.map(str.encode),
    callback_text().flatmap(corrupt),
    callback_text().flatmap(corrupt),
    callback_text().flatmap(corrupt),
)

# Well-formed callbacks over a few segments, so that the signed test also meets accepted,
# duplicate and out-of-order events between the hostile ones.
valid_bodies = st.builds(
    lambda et, room, task, seq, mode: encode_callback(
        biz_id=BIZ_ID,
        room_id=room,
        user_id="u1",
        task_id=446946705284000000 + task,
        seq_no=seq,
        event_type=et,
        record_mode=mode,
        timestamp=int(time.time()),
    ),
    st.sampled_from([1, 2, 3]),
    st.sampled_from(["r1", "r2"]),
    st.integers(0, 2),
    st.integers(0, 2),
    st.sampled_from([0, 1]),
)

CONTENT_TYPES = [
    None,
    "application/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "application/json; charset=latin-1",
    "application/octet-stream",
    ";;;/garbage",
    "application/json, text/html",
]


def _with_type(headers: list[tuple[str, str | bytes]], ctype: str | None) -> list[tuple[str, str | bytes]]:
    return headers + ([("Content-Type", ctype)] if ctype is not None else [])


def _sig(body: bytes, secret: str, encoding: str) -> str:
    digest = hmac.new(secret.encode(), body, hashlib.sha1).digest()
    return {"base64": base64.b64encode(digest).decode(), "hex": digest.hex(), "HEX": digest.hex().upper()}[
        encoding
    ]


@st.composite
def unsigned_headers(draw: st.DrawFn, body: bytes) -> list[tuple[str, str | bytes]]:
    """Signature headers that must not verify: absent, empty, garbage, wrong key, repeated, huge."""
    wrong = _sig(body, "not-the-secret", draw(st.sampled_from(["base64", "hex", "HEX"])))
    good = _sig(body, SECRET, "base64")
    choice = draw(
        st.sampled_from(
            [
                "absent",
                "empty",
                "text",
                "wrong",
                "wrong_repeated",
                "disagreeing",
                "oversized",
                "non_ascii",
                "base64_of_21",
                "hex_39",
                "good_plus_junk",
            ]
        )
    )
    if choice == "absent":
        return []
    value: str | bytes
    if choice == "empty":
        value = draw(st.sampled_from(["", " ", "\t"]))
    elif choice == "text":
        value = draw(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60))
    elif choice == "wrong":
        value = wrong
    elif choice == "wrong_repeated":
        return [("Signature", wrong), ("Signature", wrong)]
    elif choice == "disagreeing":  # one right, one wrong: never guess which to believe
        pair = [("Signature", good), ("Signature", wrong)]
        return pair if draw(st.booleans()) else pair[::-1]
    elif choice == "oversized":
        value = good + "A" * draw(st.integers(1, 70000))
    elif choice == "non_ascii":
        value = draw(st.binary(min_size=1, max_size=40)).replace(b"\r", b"").replace(b"\n", b"")
        value = value or b"\xff"
    elif choice == "base64_of_21":
        value = base64.b64encode(b"\x01" * 21).decode()
    elif choice == "hex_39":
        value = wrong[:39] if len(wrong) == 40 else "a" * 39
    else:
        value = good + "=="
    return [("Signature", value)]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), body=hostile_bodies, ctype=st.sampled_from(CONTENT_TYPES))
def test_unsigned_hostile_callbacks_are_rejected_with_a_counted_reason(
    world: World, data: st.DataObject, body: bytes, ctype: str | None
) -> None:
    """Without a verifying Signature nothing gets past the signature check, or 413 for size."""
    headers = data.draw(unsigned_headers(body))
    r = exchange(world, body, _with_type(headers, ctype), signed=False)
    assert r.status_code in (401, 413), r.text
    world.bump("unsigned_inputs")


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=st.one_of(hostile_bodies, valid_bodies),
    encoding=st.sampled_from(["base64", "hex", "HEX"]),
    ctype=st.sampled_from(CONTENT_TYPES),
)
def test_correctly_signed_hostile_bodies_are_decoded_safely(
    world: World, body: bytes, encoding: str, ctype: str | None
) -> None:
    """Signed bodies reach the decoder: each is accepted, ignored or rejected, never a 5xx, and
    whatever was accepted is still readable through the drill-down API."""
    sig = _sig(body, SECRET, encoding)
    world.signatures.add(sig)
    r = exchange(world, body, _with_type([("Signature", sig)], ctype), signed=True)
    if len(body) > MAX_BODY:
        assert r.status_code == 413
    else:
        assert r.status_code in (200, 400), r.text
    if r.status_code == 200:
        api = world.admin_get("/api/v1/segments?limit=1000")
        assert api.status_code == 200, api.text
    world.bump("signed_inputs")


def test_timestamps_up_to_the_year_9999_are_tracked_and_later_ones_are_malformed(world: World) -> None:
    """A signed Timestamp of 2**63-1 fits the int64 columns but no calendar: it is refused as
    malformed. The latest one a calendar shows (9999-12-31) is accepted (the replay window is
    off by default), and the drill-down API still answers with its date, not a 500."""
    too_far = encode_callback(
        biz_id=BIZ_ID,
        room_id="far-future",
        user_id="u",
        task_id=7,
        seq_no=0,
        event_type=1,
        record_mode=1,
        timestamp=2**63 - 1,
    )
    r = exchange(world, too_far, [("Signature", sign(too_far, SECRET))], signed=True)
    assert (r.status_code, r.json()["error"]) == (400, "malformed")
    latest = encode_callback(
        biz_id=BIZ_ID,
        room_id="far-future",
        user_id="u",
        task_id=7,
        seq_no=0,
        event_type=1,
        record_mode=1,
        timestamp=MAX_TIMESTAMP,
    )
    r = exchange(world, latest, [("Signature", sign(latest, SECRET))], signed=True)
    assert r.status_code == 200
    assert world.admin_get("/api/v1/segments?limit=1000").status_code == 200
    room = world.admin_get(f"/api/v1/rooms/{BIZ_ID}/far-future")
    assert room.status_code == 200, room.text
    assert [seg["started_at"] for seg in room.json()["segments"]] == ["9999-12-31T23:59:59Z"]


def test_signature_header_edge_cases(world: World) -> None:
    """Exact outcomes for the header variants that a proxy or a confused client could produce."""
    body = encode_callback(
        biz_id=BIZ_ID,
        room_id="hdr",
        user_id="u",
        task_id=9,
        seq_no=0,
        event_type=1,
        record_mode=0,
        timestamp=int(time.time()),
    )
    good, wrong = sign(body, SECRET), sign(body, "wrong")
    world.signatures.add(good)
    cases: list[tuple[list[tuple[str, str | bytes]], int, str | None]] = [
        ([], 401, "missing"),
        ([("Signature", "")], 401, "missing"),
        ([("Signature", good), ("Signature", wrong)], 401, "mismatch"),
        ([("Signature", wrong), ("Signature", good)], 401, "mismatch"),
        ([("Signature", good + "A" * 65536)], 401, "mismatch"),
        ([("Signature", good.encode() + b"\xff")], 401, "mismatch"),
        ([("Signature", good), ("Signature", good)], 200, None),  # agreeing duplicates
        ([("signature", f"  {good}  ")], 200, None),  # surrounding blanks are not the digest
    ]
    for headers, status, reason in cases:
        r = exchange(world, body, headers, signed=True)
        assert r.status_code == status, (headers[:1], r.text)
        if reason:
            assert r.json()["error"] == reason


def test_body_over_the_limit_is_rejected_while_streaming(world: World) -> None:
    """A chunked body with no Content-Length is cut off at the limit, not read to the end."""
    sent = 0

    async def chunks() -> Any:
        nonlocal sent
        for _ in range(1000):  # would be 1 MB if read to the end
            sent += 1024
            yield b"x" * 1024

    r = exchange(world, chunks(), [("Signature", "x")], signed=False)
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    assert sent <= MAX_BODY + 2 * 1024, f"read {sent} bytes for a {MAX_BODY}-byte limit"
    r = exchange(world, b"{}", [("Content-Length", str(10 * MAX_BODY))], signed=False)
    assert r.status_code == 413


# --------------------------------------------------------------------------- schemathesis

# Schemathesis needs its schema at import time; this service is separate from `world`'s.
_ST_SERVICE = Service(Settings(secret_key=SECRET))
_ST_SERVICE.ready = True  # as once started: /readyz's 503 belongs to start-up and shutdown
_ST_CALLBACK, _ST_ADMIN = build_apps(_ST_SERVICE)
admin_schema = schemathesis.openapi.from_asgi("/schema/openapi.json", _ST_ADMIN)
callback_schema = schemathesis.openapi.from_dict(
    schemathesis.openapi.from_asgi("/schema/callback/openapi.json", _ST_ADMIN).raw_schema
)
callback_schema.app = _ST_CALLBACK
ST_COUNTS: dict[str, int] = {}


def _no_secrets(text: str) -> None:
    assert SECRET not in text


@admin_schema.parametrize()
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_admin_api_conforms_to_its_schema(case: Any) -> None:
    """Every schemathesis check (no 5xx, documented status codes and bodies, methods) holds."""
    ST_COUNTS[case.operation.label] = ST_COUNTS.get(case.operation.label, 0) + 1
    r = case.call()
    _no_secrets(r.text)
    case.validate_response(r)


@callback_schema.parametrize()
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_callback_api_conforms_to_its_schema(case: Any) -> None:
    """The callback listener against the schema the admin port publishes for it."""
    label = "callback " + case.operation.label
    ST_COUNTS[label] = ST_COUNTS.get(label, 0) + 1
    r = case.call()
    assert r.status_code < 500
    if case.method == "POST" and case.path == "/callback" and r.status_code >= 400:
        assert r.json()["error"] in SIGNATURE_REASONS + INVALID_REASONS, (r.status_code, r.text)
    _no_secrets(r.text)
    case.validate_response(r)


_EVERY_OPERATION = st.one_of(
    [op.ok().as_strategy() for schema in (admin_schema, callback_schema) for op in schema.get_all_operations()]
)


def _server_errors(service: Service) -> list[Any]:
    return [
        s
        for fam in service.metrics.http_requests.collect()
        for s in fam.samples
        if s.name.endswith("_total") and s.value and s.labels["code"].startswith("5")
    ]


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=_EVERY_OPERATION)
def test_generated_requests_never_show_a_5xx_in_the_services_own_metrics(case: Any) -> None:
    """Self-contained: generates its own requests for every operation of both listeners, and
    checks the service's own request counter, which would count a 5xx the ASGI client missed."""
    label = "self-check " + case.operation.label
    ST_COUNTS[label] = ST_COUNTS.get(label, 0) + 1
    case.call()
    assert _server_errors(_ST_SERVICE) == []
    figure("schemathesis_cases", dict(sorted(ST_COUNTS.items())))
    figure("schemathesis_cases_total", sum(ST_COUNTS.values()))


# --------------------------------------------------------------------------- secrets


def test_constant_time_comparison_runs_for_every_candidate_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hmac.compare_digest sees every candidate key, whether the first, the last or none matches."""
    keys = tmp_path / "keys"
    keys.write_text(f"{BIZ_ID}=app-key-1\n{BIZ_ID}=app-key-2\n*=file-default\n")
    # Hints off: a diagnosis after a failure compares (in constant time too) against many more
    # candidates, through the same hmac module; verification is what is counted here.
    service = Service(Settings(secret_key="env-default", keys_file=str(keys), signature_hints_per_second=0))
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(signature_mod.hmac, "compare_digest", spy)
    body = encode_callback(
        biz_id=BIZ_ID,
        room_id="ct",
        user_id="u",
        task_id=1,
        seq_no=0,
        event_type=1,
        record_mode=1,
        timestamp=int(time.time()),
    )
    candidates = len(service.keys.current.keys_for(BIZ_ID))
    assert candidates == 4
    for secret, ok in (("app-key-1", True), ("file-default", True), ("nope", False)):
        calls.clear()
        outcome = asyncio.run(service.intake.handle(body, sign(body, secret), "test"))
        assert isinstance(outcome, Accepted) is ok
        assert len(calls) == candidates, f"{secret}: {len(calls)} comparisons for {candidates} keys"
    other = body.replace(str(BIZ_ID).encode(), b"1400000001")
    calls.clear()
    asyncio.run(service.intake.handle(other, sign(other, "nope"), "test"))
    assert len(calls) == len(service.keys.current.keys_for(1400000001)) == 2


def test_no_secret_or_signature_in_logs_metrics_bodies_or_schemas(world: World) -> None:
    """Greps everything the service produced: this module's traffic whenever it ran before,
    and at least one accepted and one rejected callback of its own."""
    world.signatures.add(sign(b"{}", SECRET))
    body = encode_callback(
        biz_id=BIZ_ID,
        room_id="grep",
        user_id="u",
        task_id=3,
        seq_no=0,
        event_type=1,
        record_mode=1,
        timestamp=int(time.time()),
    )
    good, forged = sign(body, SECRET), sign(body, SECRET + "x")
    world.signatures.update({good, forged})
    assert exchange(world, body, [("Signature", good)], signed=True).status_code == 200
    assert exchange(world, body, [("Signature", forged)], signed=True).status_code == 401
    metrics = world.admin_get("/metrics").text
    schemas = [world.admin_get(p).text for p in ("/schema/openapi.json", "/schema/callback/openapi.json")]
    logs = world.logs.getvalue()
    assert "callback_rejected" in logs and "callback_accepted" in logs  # the capture works
    haystacks = {
        "logs": logs,
        "metrics": metrics,
        "schemas": "\n".join(schemas),
        "error bodies": b"\n".join(world.error_bodies).decode("utf-8", "replace"),
    }
    needles = {"the secret": SECRET, **{f"signature {s}": s for s in world.signatures}}
    for where, text in haystacks.items():
        for what, needle in needles.items():
            assert needle not in text, f"{what} found in {where}"
    figure(
        "secret_grep",
        {
            "signatures_checked": len(world.signatures),
            "log_bytes": len(logs),
            "error_bodies": len(world.error_bodies),
        },
    )


def test_hostile_figures(world: World) -> None:
    figure("hostile_outcomes", dict(sorted(world.counts.items())))
    r = world.admin_get("/metrics")
    assert r.status_code == 200
    five = [
        line
        for line in r.text.splitlines()
        if line.startswith("gme_recording_http_requests_total") and 'code="5' in line
    ]
    assert not five, five


# --------------------------------------------------------------------------- floods


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _retained(value: Any, depth: int = 0) -> int:
    """Elements held by a container, and by the containers inside it (two levels down)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        return 0
    n = len(value)
    if depth < 2 and isinstance(value, (dict, list, deque)):
        items = value.values() if isinstance(value, dict) else value
        n += sum(_retained(v, depth + 1) for v in items if not isinstance(v, (str, int, float)))
    return n


def _held(store: MemoryStore) -> int:
    """Elements held by the store and its parts (columns, deadline queue, tallies)."""
    parts = [store, store._table, store._deadlines, store._tallies]
    total = 0
    for part in parts:
        names = getattr(part, "__slots__", None) or vars(part)
        total += sum(
            _retained(getattr(part, name))
            for name in names
            if not isinstance(
                getattr(part, name),
                (MemoryStore, type(store._table), type(store._deadlines), type(store._tallies)),
            )
        )
    return total


def test_ten_times_capacity_in_distinct_segments_stays_within_capacity() -> None:
    """100k distinct keys against a 10k store (``GME_RECWATCH_FLOOD_SEGMENTS=1000000``: 1M
    against 100k, the figures in docs/reliability.md): never above capacity, every
    eviction counted, and what the store holds stops growing once it is full (it is
    O(capacity), not O(events)). A tenth of the million fails on the same leak: anything kept
    per event adds 50k elements over the last half of the flood, twice what is allowed."""
    n = int(os.environ.get("GME_RECWATCH_FLOOD_SEGMENTS", "100000"))
    cap = every = n // 10
    store = MemoryStore(Settings(max_segments=cap).lifecycle(), FakeClock())
    base = _rss_mib()
    rss: list[float] = []
    held: list[int] = []
    started = time.perf_counter()
    for i in range(n):
        store.record_now(
            Event(BIZ_ID, f"room-{i // 10}", "user", 446946705284000000 + i, 0, 1 + i % 3, 1, 1_700_000_000)
        )
        if i % every == every - 1:
            assert len(store) <= cap
            rss.append(round(_rss_mib(), 1))
            held.append(_held(store))
    elapsed = time.perf_counter() - started
    stats = store.stats_now()
    evicted = sum(v for (reason, _), v in stats.evictions.items() if reason == "capacity")
    figure(
        "store_flood",
        {
            "segments": n,
            "capacity": cap,
            "evicted": evicted,
            "rss_mib_before": round(base, 1),
            "rss_mib_every_tenth": rss,
            "elements_held_every_tenth": held,
            "seconds": round(elapsed, 1),
            "per_second": round(n / elapsed),
        },
    )
    assert len(store) == cap and evicted == n - cap
    assert sum(stats.by_state.values()) == cap
    # Lazily compacted structures oscillate with a period of about `cap` inserts, so the peak
    # over the 2nd to 5th tenth covers them. Anything kept per *event* adds n/2 elements over
    # the last half of the events; allow half of that for a lazier compaction than today's.
    growth = max(held[5:]) - max(held[1:5])
    assert growth < (n - 5 * every) // 2, f"held elements grow with events, not capacity: {held}"


def test_signed_flood_through_the_intake_is_bounded_and_the_admin_still_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Distinct signed callbacks through signature, decoding, store and metrics."""
    n = int(os.environ.get("GME_RECWATCH_FLOOD_CALLBACKS", "100000"))
    cap = min(100_000, n // 5)
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    gme_logging.configure(level="warning", fmt="json", stream=io.StringIO())
    try:
        service = Service(Settings(secret_key=SECRET, max_segments=cap))
        _, admin = build_apps(service)
        template = (
            b'{"BizID":1400000000,"RoomID":"flood-%d","UserID":"u","TaskID":%d,"RecordMode":1,'
            b'"Timestamp":1700000000,"EventType":%d,"Detail":{"SeqNo":0,"FileName":"f.mp3"}}'
        )
        key = SECRET.encode()
        handle = service.intake.handle
        run = asyncio.new_event_loop().run_until_complete
        peak = 0
        started = time.perf_counter()
        for i in range(n):
            body = template % (i // 10, 446946705284000000 + i, 1 + i % 3)
            sig = base64.b64encode(hmac.new(key, body, hashlib.sha1).digest()).decode()
            assert isinstance(run(handle(body, sig, "flood")), Accepted)
            if i % 1000 == 0:
                peak = max(peak, run(service.store.count()))
        elapsed = time.perf_counter() - started
        assert max(peak, run(service.store.count())) <= cap
        evicted = sum(v for (r, _), v in run(service.store.stats()).evictions.items() if r == "capacity")
        assert evicted == n - cap

        loop = asyncio.new_event_loop()

        async def probe() -> tuple[int, int, float]:
            transport = httpx.ASGITransport(app=admin)
            async with httpx.AsyncClient(transport=transport, base_url="http://a") as c:
                t0 = time.perf_counter()
                m = await c.get("/metrics")
                ready = await c.get("/readyz")
                return m.status_code, ready.status_code, time.perf_counter() - t0

        try:
            metrics_status, _ready, probe_seconds = loop.run_until_complete(probe())
        finally:
            loop.close()
        assert metrics_status == 200 and probe_seconds < 1.0
    finally:
        structlog.reset_defaults()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    figure(
        "intake_flood",
        {
            "callbacks": n,
            "capacity": cap,
            "evicted": evicted,
            "seconds": round(elapsed, 1),
            "per_second": round(n / elapsed),
            "metrics_after_flood_seconds": round(probe_seconds, 4),
        },
    )
