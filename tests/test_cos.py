"""The COS checker against real servers: moto's S3 (found, not found, 403, no such bucket) and a
small HTTP server of our own that is slow, fails or refuses (timeouts, 5xx, retries, floods)."""

from __future__ import annotations

import asyncio
import io
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import S3Server
from hypothesis import given, settings
from hypothesis import strategies as st

from gme_recwatch import logging as gme_logging
from gme_recwatch.cos import (
    CHECK_RESULTS,
    CheckError,
    CosChecker,
    CosConfig,
    CosConfigError,
    Credentials,
    Found,
    Listing,
    Located,
    NotFound,
    RecordedFile,
    listing_frame,
    load_credentials,
    locate,
    object_key,
    parse_buckets_file,
    parse_credentials_file,
    parse_file_name,
    result_name,
    tail,
)
from gme_recwatch.metrics import RECONCILE_RESULTS, Metrics
from gme_recwatch.settings import Settings
from gme_recwatch.simulate import SimConfig, make_plan

BIZ = 1400000000
FILE = "1400000000_100_999/2023-02-09-16-16-45_446946705284000000_audio.mp3"


def unique_bucket(prefix: str = "gme-records") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def moto_config(s3: S3Server, bucket: str, user: str | None = "reader", **kw: Any) -> CosConfig:
    creds = Credentials(*s3.keys[user]) if user else None
    return CosConfig(region=s3.REGION, default_bucket=bucket, endpoint=s3.url, credentials=creds, **kw)


def check(
    config: CosConfig,
    *calls: tuple[int, str],
    metrics: Metrics | None = None,
    witness: str | None = None,
    **kw: Any,
) -> list[Any]:
    """Look ``calls`` up; ``witness``: a file whose upload callback was received first."""

    async def go() -> list[Any]:
        async with CosChecker(config, metrics=metrics, **kw) as checker:
            if witness is not None:
                checker.witness(BIZ, witness, room_id="r", user_id="u", task_id=1, seq_no=0)
            return [await checker.check(b, f) for b, f in calls]

    return asyncio.run(go())


def counted(metrics: Metrics) -> dict[str, float]:
    return {
        s.labels["result"]: s.value
        for fam in metrics.reconcile_checks.collect()
        for s in fam.samples
        if s.name.endswith("_total") and s.value
    }


# ------------------------------------------------------------------------------- moto: S3 itself


def test_a_file_in_the_bucket_is_found_with_its_size(s3_server: S3Server) -> None:
    bucket = s3_server.bucket(unique_bucket(), {FILE: b"12345"})
    metrics = Metrics()
    (result,) = check(moto_config(s3_server, bucket), (BIZ, FILE), metrics=metrics)
    assert isinstance(result, Found)
    assert (result.bucket, result.key, result.size) == (bucket, FILE, 5)
    assert result.last_modified and abs(result.last_modified - time.time()) < 3600
    assert counted(metrics) == {"found": 1}


def test_a_file_not_in_an_existing_bucket_is_not_found(s3_server: S3Server) -> None:
    bucket = s3_server.bucket(unique_bucket(), {"other.mp3": b"x"})
    metrics = Metrics()
    (result,) = check(moto_config(s3_server, bucket), (BIZ, FILE), metrics=metrics, witness="other.mp3")
    assert result == NotFound(bucket, FILE)
    assert counted(metrics) == {"not_found": 1}


def test_a_missing_bucket_is_an_error_never_a_confirmed_missing_file(s3_server: S3Server) -> None:
    bucket = unique_bucket("no-such")

    async def go() -> tuple[list[Any], int]:
        async with CosChecker(moto_config(s3_server, bucket)) as checker:
            results = [await checker.check(BIZ, f"{i}.mp3") for i in range(5)]
            return results, checker.requests

    results, requests = asyncio.run(go())
    assert all(isinstance(r, CheckError) and r.reason == "no_such_bucket" for r in results)
    assert "does not exist" in results[0].detail
    assert requests == 5 + 1  # the bucket itself is looked at once, not once per file


def test_the_bucket_is_looked_at_once_per_ttl_however_many_files_are_missing(s3_server: S3Server) -> None:
    bucket = s3_server.bucket(unique_bucket(), {"seen.mp3": b"x"})

    async def go() -> int:
        async with CosChecker(
            moto_config(s3_server, bucket, max_concurrency=8, requests_per_second=1000)
        ) as checker:
            checker.witness(BIZ, "seen.mp3", room_id="r", user_id="u", task_id=1, seq_no=0)
            results = await asyncio.gather(*(checker.check(BIZ, f"{i}.mp3") for i in range(20)))
            assert all(isinstance(r, NotFound) for r in results)
            return checker.requests

    assert asyncio.run(go()) == 20 + 1 + 1  # and the witness, once per evidence window


def test_without_leave_to_head_the_bucket_a_missing_file_is_unconfirmed(s3_server: S3Server) -> None:
    bucket = s3_server.bucket(unique_bucket(), {"a.mp3": b"x"})
    config = moto_config(s3_server, bucket, user="objects_only")
    found, missing = check(config, (BIZ, "a.mp3"), (BIZ, FILE))
    assert isinstance(found, Found)
    assert isinstance(missing, CheckError) and missing.reason == "forbidden"
    assert "cos:HeadBucket" in missing.detail


def test_the_key_template_puts_the_file_under_its_prefix(s3_server: S3Server) -> None:
    key = f"recordings/{BIZ}/{FILE}"
    bucket = s3_server.bucket(unique_bucket(), {key: b"x"})
    config = moto_config(s3_server, bucket, key_template="recordings/{biz_id}/{file_name}")
    (found,) = check(config, (BIZ, FILE))
    assert isinstance(found, Found) and found.key == key


def test_each_app_is_looked_up_in_its_own_bucket_and_others_in_the_default(s3_server: S3Server) -> None:
    mine = s3_server.bucket(unique_bucket(), {"a.mp3": b"x"})
    default = s3_server.bucket(unique_bucket(), {"b.mp3": b"x"})
    config = moto_config(s3_server, default, buckets={BIZ + 1: mine})
    a_mine, b_mine, b_default = check(config, (BIZ + 1, "a.mp3"), (BIZ + 1, "b.mp3"), (BIZ, "b.mp3"))
    assert isinstance(a_mine, Found) and a_mine.bucket == mine
    assert isinstance(b_mine, NotFound) and b_mine.bucket == mine
    assert isinstance(b_default, Found) and b_default.bucket == default


