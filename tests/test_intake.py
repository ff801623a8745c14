"""The intake on its own: bytes in, a typed outcome out, every outcome counted once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gme_recwatch.clock import FakeClock
from gme_recwatch.events import canary_callback, encode_callback
from gme_recwatch.intake import Accepted, Rejected, Unreadable
from gme_recwatch.lifecycle import Result
from gme_recwatch.service import Service
from gme_recwatch.settings import Settings
from gme_recwatch.signature import sign
from gme_recwatch.stores import MemoryStore

SECRET = "intake-test-secret"
NOW = 1_700_000_000


def body(event_type: int = 1, *, ts: int = NOW, room: str = "r1") -> bytes:
    return encode_callback(biz_id=1400000000, room_id=room, user_id="u", task_id=1, seq_no=0,
                           event_type=event_type, record_mode=1, timestamp=ts)


@pytest.fixture
def run() -> Iterator[Any]:
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.close()


def make(**settings: Any) -> Service:
    return Service(Settings(secret_key=SECRET, **settings).validate(), clock=FakeClock(wall=NOW))


def counts(service: Service) -> dict[str, float]:
    m = service.metrics
    return {f"{s.name}{sorted(s.labels.items())}": s.value
            for metric in (m.signature_failures, m.invalid, m.callbacks)
            for fam in metric.collect() for s in fam.samples
            if s.name.endswith("_total") and s.value}


def test_a_verified_callback_is_accepted_and_stored(run: Any) -> None:
    service = make()
    b = body()
    assert run(service.intake.handle(b, sign(b, SECRET), "t")) == Accepted(Result.ACCEPTED)
    assert run(service.store.count()) == 1
    assert counts(service) == {
        "gme_recording_callbacks_total[('event_type', 'started'), ('result', 'accepted')]": 1.0}


def test_a_second_delivery_is_accepted_as_a_duplicate(run: Any) -> None:
    service = make()
    b = body()
    run(service.intake.handle(b, sign(b, SECRET), "t"))
    assert run(service.intake.handle(b, sign(b, SECRET), "t")) == Accepted(Result.DUPLICATE)


@pytest.mark.parametrize(("header", "reason"), [(None, "missing"), ("", "missing"),
                                                 ("bm90IGl0", "mismatch")])
def test_a_bad_signature_is_rejected_with_its_reason_and_changes_nothing(
        run: Any, header: str | None, reason: str) -> None:
    service = make()
    outcome = run(service.intake.handle(body(), header, "t"))
    assert outcome == Rejected(reason)  # type: ignore[arg-type]
    assert run(service.store.count()) == 0
    assert counts(service) == {f"gme_recording_signature_failures_total[('reason', '{reason}')]": 1.0}
    assert service.metrics.last_callback._value.get() == 0  # nothing verified arrived


@pytest.mark.parametrize(("unreadable", "reason"), [
    (Unreadable("too_large"), "too_large"),
    (Unreadable("malformed", "Content-Length is not a number"), "malformed"),
])
def test_what_the_http_layer_could_not_read_is_rejected_and_counted(
        run: Any, unreadable: Unreadable, reason: str) -> None:
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
    assert run(service.intake.handle(b, sign(b, "wrong"), "t")) == Rejected("mismatch")
    old = canary_callback(1400000000, NOW - 3600)
    assert run(service.intake.handle(old, sign(old, SECRET), "t")) == Rejected("stale")
    assert service.metrics.canary_last_success._value.get() == 0
