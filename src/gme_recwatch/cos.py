"""Is a recorded file in COS? One HEAD request per file, bounded, timed out, retried once.

Tencent says plainly that recording callbacks can be lost; the file may sit safely in COS all
the same. :class:`CosChecker` answers :class:`Found`, :class:`NotFound` or
:class:`CheckError` for one recorded file, for the deadline sweep to consult before it calls a
segment stuck or its upload missing (:mod:`.reconcile` does, for the held segments the
stores hand out).

**Client: aiobotocore.** COS speaks the S3 API (SigV4 signing, ``HeadObject``), so any
well-kept S3 client works with ``endpoint_url=https://cos.<region>.myqcloud.com``. aiobotocore
is botocore -- the core of AWS's own SDK, the most used S3 client in Python -- on asyncio and
aiohttp: a HEAD waits on the event loop, not on a thread, and standard S3 requests against a
custom endpoint are its everyday use. Tencent's cos-python-sdk-v5 is synchronous (requests; a
thread per lookup) and signs in COS's own scheme, which S3 test servers do not speak; a
hand-written SigV4 signer over httpx would be ours to maintain. The cost is size: botocore
carries every AWS service's model, about 30 MB installed, plus aiohttp (about 8 MB); the
image keeps botocore's S3 model only (Dockerfile), so it grows by about 9 MB. Building a
client loads the S3 model (a few hundred ms of CPU), so :meth:`CosChecker.open` belongs at
start-up, never on a request path.

**Bounded.** At most ``cos_max_concurrency`` requests in flight (a semaphore), at most
``cos_requests_per_second`` started (a token bucket on the monotonic clock, retries
included), each within ``cos_timeout_seconds``. A timeout, a connection error or a 5xx is
retried once after a short back-off; 403 and anything unexpected are errors at once. A flood of
due segments queues here; it never hammers COS.

**Trustworthy "not found".** A HEAD on a missing object and a HEAD in a missing bucket both
answer a bare 404 (a HEAD has no body to tell them apart). So the first 404 from a bucket is
followed by a HEAD on the bucket itself; a bucket that does not exist (a typo in the setting)
makes every lookup an error, never a confirmed "missing", and so does a key without leave to
HEAD the bucket (``cos:HeadBucket``). Answers are remembered for :data:`BUCKET_TTL` seconds.
The API key therefore needs ``cos:HeadObject`` and ``cos:HeadBucket`` on the bucket(s), and
``cos:GetBucket`` to list a stream's folder.

**Segments no callback named** have no FileName to HEAD: :meth:`CosChecker.list_stream` lists
the folder of their recording stream, under the same limits, and the pure functions at the end of
this module read the names (:func:`parse_file_name`) and match them to SeqNos (:func:`locate`,
:func:`tail`), answering "ambiguous" rather than guessing (docs/reconciliation.md, "Listing a
stream's folder").

**A 404 confirms only what an endpoint that can see says.** An endpoint that answers 404 to
everything (a misrouted private endpoint, a gateway failing closed) would otherwise confirm
every looked-up file missing. So a 404 is trusted only while the checker has recent evidence
(``evidence_seconds``) that this bucket's endpoint finds files that exist: a lookup that found
one, or a HEAD of the *witness*, the latest file whose upload callback was received
(:meth:`CosChecker.witness`), made right then. When the witness is not found either, the miss
is an error ``blind`` (the alert GmeRecwatchCosBlind names the bucket); when no witness is
known yet (no upload callback since the start), an error ``unproven``. Either way the segment
is reported ``confirmed=false`` with that reason and pages nobody.

**Credentials.** A Tencent Cloud API key (CAM; not the GME permission key): from a file in
Tencent Cloud's credentials format (``cos_credentials_file``) or ``TENCENTCLOUD_SECRET_ID`` /
``TENCENTCLOUD_SECRET_KEY``. They are handed to the client and nowhere else: never logged, not
in any ``repr`` or error text here, and botocore's own debug logging (which prints request
headers) is held at WARNING by ``logging.configure``. Without a key, requests are anonymous,
which only a public-read bucket answers. botocore's default credential chain (``~/.aws``,
instance metadata) is never consulted.
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import functools
import random
import re
import string
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, get_args

from . import __version__
from .clock import Clock, SystemClock
from .ratelimit import TokenBucket
from .settings import BUCKET_NAME, Settings, key_template_problem

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

    from .metrics import Metrics

_T = TypeVar("_T")
CheckResultName = Literal["found", "not_found", "error"]
CHECK_RESULTS: Final[tuple[str, ...]] = get_args(CheckResultName)
ErrorReason = Literal[
    "timeout",
    "connection",
    "server_error",
    "forbidden",
    "no_such_bucket",
    "unexpected_status",
    "no_bucket",
    "blind",
    "unproven",
    "too_many_files",
    "unlistable",
    "ambiguous",
]
ERROR_REASONS: Final[tuple[str, ...]] = get_args(ErrorReason)
_RETRIED: Final = frozenset({"timeout", "connection", "server_error"})
RETRY_BACKOFF: Final = 0.5  # seconds before the one retry, times 1..1.5 so retries spread out
BUCKET_TTL: Final = 300.0  # seconds a bucket's existence is taken as known
EVIDENCE_SECONDS: Final = 60.0  # seconds a found file proves that an endpoint's 404s mean missing
LIST_MAX_PAGES: Final = 5  # pages read per listed folder, at most; more is an error
LIST_PAGE_KEYS: Final = 1000  # keys per ListObjects page: the most COS and S3 return


# ------------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Found:
    """The object is there."""

    bucket: str
    key: str
    size: int | None = None
    last_modified: float | None = None
    """Unix time COS says the object was written."""


@dataclass(frozen=True, slots=True)
class NotFound:
    """COS answered that the object does not exist, in a bucket that does."""

    bucket: str
    key: str


@dataclass(frozen=True, slots=True)
class CheckError:
    """No answer to trust: the file may or may not be there."""

    reason: ErrorReason
    bucket: str
    key: str
    detail: str = ""
    """What happened, for a log line: a status, an error code, an exception type."""
    status: int | None = None
    attempts: int = 1


CheckResult = Found | NotFound | CheckError


def result_name(result: CheckResult) -> CheckResultName:
    """The ``result`` label of ``gme_recording_reconcile_checks_total``."""
    if isinstance(result, Found):
        return "found"
    return "not_found" if isinstance(result, NotFound) else "error"


# ------------------------------------------------------------------------------- configuration


class CosConfigError(ValueError):
    """A COS file could not be read or parsed; the message never contains key material."""


class Credentials:
    """A Tencent Cloud API key. Its ``repr`` and ``str`` never show it."""

    __slots__ = ("secret_id", "secret_key")

    def __init__(self, secret_id: str, secret_key: str) -> None:
        self.secret_id = secret_id
        self.secret_key = secret_key

    def __repr__(self) -> str:
        return "Credentials(<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Credentials)
            and other.secret_id == self.secret_id
            and other.secret_key == self.secret_key
        )

    __hash__ = None  # type: ignore[assignment]


def parse_credentials_file(text: str) -> Credentials:
    """Tencent Cloud's credentials file: ``secret_id = ...`` and ``secret_key = ...`` under
    ``[default]`` (the section header may be left out)."""
    parser = configparser.ConfigParser(interpolation=None)
    added = 0
    if not any(line.strip().startswith("[") for line in text.splitlines()):
        text, added = "[default]\n" + text, 1
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        # configparser quotes the offending line, which may hold the key: say where, not what.
        errors = getattr(exc, "errors", None)  # ParsingError: [(line number, line), ...]
        line = errors[0][0] if errors else getattr(exc, "lineno", None)
        where = f" near line {line - added}" if line else ""
        raise CosConfigError(f"credentials file: not in `secret_id = ...` form{where}") from None
    if not parser.has_section("default"):
        raise CosConfigError("credentials file: no [default] section")
    section = parser["default"]
    secret_id = section.get("secret_id", "").strip()
    secret_key = section.get("secret_key", "").strip()
    if not secret_id or not secret_key:
        raise CosConfigError("credentials file: needs both secret_id and secret_key in [default]")
    return Credentials(secret_id, secret_key)


def parse_buckets_file(text: str) -> dict[int, str]:
    """``BizID=bucket`` lines; blank lines and ``#`` comments are ignored."""
    buckets: dict[int, str] = {}
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        app, sep, bucket = (part.strip() for part in line.partition("="))
        if not sep or not bucket:
            raise CosConfigError(f"buckets file line {n}: expected `BizID=bucket`")
        if not (app.isascii() and app.isdigit()):
            raise CosConfigError(
                f"buckets file line {n}: BizID must be digits "
                "(GME_RECWATCH_COS_BUCKET is the bucket of every other app)"
            )
        if not BUCKET_NAME.match(bucket):
            raise CosConfigError(f"buckets file line {n}: {bucket!r} is not a bucket name")
        if int(app) in buckets and buckets[int(app)] != bucket:
            raise CosConfigError(f"buckets file line {n}: BizID {app} has two buckets")
        buckets[int(app)] = bucket
    return buckets