def test_an_app_without_a_bucket_is_an_error_and_costs_no_request(s3_server: S3Server) -> None:
    config = moto_config(s3_server, "", buckets={BIZ + 1: "x-1250000000"})
    metrics = Metrics()
    (result,) = check(config, (BIZ, FILE), metrics=metrics)
    assert isinstance(result, CheckError) and result.reason == "no_bucket"
    assert str(BIZ) in result.detail
    assert counted(metrics) == {"error": 1}


@pytest.mark.parametrize("user", ["wrong", "nobody", None], ids=["unknown-key", "no-permission", "anonymous"])
def test_forbidden_is_an_error_and_is_not_retried(s3_server: S3Server, user: str | None) -> None:
    bucket = s3_server.bucket(unique_bucket(), {FILE: b"x"})
    if user == "wrong":
        config = CosConfig(
            region=s3_server.REGION,
            default_bucket=bucket,
            endpoint=s3_server.url,
            credentials=Credentials("AKIDnot-a-key-0000", "not-a-secret-0000"),
        )
    else:
        config = moto_config(s3_server, bucket, user=user)
    metrics = Metrics()

    async def go() -> tuple[Any, int]:
        async with CosChecker(config, metrics=metrics) as checker:
            return await checker.check(BIZ, FILE), checker.requests

    result, requests = asyncio.run(go())
    assert isinstance(result, CheckError)
    assert (result.reason, result.status, result.attempts, requests) == ("forbidden", 403, 1, 1)
    assert counted(metrics) == {"error": 1}


# ------------------------------------------------------------------------------- a server we steer


EMPTY_LISTING = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>gme-records-1250000000</Name>'
    b"<Prefix></Prefix><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>"
    b"</ListBucketResult>"
)


