"""HTTP behaviour of both listeners, in-process through the instrumented ASGI apps."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from conftest import metric_value
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from gme_recwatch.app import build_apps
from gme_recwatch.clock import FakeClock
from gme_recwatch.events import encode_callback
from gme_recwatch.metrics import EXEMPLAR_MAX_CHARS, exemplar_labels
from gme_recwatch.service import Service
from gme_recwatch.settings import Settings
from gme_recwatch.signature import sign

SECRET = "app-test-secret"
BIZ = 1400000000


def body(
    event_type: int = 1,
    *,
    biz: int = BIZ,
    room: str = "r1",
    seq: int = 0,
    ts: int | None = None,
    task: int = 446946705284000000,
) -> bytes:
    return encode_callback(
        biz_id=biz,
        room_id=room,
        user_id="u1",
        task_id=task,
        seq_no=seq,
        event_type=event_type,
        record_mode=1,
        timestamp=int(time.time()) if ts is None else ts,
        file_name="f.mp3",
    )


@dataclass
class Harness:
    service: Service
    callback: Any
    admin: Any

    def request(self, app: Any, method: str, path: str, **kw: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 4321))
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                return await c.request(method, path, **kw)

        return asyncio.run(go())

    def post(self, data: bytes | Any, sig: str | list[str] | None = "auto", **kw: Any) -> httpx.Response:
        headers: list[tuple[str, str]] = [("content-type", "application/json")]
        if sig == "auto":
            headers.append(("signature", sign(data, SECRET)))
        elif isinstance(sig, list):
            headers += [("signature", s) for s in sig]
        elif sig is not None:
            headers.append(("signature", sig))
        return self.request(self.callback, "POST", "/callback", content=data, headers=headers, **kw)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request(self.admin, "GET", path, **kw)

    def tracked(self) -> int:
        return int(asyncio.run(self.service.store.count()))

    def metric(self, name: str, **labels: str) -> float:
        return metric_value(self.get("/metrics").text, name, **labels)


def make(**overrides: Any) -> Harness:
    settings = Settings(**{"secret_key": SECRET, **overrides}).validate()
    service = Service(settings, clock=FakeClock(wall=time.time()))
    asyncio.run(service.start())
    service.ready = True
    cb, admin = build_apps(service)
    return Harness(service, cb, admin)


@pytest.fixture
def h() -> Harness:
    return make()


# ------------------------------------------------------------------ callback listener


def test_signed_callback_is_answered_code_zero_and_tracked(h: Harness) -> None:
    r = h.post(body(1))
    assert r.status_code == 200 and r.json() == {"code": 0}
    assert h.tracked() == 1
    assert h.metric("gme_recording_callbacks_total", event_type="started", result="accepted") == 1


def test_duplicate_is_answered_200_and_counted_as_duplicate(h: Harness) -> None:
    b = body(1)
    h.post(b)
    r = h.post(b)
    assert r.status_code == 200 and r.json() == {"code": 0}
    assert h.metric("gme_recording_callbacks_total", event_type="started", result="duplicate") == 1


def test_hex_signature_is_accepted_in_auto_mode(h: Harness) -> None:
    b = body(1)
    assert h.post(b, sig=sign(b, SECRET, "hex").upper()).status_code == 200


def test_hex_signature_is_refused_when_base64_is_required() -> None:
    h = make(signature_encoding="base64")
    b = body(1)
    r = h.post(b, sig=sign(b, SECRET, "hex"))
    assert r.status_code == 401 and r.json()["error"] == "mismatch"


@pytest.mark.parametrize(
    ("sig", "reason"), [(None, "missing"), ("", "missing"), ("not-a-signature", "mismatch")]
)
def test_bad_or_missing_signature_is_401_counted_and_changes_nothing(
    h: Harness, sig: str | None, reason: str
) -> None:
    r = h.post(body(1), sig=sig)
    assert r.status_code == 401
    assert r.json()["error"] == reason
    assert h.metric("gme_recording_signature_failures_total", reason=reason) == 1
    assert h.tracked() == 0
    assert h.metric("gme_recording_last_callback_timestamp_seconds") == 0


def test_signature_under_another_key_is_a_mismatch(h: Harness) -> None:
    b = body(1)
    r = h.post(b, sig=sign(b, "someone-elses-key"))
    assert r.status_code == 401 and r.json()["error"] == "mismatch"
    assert h.tracked() == 0


def test_repeated_signature_headers_that_disagree_are_a_mismatch(h: Harness) -> None:
    b = body(1)
    r = h.post(b, sig=[sign(b, SECRET), sign(b, "other")])
    assert r.status_code == 401 and r.json()["error"] == "mismatch"
    assert h.post(b, sig=[sign(b, SECRET)] * 2).status_code == 200


def test_app_without_a_key_is_rejected_as_unknown_app(tmp_path: Any) -> None:
    keys = tmp_path / "keys"
    keys.write_text("1400000001=only-for-this-app\n")
    h = make(secret_key="", keys_file=str(keys))
    b = body(1, biz=BIZ)
    r = h.post(b, sig=sign(b, "only-for-this-app"))
    assert r.status_code == 401 and r.json()["error"] == "unknown_app"
    b2 = body(1, biz=1400000001)
    assert h.post(b2, sig=sign(b2, "only-for-this-app")).status_code == 200


def test_signed_but_malformed_body_is_400_malformed(h: Harness) -> None:
    for bad in (b"{}", b'{"EventType":1}', b"[1,2]", b"not json", b'{"EventType":1,"BizID":"x"}'):
        r = h.post(bad)
        assert r.status_code == 400, bad
        assert r.json()["error"] == "malformed"
    assert h.metric("gme_recording_callbacks_invalid_total", reason="malformed") == 5
    assert h.tracked() == 0


def test_unknown_event_type_is_acknowledged_and_counted(h: Harness) -> None:
    b = json.dumps({"BizID": BIZ, "EventType": 42, "Detail": {"Whatever": True}}).encode()
    r = h.post(b)
    assert r.status_code == 200 and r.json() == {"code": 0}
    assert h.metric("gme_recording_callbacks_total", event_type="unknown", result="ignored") == 1
    assert h.tracked() == 0


def test_body_over_the_limit_is_413_too_large() -> None:
    h = make(max_body_bytes=2048)
    big = b'{"pad":"' + b"x" * 4096 + b'"}'
    r = h.post(big)
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    assert h.metric("gme_recording_callbacks_invalid_total", reason="too_large") == 1


def test_streamed_body_over_the_limit_is_413_without_content_length() -> None:
    h = make(max_body_bytes=2048)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 1000

    r = h.request(
        h.callback, "POST", "/callback", content=chunks(), headers={"signature": "AAAAAAAAAAAAAAAAAAAAAAAAAAA="}
    )
    assert r.status_code == 413
    assert h.metric("gme_recording_callbacks_invalid_total", reason="too_large") == 1


def test_replay_window_is_off_by_default(h: Harness) -> None:
    assert h.post(body(1, ts=1_000_000_000)).status_code == 200


def test_stale_timestamp_is_rejected_when_replay_window_is_set() -> None:
    h = make(replay_window_seconds=300)
    r = h.post(body(1, ts=int(time.time()) - 3600))
    assert r.status_code == 400 and r.json()["error"] == "stale"
    assert h.metric("gme_recording_callbacks_invalid_total", reason="stale") == 1
    assert h.tracked() == 0
    assert h.post(body(1, ts=int(time.time()) - 60)).status_code == 200


def test_callback_listener_serves_nothing_but_callback_and_liveness(h: Harness) -> None:
    for path in ("/metrics", "/readyz", "/api/v1/segments", "/schema/openapi.json", "/"):
        assert h.request(h.callback, "GET", path).status_code == 404, path
    assert h.request(h.callback, "GET", "/healthz").json() == {"status": "ok"}
    assert h.request(h.callback, "GET", "/callback").status_code == 405


def test_callback_path_is_configurable() -> None:
    h = make(callback_path="/gme/recording")
    b = body(1)
    r = h.request(h.callback, "POST", "/gme/recording", content=b, headers={"signature": sign(b, SECRET)})
    assert r.status_code == 200
    assert h.post(b).status_code == 404


def test_callback_and_delay_metrics_record_sender_time(h: Harness) -> None:
    now = int(time.time())
    h.post(body(1, ts=now - 100))
    h.post(body(2, ts=now - 40))
    h.post(body(3, ts=now - 10))
    assert h.metric("gme_recording_duration_seconds_sum", record_mode="mixed") == 60
    assert h.metric("gme_recording_upload_delay_seconds_sum", record_mode="mixed") == 30
    assert h.metric("gme_recording_callback_delay_seconds_count", event_type="started") == 1
    assert h.metric("gme_recording_last_callback_timestamp_seconds") > 0


# ------------------------------------------------------------------ admin listener


def test_metrics_endpoint_serves_the_text_format_unless_openmetrics_is_asked_for(h: Harness) -> None:
    r = h.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE gme_recording_uploads_missing gauge" in r.text
    assert "# EOF" not in r.text
    om = h.get("/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert om.text.endswith("# EOF\n")
    # A strict parser rejects two families of one name (the old gauge beside the counter).
    families = {f.name: f.type for f in text_string_to_metric_families(om.text)}
    assert families["gme_recording_uploads_missing"] == "gauge"
    assert families["gme_recording_missing_uploads"] == "counter"
    assert families["gme_recording_stuck"] == "counter"


def test_problem_counters_carry_the_last_segment_as_an_exemplar_in_openmetrics_only() -> None:
    h = make(max_recording_seconds=100, upload_grace_seconds=100)
    now = int(time.time())
    h.post(body(1, room="room-stuck", seq=1, ts=now))
    h.post(body(1, room="room-upl", seq=2, ts=now))
    h.post(body(2, room="room-upl", seq=2, ts=now))
    clock = h.service.clock
    assert isinstance(clock, FakeClock)
    clock.advance(101)
    asyncio.run(h.service.sweep())
    om = h.get("/metrics", headers={"accept": "application/openmetrics-text"}).text
    samples = {
        (s.name, s.labels.get("app_id")): s for f in text_string_to_metric_families(om) for s in f.samples
    }
    stuck = samples[("gme_recording_stuck_total", str(BIZ))]
    assert stuck.value == 1
    assert stuck.exemplar is not None
    assert stuck.exemplar.labels == {
        "room_id": "room-stuck",
        "user_id": "u1",
        "task_id": "446946705284000000",
        "seq_no": "1",
    }
    missing = samples[("gme_recording_missing_uploads_total", str(BIZ))]
    assert missing.exemplar is not None and missing.exemplar.labels["room_id"] == "room-upl"
    assert "room-stuck" not in h.get("/metrics").text  # never in the classic format


@pytest.mark.parametrize(
    ("room", "user"), [("r" * 300, "u"), ("r", "u" * 300), ("r" * 90, "u" * 90), ("room", "user")]
)
def test_exemplar_labels_fit_the_openmetrics_cap(room: str, user: str) -> None:
    labels = exemplar_labels(room, user, 446946705284000000, 12345)
    assert sum(len(k) + len(v) for k, v in labels.items()) <= EXEMPLAR_MAX_CHARS
    assert labels["room_id"].rstrip("~") == room[: len(labels["room_id"].rstrip("~"))]
    shortened = "~" in labels["room_id"] + labels["user_id"]
    assert (labels["room_id"], labels["user_id"]) == (room, user) or shortened


def test_alerting_series_exist_at_zero_before_any_traffic(h: Harness) -> None:
    for reason in ("missing", "mismatch", "unknown_app"):
        assert h.metric("gme_recording_signature_failures_total", reason=reason) == 0
    for state in ("recording", "stuck", "upload_missing", "orphan"):
        assert h.metric("gme_recording_tracked_segments", state=state) == 0
    assert h.metric("gme_recording_callbacks_total", event_type="completed", result="accepted") == 0
    assert h.metric("gme_recording_store_capacity") == 1_000_000


def test_readyz_is_503_until_the_service_is_ready(h: Harness) -> None:
    h.service.ready = False
    r = h.get("/readyz")
    assert r.status_code == 503
    assert r.json() == {"status": "not ready", "segments": 0, "reason": "starting"}
    h.service.ready = True
    assert h.get("/readyz").json() == {"status": "ready", "segments": 0, "reason": None}
    h.post(body(1))
    assert h.get("/readyz").json() == {"status": "ready", "segments": 1, "reason": None}


def _unreachable_redis_harness(unready_after: float) -> tuple[Harness, FakeClock]:
    """A service on a Redis that is not there (a closed port): the store fails every check."""
    import socket

    from gme_recwatch.stores.redis import RedisStore

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(
        secret_key=SECRET,
        redis_url=f"redis://127.0.0.1:{port}/0",
        redis_timeout_seconds=1.0,
        store_unready_after_seconds=unready_after,
    ).validate()
    clock = FakeClock(wall=time.time())
    store = RedisStore.from_url(settings.redis_url, settings.lifecycle(), timeout=1.0)
    service = Service(settings, clock=clock, store=store)
    asyncio.run(service.check_store())  # the store check fails: noted, the grace starts
    service._joined = True  # it had answered before the blip (a start without it: test_edge)
    service.ready = True
    cb, admin = build_apps(service)
    return Harness(service, cb, admin), clock


def test_readyz_never_waits_on_the_store_and_honours_the_unready_grace() -> None:
    """A Redis blip: /readyz answers from what the service knows, in well under 10 ms, stays
    ready for GME_RECWATCH_STORE_UNREADY_AFTER_SECONDS, then says why not, in the same shape."""
    h, clock = _unreachable_redis_harness(unready_after=5)
    assert h.service.store_healthy  # failing since start, within the grace
    times = []
    for _ in range(20):
        started = time.perf_counter()
        r = h.get("/readyz")
        times.append(time.perf_counter() - started)
        assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready", "segments": 0, "reason": None}
    assert sorted(times)[len(times) // 2] < 0.010, times  # the median, ASGI client included
    clock.advance(5)
    r = h.get("/readyz")
    assert r.status_code == 503
    assert r.json() == {"status": "not ready", "segments": 0, "reason": "store_unavailable"}
    assert h.get("/healthz").status_code == 200


def test_segments_api_gives_ids_as_strings_and_iso_times(h: Harness) -> None:
    h.post(body(1, task=2**60 + 7))
    doc = h.get("/api/v1/segments", params={"state": "recording"}).json()
    assert doc["count"] == 1
    seg = doc["segments"][0]
    assert seg["task_id"] == str(2**60 + 7) and seg["biz_id"] == str(BIZ)
    assert seg["events_seen"] == ["started"] and seg["state"] == "recording"
    assert seg["started_at"].endswith("Z") and "T" in seg["started_at"]


def test_a_bad_state_is_a_400_naming_the_valid_states_and_no_python_internals(h: Harness) -> None:
    r = h.get("/api/v1/segments", params={"state": "stuk", "limit": "0"})
    assert r.status_code == 400
    assert r.json() == {
        "code": 400,
        "error": "http",
        "message": "invalid parameter for /api/v1/segments",
        "detail": "state: must be one of recording, completed, uploaded, stuck, upload_missing, "
        "orphan, unverified, expected, unannounced; limit: Expected `int` >= 1",
    }
    assert "ParamType" not in r.text and "state_filter" not in r.text


def test_segments_api_rejects_bad_queries_with_400(h: Harness) -> None:
    assert h.get("/api/v1/segments", params={"state": "nonsense"}).status_code == 400
    assert h.get("/api/v1/segments", params={"limit": "0"}).status_code == 400
    assert h.get("/api/v1/segments", params={"limit": "100000"}).status_code == 400


def test_segments_api_pages_with_a_cursor_and_gives_the_total(h: Harness) -> None:
    for seq in range(5):
        h.post(body(1, seq=seq))
    got: list[int] = []
    params: dict[str, str] = {"limit": "2"}
    for _ in range(5):
        doc = h.get("/api/v1/segments", params=params).json()
        assert doc["total"] == 5 and doc["count"] == len(doc["segments"]) <= 2
        got += [s["seq_no"] for s in doc["segments"]]
        if doc["next_cursor"] is None:
            break
        params["cursor"] = doc["next_cursor"]
    assert got == [0, 1, 2, 3, 4]
    room = h.get(f"/api/v1/rooms/{BIZ}/r1", params={"limit": "4"}).json()
    assert (room["count"], room["total"]) == (4, 5) and room["next_cursor"]


@pytest.mark.parametrize("cursor", ["nonsense", "0x1p+3", "0x1p+3~abc", "inf~00", "0x1p3~zz"])
def test_segments_api_rejects_a_malformed_cursor_with_400(h: Harness, cursor: str) -> None:
    r = h.get("/api/v1/segments", params={"cursor": cursor})
    assert r.status_code == 400 and "cursor" in r.text


@pytest.mark.parametrize("cursor", ["0x1p+99999~", "-0x0p+0~00ff", "0x1.8p-3~41"])
def test_any_well_formed_cursor_is_a_position(h: Harness, cursor: str) -> None:
    h.post(body(1))
    assert h.get("/api/v1/segments", params={"cursor": cursor}).status_code == 200


def test_a_problem_segment_says_since_when_and_why(h: Harness) -> None:
    h.post(body(1))
    h.service.clock.advance(21601)  # type: ignore[attr-defined]
    asyncio.run(h.service.sweep())
    (seg,) = h.get("/api/v1/segments", params={"state": "stuck"}).json()["segments"]
    assert seg["deadline"] == "max_recording_seconds"
    assert seg["reason"] == (
        "still recording 6 h after its start was received (GME_RECWATCH_MAX_RECORDING_SECONDS=21600)"
    )
    assert seg["state_since"].endswith("Z") and seg["state_since"] > seg["first_received_at"]
    assert seg["check_result"] is None and seg["bucket"] is None


def test_room_endpoint_lists_one_rooms_segments(h: Harness) -> None:
    h.post(body(1, room="alpha", seq=0))
    h.post(body(1, room="alpha", seq=1))
    h.post(body(1, room="beta"))
    doc = h.get(f"/api/v1/rooms/{BIZ}/alpha").json()
    assert doc["count"] == 2 and {s["room_id"] for s in doc["segments"]} == {"alpha"}
    assert h.get(f"/api/v1/rooms/{BIZ}/nowhere").json() == {
        "count": 0,
        "segments": [],
        "total": 0,
        "next_cursor": None,
    }


def test_openapi_schemas_of_both_listeners_are_on_the_admin_port(h: Harness) -> None:
    admin = h.get("/schema/openapi.json").json()
    assert "/api/v1/segments" in admin["paths"] and "/metrics" in admin["paths"]
    cb = h.get("/schema/callback/openapi.json").json()
    assert set(cb["paths"]) == {"/callback", "/healthz"}
    assert {"200", "400", "401", "413"} <= set(cb["paths"]["/callback"]["post"]["responses"])


def test_http_metrics_use_route_templates_and_bounded_methods(h: Harness) -> None:
    h.get(f"/api/v1/rooms/{BIZ}/some-room")
    h.get("/no/such/path/12345")
    h.request(h.admin, "BREW", "/metrics")
    m = h.metric(
        "gme_recording_http_requests_total",
        listener="admin",
        route="/api/v1/rooms/{app_id}/{room_id}",
        code="200",
    )
    assert m == 1
    assert h.metric("gme_recording_http_requests_total", listener="admin", route="unmatched", code="404") == 1
    assert h.metric("gme_recording_http_requests_total", method="other") == 1
    text = h.get("/metrics").text
    assert "some-room" not in text and "12345" not in text and "BREW" not in text