def object_key(
    template: str,
    *,
    biz_id: int,
    file_name: str,
    room_id: str = "",
    user_id: str = "",
    task_id: int = 0,
    seq_no: int = 0,
) -> str:
    """The object key of one recorded file, from a template settings validated."""
    return template.format(
        biz_id=biz_id, file_name=file_name, room_id=room_id, user_id=user_id, task_id=task_id, seq_no=seq_no
    )


@dataclass(frozen=True, slots=True)
class CosConfig:
    """Where to look, with what key, and how hard. Built once, from :class:`Settings`."""

    region: str
    default_bucket: str = ""
    buckets: Mapping[int, str] = field(default_factory=dict)
    endpoint: str = ""
    addressing_style: str = "auto"
    key_template: str = "{file_name}"
    credentials: Credentials | None = None
    max_concurrency: int = 8
    requests_per_second: float = 20.0
    timeout: float = 5.0
    evidence_seconds: float = EVIDENCE_SECONDS
    list_max_pages: int = LIST_MAX_PAGES

    def __post_init__(self) -> None:
        problem = key_template_problem(self.key_template)
        if problem:
            raise CosConfigError(f"key template {problem}")

    @property
    def endpoint_url(self) -> str:
        return self.endpoint or f"https://cos.{self.region}.myqcloud.com"

    @property
    def style(self) -> Literal["virtual", "path"]:
        if self.addressing_style == "auto":
            return "path" if self.endpoint else "virtual"
        return "path" if self.addressing_style == "path" else "virtual"

    def bucket_for(self, biz_id: int) -> str:
        """The bucket an app's recordings go to; "" when none is configured for it."""
        return self.buckets.get(biz_id, self.default_bucket)

    @classmethod
    def from_settings(cls, settings: Settings) -> CosConfig | None:
        """The configuration, reading the buckets and credentials files; None when no bucket
        is configured. Raises :class:`CosConfigError` (no key material in it) or OSError."""
        if not settings.cos_enabled:
            return None
        buckets: dict[int, str] = {}
        if settings.cos_buckets_file:
            with open(settings.cos_buckets_file, encoding="utf-8-sig") as fh:
                buckets = parse_buckets_file(fh.read())
        return cls(
            region=settings.cos_region,
            default_bucket=settings.cos_bucket,
            buckets=buckets,
            endpoint=settings.cos_endpoint.rstrip("/"),
            addressing_style=settings.cos_addressing_style,
            key_template=settings.cos_key_template,
            credentials=load_credentials(settings),
            max_concurrency=settings.cos_max_concurrency,
            requests_per_second=settings.cos_requests_per_second,
            timeout=settings.cos_timeout_seconds,
            evidence_seconds=settings.cos_evidence_seconds,
            list_max_pages=settings.cos_list_max_pages,
        )