class Steered:
    """A real HTTP server on a loopback port whose answers the test decides: a delay, and a
    status per request (a list consumed in order; the last one repeats). It records every
    request's start and the most requests it ever had in flight."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.statuses = [200]
        self.listing = EMPTY_LISTING
        self.starts: list[float] = []
        self.paths: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        steered = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self) -> None:
                self._answer(b"")

            def do_GET(self) -> None:  # a listing: ``steered.listing`` when the status is 200
                self._answer(steered.listing)

            def _answer(self, body: bytes) -> None:
                with steered._lock:
                    steered.starts.append(time.monotonic())
                    steered.paths.append(self.path)
                    steered.in_flight += 1
                    steered.max_in_flight = max(steered.max_in_flight, steered.in_flight)
                    status = steered.statuses.pop(0) if len(steered.statuses) > 1 else steered.statuses[0]
                try:
                    time.sleep(steered.delay)
                    self.send_response(status)
                    if self.command == "GET":
                        body = body if status == 200 else b""
                        self.send_header("Content-Type", "application/xml")
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                        return
                    self.send_header("Content-Length", "7")
                    self.send_header("Last-Modified", "Thu, 09 Feb 2023 16:16:45 GMT")
                    self.end_headers()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with steered._lock:
                        steered.in_flight -= 1

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def max_per_window(self, seconds: float = 1.0) -> int:
        starts = sorted(self.starts)
        best, j = 0, 0
        for i, t in enumerate(starts):
            while starts[j] < t - seconds:
                j += 1
            best = max(best, i - j + 1)
        return best

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def steered() -> Iterator[Steered]:
    server = Steered()
    yield server
    server.stop()


def steered_config(server: Steered, **kw: Any) -> CosConfig:
    return CosConfig(
        region="ap-guangzhou",
        default_bucket="gme-records-1250000000",
        endpoint=server.url,
        credentials=Credentials("AKIDsteered", "steered-secret"),
        **kw,
    )


def test_a_slow_server_times_out_retries_once_and_is_an_error(steered: Steered) -> None:
    steered.delay = 1.0
    metrics = Metrics()
    started = time.monotonic()
    (result,) = check(steered_config(steered, timeout=0.3), (BIZ, FILE), metrics=metrics, retry_backoff=0.1)
    elapsed = time.monotonic() - started
    assert isinstance(result, CheckError)
    assert (result.reason, result.attempts) == ("timeout", 2)
    assert "0.3 s" in result.detail
    assert len(steered.starts) == 2
    assert 0.3 * 2 + 0.1 <= elapsed < 0.3 * 2 + 0.15 + 2.0  # two timeouts, one back-off
    assert counted(metrics) == {"error": 1}


def test_a_timeout_then_an_answer_is_found(steered: Steered) -> None:
    steered.delay = 0.5
    config = steered_config(steered, timeout=0.2)

    async def go() -> Any:
        async with CosChecker(config, retry_backoff=0.0) as checker:

            async def speed_up(seconds: float) -> None:
                steered.delay = 0.0  # the server recovers during the back-off

            checker._sleep = speed_up
            return await checker.check(BIZ, FILE)

    result = asyncio.run(go())
    assert isinstance(result, Found) and result.size == 7


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_5xx_is_retried_once_and_the_second_answer_counts(steered: Steered, status: int) -> None:
    steered.statuses = [status, 200]
    (result,) = check(steered_config(steered), (BIZ, FILE), retry_backoff=0.01)
    assert isinstance(result, Found) and len(steered.starts) == 2


def test_a_5xx_twice_is_a_server_error_with_its_status(steered: Steered) -> None:
    steered.statuses = [503]
    (result,) = check(steered_config(steered), (BIZ, FILE), retry_backoff=0.01)
    assert isinstance(result, CheckError)
    assert (result.reason, result.status, result.attempts) == ("server_error", 503, 2)
    assert "HTTP 503" in result.detail


@pytest.mark.parametrize(
    ("status", "reason"), [(403, "forbidden"), (400, "unexpected_status"), (409, "unexpected_status")]
)
def test_other_statuses_are_errors_at_once(steered: Steered, status: int, reason: str) -> None:
    steered.statuses = [status]
    (result,) = check(steered_config(steered), (BIZ, FILE), retry_backoff=0.01)
    assert isinstance(result, CheckError)
    assert (result.reason, result.status, result.attempts) == (reason, status, 1)
    assert len(steered.starts) == 1


def test_a_server_that_refuses_connections_is_a_connection_error_after_one_retry() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    config = CosConfig(
        region="ap-guangzhou",
        default_bucket="gme-records-1250000000",
        endpoint=f"http://127.0.0.1:{port}",
        timeout=2.0,
    )
    (result,) = check(config, (BIZ, FILE), retry_backoff=0.01)
    assert isinstance(result, CheckError)
    assert (result.reason, result.attempts) == ("connection", 2)


def test_virtual_hosting_puts_the_bucket_in_the_host_and_path_style_in_the_path(steered: Steered) -> None:
    check(steered_config(steered, addressing_style="path"), (BIZ, "a.mp3"))
    assert steered.paths == ["/gme-records-1250000000/a.mp3"]
    config = steered_config(steered)
    assert config.style == "path"  # an endpoint override: what S3 test servers expect
    default = CosConfig(region="ap-guangzhou", default_bucket="b-1")
    assert default.endpoint_url == "https://cos.ap-guangzhou.myqcloud.com"
    assert default.style == "virtual"  # what COS itself expects


def test_a_flood_of_a_thousand_checks_keeps_to_the_concurrency_and_the_rate(steered: Steered) -> None:
    steered.delay = 0.03
    rate, slots = 200.0, 8
    config = steered_config(steered, max_concurrency=slots, requests_per_second=rate)
    metrics = Metrics()

    async def go() -> list[Any]:
        async with CosChecker(config, metrics=metrics) as checker:
            return await asyncio.gather(*(checker.check(BIZ, f"{i}.mp3") for i in range(1000)))

    started = time.monotonic()
    results = asyncio.run(go())
    elapsed = time.monotonic() - started
    assert all(isinstance(r, Found) for r in results)
    assert len(steered.starts) == 1000
    assert steered.max_in_flight <= slots
    assert steered.max_per_window(1.0) <= rate * 1.05 + 2
    assert elapsed >= 999 / rate * 0.98
    assert counted(metrics) == {"found": 1000}


def test_requests_in_flight_never_exceed_the_concurrency_and_reach_it(steered: Steered) -> None:
    steered.delay = 0.2
    config = steered_config(steered, max_concurrency=4, requests_per_second=1000)

    async def go() -> None:
        async with CosChecker(config) as checker:
            await asyncio.gather(*(checker.check(BIZ, f"{i}.mp3") for i in range(24)))
            assert checker.in_flight == 0

    asyncio.run(go())
    assert steered.max_in_flight == 4


def test_retries_go_through_the_same_rate_limit(steered: Steered) -> None:
    steered.statuses = [503]
    config = steered_config(steered, max_concurrency=16, requests_per_second=50)

    async def go() -> None:
        async with CosChecker(config, retry_backoff=0.0) as checker:
            await asyncio.gather(*(checker.check(BIZ, f"{i}.mp3") for i in range(50)))

    asyncio.run(go())
    assert len(steered.starts) == 100
    assert steered.max_per_window(1.0) <= 50 * 1.05 + 2


# ------------------------------------------------------------------------------- no secrets


def test_credentials_never_appear_in_logs_results_or_errors(s3_server: S3Server, steered: Steered) -> None:
    stream = io.StringIO()
    gme_logging.configure(level="debug", fmt="json", stream=stream)
    secret_id, secret_key = "AKIDvisible-id-7f3a9", "visible-secret-key-c41d"
    real_id, real_key = s3_server.keys["reader"]
    bucket = s3_server.bucket(unique_bucket(), {FILE: b"x"})
    creds = Credentials(secret_id, secret_key)
    configs = [
        CosConfig(
            region=s3_server.REGION, default_bucket=bucket, endpoint=s3_server.url, credentials=creds
        ),  # 403
        moto_config(s3_server, bucket),  # found
        moto_config(s3_server, unique_bucket()),  # no bucket
        CosConfig(
            region="ap-guangzhou",
            default_bucket="b-1250000000",
            endpoint=steered.url,
            credentials=creds,
            timeout=0.2,
        ),  # timeout
    ]
    steered.delay = 0.5
    seen: list[str] = []
    for config in configs:
        for result in check(config, (BIZ, FILE), (BIZ, "missing.mp3"), retry_backoff=0.0):
            seen += [repr(result), str(result), getattr(result, "detail", "")]
        seen += [repr(config), str(config), repr(CosChecker(config))]
    text = "\n".join(seen) + stream.getvalue()
    for secret in (secret_id, secret_key, real_id, real_key):
        assert secret not in text
    assert "Credentials(<redacted>)" in text


def test_a_bad_credentials_file_says_where_but_never_what() -> None:
    with pytest.raises(CosConfigError) as info:
        parse_credentials_file("[default]\nsecret_id = AKIDabc\nthis line holds sk-9f8e7d\n")
    assert "sk-9f8e7d" not in str(info.value) and "AKIDabc" not in str(info.value)
    assert "line 3" in str(info.value)
    with pytest.raises(CosConfigError, match="line 2"):
        parse_credentials_file("secret_id = AKIDabc\nsk-9f8e7d\n")


# ------------------------------------------------------------------------------- configuration


def test_the_credentials_file_is_tencent_cloud_s_format() -> None:
    creds = parse_credentials_file("[default]\nsecret_id = AKIDxyz\nsecret_key = abc=def\n")
    assert (creds.secret_id, creds.secret_key) == ("AKIDxyz", "abc=def")
    assert parse_credentials_file("secret_id=a\nsecret_key=b\n") == Credentials("a", "b")


@pytest.mark.parametrize(
    "text",
    [
        "[default]\nsecret_id = a\n",
        "[other]\nsecret_id=a\nsecret_key=b\n",
        "",
        "[default]\nsecret_id = \nsecret_key = b\n",
    ],
)
def test_an_incomplete_credentials_file_is_refused(text: str) -> None:
    with pytest.raises(CosConfigError):
        parse_credentials_file(text)


def test_credentials_come_from_the_file_first_then_tencent_cloud_s_variables(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    path.write_text("[default]\nsecret_id = from-file\nsecret_key = file-key\n")
    env = Settings(cos_secret_id=" from-env ", cos_secret_key="env-key\n")
    assert load_credentials(env) == Credentials("from-env", "env-key")
    both = Settings(cos_secret_id="from-env", cos_secret_key="env-key", cos_credentials_file=str(path))
    assert load_credentials(both) == Credentials("from-file", "file-key")
    assert load_credentials(Settings()) is None
    with pytest.raises(CosConfigError, match="go together"):
        load_credentials(Settings(cos_secret_id="only-the-id"))


def test_the_buckets_file_maps_apps_to_buckets() -> None:
    text = "# per-app buckets\n1400000001 = app1-1250000000\n\n1400000002=app2-1250000000\n"
    assert parse_buckets_file(text) == {1400000001: "app1-1250000000", 1400000002: "app2-1250000000"}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("1400000001\n", "line 1: expected"),
        ("*=b-1250000000\n", "line 1: BizID must be digits"),
        ("\n1=Not_A_Bucket\n", "line 2"),
        ("1=a-1250000000\n1=b-1250000000\n", "two buckets"),
    ],
)
def test_a_bad_buckets_file_names_the_line(text: str, words: str) -> None:
    with pytest.raises(CosConfigError, match=words):
        parse_buckets_file(text)


def test_the_config_is_built_from_settings_and_files(tmp_path: Path) -> None:
    buckets = tmp_path / "buckets"
    buckets.write_text("1400000001=app1-1250000000\n")
    settings = Settings(
        cos_bucket="gme-records-1250000000",
        cos_region="ap-shanghai",
        cos_buckets_file=str(buckets),
        cos_endpoint="https://cos.example.test/",
        cos_key_template="r/{file_name}",
        cos_max_concurrency=3,
        cos_requests_per_second=7.5,
        cos_timeout_seconds=2.5,
        cos_secret_id="id",
        cos_secret_key="key",
    ).validate()
    config = CosConfig.from_settings(settings)
    assert config is not None
    assert config.bucket_for(1400000001) == "app1-1250000000"
    assert config.bucket_for(BIZ) == "gme-records-1250000000"
    assert config.endpoint_url == "https://cos.example.test"
    assert (config.max_concurrency, config.requests_per_second, config.timeout) == (3, 7.5, 2.5)
    assert config.credentials == Credentials("id", "key")
    assert "key'" not in repr(config) and "Credentials(<redacted>)" in repr(config)
    assert CosConfig.from_settings(Settings()) is None


def test_object_keys_fill_every_placeholder() -> None:
    key = object_key(
        "{biz_id}/{room_id}/{user_id}/{task_id}/{seq_no}/{file_name}",
        biz_id=1,
        file_name="f.mp3",
        room_id="r",
        user_id="u",
        task_id=446946705284000000,
        seq_no=2,
    )
    assert key == "1/r/u/446946705284000000/2/f.mp3"


def test_a_config_with_a_bad_key_template_is_refused() -> None:
    with pytest.raises(CosConfigError, match="file_name"):
        CosConfig(region="ap-guangzhou", key_template="{file_name.__class__}")


def test_result_labels_are_the_metric_s() -> None:
    assert CHECK_RESULTS == RECONCILE_RESULTS
    assert [
        result_name(r) for r in (Found("b", "k"), NotFound("b", "k"), CheckError("timeout", "b", "k"))
    ] == list(CHECK_RESULTS)


def test_check_before_open_is_a_programming_error() -> None:
    checker = CosChecker(CosConfig(region="ap-guangzhou", default_bucket="b-1250000000"))
    with pytest.raises(RuntimeError, match="open"):
        asyncio.run(checker.check(BIZ, FILE))


# ------------------------------------------------------------------------------- COS must prove it can see


class FaultyProxy:
    """A real HTTP proxy in front of moto that forwards every request as it came (SigV4 signs the
    Host it was sent to, which stays the proxy's) until ``broken``: then it answers 404 to
    everything, as a misrouted private endpoint or a gateway failing closed does."""

    def __init__(self, upstream: str) -> None:
        import http.client
        from urllib.parse import urlsplit

        self.broken = False
        target = urlsplit(upstream)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.broken:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
                conn.request(self.command, self.path, body, dict(self.headers.items()))
                answer = conn.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for k, v in answer.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "date", "server"):
                        self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_HEAD = do_GET = do_PUT = do_POST = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def faulty(s3_server: S3Server) -> Iterator[FaultyProxy]:
    proxy = FaultyProxy(s3_server.url)
    yield proxy
    proxy.stop()


def test_a_404_for_everything_never_confirms_a_file_missing(s3_server: S3Server, faulty: FaultyProxy) -> None:
    """The bucket was seen to exist and a witness found; then the endpoint answers 404 to
    everything: once the evidence is older than cos_evidence_seconds, a file that exists is
    not "confirmed missing" but an error ``blind`` naming the bucket."""
    bucket = s3_server.bucket(unique_bucket(), {"witness.mp3": b"w", FILE: b"there"})
    creds = Credentials(*s3_server.keys["reader"])
    config = CosConfig(
        region=s3_server.REGION,
        default_bucket=bucket,
        endpoint=faulty.url,
        credentials=creds,
        evidence_seconds=0.3,
    )

    async def go() -> tuple[Any, Any, Any]:
        async with CosChecker(config) as checker:
            checker.witness(BIZ, "witness.mp3", room_id="r", user_id="u", task_id=1, seq_no=0)
            healthy = await checker.check(BIZ, "gone.mp3")  # a real miss, proven: confirmed
            faulty.broken = True
            await asyncio.sleep(0.4)
            blind = await checker.check(BIZ, FILE)
            faulty.broken = False
            await asyncio.sleep(0.4)
            again = await checker.check(BIZ, "gone.mp3")  # the endpoint sees again
            return healthy, blind, again

    healthy, blind, again = asyncio.run(go())
    assert healthy == NotFound(bucket, "gone.mp3")
    assert isinstance(blind, CheckError) and (blind.reason, blind.bucket) == ("blind", bucket)
    assert "does not see files that exist" in blind.detail
    assert again == NotFound(bucket, "gone.mp3")


def test_a_404_with_no_witness_is_unproven_not_confirmed(s3_server: S3Server) -> None:
    bucket = s3_server.bucket(unique_bucket(), {"other.mp3": b"x"})
    metrics = Metrics()
    (result,) = check(moto_config(s3_server, bucket), (BIZ, FILE), metrics=metrics)
    assert isinstance(result, CheckError) and result.reason == "unproven"
    assert counted(metrics) == {"error": 1}


def test_a_file_found_is_evidence_enough_for_the_next_404(s3_server: S3Server) -> None:
    bucket = s3_server.bucket(unique_bucket(), {"other.mp3": b"x"})
    found, missing = check(moto_config(s3_server, bucket), (BIZ, "other.mp3"), (BIZ, FILE))
    assert isinstance(found, Found) and missing == NotFound(bucket, FILE)


# ------------------------------------------------------------------------------- a stream's folder

TASK = 446946705284000000
STAMP = "2023-02-09-16-16-45"  # the sample's, 1675959405 read as UTC
STAMP_AT = 1675959405


def ids(room: str = "100", user: str = "999", mode: int = 1) -> dict[str, Any]:
    return {"biz_id": BIZ, "room_id": room, "user_id": user, "record_mode": mode}


def stamp(t: int) -> str:
    return time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime(t))


@pytest.mark.parametrize(
    ("name", "mode", "layout", "seq", "kind"),
    [
        # Tencent's sample callback: a mixed task, in a folder that names the user.
        (FILE, 1, "mixed_with_user", None, "audio"),
        # The documented mixed folder, the room's.
        (f"{BIZ}_100/{STAMP}_{TASK}_mix.mp3", 1, "mixed", None, "mix"),
        # The documented single-stream folder, the user's; with our simulator's SeqNo.
        (f"{BIZ}_100_999/{STAMP}_{TASK}_3_audio.mp3", 0, "single", 3, "audio"),
        (f"{BIZ}_100/{STAMP}_{TASK}_0_mix.m4a", 1, "mixed", 0, "mix"),
    ],
    ids=["sample", "mixed", "single-with-seq", "mixed-with-seq"],
)
def test_each_layout_is_parsed(name: str, mode: int, layout: str, seq: int | None, kind: str) -> None:
    got = parse_file_name(name, **ids(mode=mode))
    assert got is not None
    assert (got.name, got.key, got.folder_layout, got.started, got.task_id, got.seq_no, got.kind) == (
        name,
        name,
        layout,
        STAMP_AT,
        TASK,
        seq,
        kind,
    )


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        (f"{BIZ}_100/{STAMP}_{TASK}_audio.mp3", 0),  # a room's folder for a single stream
        (f"{BIZ}_100_998/{STAMP}_{TASK}_audio.mp3", 0),  # another user's
        (f"{BIZ}_1000_999/{STAMP}_{TASK}_audio.mp3", 0),  # another room's
        (f"{BIZ + 1}_100_999/{STAMP}_{TASK}_audio.mp3", 0),  # another app's
        (f"{STAMP}_{TASK}_audio.mp3", 0),  # no folder
        (f"x/{BIZ}_100_999/{STAMP}_{TASK}_audio.mp3", 0),  # a folder deeper
        (f"{BIZ}_100_999/2023-02-30-16-16-45_{TASK}_audio.mp3", 0),  # no such day
        (f"{BIZ}_100_999/2023-02-09-24-16-45_{TASK}_audio.mp3", 0),  # no such hour
        (f"{BIZ}_100_999/2023-02-09-16-16-45_{TASK}_audio", 0),  # no extension
        (f"{BIZ}_100_999/2023-02-09-16-16-45_{TASK}.mp3", 0),  # no kind
        (f"{BIZ}_100_999/2023-02-09-16-16-45_{TASK}_1_2_audio.mp3", 0),  # two numbers
        (
            f"{BIZ}_100_999/2023-02-09-16-16-45_\uff14\uff14\uff16_audio.mp3",
            0,
        ),  # full-width digits, which int() takes
        (f"{BIZ}_100_999/2023-02-09-16-16-45_{TASK}_audio.mp3.tmp", 0),
        (f"{BIZ}_100_999/{STAMP}_{TASK}_audio.mp3", 2),  # no such RecordMode
    ],
)
def test_any_other_name_is_an_unknown_layout(name: str, mode: int) -> None:
    assert parse_file_name(name, **ids(mode=mode)) is None


def test_every_name_the_simulator_writes_is_read_with_its_seq_no() -> None:
    plan = make_plan(SimConfig(rooms=30, segments_per_task=3, mixed_fraction=0.5, seed=7))
    modes = set()
    for s in plan.segments:
        got = parse_file_name(
            s.file_name, biz_id=BIZ, room_id=s.room_id, user_id=s.user_id, record_mode=s.record_mode
        )
        assert got is not None, s.file_name
        assert (got.task_id, got.seq_no) == (s.task_id, s.seq_no)
        modes.add((s.record_mode, got.folder_layout))
    assert modes == {(0, "single"), (1, "mixed")}


def test_ids_with_underscores_are_matched_whole_never_split() -> None:
    """A folder is compared whole with the folders of the ids asked about: splitting it on "_"
    could not tell room "room_1" of user "user_2" from room "room" of user "1_user_2"."""
    name = f"{BIZ}_room_1_user_2/{STAMP}_{TASK}_audio.mp3"
    got = parse_file_name(name, **ids(room="room_1", user="user_2", mode=0))
    assert got is not None and got.folder_layout == "single"
    assert parse_file_name(name, **ids(room="room_1", user="user", mode=0)) is None
    assert parse_file_name(name, **ids(room="room", user="user_2", mode=0)) is None
    mixed = parse_file_name(name, **ids(room="room_1", user="user_2", mode=1))
    assert mixed is not None and mixed.folder_layout == "mixed_with_user"
    # The same folder is a mixed room's own when the room is "room_1_user_2": two streams can
    # share a folder's name, and only the TaskID tells their files apart (list_stream does).
    room = parse_file_name(name, **ids(room="room_1_user_2", user="x", mode=1))
    assert room is not None and room.folder_layout == "mixed"


def test_the_stamp_is_read_as_utc_and_orders_files() -> None:
    a = parse_file_name(f"{BIZ}_100_999/2023-12-31-23-59-59_1_audio.mp3", **ids(mode=0))
    b = parse_file_name(f"{BIZ}_100_999/2024-01-01-00-00-00_1_audio.mp3", **ids(mode=0))
    assert a is not None and b is not None
    assert (a.started, b.started) == (1704067199, 1704067200)


@pytest.mark.parametrize(
    ("template", "frame"),
    [
        ("{file_name}", ("", "")),
        ("recordings/{biz_id}/{file_name}", (f"recordings/{BIZ}/", "")),
        ("{room_id}/{user_id}/{task_id}/{file_name}.bak", (f"r_1/u/{TASK}/", ".bak")),
        ("{{x}}/{file_name}", ("{x}/", "")),
        ("{seq_no}/{file_name}", None),
        ("{file_name}/{seq_no}", None),
        ("{file_name}{file_name}", None),
    ],
)
def test_the_template_s_prefix_and_suffix_frame_the_file_name(template: str, frame: Any) -> None:
    assert listing_frame(template, biz_id=BIZ, room_id="r_1", user_id="u", task_id=TASK) == frame


def listed(
    config: CosConfig,
    *streams: dict[str, Any],
    metrics: Metrics | None = None,
    witness: str | None = None,
    **kw: Any,
) -> tuple[list[Any], int]:
    """List each stream's folder; ``streams``: list_stream's keyword arguments plus biz_id."""

    async def go() -> tuple[list[Any], int]:
        async with CosChecker(config, metrics=metrics, **kw) as checker:
            if witness is not None:
                checker.witness(BIZ, witness, room_id="r", user_id="u", task_id=1, seq_no=0)
            got = [await checker.list_stream(s.pop("biz_id", BIZ), **s) for s in streams]
            return got, checker.requests

    return asyncio.run(go())


def stream(
    room: str = "100", user: str = "999", mode: int = 0, task: int = TASK, hint: str = ""
) -> dict[str, Any]:
    return {"room_id": room, "user_id": user, "record_mode": mode, "task_id": task, "hint": hint}


def segment_names(
    folder: str, task: int, seqs: list[int], *, numbered: bool, kind: str = "audio"
) -> dict[int, str]:
    base = 1_700_000_000
    return {
        seq: f"{folder}/{stamp(base + 60 * seq)}_{task}" + (f"_{seq}" if numbered else "") + f"_{kind}.mp3"
        for seq in seqs
    }


def test_a_single_stream_folder_lists_the_task_s_files_in_order_among_others(s3_server: S3Server) -> None:
    """The user's folder holds this task's segments 0, 1, 3, another task of the same stream,
    another user's files beside it, names of no known layout and a sub-folder."""
    folder = f"{BIZ}_100_999"
    mine = segment_names(folder, TASK, [3, 0, 1], numbered=False)
    objects = {name: b"x" for name in mine.values()}
    objects |= {n: b"x" for n in segment_names(folder, TASK + 1, [0, 1], numbered=False).values()}
    objects |= {n: b"x" for n in segment_names(f"{BIZ}_100_9999", TASK, [2], numbered=False).values()}
    objects |= {f"{folder}/notes.txt": b"x", f"{folder}/deeper/a.mp3": b"x", f"{folder}/deeper/b.mp3": b"x"}
    bucket = s3_server.bucket(unique_bucket(), objects)
    metrics = Metrics()
    (listing,), requests = listed(moto_config(s3_server, bucket), stream(), metrics=metrics)
    assert isinstance(listing, Listing)
    assert [f.name for f in listing.files] == [mine[0], mine[1], mine[3]]
    assert all(f.folder_layout == "single" and f.task_id == TASK for f in listing.files)
    assert listing.prefixes == (f"{folder}/",)
    assert (listing.unknown, listing.other_tasks) == (2, 2)  # notes.txt, deeper/ (one entry)
    assert listing.requests == requests == 1
    assert counted(metrics) == {"found": 1}
    assert locate(listing, TASK, 1, mine[3], 3) == Located("ambiguous", why=ANY_WHY)
    assert locate(listing, TASK, 1, mine[1], 1).file == listing.files[1]


class _AnyWhy(str):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)

    __hash__ = str.__hash__


