"""The simulated sender: its plan generator, its summary and its retry behaviour."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import httpx
import pytest

from gme_recwatch import cli, events, signature
from gme_recwatch.events import COMPLETED, STARTED, UPLOADED
from gme_recwatch.simulate import (
    Plan,
    SenderConfig,
    SimConfig,
    Summary,
    make_plan,
    run,
    silence_report,
    silence_text,
    summarise,
    write_corpus,
    write_expected,
)

SECRET = "sim-secret"
BIG = SimConfig(
    rooms=2000,
    users_per_room=3,
    segments_per_task=2,
    mixed_fraction=0.25,
    reorder_fraction=0.2,
    duplicate_fraction=0.1,
    drop_fraction=0.05,
    never_complete_fraction=0.04,
    never_upload_fraction=0.06,
    bad_signature_fraction=0.03,
    seed=11,
)


def within(observed: float, expected: float, rel: float = 0.12) -> bool:
    return abs(observed - expected) <= rel * expected


def test_same_seed_gives_the_same_plan_and_another_seed_another() -> None:
    cfg = SimConfig(rooms=50, seed=3)
    a, b = make_plan(cfg), make_plan(cfg)
    assert a.segments == b.segments and a.sends == b.sends and a.dropped == b.dropped
    c = make_plan(SimConfig(rooms=50, seed=4))
    assert c.sends != a.sends
    assert not {s.room_id for s in a.segments} & {s.room_id for s in c.segments}


def test_fractions_are_respected_on_a_large_plan() -> None:
    plan = make_plan(BIG)
    segs = plan.segments
    tasks = {s.task_id: s.record_mode for s in segs}
    assert within(sum(tasks.values()) / len(tasks), 0.25)
    fates = Counter(s.fate for s in segs)
    assert within(fates["never_complete"] / len(segs), 0.04, 0.2)
    assert within(fates["never_upload"] / len(segs), 0.06, 0.2)
    assert within(len(plan.dropped) / len(plan.generated), 0.05)
    copies = Counter(s.copy for s in plan.sends)
    sent = len(plan.generated) - len(plan.dropped)
    assert copies["original"] == sent
    assert within(copies["duplicate"] / sent, 0.1)
    assert within(copies["bad_signature"] / len(plan.generated), 0.03, 0.2)
    assert within(plan.reordered / len(segs), 0.2 * (1 - 0.04), 0.15)


def test_zero_fractions_give_clean_traffic() -> None:
    plan = make_plan(
        SimConfig(
            rooms=100,
            reorder_fraction=0,
            duplicate_fraction=0,
            drop_fraction=0,
            never_complete_fraction=0,
            never_upload_fraction=0,
            bad_signature_fraction=0,
        )
    )
    assert not plan.dropped and plan.reordered == 0
    assert len(plan.sends) == 3 * len(plan.segments)
    assert {s.copy for s in plan.sends} == {"original"}


def test_single_stream_records_a_file_per_user_and_mixed_one_per_room() -> None:
    plan = make_plan(SimConfig(rooms=200, users_per_room=4, segments_per_task=3, mixed_fraction=0.5))
    by_task: dict[int, set[str]] = {}
    for s in plan.segments:
        by_task.setdefault(s.task_id, set()).add(s.user_id)
        assert s.file_name.startswith(f"{plan.config.biz_id}_{s.room_id}")
    for task, users in by_task.items():
        mode = next(s.record_mode for s in plan.segments if s.task_id == task)
        assert len(users) == (4 if mode == 0 else 1)
    assert all(s.task_id > 2**53 for s in plan.segments)
    seqs = Counter(s.seq_no for s in plan.segments)
    assert set(seqs) == {0, 1, 2}


def test_events_follow_the_lifecycle_unless_reordered_and_sends_are_in_time_order() -> None:
    plan = make_plan(SimConfig(rooms=300, reorder_fraction=0.0, seed=5))
    assert [s.at for s in plan.sends] == sorted(s.at for s in plan.sends)
    when: dict[tuple[int, int], float] = {}
    for s in plan.sends:
        if s.copy == "original":
            when[(s.segment, s.event_type)] = s.at
    for (seg, et), at in when.items():
        if et > STARTED and (seg, et - 1) in when:
            assert when[(seg, et - 1)] <= at


def test_an_out_of_order_event_goes_out_after_its_successor() -> None:
    plan = make_plan(
        SimConfig(
            rooms=300,
            reorder_fraction=1.0,
            drop_fraction=0,
            never_complete_fraction=0,
            never_upload_fraction=0,
            seed=5,
        )
    )
    order: dict[int, list[int]] = {}
    for s in plan.sends:
        if s.copy == "original":
            order.setdefault(s.segment, []).append(s.event_type)
    assert all(seq != [STARTED, COMPLETED, UPLOADED] for seq in order.values())


def test_summary_end_states_follow_the_lifecycle_rules() -> None:
    plan = make_plan(SimConfig(rooms=3, users_per_room=1, segments_per_task=2, mixed_fraction=0))
    assert len(plan.segments) == 6
    delivered: Counter[tuple[int, int]] = Counter(
        {
            (0, STARTED): 1,
            (0, COMPLETED): 2,
            (0, UPLOADED): 1,  # uploaded, one duplicate
            (1, STARTED): 1,  # stuck
            (2, STARTED): 1,
            (2, COMPLETED): 1,  # upload_missing
            (3, COMPLETED): 1,
            (3, UPLOADED): 1,  # orphan
            (4, COMPLETED): 1,  # orphan, then upload_missing
        }
    )  # 5: never heard of
    s = summarise(plan, delivered, Counter({UPLOADED: 2}), sent=set(delivered))
    assert s.expected_end_states == {
        "uploaded": 1,
        "stuck": 0 + 1,
        "upload_missing": 2,
        "orphan": 1,
        "unannounced": 0,
    }
    assert (s.untracked_segments, s.orphan_segments, s.completed_segments) == (1, 2, 4)
    assert s.events["completed"].delivered == 4 and s.events["completed"].duplicates == 1
    assert s.bad_signature_requests == 2 and s.events["uploaded"].bad_signature == 2
    # Each problem count comes with the segments behind it, to check one by one.
    by_seq = {state: [(x["room_id"], x["seq_no"]) for x in keys] for state, keys in s.expected_segments.items()}
    seg = plan.segments
    assert by_seq == {
        "stuck": [(seg[1].room_id, seg[1].seq_no)],
        "upload_missing": [(seg[2].room_id, seg[2].seq_no), (seg[4].room_id, seg[4].seq_no)],
        "orphan": [(seg[3].room_id, seg[3].seq_no)],
        "unannounced": [],
    }
    assert s.expected_segments["stuck"][0]["task_id"] == str(seg[1].task_id)
    assert "expected_segments" not in s.to_json()  # the summary stays a summary


def test_with_a_bucket_a_segment_whose_file_is_there_is_expected_reconciled() -> None:
    """A service that looks files up in the bucket finds the file of a segment whose upload (or
    completion) callback was lost: uploaded, not upload_missing or stuck (an orphan without its
    start); a segment whose file is not there keeps its problem."""
    plan = make_plan(SimConfig(rooms=4, users_per_room=1, segments_per_task=1, mixed_fraction=0))
    delivered: Counter[tuple[int, int]] = Counter(
        {
            (0, STARTED): 1,
            (0, COMPLETED): 1,  # upload callback lost, file there
            (1, STARTED): 1,  # completion and upload callbacks lost, file there
            (2, COMPLETED): 1,  # start and upload callbacks lost, file there
            (3, STARTED): 1,
            (3, COMPLETED): 1,  # never uploaded: no file
        }
    )
    alone = summarise(plan, delivered, Counter(), sent=set(delivered))
    assert alone.expected_end_states == {
        "uploaded": 0,
        "stuck": 1,
        "upload_missing": 3,
        "orphan": 0,
        "unannounced": 0,
    }
    assert alone.expected_reconciled == 0
    assert alone.expected_lost_callbacks == {"started": 0, "completed": 0, "uploaded": 0}
    cos = summarise(plan, delivered, Counter(), sent=set(delivered), in_bucket={0, 1, 2})
    assert cos.expected_end_states == {
        "uploaded": 2,
        "stuck": 0,
        "upload_missing": 1,
        "orphan": 1,
        "unannounced": 0,
    }
    assert cos.expected_reconciled == 3
    # A found file marks the events not seen as lost, a start never (lifecycle.found_in_cos).
    assert cos.expected_lost_callbacks == {"started": 0, "completed": 1, "uploaded": 3}
    assert [x["room_id"] for x in cos.expected_segments["upload_missing"]] == [plan.segments[3].room_id]
    assert [x["room_id"] for x in cos.expected_segments["orphan"]] == [plan.segments[2].room_id]


def test_without_seed_each_run_gets_a_fresh_one_and_with_seed_the_same_plan() -> None:
    from gme_recwatch.simulate import config_from_args

    parser = cli.build_parser()
    fresh = [parser.parse_args(["simulate"]) for _ in range(3)]
    seeds = {config_from_args(a).seed for a in fresh}
    assert len(seeds) == 3 and 0 not in seeds
    assert {a.seed for a in fresh} == seeds  # set on the args, for the command to print
    again = config_from_args(parser.parse_args(["simulate", "--seed", str(fresh[0].seed)]))
    assert make_plan(again).sends == make_plan(config_from_args(fresh[0])).sends


def test_cli_says_on_stderr_when_nothing_listens_and_exits_non_zero(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    expected = tmp_path / "expected.json"
    rc = cli.main(
        [
            "simulate",
            "--url",
            f"http://127.0.0.1:{port}/callback",
            "--secret",
            SECRET,
            "--expected-file",
            str(expected),
        ]
    )
    out = capsys.readouterr()
    assert rc != 0 and out.out == ""
    assert f"nothing answers at http://127.0.0.1:{port}/callback" in out.err
    assert "ConnectError" in out.err and not expected.exists()


def test_the_sender_reports_progress_while_it_sends() -> None:
    calls: Counter[str] = Counter()
    plan = make_plan(_quick(rooms=4, spread=30.0, time_scale=100))  # about 0.3 s
    sender = SenderConfig(url="http://sim.test/callback", secret=SECRET)
    lines: list[str] = []

    async def go() -> Summary:
        async with httpx.AsyncClient(transport=_transport(0, calls)) as client:
            return await run(plan, sender, client, progress=lines.append, progress_every=0.05)

    asyncio.run(go())
    assert len(lines) >= 2
    assert "requests sent" in lines[-1] and "answered 200" in lines[-1]


def _transport(fail_first: int, calls: Counter[str]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        body = request.content
        if signature.sign(body, SECRET) != request.headers["Signature"]:
            calls["bad"] += 1
            return httpx.Response(401)
        ev = events.decode(body)
        assert isinstance(ev, events.Event)
        key = f"{ev.room_id}/{ev.user_id}/{ev.seq_no}/{ev.event_type}"
        calls[key] += 1
        if calls[key] <= fail_first:
            return httpx.Response(503)
        return httpx.Response(200, json={"code": 0})

    return httpx.MockTransport(handler)


def _quick(**kw: float) -> SimConfig:
    base = dict(
        rooms=5,
        users_per_room=2,
        segments_per_task=1,
        rate=10_000,
        spread=0.0,
        duration_min=0.0,
        duration_max=0.0,
        upload_delay_min=0.0,
        upload_delay_max=0.0,
        reorder_fraction=0.0,
        duplicate_fraction=0.0,
        drop_fraction=0.0,
        never_complete_fraction=0.0,
        never_upload_fraction=0.0,
        bad_signature_fraction=0.0,
    )
    base.update(kw)
    return SimConfig(**base)  # type: ignore[arg-type]


def test_sender_retries_failed_deliveries_until_answered_200() -> None:
    calls: Counter[str] = Counter()
    plan = make_plan(_quick(bad_signature_fraction=0.5, seed=2))
    sender = SenderConfig(url="http://sim.test/callback", secret=SECRET, backoff=0.001, retry_seconds=5)

    async def go() -> Summary:
        async with httpx.AsyncClient(transport=_transport(2, calls)) as client:
            return await run(plan, sender, client)

    s = asyncio.run(go())
    originals = sum(1 for x in plan.sends if x.copy == "original")
    bad = sum(1 for x in plan.sends if x.copy == "bad_signature")
    assert bad > 0 and calls["bad"] == bad  # a rejected forgery is not retried
    assert s.retries == 2 * originals
    assert s.statuses == {"200": originals, "503": 2 * originals, "401": bad}
    assert all(c.delivered == c.generated and c.undelivered == 0 for c in s.events.values())


def test_a_retry_goes_to_the_next_replica_so_a_dead_one_costs_one_attempt() -> None:
    """Spread over three replicas, one of them dead: each delivery that landed on the dead one
    is retried once, on the next replica, and answered there (a random pick could land on the
    dead one again and again, each time after a doubled backoff)."""
    urls = ("http://a.test/callback", "http://dead.test/callback", "http://c.test/callback")
    attempts: Counter[str] = Counter()
    hosts: Counter[str] = Counter()
    ok = _transport(0, Counter())

    def handler(request: httpx.Request) -> httpx.Response:
        hosts[request.url.host] += 1
        ev = events.decode(request.content)
        assert isinstance(ev, events.Event)
        attempts[f"{ev.room_id}/{ev.user_id}/{ev.seq_no}/{ev.event_type}"] += 1
        if request.url.host == "dead.test":
            raise httpx.ConnectError("connection refused", request=request)
        return ok.handle_request(request)

    plan = make_plan(_quick(bad_signature_fraction=0.0, seed=3))
    sender = SenderConfig(url=urls[0], also_urls=urls[1:], secret=SECRET, backoff=0.001, retry_seconds=5)

    async def go() -> Summary:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await run(plan, sender, client)

    s = asyncio.run(go())
    assert hosts["dead.test"] > 0 and hosts["a.test"] > 0 and hosts["c.test"] > 0
    assert s.transport_errors == s.retries == hosts["dead.test"]
    assert max(attempts.values()) == 2  # never the dead one twice in a row
    assert all(c.undelivered == 0 for c in s.events.values())


def test_the_sender_reports_how_far_behind_its_plan_it_got_events_through() -> None:
    """A service that answers one request at a time, 50 ms each: the sixth of six events due
    at once gets its 200 about 0.3 s after its planned time, and the summary says so (a test
    comparing deadline outcomes checks it against its margin rather than assume the sender
    kept pace). A prompt service leaves the figure near zero."""
    plan = make_plan(_quick(rooms=1, users_per_room=2, time_scale=1000))  # 6 events due within 1 ms
    sender = SenderConfig(url="http://sim.test/callback", secret=SECRET, concurrency=1)

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)
        return httpx.Response(200, json={"code": 0})

    async def go(transport: httpx.AsyncBaseTransport) -> Summary:
        async with httpx.AsyncClient(transport=transport) as client:
            return await run(plan, sender, client)

    late = asyncio.run(go(httpx.MockTransport(slow)))
    assert len(plan.sends) == 6 and late.statuses == {"200": 6}
    assert 0.28 <= late.max_lateness_seconds < 2.0
    prompt = asyncio.run(go(_transport(0, Counter())))
    assert prompt.max_lateness_seconds < 0.25
    assert '"max_lateness_seconds"' in late.to_json()


def test_sender_gives_up_after_its_retry_budget_and_reports_the_loss() -> None:
    calls: Counter[str] = Counter()
    plan = make_plan(_quick(rooms=1, users_per_room=1))
    sender = SenderConfig(url="http://sim.test/callback", secret=SECRET, backoff=0.01, retry_seconds=0.05)

    async def go() -> Summary:
        async with httpx.AsyncClient(transport=_transport(10_000, calls)) as client:
            return await run(plan, sender, client)

    s = asyncio.run(go())
    assert all(c.undelivered == 1 and c.delivered == 0 for c in s.events.values())
    assert s.expected_end_states == dict.fromkeys(
        ("uploaded", "stuck", "upload_missing", "orphan", "unannounced"), 0
    )


def test_corpus_lines_are_signature_tab_body_and_verify(tmp_path: Path) -> None:
    plan = make_plan(SimConfig(rooms=10, bad_signature_fraction=0.0))
    path = tmp_path / "corpus.tsv"
    assert write_corpus(plan, str(path), SECRET, start=1_700_000_000) == len(plan.sends)
    lines = path.read_bytes().splitlines()
    assert len(lines) == len(plan.sends)
    for line in lines:
        sig, body = line.split(b"\t", 1)
        signature.verify(body, sig.decode(), [SECRET.encode()], "base64")
        assert isinstance(events.decode(body), events.Event)


def test_cli_writes_a_corpus_without_sending(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c.tsv"
    rc = cli.main(["simulate", "--secret", SECRET, "--rooms", "4", "--seed", "9", "--write-corpus", str(out)])
    assert rc == 0 and '"requests"' in capsys.readouterr().out
    assert out.read_bytes().count(b"\n") == len(make_plan(SimConfig(rooms=4, seed=9)).sends)


def test_cli_refuses_fractions_outside_zero_to_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["simulate", "--secret", SECRET, "--drop-fraction", "1.5"]) == 2
    assert "drop_fraction" in capsys.readouterr().err


# --------------------------------------------------------------------------- files in a bucket


def test_every_segment_that_uploads_leaves_a_file_and_no_other_does() -> None:
    plan = make_plan(BIG)
    uploading = {seg for _, seg in plan.uploads}
    assert len(uploading) == len(plan.uploads)  # one file per segment
    for i, s in enumerate(plan.segments):
        assert (i in uploading) is (s.fate == "normal")
    # a lost "uploaded" callback does not unmake the file
    assert any((seg, UPLOADED) in plan.dropped for seg in uploading)
    assert [at for at, _ in plan.uploads] == sorted(at for at, _ in plan.uploads)


def test_a_file_lands_after_its_completion_and_before_its_uploaded_callback() -> None:
    plan = make_plan(
        _quick(rooms=30, duration_min=10, duration_max=20, upload_delay_min=5, upload_delay_max=9, seed=4)
    )
    due = {(x.segment, x.event_type): x.at for x in plan.sends}
    for at, seg in plan.uploads:
        assert due[(seg, COMPLETED)] < at < due[(seg, UPLOADED)]


def _s3_args(**kw: str | bool) -> object:
    import argparse

    base: dict[str, str | bool] = {
        "s3_bucket": "",
        "s3_endpoint": "",
        "s3_region": "ap-guangzhou",
        "s3_key_template": "{file_name}",
        "s3_create_bucket": False,
    }
    return argparse.Namespace(**{**base, **kw})


def test_s3_flags_that_do_not_fit_together_are_refused_without_key_material() -> None:
    from gme_recwatch.simulate import s3_target_from_args

    assert s3_target_from_args(_s3_args(), {}) is None  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs --s3-bucket"):
        s3_target_from_args(_s3_args(s3_endpoint="http://127.0.0.1:1"), {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="--s3-key-template"):
        s3_target_from_args(_s3_args(s3_bucket="b-1", s3_key_template="{x}"), {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="go together") as info:
        s3_target_from_args(
            _s3_args(s3_bucket="b-1"),  # type: ignore[arg-type]
            {"TENCENTCLOUD_SECRET_KEY": "sk-never-shown"},
        )
    assert "sk-never-shown" not in str(info.value)
    target = s3_target_from_args(
        _s3_args(s3_bucket="b-1", s3_endpoint="http://h:1/"),  # type: ignore[arg-type]
        {"TENCENTCLOUD_SECRET_ID": "id", "TENCENTCLOUD_SECRET_KEY": "k"},
    )
    assert target is not None and target.endpoint == "http://h:1" and target.credentials
    assert "k" not in repr(target.credentials)


def test_cli_refuses_s3_with_a_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(
        ["simulate", "--secret", SECRET, "--write-corpus", str(tmp_path / "c"), "--s3-bucket", "b-1250000000"]
    )
    assert rc == 2 and "not with --write-corpus" in capsys.readouterr().err


def test_the_sender_writes_each_uploaded_file_to_a_real_s3_bucket(s3_server: object) -> None:
    import uuid

    from conftest import S3Server

    from gme_recwatch.cos import CosChecker, CosConfig, Credentials, Found, NotFound
    from gme_recwatch.simulate import S3Target

    assert isinstance(s3_server, S3Server)
    bucket = f"sim-{uuid.uuid4().hex[:10]}"
    plan = make_plan(
        _quick(
            rooms=12,
            users_per_room=2,
            segments_per_task=2,
            drop_fraction=0.3,
            never_complete_fraction=0.15,
            never_upload_fraction=0.2,
            seed=5,
        )
    )
    target = S3Target(
        bucket=bucket,
        endpoint=s3_server.url,
        region=s3_server.REGION,
        key_template="recordings/{biz_id}/{file_name}",
        credentials=Credentials(*s3_server.keys["writer"]),
        create_bucket=True,
    )
    sender = SenderConfig(url="http://sim.test/callback", secret=SECRET, retry_seconds=0.0)

    async def go() -> Summary:
        async with httpx.AsyncClient(transport=_transport(0, Counter())) as client:
            return await run(plan, sender, client, s3=target)

    summary = asyncio.run(go())
    uploading = {seg for _, seg in plan.uploads}
    assert 0 < len(uploading) < len(plan.segments)
    expected_keys = sorted(
        f"recordings/{plan.config.biz_id}/{plan.segments[seg].file_name}" for seg in uploading
    )
    assert s3_server.keys_of(bucket) == expected_keys
    assert (summary.files_uploaded, summary.upload_errors) == (len(uploading), 0)
    lost = sum(1 for seg in uploading if (seg, UPLOADED) in plan.dropped)
    assert lost > 0 and summary.uploaded_files_without_callback == lost

    # The checker, configured like the service, finds exactly those files.
    config = CosConfig(
        region=s3_server.REGION,
        default_bucket=bucket,
        endpoint=s3_server.url,
        key_template="recordings/{biz_id}/{file_name}",
        credentials=Credentials(*s3_server.keys["reader"]),
        requests_per_second=1000,
    )

    async def look() -> list[object]:
        async with CosChecker(config) as checker:
            return [await checker.check(plan.config.biz_id, s.file_name) for s in plan.segments]

    results = asyncio.run(look())
    for i, result in enumerate(results):
        assert isinstance(result, Found if i in uploading else NotFound), (i, result)


def test_a_bucket_that_refuses_writes_counts_upload_errors(s3_server: object) -> None:
    from conftest import S3Server

    from gme_recwatch.cos import Credentials
    from gme_recwatch.simulate import S3Target

    assert isinstance(s3_server, S3Server)
    bucket = s3_server.bucket("sim-readonly-1250000000")
    plan = make_plan(_quick(rooms=2, users_per_room=1))
    target = S3Target(
        bucket=bucket,
        endpoint=s3_server.url,
        region=s3_server.REGION,
        credentials=Credentials(*s3_server.keys["reader"]),
    )

    async def go() -> Summary:
        async with httpx.AsyncClient(transport=_transport(0, Counter())) as client:
            return await run(
                plan, SenderConfig(url="http://sim.test/callback", secret=SECRET), client, s3=target
            )

    summary = asyncio.run(go())
    assert (summary.files_uploaded, summary.upload_errors) == (0, len(plan.uploads))
    assert s3_server.keys_of(bucket) == []


# --------------------------------------------------------------------------- silent segments (#28)


def _all_delivered(plan: Plan) -> Counter[tuple[int, int]]:
    """Every request the plan sends answered 200 once: what a clean wire gets across."""
    return Counter({(x.segment, x.event_type): 1 for x in plan.sends if x.copy == "original"})


def _stream_plan(*silent: int, segments: int = 4, **kw: float | str) -> Plan:
    """One room, one user, one stream of ``segments`` segments, the SeqNos ``silent`` silent."""
    return make_plan(
        _quick(
            rooms=1,
            users_per_room=1,
            segments_per_task=segments,
            mixed_fraction=0.0,
            silent=tuple((0, 0, seq) for seq in silent),  # type: ignore[arg-type]
            **kw,
        )
    )


def test_silent_segments_send_nothing_never_seq_0_and_still_leave_their_files() -> None:
    plan = make_plan(
        SimConfig(
            rooms=400,
            users_per_room=2,
            segments_per_task=3,
            silent_fraction=0.3,
            never_complete_fraction=0.1,
            never_upload_fraction=0.1,
            bad_signature_fraction=0.1,
            duplicate_fraction=0.2,
            seed=7,
        )
    )
    eligible = [i for i, s in enumerate(plan.segments) if s.seq_no >= 1]
    assert within(len(plan.silent) / len(eligible), 0.3)
    assert all(plan.segments[i].seq_no >= 1 for i in plan.silent)
    # No request of any kind names a silent segment (forged copies included).
    assert not {x.segment for x in plan.sends} & plan.silent
    # Every event that happened is dropped, so the summary counts them as never sent.
    assert {(seg, et) for seg, et in plan.generated if seg in plan.silent} <= plan.dropped
    # The file lands as the fate says, silence or not.
    uploading = {seg for _, seg in plan.uploads}
    fates = Counter(plan.segments[i].fate for i in plan.silent)
    assert fates["normal"] and fates["never_complete"] and fates["never_upload"]
    for i in plan.silent:
        assert (i in uploading) is (plan.segments[i].fate == "normal")


def test_a_plan_with_silence_is_the_plan_without_it_but_for_the_silent_callbacks() -> None:
    quiet = SimConfig(rooms=100, segments_per_task=3, silent_fraction=0.2, seed=5)
    loud = make_plan(SimConfig(rooms=100, segments_per_task=3, seed=5))
    plan = make_plan(quiet)
    assert plan.silent and not loud.silent
    assert plan.segments == loud.segments and plan.uploads == loud.uploads
    assert plan.sends == [x for x in loud.sends if x.segment not in plan.silent]
    assert plan.generated == loud.generated
    # Nothing of a silent segment arrives, so none of it arrives out of order either.
    assert _stream_plan(1, 2, reorder_fraction=1.0).reordered == 2


def test_without_silence_a_seeds_plan_is_the_one_it_was_before_silence_existed() -> None:
    """The e2e tests chose seeds for their plans' problems (the README demo had seed 0: stuck,
    upload_missing and orphan segments): drawing silence from the plan's own generator would
    have changed every plan. The digest is that of the plan before silent segments existed."""
    import hashlib

    cfg = SimConfig(
        rooms=20,
        time_scale=100,
        drop_fraction=0.02,
        never_upload_fraction=0.05,
        never_complete_fraction=0.03,
        bad_signature_fraction=0.01,
        seed=0,
    )
    plan = make_plan(cfg)
    text = repr([(round(s.at, 6), s.segment, s.event_type, s.copy) for s in plan.sends])
    text += repr([s.fate for s in plan.segments])
    assert hashlib.sha256(text.encode()).hexdigest()[:16] == "e92b429ec0345226"


def test_silence_is_the_same_for_a_seed_and_another_for_another_seed() -> None:
    cfg = SimConfig(rooms=100, segments_per_task=3, silent_fraction=0.2, seed=8)
    a, b = make_plan(cfg), make_plan(cfg)
    assert a.silent == b.silent and a.sends == b.sends and a.dropped == b.dropped
    c = make_plan(SimConfig(rooms=100, segments_per_task=3, silent_fraction=0.2, seed=9))
    # Same indices, other rooms; the indices themselves differ too.
    assert c.silent != a.silent


def test_chosen_silent_segments_are_exactly_those_named_including_a_tasks_last() -> None:
    plan = make_plan(
        SimConfig(
            rooms=3, users_per_room=2, segments_per_task=3, mixed_fraction=0.0, silent=((1, 1, 2), (2, 0, 1))
        )
    )
    named = {(s.room_id, s.user_id, s.seq_no) for i, s in enumerate(plan.segments) if i in plan.silent}
    seed = plan.config.seed
    assert named == {
        (f"sim{seed}-room1", f"sim{seed}-user1-1", 2),
        (f"sim{seed}-room2", f"sim{seed}-user2-0", 1),
    }


@pytest.mark.parametrize(
    ("silent", "words"),
    [
        (((0, 0, 0),), "SeqNo must be"),  # SeqNo 0 is never silent
        (((0, 0, 3),), "SeqNo must be"),
        (((2, 0, 1),), "no such room"),
        (((0, 2, 1),), "no such room or user"),
    ],
)
def test_silent_segments_that_cannot_be_silenced_are_refused(
    silent: tuple[tuple[int, int, int], ...], words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        make_plan(SimConfig(rooms=2, users_per_room=2, segments_per_task=3, silent=silent))


def test_a_mixed_tasks_other_users_are_no_stream_to_silence() -> None:
    with pytest.raises(ValueError, match="do not exist"):
        make_plan(
            SimConfig(rooms=1, users_per_room=2, segments_per_task=2, mixed_fraction=1.0, silent=((0, 1, 1),))
        )
    plan = make_plan(
        SimConfig(rooms=1, users_per_room=2, segments_per_task=2, mixed_fraction=1.0, silent=((0, 0, 1),))
    )
    assert plan.silent == {1}


def test_a_silent_middle_segment_is_unannounced_without_a_bucket() -> None:
    plan = _stream_plan(1)
    s = summarise(plan, _all_delivered(plan), Counter())
    assert s.expected_end_states["unannounced"] == s.expected_unannounced == 1
    assert s.expected_end_states["uploaded"] == 3 and s.untracked_segments == 0
    assert s.expected_segments["unannounced"] == [plan.identity(1)]
    assert s.expected_lost_callbacks == {"started": 0, "completed": 0, "uploaded": 0}
    assert s.silences == [(plan.identity(1), "unannounced")]
    assert s.silent_segments == 1


def test_a_silent_middle_segment_whose_file_is_in_the_bucket_ends_uploaded_with_three_callbacks_lost() -> None:
    plan = _stream_plan(1)
    in_bucket = {seg for _, seg in plan.uploads}
    assert 1 in in_bucket
    s = summarise(plan, _all_delivered(plan), Counter(), in_bucket=in_bucket)
    assert s.expected_end_states["uploaded"] == 4 and s.expected_end_states["unannounced"] == 0
    assert (s.expected_unannounced_found, s.expected_tail_found, s.expected_reconciled) == (1, 0, 0)
    assert s.expected_lost_callbacks == {"started": 1, "completed": 1, "uploaded": 1}
    assert s.silences == [(plan.identity(1), "found")]


def test_a_silent_middle_segment_with_no_file_in_the_bucket_is_unannounced_confirmed() -> None:
    plan = _stream_plan(1, never_upload_fraction=1.0)  # nothing uploads: an empty folder
    assert not plan.uploads
    s = summarise(plan, _all_delivered(plan), Counter(), in_bucket=set())
    assert s.expected_unannounced == 1 and s.expected_segments["unannounced"] == [plan.identity(1)]
    assert s.expected_end_states["upload_missing"] == 3  # the others, by their callbacks
    assert s.expected_lost_callbacks == {"started": 0, "completed": 0, "uploaded": 0}
    assert "confirmed" in silence_text("unannounced", bucket=True)
    assert "unconfirmed" in silence_text("unannounced", bucket=False)


def test_a_silent_last_segment_is_found_only_by_listing_the_bucket() -> None:
    plan = _stream_plan(3)
    delivered = _all_delivered(plan)
    alone = summarise(plan, delivered, Counter())
    assert alone.untracked_segments == 1 and alone.expected_unannounced == 0
    assert alone.expected_end_states["uploaded"] == 3
    assert alone.silences == [(plan.identity(3), "tail")]
    empty = summarise(plan, delivered, Counter(), in_bucket={0, 1, 2})  # its file is not there
    assert empty.untracked_segments == 1 and empty.expected_unannounced == 0
    assert empty.expected_lost_callbacks == {"started": 0, "completed": 0, "uploaded": 0}
    listed = summarise(plan, delivered, Counter(), in_bucket={0, 1, 2, 3})
    assert listed.untracked_segments == 0 and listed.expected_end_states["uploaded"] == 4
    assert (listed.expected_tail_found, listed.expected_unannounced_found) == (1, 0)
    assert listed.expected_lost_callbacks == {"started": 1, "completed": 1, "uploaded": 1}
    assert listed.silences == [(plan.identity(3), "tail_found")]


def test_a_silent_segment_below_the_first_delivered_seq_stays_untracked_even_with_its_file() -> None:
    plan = _stream_plan(1)
    # SeqNo 0's callbacks all lost on the wire: the service first hears of the stream at SeqNo 2.
    delivered = Counter({k: n for k, n in _all_delivered(plan).items() if k[0] != 0})
    s = summarise(plan, delivered, Counter(), in_bucket={0, 1, 2, 3})
    assert s.untracked_segments == 2 and s.expected_end_states["uploaded"] == 2
    assert s.expected_unannounced == s.expected_unannounced_found == s.expected_tail_found == 0
    assert s.expected_lost_callbacks == {"started": 0, "completed": 0, "uploaded": 0}
    assert s.silences == [(plan.identity(1), "below")]


def test_a_segment_whose_callbacks_were_all_lost_by_chance_is_a_gap_like_a_silent_one() -> None:
    """The service cannot tell a planned silence from three unlucky drops: the rules apply to
    every segment of which nothing arrived, and only the plan's silent ones are named."""
    plan = _stream_plan()
    delivered = Counter({k: n for k, n in _all_delivered(plan).items() if k[0] != 2})
    s = summarise(plan, delivered, Counter())
    assert s.expected_segments["unannounced"] == [plan.identity(2)] and s.silences == []