def load_credentials(settings: Settings) -> Credentials | None:
    """The file's key if a file is set, else TENCENTCLOUD_SECRET_ID/KEY, else None (anonymous)."""
    if settings.cos_credentials_file:
        with open(settings.cos_credentials_file, encoding="utf-8-sig") as fh:
            return parse_credentials_file(fh.read())
    secret_id, secret_key = settings.cos_secret_id.strip(), settings.cos_secret_key.strip()
    if not secret_id and not secret_key:
        return None
    if not (secret_id and secret_key):
        raise CosConfigError(
            "TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY go together: one of them is empty"
        )
    return Credentials(secret_id, secret_key)


@contextlib.asynccontextmanager
async def open_client(config: CosConfig) -> Any:
    """An S3 client for COS, with our timeouts and none of botocore's own retries."""
    from aiobotocore.config import AioConfig
    from aiobotocore.session import AioSession
    from botocore import UNSIGNED

    creds = config.credentials
    client_config = AioConfig(
        connect_timeout=config.timeout,
        read_timeout=config.timeout,
        retries={"total_max_attempts": 1},  # the one retry is ours, through the rate limit
        max_pool_connections=config.max_concurrency,
        s3={"addressing_style": config.style},
        signature_version="s3v4" if creds else UNSIGNED,
        user_agent_extra=f"gme-recwatch/{__version__}",
    )
    session = AioSession()
    async with session.create_client(
        "s3",
        region_name=config.region,
        endpoint_url=config.endpoint_url,
        aws_access_key_id=creds.secret_id if creds else None,
        aws_secret_access_key=creds.secret_key if creds else None,
        config=client_config,
    ) as client:
        client.meta.events.register_first("needs-retry.s3", _no_region_redirects)
        yield client


def _no_region_redirects(request_dict: dict[str, Any], **_: Any) -> None:
    """A COS bucket does not move between regions: a 301 or 400 is an error to report, not a cue
    for botocore's region redirector to send requests of its own, outside our limits. Marking
    the request as already redirected is what makes the redirector stand aside."""
    request_dict.setdefault("context", {}).setdefault("s3_redirect", {})["redirected"] = True


# ------------------------------------------------------------------------------- the checker


class _Missing:
    """A 404: what was missing depends on what was asked."""


_MISSING: Final = _Missing()