ANY_WHY = _AnyWhy("any reason")


@pytest.mark.parametrize(
    ("layout", "room", "user"),
    [("mixed", "1_2_3", "u_9"), ("mixed_with_user", "1_2_3", "u_9"), ("mixed_with_user", "房间 1", "玩家+%2F")],
)
def test_a_mixed_stream_is_found_in_the_room_s_folder_or_else_the_user_s(
    s3_server: S3Server, layout: str, room: str, user: str
) -> None:
    folder = f"{BIZ}_{room}" if layout == "mixed" else f"{BIZ}_{room}_{user}"
    names = segment_names(folder, TASK, [0, 1, 2], numbered=True, kind="mix")
    bucket = s3_server.bucket(unique_bucket(), {n: b"x" for n in names.values()})
    (listing,), requests = listed(
        moto_config(s3_server, bucket), stream(room=room, user=user, mode=1), witness=names[0]
    )
    assert isinstance(listing, Listing)
    assert [f.folder_layout for f in listing.files] == [layout] * 3
    expected = (f"{BIZ}_{room}/",) if layout == "mixed" else (f"{BIZ}_{room}/", f"{BIZ}_{room}_{user}/")
    assert listing.prefixes == expected
    assert requests == len(expected)  # the room's folder is listed first, the user's only if need be
    for seq in (0, 1, 2):
        assert locate(listing, TASK, seq).file == listing.files[seq]
        assert locate(listing, TASK, seq).file.name == names[seq]  # type: ignore[union-attr]
    assert locate(listing, TASK, 3).result == "not_found"