def test_silent_segments_of_streams_the_service_never_heard_of_stay_untracked() -> None:
    plan = _stream_plan(1, 2)
    s = summarise(plan, Counter(), Counter(), in_bucket={0, 1, 2, 3})
    assert s.untracked_segments == 4 and sum(s.expected_end_states.values()) == 0
    assert {silence for _, silence in s.silences} == {"unheard_stream"}


def test_the_expectation_file_lists_the_unannounced_segments(tmp_path: Path) -> None:
    plan = _stream_plan(2)
    path = tmp_path / "expected.json"
    write_expected(summarise(plan, _all_delivered(plan), Counter()), str(path))
    expected = json.loads(path.read_text())
    assert expected["unannounced"] == [plan.identity(2)]
    assert set(expected) == {"stuck", "upload_missing", "orphan", "unannounced"}


def test_the_summary_json_has_the_new_expectations_and_not_the_per_segment_lists() -> None:
    plan = _stream_plan(1)
    out = json.loads(summarise(plan, _all_delivered(plan), Counter(), in_bucket={0, 1, 2, 3}).to_json())
    assert out["expected_unannounced_found"] == 1 and out["silent_segments"] == 1
    assert out["expected_lost_callbacks"] == {"started": 1, "completed": 1, "uploaded": 1}
    assert out["expected_end_states"]["unannounced"] == 0
    assert "silences" not in out and "expected_segments" not in out


