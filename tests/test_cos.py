"""The COS checker against real servers: moto's S3 (found, not found, 403, no such bucket) and a
small HTTP server of our own that is slow, fails or refuses (timeouts, 5xx, retries, floods)."""

from __future__ import annotations

import asyncio
import io
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import S3Server

from gme_recwatch import logging as gme_logging
from gme_recwatch.cos import (
    CHECK_RESULTS,
    CheckError,
    CosChecker,
    CosConfig,
    CosConfigError,
    Credentials,
    Found,
    NotFound,
    load_credentials,
    object_key,
    parse_buckets_file,
    parse_credentials_file,
    result_name,
)
from gme_recwatch.metrics import RECONCILE_RESULTS, Metrics
from gme_recwatch.settings import Settings

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


class Steered:
    """A real HTTP server on a loopback port whose answers the test decides: a delay, and a
    status per request (a list consumed in order; the last one repeats). It records every
    request's start and the most requests it ever had in flight."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.statuses = [200]
        self.starts: list[float] = []
        self.paths: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        steered = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self) -> None:
                with steered._lock:
                    steered.starts.append(time.monotonic())
                    steered.paths.append(self.path)
                    steered.in_flight += 1
                    steered.max_in_flight = max(steered.max_in_flight, steered.in_flight)
                    status = steered.statuses.pop(0) if len(steered.statuses) > 1 else steered.statuses[0]
                try:
                    time.sleep(steered.delay)
                    self.send_response(status)
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