class CosChecker:
    """HEADs recorded files in COS: bounded concurrency and rate, a timeout, one retry.

    Use as ``async with CosChecker(config) as checker: await checker.check(...)``. Every check
    is counted in ``gme_recording_reconcile_checks_total{result}`` when given the metrics.
    """

    def __init__(
        self,
        config: CosConfig,
        *,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        retry_backoff: float = RETRY_BACKOFF,
        bucket_ttl: float = BUCKET_TTL,
        client: S3Client | None = None,
        list_page_keys: int = LIST_PAGE_KEYS,
    ) -> None:
        self.config = config
        self._metrics = metrics
        self._clock = clock or SystemClock()
        self._sleep = sleep
        self._retry_backoff = retry_backoff
        self._bucket_ttl = bucket_ttl
        self._page_keys = list_page_keys  # smaller only in tests, to fill pages cheaply
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._bucket = TokenBucket(config.requests_per_second, 1, self._clock.monotonic)
        self._pace = asyncio.Lock()
        # bucket -> (True: exists, False: does not, None: may not be asked), when learnt
        self._buckets_known: dict[str, tuple[bool | None, float]] = {}
        self._bucket_locks: dict[str, asyncio.Lock] = {}
        # bucket -> when a lookup last found a file there (the endpoint can see), and the
        # object key of the latest file whose upload callback was received (one per bucket).
        self._seen_at: dict[str, float] = {}
        self._witnesses: dict[str, str] = {}
        self._sight_locks: dict[str, asyncio.Lock] = {}
        self._client: S3Client | None = client
        self._stack: contextlib.AsyncExitStack | None = None
        self.in_flight = 0
        self.requests = 0
        self._jitter = random.Random()  # noqa: S311 - spreads retries, not a secret

    async def open(self) -> CosChecker:
        if self._client is None:
            self._stack = contextlib.AsyncExitStack()
            self._client = await self._stack.enter_async_context(open_client(self.config))
        return self

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None
            self._client = None

    async def __aenter__(self) -> CosChecker:
        return await self.open()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        c = self.config
        return (
            f"CosChecker(endpoint={c.endpoint_url!r}, bucket={c.default_bucket!r}, "
            f"apps={sorted(c.buckets)}, credentials={'<set>' if c.credentials else '<unset>'})"
        )

    async def check(
        self,
        biz_id: int,
        file_name: str,
        *,
        room_id: str = "",
        user_id: str = "",
        task_id: int = 0,
        seq_no: int = 0,
    ) -> CheckResult:
        """Look one recorded file up: :class:`Found`, :class:`NotFound` or :class:`CheckError`."""
        key = self._key(biz_id, file_name, room_id, user_id, task_id, seq_no)
        bucket = self.config.bucket_for(biz_id)
        if not bucket:
            result: CheckResult = CheckError(
                "no_bucket", "", key, f"no COS bucket is configured for BizID {biz_id}"
            )
        else:
            result = await self._check(bucket, key)
        if self._metrics is not None:
            self._metrics.reconcile_checks.labels(result_name(result)).inc()
        return result

    def witness(
        self, biz_id: int, file_name: str, *, room_id: str, user_id: str, task_id: int, seq_no: int
    ) -> None:
        """Remember a file whose upload callback was received: a file that exists, whose HEAD
        proves the bucket's endpoint can see before one of its 404s confirms anything. Called
        on every verified upload callback; one entry per bucket, the latest."""
        bucket = self.config.bucket_for(biz_id)
        if not bucket or not file_name:
            return
        self._witnesses[bucket] = self._key(biz_id, file_name, room_id, user_id, task_id, seq_no)

    def _key(self, biz_id: int, file_name: str, room_id: str, user_id: str, task_id: int, seq_no: int) -> str:
        return object_key(
            self.config.key_template,
            biz_id=biz_id,
            file_name=file_name,
            room_id=room_id,
            user_id=user_id,
            task_id=task_id,
            seq_no=seq_no,
        )

    async def _prove_sight(
        self, result: NotFound, what: str = "object not found", spent: list[int] | None = None
    ) -> CheckResult:
        """``result`` if the endpoint has recently been seen finding a file in the bucket (or
        finds the witness now), else an error that says why the 404 (or the empty listing:
        ``what``) proves nothing. A request made for the witness is added to ``spent``."""
        bucket = result.bucket
        async with self._sight_locks.setdefault(bucket, asyncio.Lock()):
            seen = self._seen_at.get(bucket)
            if seen is not None and self._clock.monotonic() - seen < self.config.evidence_seconds:
                return result
            witness = self._witnesses.get(bucket)
            if witness is None:
                return CheckError(
                    "unproven",
                    bucket,
                    result.key,
                    f"{what}, but no file has been seen in this bucket through "
                    f"{self.config.endpoint_url} recently (no upload callback yet to check against)",
                    404,
                )
            got = await self._head_object(bucket, witness)
            if spent is not None:
                spent.append(1)
            if isinstance(got, Found):
                self._seen_at[bucket] = self._clock.monotonic()
                return result
            if isinstance(got, CheckError):
                return CheckError(
                    got.reason, bucket, result.key, f"{what}; the sight check failed: {got.detail}"
                )
            return CheckError(
                "blind",
                bucket,
                result.key,
                f"{what}, and neither is the latest file whose upload callback was received: "
                f"{self.config.endpoint_url} does not see files that exist (a misrouted endpoint, a "
                "gateway failing closed)",
                404,
            )

    async def _check(self, bucket: str, key: str) -> CheckResult:
        result = await self._head_object(bucket, key)
        if isinstance(result, CheckError) and result.reason in _RETRIED:
            await self._sleep(self._retry_backoff * (1 + self._jitter.random() / 2))
            again = await self._head_object(bucket, key)
            result = (
                CheckError(again.reason, bucket, key, again.detail, again.status, attempts=2)
                if isinstance(again, CheckError)
                else again
            )
        if isinstance(result, Found):
            self._seen_at[bucket] = self._clock.monotonic()
        if isinstance(result, NotFound):
            result = await self._confirm_bucket(result)
        if isinstance(result, NotFound):
            return await self._prove_sight(result)
        return result

    async def _request(
        self, call: Callable[[], Awaitable[_T]], bucket: str, key: str
    ) -> _T | CheckError | _Missing:
        """One request under the concurrency and rate limits and the timeout: the response,
        :data:`_MISSING` for a 404 (the caller knows what was missing), or a :class:`CheckError`."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectTimeoutError,
            ReadTimeoutError,
        )

        async with self._slots:
            async with self._pace:  # one waiter at a time, first come first served
                while not self._bucket.try_take():
                    await self._sleep(self._bucket.delay())
            self.in_flight += 1
            self.requests += 1
            try:
                async with asyncio.timeout(self.config.timeout):
                    return await call()
            except (TimeoutError, ConnectTimeoutError, ReadTimeoutError) as exc:
                return CheckError(
                    "timeout", bucket, key, f"no answer within {self.config.timeout:g} s ({type(exc).__name__})"
                )
            except ClientError as exc:
                meta = exc.response.get("ResponseMetadata", {})
                status = meta.get("HTTPStatusCode")
                code = exc.response.get("Error", {}).get("Code", "")
                request_id = meta.get("HTTPHeaders", {}).get("x-cos-request-id") or meta.get("RequestId", "")
                named = code if code and code != str(status) else ""  # a HEAD has no body
                detail = f"HTTP {status} {named}".strip() + (
                    f" (request id {request_id})" if request_id else ""
                )
                if status == 404:
                    return _MISSING
                reason: ErrorReason = (
                    "forbidden"
                    if status == 403
                    else "server_error"
                    if isinstance(status, int) and status >= 500
                    else "unexpected_status"
                )
                return CheckError(reason, bucket, key, detail, status)
            except (BotoCoreError, OSError) as exc:
                # Connection refused or reset, DNS, TLS: the type says which; botocore's
                # messages name the URL, never a header.
                return CheckError("connection", bucket, key, type(exc).__name__)
            finally:
                self.in_flight -= 1

    async def _head_object(self, bucket: str, key: str) -> CheckResult:
        client = self._require_client()
        got = await self._request(lambda: client.head_object(Bucket=bucket, Key=key), bucket, key)
        if isinstance(got, CheckError):
            return got
        if isinstance(got, _Missing):
            return NotFound(bucket, key)
        modified = got.get("LastModified")
        return Found(
            bucket, key, got.get("ContentLength"), modified.timestamp() if modified is not None else None
        )

    async def _confirm_bucket(self, result: NotFound) -> CheckResult:
        """A 404 means "no such object" only in a bucket that exists: check the bucket, once
        per :data:`BUCKET_TTL`, and never for two lookups at once."""
        bucket = result.bucket
        lock = self._bucket_locks.setdefault(bucket, asyncio.Lock())
        async with lock:
            known = self._buckets_known.get(bucket)
            now = self._clock.monotonic()
            if known is None or now - known[1] >= self._bucket_ttl:
                client = self._require_client()
                got = await self._request(lambda: client.head_bucket(Bucket=bucket), bucket, result.key)
                if isinstance(got, CheckError) and got.reason in _RETRIED:
                    return CheckError(
                        got.reason,
                        bucket,
                        result.key,
                        f"object not found; the bucket check failed: {got.detail}",
                        got.status,
                    )
                exists = False if isinstance(got, _Missing) else None if isinstance(got, CheckError) else True
                known = (exists, now)
                self._buckets_known[bucket] = known
        if known[0] is None:
            # Without leave to HEAD the bucket, a 404 could as well be a misspelt bucket: say
            # so rather than confirm a missing file on the strength of it.
            return CheckError(
                "forbidden",
                bucket,
                result.key,
                "object not found, but the bucket could not be checked: grant "
                "cos:HeadBucket on it so that 'not found' can be trusted",
                403,
            )
        if not known[0]:
            return CheckError(
                "no_such_bucket",
                bucket,
                result.key,
                f"bucket {bucket!r} does not exist at {self.config.endpoint_url}",
                404,
            )
        return result

    # --------------------------------------------------------------------------- listing

    async def list_stream(
        self,
        biz_id: int,
        *,
        room_id: str,
        user_id: str,
        record_mode: int,
        task_id: int,
        hint: str = "",
        count: bool = True,
    ) -> Listing | CheckError:
        """The files of one recording task in its stream's COS folder, found by listing it:
        for segments no callback announced, whose FileName is therefore unknown.

        ``hint``, a FileName a callback of the same stream carried, names THE folder (one
        prefix); without it the folders Tencent documents for ``record_mode`` are tried (see
        :func:`stream_folders`), stopping at the first that holds a file of the task. Each
        folder costs at most ``list_max_pages`` pages of :data:`LIST_PAGE_KEYS` keys (each page
        retried once, like a HEAD), under the same concurrency, rate and timeout as a HEAD; a
        folder with more keys is an error ``too_many_files``, never a partial answer. A
        listing in which no key at all
        was seen proves nothing by itself (an endpoint that sees nothing lists nothing): it
        needs the same evidence as a 404 (a file found recently, or the witness found now),
        else it is an error ``unproven`` or ``blind``. Counted in
        ``gme_recording_reconcile_checks_total`` as one lookup: ``found`` when the task has a
        file, ``not_found`` when it has none, ``error`` (unless ``count`` is False: a quiet
        stream's listing is counted in ``gme_recording_tail_listings_total`` instead).
        """
        result = await self._list_stream(biz_id, room_id, user_id, record_mode, task_id, hint)
        if self._metrics is not None and count:
            name = "error" if isinstance(result, CheckError) else "found" if result.files else "not_found"
            self._metrics.reconcile_checks.labels(name).inc()
        return result

    async def _list_stream(
        self, biz_id: int, room_id: str, user_id: str, record_mode: int, task_id: int, hint: str
    ) -> Listing | CheckError:
        bucket = self.config.bucket_for(biz_id)
        if not bucket:
            return CheckError("no_bucket", "", "", f"no COS bucket is configured for BizID {biz_id}")
        frame = listing_frame(
            self.config.key_template, biz_id=biz_id, room_id=room_id, user_id=user_id, task_id=task_id
        )
        if frame is None:
            return CheckError(
                "unlistable",
                bucket,
                "",
                "the key template puts {seq_no} (or {file_name} twice) in the key: a segment whose "
                "SeqNo is unknown has no folder to list",
            )
        before, after = frame
        parse = functools.partial(
            parse_file_name, biz_id=biz_id, room_id=room_id, user_id=user_id, record_mode=record_mode
        )
        known = parse(hint) if hint else None
        if known is not None:
            folders: tuple[str, ...] = (known.name.rpartition("/")[0],)
        else:
            folders = tuple(
                folder
                for folder, _ in stream_folders(
                    biz_id=biz_id, room_id=room_id, user_id=user_id, record_mode=record_mode
                )
            )
        if not folders:
            return CheckError("unlistable", bucket, "", f"RecordMode {record_mode} has no documented folder")
        files: list[RecordedFile] = []
        listed: list[str] = []
        unknown = others = seen = requests = 0
        for folder in folders:
            prefix = before + folder + "/"
            listed.append(prefix)
            keys = await self._list_prefix(bucket, prefix)
            if isinstance(keys, CheckError):
                return keys
            names, requests = keys[0], requests + keys[1]
            seen += len(names)
            for key in names:
                if after and not key.endswith(after):
                    unknown += 1
                    continue
                name = key[len(before) : len(key) - len(after)]
                got = parse(name, key=key)
                if got is None:
                    unknown += 1
                elif got.task_id != task_id:
                    others += 1
                else:
                    files.append(got)
            if files:
                break  # one task writes one folder: the next layout has nothing of it
        if seen:
            self._seen_at[bucket] = self._clock.monotonic()
        else:
            spent: list[int] = []
            proven = await self._prove_sight(NotFound(bucket, listed[-1]), "the folder lists empty", spent)
            requests += len(spent)
            if isinstance(proven, CheckError):
                return proven
        return Listing(
            bucket=bucket,
            prefixes=tuple(listed),
            task_id=task_id,
            files=tuple(sorted(files, key=_file_order)),
            unknown=unknown,
            other_tasks=others,
            requests=requests,
        )

    async def _list_prefix(self, bucket: str, prefix: str) -> tuple[list[str], int] | CheckError:
        """Every key (and sub-folder, as its prefix) right under ``prefix``, and the requests it
        took; at most ``list_max_pages`` pages, each retried once like a HEAD."""
        client = self._require_client()
        names: list[str] = []
        token = ""
        requests = 0
        for _ in range(self.config.list_max_pages):
            kw: dict[str, Any] = {
                "Bucket": bucket,
                "Prefix": prefix,
                # Sub-folders come back as one entry each, so a deep tree cannot eat the pages.
                "Delimiter": "/",
                "MaxKeys": self._page_keys,
            }
            if token:
                kw["ContinuationToken"] = token
            page = functools.partial(client.list_objects_v2, **kw)
            got: Any = None
            for attempt in (1, 2):
                requests += 1
                got = await self._request(page, bucket, prefix)
                if not (isinstance(got, CheckError) and got.reason in _RETRIED) or attempt == 2:
                    break
                await self._sleep(self._retry_backoff * (1 + self._jitter.random() / 2))
            if isinstance(got, _Missing):
                # A listing never answers 404 for a folder, only for a bucket (NoSuchBucket).
                return CheckError(
                    "no_such_bucket",
                    bucket,
                    prefix,
                    f"bucket {bucket!r} does not exist at {self.config.endpoint_url}",
                    404,
                )
            if isinstance(got, CheckError):
                detail = got.detail
                if got.reason == "forbidden":
                    detail += ": the key needs cos:GetBucket (ListObjects) on the bucket to list a folder"
                return CheckError(got.reason, bucket, prefix, detail, got.status, attempts=attempt)
            names += [o["Key"] for o in got.get("Contents", [])]
            names += [p["Prefix"] for p in got.get("CommonPrefixes", [])]
            if not got.get("IsTruncated"):
                return names, requests
            token = got.get("NextContinuationToken", "")
            if not token:
                return CheckError(
                    "unexpected_status", bucket, prefix, "a truncated listing came without a continuation token"
                )
        return CheckError(
            "too_many_files",
            bucket,
            prefix,
            f"more than {self.config.list_max_pages * self._page_keys} keys under {prefix!r} "
            f"(GME_RECWATCH_COS_LIST_MAX_PAGES={self.config.list_max_pages} pages of {self._page_keys})",
        )

    async def bucket_problem(self, bucket: str) -> str | None:
        """What stops lookups in ``bucket`` (it does not exist, the key may not HEAD it, no
        answer), or None when it answers: for ``serve --check --online``."""
        client = self._require_client()
        got = await self._request(lambda: client.head_bucket(Bucket=bucket), bucket, "")
        if isinstance(got, _Missing):
            return f"bucket {bucket!r} does not exist at {self.config.endpoint_url}"
        if isinstance(got, CheckError):
            fix = ": a wrong key, or one without cos:HeadBucket on it" if got.reason == "forbidden" else ""
            return f"bucket {bucket!r} at {self.config.endpoint_url}: {got.detail}{fix}"
        return None

    def _require_client(self) -> S3Client:
        if self._client is None:
            raise RuntimeError("CosChecker.open() was not called")
        return self._client


# ------------------------------------------------------------------------------- a stream's folder
#
# A segment that no callback announced has no FileName: it can only be found by listing the
# folder its stream's files go to, and telling its file from the others by name. What follows is
# pure (no I/O): the layouts a name may have, and the rules that match a listed file to a SeqNo.

FolderLayout = Literal["single", "mixed", "mixed_with_user"]
"""``single``: ``{BizID}_{RoomID}_{UserID}/`` for a single stream (RecordMode 0), as Tencent
documents it. ``mixed``: ``{BizID}_{RoomID}/`` for a mixed stream (RecordMode 1), as documented.
``mixed_with_user``: ``{BizID}_{RoomID}_{UserID}/`` for a mixed stream, as the sample callback
on Tencent's page has it (``1400000000_100_999/...`` with ``"RecordMode": 1``)."""
FOLDER_LAYOUTS: Final[tuple[str, ...]] = get_args(FolderLayout)

# The file part: `{stamp}_{TaskID}_{kind}.{ext}` (Tencent's sample) or
# `{stamp}_{TaskID}_{SeqNo}_{kind}.{ext}` (our simulator). ASCII digits only: `\d` would take
# any Unicode digit, which int() accepts and no name Tencent writes contains.
_FILE_PART: Final = re.compile(
    r"\A([0-9]{4})-([0-9]{2})-([0-9]{2})-([0-9]{2})-([0-9]{2})-([0-9]{2})"
    r"_([0-9]{1,20})(?:_([0-9]{1,9}))?_([a-z]{1,16})\.([a-z0-9]{1,8})\Z"
)


@dataclass(frozen=True, slots=True)
class RecordedFile:
    """A listed file whose name has a known layout."""

    name: str
    """The FileName, as a callback carries it: ``{folder}/{file}``."""
    key: str
    """The object key: the name inside the key template."""
    folder_layout: FolderLayout
    started: int
    """Unix seconds of the name's stamp, read as UTC. Only for ordering a task's files: the
    sample on Tencent's page stamps 16:16:45 a recording whose callback says 08:16:45 UTC
    (Beijing time), so the stamp is not comparable with callback Timestamps."""
    task_id: int
    seq_no: int | None
    """The SeqNo when the name carries one (``{stamp}_{task}_{seq}_{kind}``), else None."""
    kind: str
    """``audio``, ``mix``: the word before the extension."""
    extension: str


def stream_folders(
    *, biz_id: int, room_id: str, user_id: str, record_mode: int
) -> tuple[tuple[str, FolderLayout], ...]:
    """The folders a stream's files may be in, in the order to try them: for a single stream
    (RecordMode 0) the user's; for a mixed one (1) the room's, then the user's (the sample's)."""
    room = f"{biz_id}_{room_id}"
    user = f"{room}_{user_id}"
    if record_mode == 0:
        return ((user, "single"),)
    if record_mode == 1:
        return ((room, "mixed"), (user, "mixed_with_user"))
    return ()


def parse_file_name(
    name: str, *, biz_id: int, room_id: str, user_id: str, record_mode: int, key: str = ""
) -> RecordedFile | None:
    """``name`` (a FileName: the object key without what the key template adds) as a
    :class:`RecordedFile` of this stream, or None when it has no known layout.

    The folder is compared whole with the folders :func:`stream_folders` names for these ids,
    never split on ``_``: RoomID and UserID may contain underscores. The file part is
    ``{YYYY-MM-DD-HH-MM-SS}_{TaskID}_{kind}.{ext}`` or ``..._{TaskID}_{SeqNo}_{kind}.{ext}``,
    with a real date. Which task it belongs to is the caller's to check (``task_id``)."""
    folder, _, file_part = name.rpartition("/")  # no "/": folder "", which is no stream's
    layout = dict(stream_folders(biz_id=biz_id, room_id=room_id, user_id=user_id, record_mode=record_mode)).get(
        folder
    )
    match = _FILE_PART.match(file_part)
    if layout is None or match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    try:
        started = int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp())
    except ValueError:  # 2023-02-30, hour 24: not a stamp
        return None
    task, seq, kind, extension = match.groups()[6:]
    return RecordedFile(
        name=name,
        key=key or name,
        folder_layout=layout,
        started=started,
        task_id=int(task),
        seq_no=int(seq) if seq is not None else None,
        kind=kind,
        extension=extension,
    )