def test_the_silence_report_names_each_silent_segment_and_its_fate() -> None:
    plan = _stream_plan(1, 3)
    s = summarise(plan, _all_delivered(plan), Counter())
    lines = silence_report(s, bucket=False)
    assert "2 segments sent no callback at all" in lines[0] and "unannounced 1" in lines[0]
    assert lines[1].endswith(silence_text("unannounced", False)) and "seq 1" in lines[1]
    assert lines[2].endswith(silence_text("tail", False)) and "seq 3" in lines[2]
    assert f"room {plan.segments[1].room_id} user {plan.segments[1].user_id}" in lines[1]
    assert silence_report(s, bucket=False, most=1)[-1] == "  ... and 1 more"
    assert silence_report(summarise(_stream_plan(), Counter(), Counter()), bucket=True) == []


# --------------------------------------------------------------------------- file names


def _streams(plan: Plan) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for s in plan.segments:  # in SeqNo order within a stream
        out.setdefault((s.room_id, s.user_id), []).append(s.file_name)
    return out


@pytest.mark.parametrize("layout", ["seq", "spec"])
@pytest.mark.parametrize("duration", [0.0, 300.0])
def test_a_streams_file_names_are_distinct_and_sort_in_seq_order(layout: str, duration: float) -> None:
    """Zero-length segments too (the tests' quick plans): a stamp is at least a second after
    its predecessor's, or twelve segments would sort 0, 1, 10, 11, 2... or, in the spec layout,
    share one name."""
    plan = make_plan(
        _quick(
            rooms=6,
            users_per_room=2,
            segments_per_task=12,
            mixed_fraction=0.5,
            duration_min=duration,
            duration_max=duration,
            file_layout=layout,  # type: ignore[arg-type]
        )
    )
    assert {s.record_mode for s in plan.segments} == {0, 1}
    for names in _streams(plan).values():
        assert len(set(names)) == len(names) == 12
        assert sorted(names) == names
        assert len({n.rsplit("/", 1)[0] for n in names}) == 1  # one folder per stream