def test_a_hint_names_the_one_folder_to_list(s3_server: S3Server) -> None:
    folder = f"{BIZ}_100_999"  # the sample's layout for a mixed task
    names = segment_names(folder, TASK, [0, 2], numbered=False)
    bucket = s3_server.bucket(unique_bucket(), {n: b"x" for n in names.values()})
    (listing,), requests = listed(moto_config(s3_server, bucket), stream(mode=1, hint=names[2]))
    assert isinstance(listing, Listing)
    assert listing.prefixes == (f"{folder}/",) and requests == 1  # never the room's folder
    assert [f.name for f in listing.files] == [names[0], names[2]]
    assert locate(listing, TASK, 1, names[2], 2).result == "ambiguous"  # 1 of 2 earlier files there


def test_the_key_template_s_prefix_is_listed_and_stripped(s3_server: S3Server) -> None:
    names = segment_names(f"{BIZ}_100_999", TASK, [0, 1], numbered=False)
    bucket = s3_server.bucket(
        unique_bucket(), {f"recordings/{BIZ}/{n}": b"x" for n in names.values()} | {f"{BIZ}_100_999/x": b"x"}
    )
    config = moto_config(s3_server, bucket, key_template="recordings/{biz_id}/{file_name}")
    (listing,), _ = listed(config, stream())
    assert isinstance(listing, Listing)
    assert listing.prefixes == (f"recordings/{BIZ}/{BIZ}_100_999/",)
    assert [(f.name, f.key) for f in listing.files] == [(n, f"recordings/{BIZ}/{n}") for n in names.values()]
    assert locate(listing, TASK, 0, names[1], 1).file == listing.files[0]