def listing_frame(
    template: str, *, biz_id: int, room_id: str, user_id: str, task_id: int
) -> tuple[str, str] | None:
    """What the key template puts before and after ``{file_name}`` for this stream, or None
    when that depends on the SeqNo (``{seq_no}`` outside ``{file_name}``) or ``{file_name}``
    is there twice: then no one folder holds a stream's files."""
    values = {"biz_id": str(biz_id), "room_id": room_id, "user_id": user_id, "task_id": str(task_id)}
    parts: tuple[list[str], list[str]] = ([], [])
    names = 0
    for literal, field_name, _, _ in string.Formatter().parse(template):
        parts[min(names, 1)].append(literal)
        if field_name is None:
            continue
        if field_name == "file_name":
            names += 1
        elif field_name in values:
            parts[min(names, 1)].append(values[field_name])
        else:
            return None
    if names != 1:
        return None
    return "".join(parts[0]), "".join(parts[1])


@dataclass(frozen=True, slots=True)
class Listing:
    """What a stream's folder holds of one task, as :meth:`CosChecker.list_stream` found it.

    Only ever a complete listing: a folder too large to read within the page bound, or an
    empty answer from an endpoint not proven to see, is a :class:`CheckError` instead."""

    bucket: str
    prefixes: tuple[str, ...]
    """The prefixes listed, in order (the last one is where the task's files were, if any)."""
    task_id: int
    files: tuple[RecordedFile, ...]
    """The task's files, sorted by (started, SeqNo, name)."""
    unknown: int = 0
    """Keys in the folder(s) whose name has no known layout (counted, never guessed at):
    ``metrics.count_unknown_names``."""
    other_tasks: int = 0
    """Files of the stream's other tasks (and of a room whose id ends like this user's)."""
    requests: int = 0
    """Requests this listing cost: pages, their retries, and a sight check if one was needed."""