def test_a_file_is_stamped_with_its_segments_start() -> None:
    import time

    plan = make_plan(SimConfig(rooms=20, segments_per_task=3, reorder_fraction=0.0, drop_fraction=0.0, seed=2))
    starts = {x.segment: x.at for x in plan.sends if x.event_type == STARTED and x.copy == "original"}
    for seg, at in starts.items():
        stamp = time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime(int(1_700_000_000 + at)))
        assert plan.segments[seg].file_name.split("/")[1].startswith(stamp + "_")


def test_the_spec_layout_is_tencents_sample_without_the_seq() -> None:
    import re

    seq = make_plan(SimConfig(rooms=30, segments_per_task=2, mixed_fraction=0.5, seed=4))
    spec = make_plan(SimConfig(rooms=30, segments_per_task=2, mixed_fraction=0.5, seed=4, file_layout="spec"))
    biz = spec.config.biz_id
    for a, b in zip(seq.segments, spec.segments, strict=True):
        folder = f"{biz}_{b.room_id}_{b.user_id}" if b.record_mode == 0 else f"{biz}_{b.room_id}"
        # like 1400000000_100_999/2023-02-09-16-16-45_446946705284000000_audio.mp3
        assert re.fullmatch(rf"{folder}/\d{{4}}(-\d\d){{5}}_{b.task_id}_audio\.mp3", b.file_name), b.file_name
        kind = "audio" if a.record_mode == 0 else "mix"
        assert a.file_name == b.file_name.replace("_audio.mp3", f"_{a.seq_no}_{kind}.mp3")