def test_a_template_whose_folder_depends_on_the_seq_no_cannot_be_listed(s3_server: S3Server) -> None:
    config = moto_config(s3_server, unique_bucket(), key_template="{seq_no}/{file_name}")
    metrics = Metrics()
    (result,), requests = listed(config, stream(), metrics=metrics)
    assert isinstance(result, CheckError) and result.reason == "unlistable"
    assert requests == 0 and counted(metrics) == {"error": 1}


@pytest.mark.parametrize(("files", "pages"), [(30, 3), (31, 3)])
def test_pages_are_bounded_and_a_larger_folder_is_an_error_not_a_guess(
    s3_server: S3Server, files: int, pages: int
) -> None:
    """Ten keys a page, three pages at most: 30 files fit, 31 do not."""
    folder = f"{BIZ}_100_999"
    names = segment_names(folder, TASK, list(range(files)), numbered=True)
    bucket = s3_server.bucket(unique_bucket(), {n: b"x" for n in names.values()})
    config = moto_config(s3_server, bucket, list_max_pages=3)
    (result,), requests = listed(config, stream(), list_page_keys=10)
    assert requests == pages
    if files <= 30:
        assert isinstance(result, Listing) and len(result.files) == files and result.requests == pages
    else:
        assert isinstance(result, CheckError) and result.reason == "too_many_files"
        assert "more than 30 keys" in result.detail and "GME_RECWATCH_COS_LIST_MAX_PAGES=3" in result.detail