def _file_order(f: RecordedFile) -> tuple[int, int, str]:
    return f.started, -1 if f.seq_no is None else f.seq_no, f.name


LocateResult = Literal["found", "not_found", "ambiguous"]


@dataclass(frozen=True, slots=True)
class Located:
    """Where a segment's file is in a :class:`Listing`: ``found`` (``file``), ``not_found``, or
    ``ambiguous`` (the listing cannot tell: ``why`` says how; nothing is guessed)."""

    result: LocateResult
    file: RecordedFile | None = None
    why: str = ""


def _task_files(listing: Listing, task_id: int) -> list[RecordedFile]:
    return sorted((f for f in listing.files if f.task_id == task_id), key=_file_order)


def _positional_problem(files: list[RecordedFile]) -> str:
    """Why a task's files without SeqNo in their names cannot be counted in start order: ""
    when they can."""
    if any(f.seq_no is not None for f in files):
        return "some of the task's names carry a SeqNo and some do not"
    if len({(f.kind, f.extension) for f in files}) > 1:
        return "the task has files of more than one kind or extension: a segment may have two"
    return ""


def locate(listing: Listing, task_id: int, seq_no: int, anchor_name: str = "", anchor_seq: int = -1) -> Located:
    """Which listed file is segment ``seq_no`` of task ``task_id``. The rules, in order:

    1. The task has no file in the listing: ``not_found`` (whatever the SeqNo).
    2. Every name of the task carries a SeqNo: the one file with that SeqNo is ``found``;
       none is ``not_found``; two are ``ambiguous``.
    3. Otherwise files are told apart only by their start stamp, on the rule that a segment
       starts after every segment of a lower SeqNo. That needs an anchor: ``anchor_name``, the
       FileName a callback gave segment ``anchor_seq`` of the same task. Its position ``p``
       among the task's files (how many started before it) says:

       - ``seq_no == anchor_seq``: the anchor itself, ``found`` if listed, else ``not_found``;
       - the anchor is not listed, or another file started in the same second: ``ambiguous``;
       - ``seq_no > anchor_seq``: ``ambiguous`` (a missing file after the anchor cannot be told
         from a later one; :func:`tail` says what lies after it, on its own terms);
       - ``p == 0``: nothing started before the anchor, so every earlier segment is
         ``not_found``;
       - ``p == anchor_seq`` and the files before it started in distinct seconds: every earlier
         segment is there, in order: file ``seq_no`` is ``found``;
       - ``0 < p < anchor_seq`` (some earlier segments are missing, which ones is unknown) or
         ``p > anchor_seq`` (more files than segments): ``ambiguous``.
    4. No anchor and names without SeqNo: ``ambiguous``.

    ``found`` is therefore never a wrong file as long as segments start in SeqNo order and a
    task writes one kind of file per segment (tests/test_cos.py checks it over random gaps).
    """
    if seq_no < 0:
        raise ValueError("seq_no must be >= 0")
    files = _task_files(listing, task_id)
    if not files:
        return Located("not_found", why="the folder holds no file of the task")
    if all(f.seq_no is not None for f in files):
        same = [f for f in files if f.seq_no == seq_no]
        if len(same) == 1:
            return Located("found", same[0], "by the SeqNo in its name")
        if not same:
            return Located("not_found", why="no name of the task carries that SeqNo")
        return Located("ambiguous", why=f"{len(same)} files of the task carry that SeqNo")
    problem = _positional_problem(files)
    if problem:
        return Located("ambiguous", why=problem)
    if not anchor_name or anchor_seq < 0:
        return Located(
            "ambiguous", why="names carry no SeqNo and no file of a known SeqNo was given to count from"
        )
    anchors = [f for f in files if f.name == anchor_name]
    if seq_no == anchor_seq:
        if anchors:
            return Located("found", anchors[0], "the anchor itself")
        return Located("not_found", why="the anchor's own file is not in the folder")
    if not anchors:
        return Located("ambiguous", why="the anchor's file is not in the folder: nothing to count from")
    anchor = anchors[0]
    if any(f.started == anchor.started for f in files if f is not anchor):
        return Located("ambiguous", why="another file of the task started in the same second as the anchor")
    if seq_no > anchor_seq:
        return Located("ambiguous", why="after the anchor a missing file cannot be told from a later one")
    earlier = [f for f in files if f.started < anchor.started]
    p = len(earlier)
    if p == 0:
        return Located("not_found", why="no file of the task started before the anchor")
    if p != anchor_seq:
        return Located(
            "ambiguous",
            why=f"{p} files started before the anchor of SeqNo {anchor_seq}: "
            + (
                "some earlier segments are missing, which ones is unknown"
                if p < anchor_seq
                else "more files than segments"
            ),
        )
    if len({f.started for f in earlier}) != p:
        return Located("ambiguous", why="two earlier files started in the same second")
    return Located("found", earlier[seq_no], "every earlier segment is there: by start order")


