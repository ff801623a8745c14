"""The intake on its own: bytes in, a typed outcome out, every outcome counted once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gme_recwatch.clock import FakeClock
from gme_recwatch.events import canary_callback, encode_callback
from gme_recwatch.intake import Accepted, Noise, Rejected, Unreadable, Unverified
from gme_recwatch.lifecycle import Result
from gme_recwatch.service import Service
from gme_recwatch.settings import Settings
from gme_recwatch.signature import sign
from gme_recwatch.stores import MemoryStore

SECRET = "intake-test-secret"
NOW = 1_700_000_000


def body(event_type: int = 1, *, ts: int = NOW, room: str = "r1") -> bytes:
    return encode_callback(
        biz_id=1400000000,
        room_id=room,
        user_id="u",
        task_id=1,
        seq_no=0,
        event_type=event_type,
        record_mode=1,
        timestamp=ts,
    )


@pytest.fixture
def run() -> Iterator[Any]:
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.close()


def make(**settings: Any) -> Service:
    return Service(Settings(secret_key=SECRET, **settings).validate(), clock=FakeClock(wall=NOW))


def counts(service: Service) -> dict[str, float]:
    m = service.metrics
    return {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for metric in (m.signature_failures, m.invalid, m.callbacks)
        for fam in metric.collect()
        for s in fam.samples
        if s.name.endswith("_total") and s.value
    }


def test_a_verified_callback_is_accepted_and_stored(run: Any) -> None:
    service = make()
    b = body()
    assert run(service.intake.handle(b, sign(b, SECRET), "t")) == Accepted(Result.ACCEPTED)
    assert run(service.store.count()) == 1
    assert counts(service) == {
        "gme_recording_callbacks_total"
        "[('app_id', '1400000000'), ('event_type', 'started'), ('result', 'accepted')]": 1.0
    }


def marks(service: Service, cause: str = "signature") -> dict[str, float]:
    return {
        s.labels["result"]: s.value
        for fam in service.metrics.segment_marks.collect()
        for s in fam.samples
        if s.name.endswith("_total") and s.labels["cause"] == cause
    }


def test_a_refused_well_formed_callback_marks_the_live_segment_it_names(run: Any) -> None:
    """#26.2: the sender on a wrong key -- its upload is refused, so the segment is attributed
    to us (unverified at its deadline), not a miss. A name we do not track is left alone."""
    service = make()
    b = body(1)
    run(service.intake.handle(b, sign(b, SECRET), "t"))
    upload = body(3)
    assert run(service.intake.handle(upload, sign(upload, "rotated"), "t")).reason == "mismatch"
    (seg,) = run(service.store.segments(limit=10))
    assert seg.blind_window_start == NOW
    other = body(3, room="never-started")
    run(service.intake.handle(other, sign(other, "rotated"), "t"))
    assert run(service.store.count()) == 1  # a refused callback creates nothing
    assert marks(service) == {"marked": 1.0, "not_tracked": 1.0, "refused": 0.0}


def test_a_verified_callback_a_bug_answers_500_marks_the_segment_it_names(run: Any) -> None:
    """#26.2: a 5xx is a loss of ours. A bug between the verified event and its answer (here
    the store's write of completions fails with an error that is no outage) is raised, so the
    listener answers 500 and Tencent retries; the live segment is marked meanwhile, so if every
    retry meets the bug its deadline makes it unverified, not a miss that pages."""

    class CompletionsBreak(MemoryStore):  # a real store with one bug put in
        async def record(self, ev: Any) -> Any:
            if ev.event_type == 2:
                raise RuntimeError("a bug")
            return await super().record(ev)

    settings = Settings(secret_key=SECRET).validate()
    clock = FakeClock(wall=NOW)
    service = Service(settings, clock=clock, store=CompletionsBreak(settings.lifecycle(), clock))
    start = body(1)
    run(service.intake.handle(start, sign(start, SECRET), "t"))
    done = body(2)
    with pytest.raises(RuntimeError):
        run(service.intake.handle(done, sign(done, SECRET), "t"))
    (seg,) = run(service.store.segments(limit=10))
    assert seg.blind_window_start == NOW
    assert marks(service, "server_error") == {"marked": 1.0, "not_tracked": 0.0, "refused": 0.0}
    assert marks(service) == {"marked": 0.0, "not_tracked": 0.0, "refused": 0.0}


def test_junk_and_unsigned_requests_mark_nothing(run: Any) -> None:
    service = make()
    b = body(1)
    run(service.intake.handle(b, sign(b, SECRET), "t"))
    run(service.intake.handle(b"x", "abc", "t"))  # junk: not a callback
    run(service.intake.handle(body(3), None, "t"))  # unsigned
    (seg,) = run(service.store.segments(limit=10))
    assert seg.blind_window_start is None
    assert marks(service) == {"marked": 0.0, "not_tracked": 0.0, "refused": 0.0}


def test_marks_are_bounded_by_their_burst_then_their_rate(run: Any) -> None:
    """A forger who knows well-formed callbacks can mark at most `burst` segments at once and
    `rate` a second after; every one over is refused and counted."""
    service = make(rejection_marks_per_second=1.0, rejection_marks_burst=3)
    for i in range(5):
        b = body(1, room=f"r{i}")
        run(service.intake.handle(b, sign(b, SECRET), "t"))
    for i in range(5):
        u = body(3, room=f"r{i}")
        run(service.intake.handle(u, sign(u, "forged"), "t"))
    assert marks(service) == {"marked": 3.0, "not_tracked": 0.0, "refused": 2.0}
    marked = [s.room_id for s in run(service.store.segments(limit=10)) if s.blind_window_start is not None]
    assert sorted(marked) == ["r0", "r1", "r2"]
    service.clock.advance(1.0)  # type: ignore[attr-defined]
    u = body(3, room="r3")
    run(service.intake.handle(u, sign(u, "forged"), "t"))
    assert marks(service)["marked"] == 4.0


def test_a_second_delivery_is_accepted_as_a_duplicate(run: Any) -> None:
    service = make()
    b = body()
    run(service.intake.handle(b, sign(b, SECRET), "t"))
    assert run(service.intake.handle(b, sign(b, SECRET), "t")) == Accepted(Result.DUPLICATE)


@pytest.mark.parametrize(("header", "reason"), [(None, "missing"), ("", "missing"), ("bm90IGl0", "mismatch")])
def test_a_bad_signature_is_rejected_with_its_reason_and_changes_nothing(
    run: Any, header: str | None, reason: str
) -> None:
    service = make()
    outcome = run(service.intake.handle(body(), header, "t"))
    assert isinstance(outcome, Unverified) and outcome.reason == reason
    assert outcome.event is not None and outcome.event.biz_id == 1400000000  # what it names
    assert run(service.store.count()) == 0
    assert counts(service) == {f"gme_recording_signature_failures_total[('reason', '{reason}')]": 1.0}
    assert service.metrics.last_callback._value.get() == 0  # nothing verified arrived


@pytest.mark.parametrize(
    ("unreadable", "reason"),
    [
        (Unreadable("too_large"), "too_large"),
        (Unreadable("malformed", "Content-Length is not a number"), "malformed"),
    ],
)
def test_what_the_http_layer_could_not_read_is_rejected_and_counted(
    run: Any, unreadable: Unreadable, reason: str
) -> None:
    service = make()
    outcome = run(service.intake.handle(unreadable, "sig", "t"))
    assert isinstance(outcome, Rejected) and outcome.reason == reason
    assert counts(service) == {f"gme_recording_callbacks_invalid_total[('reason', '{reason}')]": 1.0}


def test_a_signed_body_that_is_not_a_callback_is_malformed_with_the_decoder_s_words(run: Any) -> None:
    service = make()
    b = b'{"EventType":1}'
    outcome = run(service.intake.handle(b, sign(b, SECRET), "t"))
    assert isinstance(outcome, Rejected) and outcome.reason == "malformed"
    assert outcome.detail and "BizID" in outcome.detail
    assert run(service.store.count()) == 0


def test_an_unknown_event_type_is_accepted_as_ignored_and_not_stored(run: Any) -> None:
    service = make()
    b = b'{"EventType":9,"BizID":1400000000}'
    assert run(service.intake.handle(b, sign(b, SECRET), "t")) == Accepted(Result.IGNORED)
    assert run(service.store.count()) == 0


def test_a_stale_timestamp_is_rejected_only_when_a_replay_window_is_set(run: Any) -> None:
    old = body(ts=NOW - 3600)
    assert isinstance(run(make().intake.handle(old, sign(old, SECRET), "t")), Accepted)
    strict = make(replay_window_seconds=300)
    assert run(strict.intake.handle(old, sign(old, SECRET), "t")) == Rejected("stale")
    assert run(strict.store.count()) == 0


def test_the_intake_stores_through_whatever_store_the_service_was_given(run: Any) -> None:
    store = MemoryStore(Settings().lifecycle(), FakeClock())
    service = Service(Settings(secret_key=SECRET), clock=FakeClock(wall=time.time()), store=store)
    b = body(ts=int(time.time()))
    run(service.intake.handle(b, sign(b, SECRET), "t"))
    assert len(store) == 1


def test_a_canary_is_verified_counted_apart_and_never_stored(run: Any) -> None:
    service = make()
    b = canary_callback(1400000000, NOW)
    assert run(service.intake.handle(b, sign(b, SECRET), "t")) == Accepted(Result.IGNORED)
    assert run(service.store.count()) == 0
    assert counts(service) == {}
    m = service.metrics
    assert m.canary_last_success._value.get() == NOW
    assert m.last_callback._value.get() == 0


def test_a_canary_must_be_signed_and_fresh(run: Any) -> None:
    service = make(replay_window_seconds=300)
    b = canary_callback(1400000000, NOW)
    assert run(service.intake.handle(b, sign(b, "wrong"), "t")).reason == "mismatch"
    old = canary_callback(1400000000, NOW - 3600)
    assert run(service.intake.handle(old, sign(old, SECRET), "t")) == Rejected("stale")
    assert service.metrics.canary_last_success._value.get() == 0


# --------------------------------------------------------------------------- signature hints


def hints(service: Service) -> dict[str, float]:
    m = service.metrics
    out = {
        s.labels["hint"]: s.value
        for fam in m.signature_hints.collect()
        for s in fam.samples
        if s.name.endswith("_total") and s.value
    }
    skipped = m.signature_diagnoses_skipped._value.get()
    return {**out, **({"skipped": skipped} if skipped else {})}


def test_a_hex_signature_under_base64_is_rejected_as_before_and_explained(run: Any) -> None:
    from structlog.testing import capture_logs

    service = make(signature_encoding="base64")
    b = body()
    header = sign(b, SECRET, "hex")
    with capture_logs() as logs:
        outcome = run(service.intake.handle(b, header, "t"))
    assert isinstance(outcome, Unverified) and outcome.reason == "mismatch"
    assert run(service.store.count()) == 0
    assert counts(service) == {"gme_recording_signature_failures_total[('reason', 'mismatch')]": 1.0}
    assert hints(service) == {"hex_encoding": 1.0}
    rejected_line, hint_line = logs
    assert rejected_line["event"] == "callback_rejected"
    assert hint_line["event"] == "signature_hint" and hint_line["log_level"] == "warning"
    assert hint_line["hint"] == "hex_encoding" and hint_line["claimed_biz_id"] == 1400000000
    assert "set GME_RECWATCH_SIGNATURE_ENCODING=auto" in hint_line["fix"]
    assert SECRET not in repr(logs) and header not in repr(logs)


def test_an_unknown_app_signed_with_another_app_s_key_is_explained(run: Any, tmp_path: Any) -> None:
    from structlog.testing import capture_logs

    keys = tmp_path / "keys"
    keys.write_text("1400000001=key-of-the-other-app\n")
    service = Service(Settings(keys_file=str(keys)).validate(), clock=FakeClock(wall=NOW))
    b = body()
    with capture_logs() as logs:
        assert run(service.intake.handle(b, sign(b, "key-of-the-other-app"), "t")) == Noise(
            "unknown_app", noise="unknown_app"
        )
    assert hints(service) == {"other_app_key": 1.0}
    (line,) = [x for x in logs if x["event"] == "signature_hint"]
    assert line["verifies_for_biz_id"] == 1400000001 and line["claimed_biz_id"] == 1400000000
    assert "key-of-the-other-app" not in repr(logs)


def test_a_missing_signature_is_not_diagnosed(run: Any) -> None:
    service = make()
    run(service.intake.handle(body(), None, "t"))
    run(service.intake.handle(body(), "  ", "t"))
    assert hints(service) == {}


def test_a_flood_of_bad_signatures_is_diagnosed_a_burst_then_at_the_rate(run: Any) -> None:
    from structlog.testing import capture_logs

    from gme_recwatch.hints import HINTS_BURST

    service = make(signature_encoding="base64", signature_hints_per_second=2)
    b = body()
    header = sign(b, SECRET, "hex")
    with capture_logs() as logs:
        for _ in range(1000):
            assert run(service.intake.handle(b, header, "t")).reason == "mismatch"
    assert hints(service) == {"hex_encoding": HINTS_BURST, "skipped": 1000 - HINTS_BURST}
    assert [x["event"] for x in logs].count("signature_hint") == 1  # once a minute per app
    service.clock.advance(1.0)  # type: ignore[attr-defined]
    run(service.intake.handle(b, header, "t"))
    run(service.intake.handle(b, header, "t"))
    run(service.intake.handle(b, header, "t"))
    assert hints(service)["hex_encoding"] == HINTS_BURST + 2


def test_with_hints_off_nothing_is_diagnosed_or_skipped(run: Any) -> None:
    service = make(signature_encoding="base64", signature_hints_per_second=0)
    b = body()
    assert run(service.intake.handle(b, sign(b, SECRET, "hex"), "t")).reason == "mismatch"
    assert hints(service) == {} and service.intake.doctor is None


def test_the_rendered_hint_line_holds_no_key_or_signature(run: Any) -> None:
    import io
    import json

    from gme_recwatch import logging as gme_logging

    stream = io.StringIO()
    gme_logging.configure(level="info", fmt="json", stream=stream)
    service = make(signature_encoding="hex")
    b = body()
    header = sign(b, SECRET, "base64")
    run(service.intake.handle(b, header, "t"))
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert [x["event"] for x in lines] == ["callback_rejected", "signature_hint"]
    assert lines[1]["hint"] == "base64_encoding"
    text = stream.getvalue()
    assert SECRET not in text and header not in text and bytes.hex(b) not in text
    assert '"RoomID"' not in text  # nor the body


def test_a_rejected_signature_logs_the_body_s_claimed_biz_id_with_one_global_key(run: Any) -> None:
    """With one key for every app the BizID is not needed to pick a key, but the operator still
    needs it to find the misconfigured app: it is read (unverified) once the signature failed."""
    from structlog.testing import capture_logs

    service = make(signature_hints_per_second=0)
    assert not service.keys.current.per_app
    with capture_logs() as logs:
        run(service.intake.handle(body(), sign(body(), "another-key"), "t"))
        run(service.intake.handle(b"{not json", sign(b"{not json", "another-key"), "t"))
    assert [(x["event"], x.get("claimed_biz_id")) for x in logs] == [
        ("callback_rejected", 1400000000),
        ("request_rejected", None),  # not a callback: noise, with nothing to claim
    ]


def test_a_503_for_a_write_redis_applied_late_says_so_and_its_retry_is_no_duplicate(tmp_path: Any) -> None:
    """A Redis stall longer than the timeout: the callback is answered 503 ("may have been
    recorded; the retry is safe") and counted as of unknown outcome; Redis applies the script
    once the stall ends; Tencent's retry then finds it recorded, and is counted as the first
    acknowledgement it is (accepted), not as a duplicate Tencent sent."""
    import threading

    import redis as sync_redis
    from conftest import RedisServer

    from gme_recwatch.callback import MESSAGES
    from gme_recwatch.stores.redis import RedisStore

    server = RedisServer(tmp_path / "redis")
    try:
        settings = Settings(secret_key=SECRET, redis_url=server.url, redis_timeout_seconds=0.3).validate()
        store = RedisStore.from_url(server.url, settings.lifecycle(), timeout=0.3)
        service = Service(settings, clock=FakeClock(wall=NOW), store=store)
        pauser = sync_redis.Redis.from_url(server.url)
        loop = asyncio.new_event_loop()
        try:
            b = body(3)
            header = sign(b, SECRET, "base64")
            warm = body(1, room="warm")  # loads the script: the stalled call is one EVALSHA
            assert isinstance(
                loop.run_until_complete(service.intake.handle(warm, sign(warm, SECRET, "base64"), "t")),
                Accepted,
            )
            busy = (  # a script that holds Redis for 0.8 s, as a slow command or a fork would
                "local s = redis.call('TIME') while true do local n = redis.call('TIME') "
                "if (n[1] - s[1]) * 1e6 + (n[2] - s[2]) > 800000 then return 1 end end"
            )
            stall = threading.Thread(target=pauser.eval, args=(busy, 0))
            stall.start()  # Redis is busy: what is sent meanwhile waits in its socket
            time.sleep(0.1)
            first = loop.run_until_complete(service.intake.handle(b, header, "test"))
            assert first == Rejected("unavailable")
            stall.join()
            time.sleep(0.2)  # the stall ends: Redis runs the script it was sent
            assert loop.run_until_complete(store.count()) == 2  # it landed after the 503
            retry = loop.run_until_complete(service.intake.handle(b, header, "test"))
            assert isinstance(retry, Accepted) and retry.result is Result.ACCEPTED
            m = service.metrics.registry
            assert m.get_sample_value("gme_recording_callbacks_unknown_outcome_total") == 1
            assert m.get_sample_value("gme_recording_callbacks_retried_after_unknown_outcome_total") == 1
            assert counts(service) == {
                "gme_recording_callbacks_total"
                "[('app_id', '1400000000'), ('event_type', 'started'), ('result', 'accepted')]": 1.0,
                "gme_recording_callbacks_total"
                "[('app_id', '1400000000'), ('event_type', 'uploaded'), ('result', 'accepted')]": 1.0,
            }
            # A third copy is a duplicate Tencent sent: counted as one.
            again = loop.run_until_complete(service.intake.handle(b, header, "test"))
            assert isinstance(again, Accepted) and again.result is Result.DUPLICATE
            assert "may have been recorded" in MESSAGES["unavailable"]
            loop.run_until_complete(store.close())
        finally:
            loop.close()
            pauser.close()
    finally:
        server.stop()


# --------------------------------------------------------------------------- noise is not a sender


def noise(service: Service) -> dict[str, float]:
    return {
        s.labels["reason"]: s.value
        for fam in service.metrics.noise.collect()
        for s in fam.samples
        if s.name.endswith("_total") and s.value
    }


@pytest.mark.parametrize(
    ("raw", "header", "reason", "answer"),
    [
        (b"", None, "empty", "missing"),
        (b"", "abc", "empty", "mismatch"),
        (b"x", "abc", "not_json", "mismatch"),  # curl -H 'Signature: abc' --data x
        (b"\xff\xfe{", "abc", "not_json", "mismatch"),
        (b"{}", "abc", "not_a_callback", "mismatch"),
        (b'{"EventType":1,"BizID":1400000000}', "abc", "not_a_callback", "mismatch"),
        (b'{"EventType":9}', "abc", "not_a_callback", "mismatch"),  # no BizID to hold a key for
        (b"[1,2,3]", None, "not_a_callback", "missing"),
    ],
)
def test_junk_is_noise_answered_as_before_and_never_a_signature_failure(
    run: Any, raw: bytes, header: str | None, reason: str, answer: str
) -> None:
    service = make()
    outcome = run(service.intake.handle(raw, header, "t"))
    assert outcome == Noise(answer, noise=reason)  # type: ignore[arg-type]
    assert counts(service) == {}  # neither signature_failures nor callbacks_invalid
    assert noise(service) == {reason: 1.0}
    assert run(service.store.count()) == 0


def test_an_app_without_a_key_is_noise_with_per_app_keys(run: Any, tmp_path: Any) -> None:
    keys = tmp_path / "keys"
    keys.write_text("1400000001=key-of-the-other-app\n")
    service = Service(Settings(keys_file=str(keys)).validate(), clock=FakeClock(wall=NOW))
    outcome = run(service.intake.handle(body(), sign(body(), "whatever"), "t"))
    assert outcome == Noise("unknown_app", noise="unknown_app")
    assert counts(service) == {} and noise(service) == {"unknown_app": 1.0}


def test_junk_signed_with_our_key_is_a_sender_s_malformed_callback_not_noise(run: Any) -> None:
    service = make()
    b = b'{"EventType":1}'
    outcome = run(service.intake.handle(b, sign(b, SECRET), "t"))
    assert outcome.reason == "malformed" and not isinstance(outcome, Noise)
    assert noise(service) == {}
    assert counts(service) == {"gme_recording_callbacks_invalid_total[('reason', 'malformed')]": 1.0}


def test_a_flood_of_rejections_logs_one_line_per_reason_per_interval_and_counts_every_one(run: Any) -> None:
    from structlog.testing import capture_logs

    service = make(rejection_log_interval_seconds=10, signature_hints_per_second=0)
    b = body()
    with capture_logs() as logs:
        for _ in range(1000):
            run(service.intake.handle(b"x", "abc", "t"))
            run(service.intake.handle(b, "bm90IGl0", "t"))
        service.clock.advance(10.0)  # type: ignore[attr-defined]
        run(service.intake.handle(b"x", "abc", "t"))
        run(service.intake.handle(b, "bm90IGl0", "t"))
    assert noise(service) == {"not_json": 1001.0}
    assert counts(service) == {"gme_recording_signature_failures_total[('reason', 'mismatch')]": 1001.0}
    assert [(x["event"], x.get("suppressed")) for x in logs] == [
        ("request_rejected", None),
        ("callback_rejected", None),
        ("request_rejected", 999),
        ("callback_rejected", 999),
    ]


def test_with_a_zero_interval_every_rejection_is_logged(run: Any) -> None:
    from structlog.testing import capture_logs

    service = make(rejection_log_interval_seconds=0)
    with capture_logs() as logs:
        for _ in range(5):
            run(service.intake.handle(b"x", "abc", "t"))
    assert len(logs) == 5