@pytest.mark.parametrize("user", ["objects_only", "nobody"])
def test_a_key_without_leave_to_list_is_forbidden_at_once(s3_server: S3Server, user: str) -> None:
    bucket = s3_server.bucket(unique_bucket(), {FILE: b"x"})
    metrics = Metrics()
    (result,), requests = listed(moto_config(s3_server, bucket, user=user), stream(mode=1), metrics=metrics)
    assert isinstance(result, CheckError)
    assert (result.reason, result.status, result.attempts, requests) == ("forbidden", 403, 1, 1)
    assert "cos:GetBucket" in result.detail
    assert counted(metrics) == {"error": 1}


def test_listing_a_missing_bucket_is_an_error(s3_server: S3Server) -> None:
    (result,), requests = listed(moto_config(s3_server, unique_bucket("no-such")), stream())
    assert isinstance(result, CheckError) and result.reason == "no_such_bucket"
    assert requests == 1


def test_an_app_without_a_bucket_lists_nothing(s3_server: S3Server) -> None:
    (result,), requests = listed(moto_config(s3_server, ""), stream())
    assert isinstance(result, CheckError) and result.reason == "no_bucket" and requests == 0


def test_an_empty_folder_needs_evidence_that_the_endpoint_sees(s3_server: S3Server) -> None:
    bucket = s3_server.bucket(unique_bucket(), {"witness.mp3": b"w"})
    metrics = Metrics()
    (unproven,), _ = listed(moto_config(s3_server, bucket), stream(), metrics=metrics)
    assert isinstance(unproven, CheckError) and unproven.reason == "unproven"
    assert "the folder lists empty" in unproven.detail
    (empty,), requests = listed(
        moto_config(s3_server, bucket), stream(), metrics=metrics, witness="witness.mp3"
    )
    assert isinstance(empty, Listing) and empty.files == () and empty.requests == requests == 2
    assert locate(empty, TASK, 0).result == "not_found" and tail(empty, TASK, 0) == []
    assert counted(metrics) == {"error": 1, "not_found": 1}


def test_an_empty_listing_from_an_endpoint_that_sees_nothing_confirms_nothing(steered: Steered) -> None:
    """A gateway that answers every listing empty and every HEAD 404: the witness is not found
    either, so the empty folder is an error ``blind``, not a task without files."""
    steered.statuses = [200, 404]  # the listing, then the witness's HEAD (and so on)
    (result,), requests = listed(steered_config(steered), stream(), witness="witness.mp3")
    assert isinstance(result, CheckError) and result.reason == "blind"
    assert requests == 2


def test_a_listing_that_fails_with_a_5xx_is_retried_once(steered: Steered) -> None:
    steered.statuses = [503, 200]
    folder = f"{BIZ}_100_999"
    name = f"{folder}/{STAMP}_{TASK}_audio.mp3"
    steered.listing = EMPTY_LISTING.replace(
        b"<KeyCount>0</KeyCount>",
        f"<KeyCount>1</KeyCount><Contents><Key>{name}</Key><Size>1</Size></Contents>".encode(),
    )
    (result,), requests = listed(steered_config(steered), stream(), retry_backoff=0.01)
    assert isinstance(result, Listing) and [f.name for f in result.files] == [name]
    assert requests == result.requests == 2
    assert "list-type=2" in steered.paths[0] and "prefix=1400000000_100_999%2F" in steered.paths[0]
    steered.statuses = [503]
    (failed,), _ = listed(steered_config(steered), stream(), retry_backoff=0.01)
    assert isinstance(failed, CheckError) and (failed.reason, failed.attempts) == ("server_error", 2)


def test_unknown_names_are_counted_for_the_app(s3_server: S3Server) -> None:
    folder = f"{BIZ}_100_999"
    bucket = s3_server.bucket(
        unique_bucket(),
        {f"{folder}/{i}.wav": b"x" for i in range(3)} | {f"{folder}/{STAMP}_{TASK}_audio.mp3": b"x"},
    )
    (listing,), _ = listed(moto_config(s3_server, bucket), stream())
    assert isinstance(listing, Listing) and listing.unknown == 3 and len(listing.files) == 1
    metrics = Metrics()
    metrics.touch_app(str(BIZ))
    name = "gme_recording_cos_unknown_file_names_total"
    assert metrics.registry.get_sample_value(name, {"app_id": str(BIZ)}) == 0
    metrics.count_unknown_names(str(BIZ), listing.unknown)
    metrics.count_unknown_names(str(BIZ), 0)
    assert metrics.registry.get_sample_value(name, {"app_id": str(BIZ)}) == 3


def test_listings_share_the_concurrency_limit_with_lookups(steered: Steered) -> None:
    steered.delay = 0.05
    config = steered_config(steered, max_concurrency=2, requests_per_second=1000)

    async def go() -> None:
        async with CosChecker(config) as checker:
            checker.witness(BIZ, "w.mp3", room_id="r", user_id="u", task_id=1, seq_no=0)
            await asyncio.gather(
                *(checker.list_stream(BIZ, **stream(task=i)) for i in range(6)),
                *(checker.check(BIZ, f"{i}.mp3") for i in range(6)),
            )

    asyncio.run(go())
    assert sum("list-type=2" in path for path in steered.paths) == 6
    assert 12 <= len(steered.paths) <= 13  # and the witness, unless a lookup found a file first
    assert steered.max_in_flight == 2


def test_a_listing_with_keys_is_evidence_for_the_next_404(s3_server: S3Server) -> None:
    bucket = s3_server.bucket(unique_bucket(), {f"{BIZ}_100_999/{STAMP}_{TASK}_audio.mp3": b"x"})

    async def go() -> tuple[Any, Any]:
        async with CosChecker(moto_config(s3_server, bucket)) as checker:  # no witness
            before = await checker.check(BIZ, "gone.mp3")
            await checker.list_stream(BIZ, **stream())
            return before, await checker.check(BIZ, "gone.mp3")

    before, after = asyncio.run(go())
    assert isinstance(before, CheckError) and before.reason == "unproven"
    assert after == NotFound(bucket, "gone.mp3")


# ------------------------------------------------------------------------------- locate and tail


def rf(seq: int | None, started: int, task: int = TASK, kind: str = "audio", ext: str = "mp3") -> RecordedFile:
    numbered = f"_{seq}" if seq is not None else ""
    name = f"{BIZ}_100_999/{stamp(started)}_{task}{numbered}_{kind}.{ext}"
    got = parse_file_name(name, **ids(mode=0))
    assert got is not None
    return got


def listing_of(*files: RecordedFile) -> Listing:
    return Listing("b", ("p/",), TASK, tuple(sorted(files, key=lambda f: (f.started, f.name))))


T0 = 1_700_000_000
A, B, C, D = (rf(None, T0 + 60 * i) for i in range(4))  # segments 0..3 of a task, no SeqNo in names