def tail(
    listing: Listing, task_id: int, last_seq: int, last_name: str = ""
) -> list[tuple[int, RecordedFile]] | None:
    """The task's files after its last announced segment ``last_seq`` (whose FileName is
    ``last_name``), as (SeqNo, file) in order; None when the listing cannot tell.

    - No file of the task: ``[]``.
    - Names carry a SeqNo: the files whose SeqNo is above ``last_seq`` (None if two share one).
    - Otherwise only when the last announced segment's file is listed at position
      ``last_seq`` (every earlier segment has its file: the task's files are numbered
      without a gap up to it), with no other file in its second and the later files in
      distinct seconds: the k-th file after it is SeqNo ``last_seq + k``.

    The last rule assumes no segment after ``last_seq`` lacks its file: a gap there cannot be
    seen without SeqNo in names (a missing ``last_seq + 1`` makes the next file look like it).
    A later callback's FileName always wins over the SeqNo given here.
    """
    files = _task_files(listing, task_id)
    if not files:
        return []
    if all(f.seq_no is not None for f in files):
        later = [f for f in files if f.seq_no is not None and f.seq_no > last_seq]
        if len({f.seq_no for f in later}) != len(later):
            return None
        return sorted(((f.seq_no, f) for f in later if f.seq_no is not None), key=lambda pair: pair[0])
    if _positional_problem(files) or not last_name or last_seq < 0:
        return None
    anchors = [f for f in files if f.name == last_name]
    if not anchors:
        return None
    anchor = anchors[0]
    if any(f.started == anchor.started for f in files if f is not anchor):
        return None
    if sum(1 for f in files if f.started < anchor.started) != last_seq:
        return None
    after = [f for f in files if f.started > anchor.started]
    if len({f.started for f in after}) != len(after):
        return None
    return [(last_seq + 1 + k, f) for k, f in enumerate(after)]