# --------------------------------------------------------------------------- the flags


def test_cli_flags_choose_silence_and_the_file_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gme_recwatch.simulate import config_from_args

    parser = cli.build_parser()
    default = config_from_args(parser.parse_args(["simulate"]))
    assert (default.silent_fraction, default.file_layout) == (0.0, "seq")
    args = parser.parse_args(["simulate", "--silent-fraction", "0.25", "--file-layout", "spec", "--seed", "3"])
    cfg = config_from_args(args)
    assert (cfg.silent_fraction, cfg.file_layout) == (0.25, "spec")
    # The corpus leaves the silent segments' requests out.
    out = tmp_path / "c.tsv"
    argv = ["simulate", "--secret", SECRET, "--rooms", "20", "--segments-per-task", "3", "--seed", "3"]
    assert cli.main([*argv, "--silent-fraction", "0.5", "--write-corpus", str(out)]) == 0
    plan = make_plan(SimConfig(rooms=20, segments_per_task=3, seed=3, silent_fraction=0.5))
    assert plan.silent and out.read_bytes().count(b"\n") == len(plan.sends)
    assert len(plan.sends) < len(make_plan(SimConfig(rooms=20, segments_per_task=3, seed=3)).sends)
    capsys.readouterr()
    assert cli.main(["simulate", "--secret", SECRET, "--silent-fraction", "1.5"]) == 2
    assert "silent_fraction" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["simulate", "--file-layout", "flat"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(ValueError, match="file_layout"):  # not only the flag refuses it
        make_plan(SimConfig(file_layout="flat"))  # type: ignore[arg-type]


def test_the_command_names_the_silent_segments_and_what_to_expect_of_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real command against a real (if minimal) HTTP listener that answers 200."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Ok(BaseHTTPRequestHandler):
        def _ok(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b'{"code":0}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _ok

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    expected = tmp_path / "expected.json"
    try:
        rc = cli.main(
            [
                "simulate",
                "--url",
                f"http://127.0.0.1:{server.server_port}/callback",
                "--secret",
                SECRET,
                "--rooms",
                "4",
                "--users-per-room",
                "1",
                "--segments-per-task",
                "3",
                "--mixed-fraction",
                "0",
                "--spread",
                "0",
                "--duration-min",
                "1",
                "--duration-max",
                "1",
                "--upload-delay-max",
                "1",
                "--time-scale",
                "1000",
                "--drop-fraction",
                "0",
                "--silent-fraction",
                "0.5",
                "--seed",
                "6",
                "--quiet",
                "--expected-file",
                str(expected),
            ]
        )
    finally:
        server.shutdown()
        server.server_close()
    out = capsys.readouterr()
    assert rc == 0, out.err
    plan = make_plan(
        SimConfig(rooms=4, users_per_room=1, segments_per_task=3, mixed_fraction=0, silent_fraction=0.5, seed=6)
    )
    middle = [i for i in plan.silent if plan.segments[i].seq_no == 1 and i + 1 not in plan.silent]
    last = [i for i in plan.silent if plan.segments[i].seq_no == 2]
    assert middle and last  # this seed has both kinds
    assert f"{len(plan.silent)} segments sent no callback at all" in out.err
    for i in middle:
        s = plan.segments[i]
        assert f"room {s.room_id} user {s.user_id} task {s.task_id} seq 1: unannounced, unconfirmed" in out.err
    for i in last:
        s = plan.segments[i]
        assert f"room {s.room_id} user {s.user_id} task {s.task_id} seq 2: untracked" in out.err
    assert f"unannounced {len(middle)};" in out.err
    assert json.loads(out.out)["expected_unannounced"] == len(middle)
    assert len(json.loads(expected.read_text())["unannounced"]) == len(middle)