@pytest.mark.parametrize(
    ("files", "seq", "anchor", "anchor_seq", "result", "file"),
    [
        # the anchor (seq 3) sits at position 3: every earlier segment is there
        ((A, B, C, D), 0, D, 3, "found", A),
        ((A, B, C, D), 2, D, 3, "found", C),
        ((A, B, C, D), 3, D, 3, "found", D),
        # nothing before the anchor: every earlier segment is missing
        ((D,), 0, D, 3, "not_found", None),
        ((D,), 2, D, 3, "not_found", None),
        # some missing, which unknown: never a guess
        ((A, C, D), 0, D, 3, "ambiguous", None),
        ((B, D), 1, D, 3, "ambiguous", None),
        # more files before the anchor than segments
        ((A, B, C, D), 0, D, 2, "ambiguous", None),
        # after the anchor nothing can be told from position
        ((A, B, C, D), 3, B, 1, "ambiguous", None),
        # the anchor is not listed
        ((A, B, C), 0, D, 3, "ambiguous", None),
        ((A, B, C), 3, D, 3, "not_found", None),
        # no anchor, names without SeqNo
        ((A, B, C, D), 0, None, -1, "ambiguous", None),
        # no file of the task at all
        ((), 0, None, -1, "not_found", None),
        ((rf(None, T0, task=TASK + 1),), 0, D, 3, "not_found", None),
        # two kinds of file for the task: two files per segment, maybe
        ((A, B, C, rf(None, T0 + 1, kind="mix"), D), 0, D, 3, "ambiguous", None),
        # ...even when the count happens to fit: segment 1 missing, segment 0 in two kinds
        ((A, rf(None, T0 + 1, kind="mix"), C), 1, C, 2, "ambiguous", None),
        # SeqNo in the names: matched by it
        ((rf(0, T0), rf(2, T0 + 60)), 2, None, -1, "found", rf(2, T0 + 60)),
        ((rf(0, T0), rf(2, T0 + 60)), 1, None, -1, "not_found", None),
        ((rf(0, T0), rf(0, T0 + 60)), 0, None, -1, "ambiguous", None),
        ((rf(0, T0), B), 0, None, -1, "ambiguous", None),  # some numbered, some not
    ],
)
def test_locate(
    files: tuple[RecordedFile, ...],
    seq: int,
    anchor: RecordedFile | None,
    anchor_seq: int,
    result: str,
    file: RecordedFile | None,
) -> None:
    got = locate(listing_of(*files), TASK, seq, anchor.name if anchor else "", anchor_seq)
    assert (got.result, got.file) == (result, file)
    assert got.why


def test_locate_refuses_files_that_started_in_the_same_second() -> None:
    twin = replace(B, name=B.name.replace(".mp3", ".mp3x"), key="k")  # not a name Tencent writes
    assert locate(listing_of(A, B, twin, D), TASK, 0, D.name, 3).result == "ambiguous"
    same_as_anchor = replace(A, started=D.started, name="z")
    # Four files for three earlier segments once the one in the anchor's second is counted:
    # which of them is not a segment is unknown.
    assert locate(listing_of(A, B, C, same_as_anchor, D), TASK, 1, D.name, 3).result == "ambiguous"
    assert tail(listing_of(A, B, same_as_anchor, D), TASK, 2, D.name) is None


@pytest.mark.parametrize(
    ("files", "last_seq", "last", "expected"),
    [
        ((A, B, C, D), 1, B, [(2, C), (3, D)]),
        ((A, B), 1, B, []),
        ((), 1, B, []),
        ((B, C, D), 1, B, None),  # segment 0's file is missing: B is not at position 1
        ((A, B, C, D), 1, None, None),  # no anchor, no SeqNo in names
        ((A, C, D), 1, B, None),  # the anchor is not listed
        ((rf(0, T0), rf(3, T0 + 1), rf(5, T0 + 2)), 0, None, [(3, rf(3, T0 + 1)), (5, rf(5, T0 + 2))]),
        ((rf(0, T0), rf(3, T0 + 1), rf(3, T0 + 2)), 0, None, None),
    ],
)
def test_tail(files: tuple[RecordedFile, ...], last_seq: int, last: RecordedFile | None, expected: Any) -> None:
    assert tail(listing_of(*files), TASK, last_seq, last.name if last else "") == expected


def test_tail_cannot_see_a_gap_after_the_last_announced_segment() -> None:
    """The documented limit: without SeqNo in names, a missing segment 2 makes segment 3's file
    look like segment 2's. locate never does this; tail's SeqNos are as good as that rule."""
    assert tail(listing_of(A, B, D), TASK, 1, B.name) == [(2, D)]
    assert locate(listing_of(A, B, D), TASK, 2, B.name, 1).result == "ambiguous"


@settings(max_examples=300)
@given(
    present=st.lists(st.booleans(), min_size=1, max_size=10),
    gaps=st.lists(st.integers(min_value=1, max_value=3600), min_size=10, max_size=10),
    numbered=st.booleans(),
    anchor_at=st.integers(min_value=0, max_value=9),
    others=st.lists(st.integers(min_value=0, max_value=40_000), max_size=4),
    seq=st.integers(min_value=0, max_value=11),
)
def test_locate_never_returns_a_wrong_file(
    present: list[bool], gaps: list[int], numbered: bool, anchor_at: int, others: list[int], seq: int
) -> None:
    """Segments 0..n-1 of a task, some files missing, among other tasks' files: whatever is
    asked, ``found`` is that segment's file, and ``not_found`` is a segment without one."""
    starts = [T0 + sum(gaps[: i + 1]) for i in range(len(present))]
    files = {i: rf(i if numbered else None, starts[i]) for i, there in enumerate(present) if there}
    noise = [rf(None, T0 + t, task=TASK + 1 + k) for k, t in enumerate(others)]
    listing = listing_of(*files.values(), *noise)
    anchor_seq = anchor_at if anchor_at < len(present) else -1
    # The anchor's FileName is known from its callback, whether or not its file is there.
    anchor_name = rf(anchor_seq if numbered else None, starts[anchor_seq]).name if anchor_seq >= 0 else ""
    got = locate(listing, TASK, seq, anchor_name, anchor_seq)
    if got.result == "found":
        assert got.file == files[seq]
    elif got.result == "not_found":
        assert seq not in files
    later = tail(listing, TASK, anchor_seq, anchor_name)
    if later is not None and all(present[anchor_seq + 1 :] if anchor_seq >= 0 else present):
        # With no gap after the last announced segment, tail's SeqNos are exact too.
        assert later == sorted((i, f) for i, f in files.items() if i > anchor_seq)
