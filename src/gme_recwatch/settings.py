"""Configuration from environment variables and CLI flags, validated once at start.

Every setting is a field of :class:`Settings`, a typed msgspec model: the type and its
constraints (``Meta(ge=...)``, ``Literal`` choices) are what is checked, the ``description`` is
the one-line help, and ``extra`` marks secrets and says in words what a constraint means. The
environment variable and the flag are derived from the field name. The README's configuration
table is generated from this module (``make docs``), so the two cannot drift apart.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit, urlunsplit

import msgspec
from msgspec import Meta

from . import lifecycle

ENV_PREFIX: Final = "GME_RECWATCH_"
SENDER_TIMEOUT_SECONDS: Final = 5.0  # how long Tencent waits for a callback's answer
MIN_SEGMENTS: Final = 100  # the smallest capacity that can track a room's worth of segments

SignatureEncoding = Literal["auto", "base64", "hex"]
LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]
HttpStack = Literal["auto", "python"]
AddressingStyle = Literal["auto", "virtual", "path"]

# What a COS object key template may name: the callback's own fields, nothing else.
COS_KEY_PLACEHOLDERS: Final = ("biz_id", "room_id", "user_id", "task_id", "seq_no", "file_name")
BUCKET_NAME: Final = re.compile(r"\A[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")  # S3's and COS's rule
_REGION: Final = re.compile(r"\A[a-z0-9][a-z0-9-]{0,62}\Z")


# `make run` / `serve --demo`: the built-in demo key (printed at start: never use it anywhere
# real), and deadlines in seconds instead of hours, so that the README's `gme-recwatch simulate`
# shows stuck, missing-upload and orphan segments within a minute. Only where the environment
# or a flag sets nothing: explicit settings win.
DEMO_KEY: Final = "recwatch-demo-key-change-me"
DEMO_DEFAULTS: Final[Mapping[str, int | str]] = {
    "max_recording_seconds": 20,
    "upload_grace_seconds": 10,
    "reorder_window_seconds": 10,
    # The demo key is public and the admin API lists room and user ids: this machine only,
    # unless GME_RECWATCH_HOST / GME_RECWATCH_ADMIN_HOST say otherwise.
    "host": "127.0.0.1",
    "admin_host": "127.0.0.1",
}


class SettingsError(ValueError):
    """A setting has an invalid value; the message names the environment variable."""


def _help(text: str, *, rule: str = "", secret: bool = False, env: str = "") -> Meta:
    """The field's help; ``rule`` says in words what its constraint asks of a value; ``env``
    names a standard variable read instead of ``GME_RECWATCH_<NAME>``."""
    return Meta(description=text, extra={"rule": rule, "secret": secret, "env": env})


def _seconds(text: str, *, rule: str = "must be > 0") -> Meta:
    return Meta(gt=0, description=text, extra={"rule": rule, "secret": False})


_Port = Annotated[int, Meta(ge=1, le=65535)]
_PORT_RULE: Final = "must be a port number 1-65535"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the service can be told. Defaults suit Tencent GME; see the README for why."""

    secret_key: Annotated[
        str,
        _help(
            "SecretKey (the GME console's permission key) for every app; several, comma-separated, "
            "are all accepted during a rotation.",
            secret=True,
        ),
    ] = ""
    keys_file: Annotated[
        str,
        _help(
            "Path of a keyring file (e.g. a mounted Kubernetes Secret): lines of `BizID=key` or "
            "`*=key`; reloaded when it changes."
        ),
    ] = ""
    host: Annotated[str, _help("Address of the callback listener (the only internet-facing one).")] = "0.0.0.0"
    port: Annotated[_Port, _help("Port of the callback listener.", rule=_PORT_RULE)] = 8080
    admin_host: Annotated[str, _help("Address of the admin listener (/metrics, probes, API).")] = "0.0.0.0"
    admin_port: Annotated[
        _Port, _help("Port of the admin listener; keep it inside the cluster.", rule=_PORT_RULE)
    ] = 8081
    callback_path: Annotated[str, _help("Path Tencent POSTs callbacks to (the URL in the GME console).")] = (
        "/callback"
    )
    signature_encoding: Annotated[
        SignatureEncoding,
        _help(
            "Encoding of the Signature header: `base64`, `hex`, or `auto` (either, by its length).",
        ),
    ] = "auto"
    signature_hints_per_second: Annotated[
        float,
        Meta(ge=0),
        _help(
            "Most rejected signatures diagnosed a second (each tries the misconfigurations that "
            "would explain it and logs a `signature_hint`); 0 = off.",
            rule="must be >= 0 (0 turns it off)",
        ),
    ] = 2.0
    rejection_marks_per_second: Annotated[
        float,
        Meta(gt=0),
        _help(
            "Most segments a second marked as attributed to us because we refused a well-formed "
            "callback naming them (a wrong key): a forger who knows a segment's name can mark "
            "only that segment, and no faster than this.",
            rule="must be > 0",
        ),
    ] = 5.0
    rejection_marks_burst: Annotated[
        int,
        Meta(ge=1),
        _help(
            "Most such marks in a row before the rate applies (the count cap); every mark over "
            'either is refused and counted (`gme_recording_segment_marks_total{result="refused"}`).',
            rule="must be >= 1",
        ),
    ] = 300
    max_body_bytes: Annotated[
        int,
        Meta(ge=1024, le=16 * 1024 * 1024),
        _help("Largest callback body accepted; enforced while it streams in.", rule="must be 1024..16777216"),
    ] = 65536
    replay_window_seconds: Annotated[
        int,
        Meta(ge=0),
        _help(
            "Reject verified callbacks whose Timestamp is further than this from now as `stale`; 0 = off.",
            rule="must be >= 0 (0 turns it off)",
        ),
    ] = 0
    log_level: Annotated[LogLevel, _help("Log level: debug, info, warning or error.")] = "info"
    log_format: Annotated[
        LogFormat,
        _help(
            "Log format: `json`, `console`, or `auto` (console on a terminal, JSON otherwise).",
        ),
    ] = "auto"
    accepted_log_level: Annotated[LogLevel, _help("Level of the log line for each accepted callback.")] = (
        "debug"
    )
    max_recording_seconds: Annotated[
        int, _seconds("A segment still recording after this long is `stuck` (default 6 h).")
    ] = 21600
    upload_grace_seconds: Annotated[
        int,
        _seconds("A completed segment with no upload after this long is `upload_missing` (default 15 min)."),
    ] = 900
    reorder_window_seconds: Annotated[
        int,
        _seconds(
            "How long a completed/uploaded event waits for its start before the start counts as "
            "lost (`orphan`); covers Tencent's ~1 min of retries."
        ),
    ] = 120
    retention_seconds: Annotated[
        int,
        _seconds(
            "Every segment is forgotten this long after its last event (default 24 h); at least "
            "the maximum recording, the upload grace and the reorder window, or a segment would be "
            "forgotten before its deadline."
        ),
    ] = 86400
    max_segments: Annotated[
        int,
        Meta(ge=1),
        _help(
            "Capacity of the store; past it, terminal segments are evicted first, then the oldest.",
            rule="must be >= 1 (and at least 100: checked with the other settings)",
        ),
    ] = 1_000_000
    max_apps: Annotated[
        int,
        Meta(ge=1),
        _help(
            "Distinct BizIDs given their own `app_id` label value; further apps are reported as `other`.",
            rule="must be >= 1",
        ),
    ] = 50
    redis_url: Annotated[
        str,
        _help(
            "`redis://`, `rediss://` (TLS) or `unix://` URL of a Valkey or Redis >= 7 that every "
            "replica shares (a cluster proxy such as TencentDB cluster edition too); "
            "`redis+cluster://` or `rediss+cluster://` and any node of a Redis Cluster; "
            "empty = state in this process's memory. A password in it is never "
            "logged; prefer GME_RECWATCH_REDIS_PASSWORD_FILE."
        ),
    ] = ""
    redis_password_file: Annotated[
        str,
        _help("File holding the Redis password (e.g. a mounted Kubernetes Secret); overrides one in the URL."),
    ] = ""
    redis_prefix: Annotated[
        str,
        _help(
            "Prefix of every Redis key, so several installations can share one Redis; used as the "
            "Redis Cluster hash tag (`gme-recwatch:` becomes `{gme-recwatch}:`; one with braces is kept)."
        ),
    ] = "gme-recwatch:"
    redis_timeout_seconds: Annotated[
        float,
        _seconds(
            "Timeout of each Redis command: a callback that cannot be stored within it is answered "
            "503, and Tencent retries it."
        ),
    ] = 1.0
    store_unready_after_seconds: Annotated[
        float, _seconds("How long the state store may be unreachable before /readyz says not ready.")
    ] = 5.0
    sender_retry_seconds: Annotated[
        float,
        _seconds(
            "How long Tencent keeps retrying a callback that was not answered 200: a downtime or "
            "store outage shorter than this after a clean stop loses nothing."
        ),
    ] = 60.0
    state_file: Annotated[
        str, _help("Where to snapshot the in-memory store so a restart keeps it; empty = no snapshots.")
    ] = ""
    snapshot_interval_seconds: Annotated[
        int, _seconds("How often the state snapshot is written (also on shutdown).")
    ] = 30
    sweep_interval_seconds: Annotated[float, _seconds("Resolution of the deadline sweep.")] = 1.0
    keys_reload_seconds: Annotated[float, _seconds("How often the keyring file is checked for changes.")] = 5.0
    http_stack: Annotated[
        HttpStack,
        _help(
            "HTTP server stack: `auto` (uvicorn on uvloop with the httptools parser, the fastest "
            "measured; falls back by itself where those are not installed) or `python` (asyncio "
            "and the pure-Python h11 parser)."
        ),
    ] = "auto"
    max_header_bytes: Annotated[
        int,
        Meta(ge=1024, le=1024 * 1024),
        _help(
            "Largest request line plus headers either listener reads; more is answered 431 and "
            "the connection closed.",
            rule="must be 1024..1048576",
        ),
    ] = 16384
    max_header_count: Annotated[
        int,
        Meta(ge=8, le=10000),
        _help(
            "Most header lines in one request; more is answered 431 and the connection closed.",
            rule="must be 8..10000",
        ),
    ] = 100
    header_timeout_seconds: Annotated[
        float,
        _seconds(
            "Time a client gets to send a request's line and headers (from its connection or its "
            "first byte), and between two pieces of a callback's body; slower ones are closed (408)."
        ),
    ] = 10.0
    keepalive_timeout_seconds: Annotated[
        float, _seconds("An idle keep-alive connection is closed after this long.")
    ] = 30.0
    max_connections: Annotated[
        int,
        Meta(ge=1),
        _help(
            "Open connections the callback listener keeps; further ones are answered 503 and "
            "closed at once, so that a flood cannot use up the process's file descriptors.",
            rule="must be >= 1",
        ),
    ] = 512
    admin_max_connections: Annotated[
        int,
        Meta(ge=1),
        _help(
            "Open connections the admin listener keeps; further ones are answered 503 and closed.",
            rule="must be >= 1",
        ),
    ] = 64
    rejection_log_interval_seconds: Annotated[
        float,
        Meta(ge=0),
        _help(
            "At most one `callback_rejected`/`request_rejected` line per reason per this many seconds, "
            "saying how many were left out (`suppressed`); the counters stay exact. 0 = every one.",
            rule="must be >= 0 (0 logs every rejection)",
        ),
    ] = 10.0
    canary_interval_seconds: Annotated[
        int,
        Meta(ge=0),
        _help(
            "How often a canary (`gme-recwatch canary`, e.g. the chart's CronJob) is sent to this "
            "service; 0 = none. Exported so that GmeRecwatchCanaryFailing pages only where a canary "
            "is expected.",
            rule="must be >= 0 (0 = no canary)",
        ),
    ] = 0
    shutdown_timeout_seconds: Annotated[
        float, _seconds("On SIGTERM, how long in-flight requests get to finish.")
    ] = 10.0
    cos_bucket: Annotated[
        str,
        _help(
            "COS bucket the GME console uploads recordings to (`<name>-<APPID>`, e.g. "
            "`gme-records-1250000000`), where a recorded file can be looked up; empty = no "
            "lookups: a segment past its deadline is then stuck or missing its upload only once its "
            "file has been looked up and is not there (see Reconciliation).",
            rule="must be a bucket name: 3-63 lower-case letters, digits, dots and dashes",
        ),
    ] = ""
    cos_buckets_file: Annotated[
        str,
        _help(
            "File of `BizID=bucket` lines for apps whose recordings go to a bucket of their own; "
            "other apps use GME_RECWATCH_COS_BUCKET."
        ),
    ] = ""
    cos_region: Annotated[
        str,
        _help(
            "COS region of the bucket(s), e.g. `ap-guangzhou`; needed with a bucket.",
            rule="must be a region name such as ap-guangzhou, and is needed with a bucket",
        ),
    ] = ""
    cos_endpoint: Annotated[
        str,
        _help(
            "COS endpoint URL; empty = `https://cos.<region>.myqcloud.com`. Set it for a private "
            "endpoint or an S3-compatible test server.",
            rule="must be an http:// or https:// URL",
        ),
    ] = ""
    cos_addressing_style: Annotated[
        AddressingStyle,
        _help(
            "Where the bucket goes in a COS request: `virtual` (the host name, as COS expects), "
            "`path` (the URL path, as S3 test servers expect), or `auto` (virtual for the default "
            "endpoint, path for GME_RECWATCH_COS_ENDPOINT)."
        ),
    ] = "auto"
    cos_key_template: Annotated[
        str,
        _help(
            "Object key of a recorded file: `{file_name}` (the callback's FileName), with a prefix "
            "if the bucket has one, e.g. `recordings/{biz_id}/{file_name}`. Placeholders: "
            "{biz_id}, {room_id}, {user_id}, {task_id}, {seq_no}, {file_name}.",
            rule="must contain {file_name}, name only the listed placeholders, and not start with /",
        ),
    ] = "{file_name}"
    cos_credentials_file: Annotated[
        str,
        _help(
            "File holding the COS API key in Tencent Cloud's credentials format (`[default]`, "
            "`secret_id = ...`, `secret_key = ...`), e.g. a mounted Kubernetes Secret; wins over "
            "TENCENTCLOUD_SECRET_ID / TENCENTCLOUD_SECRET_KEY."
        ),
    ] = ""
    cos_secret_id: Annotated[
        str,
        _help(
            "SecretId of a Tencent Cloud API key (CAM, not the GME permission key) allowed to HEAD "
            "objects in the bucket(s) and list them; never logged. Without one, lookups are anonymous.",
            secret=True,
            env="TENCENTCLOUD_SECRET_ID",
        ),
    ] = ""
    cos_secret_key: Annotated[
        str,
        _help(
            "SecretKey of that Tencent Cloud API key; never logged.", secret=True, env="TENCENTCLOUD_SECRET_KEY"
        ),
    ] = ""
    cos_max_concurrency: Annotated[
        int, Meta(ge=1, le=256), _help("Most COS lookups in flight at once.", rule="must be 1..256")
    ] = 8
    cos_requests_per_second: Annotated[
        float,
        _seconds(
            "Most COS requests started a second (retries included), however many files are due.",
            rule="must be > 0",
        ),
    ] = 20.0
    cos_timeout_seconds: Annotated[
        float,
        _seconds("Timeout of each COS request; a timed-out lookup is retried once, after a short back-off."),
    ] = 5.0
    cos_retry_min_seconds: Annotated[
        float,
        _seconds(
            "A lookup that gave no answer (timeout, 5xx, throttling, 403) is tried again, until an "
            "answer comes or the segment is forgotten, after a random wait up to the time already "
            "waited since its deadline, never bounded below this."
        ),
    ] = 30.0
    cos_retry_max_seconds: Annotated[
        float,
        _seconds("The largest bound on the wait before a failed lookup is tried again (default 15 min)."),
    ] = 900.0
    cos_tail_quiet_seconds: Annotated[
        float,
        _seconds(
            "With a bucket: how long a recording stream (a task's file) stays quiet after its last "
            "callback before its COS folder is listed once for a last segment no callback "
            "announced (Tencent lost every callback of it). Each listing is one or two requests."
        ),
    ] = 900.0
    apps_without_start_callbacks: Annotated[
        str,
        _help(
            "BizIDs (comma-separated) of apps Tencent sends no start callback for (custom "
            "recording pushes only completion status): their segments wait for no start, so none "
            "is an orphan and no start is counted lost. A setting, not a guess: an app whose every "
            "start is lost looks the same, and that is what orphans are there to show.",
            rule="must be BizIDs (integers), comma-separated",
        ),
    ] = ""
    cos_evidence_seconds: Annotated[
        float,
        _seconds(
            "A COS 404 confirms a file missing only if the bucket's endpoint found a file that "
            "exists within this long; otherwise the latest uploaded file is looked up first, and "
            "if it is not found either the miss stays unconfirmed."
        ),
    ] = 60.0
    cos_list_max_pages: Annotated[
        int,
        Meta(ge=1, le=100),
        _help(
            "Most pages (of 1000 keys) read when a recording stream's COS folder is listed to find "
            "segments no callback announced; a folder with more is an error (`too_many_files`), "
            "never a guess.",
            rule="must be 1..100",
        ),
    ] = 5

    def __repr__(self) -> str:
        # Settings end up in tracebacks and debug logs (rich, in console mode, shows locals).
        inner = ", ".join(f"{k}={v!r}" for k, v in self.redacted().items())
        return f"Settings({inner})"

    __str__ = __repr__

    def validate(self) -> Settings:
        """Check types, ranges, choices and how settings fit together; raise
        :class:`SettingsError` naming the variable."""
        _convert(msgspec.structs.asdict(self), strict=True)

        def need(cond: bool, name: str, what: str) -> None:
            if not cond:
                raise SettingsError(f"{env_name(name)}={_shown(name, getattr(self, name))}: {what}")

        # Refused rather than merged: a key left in the environment after moving to a keys
        # file would keep verifying callbacks after it was rotated out of the file, and
        # nothing would say so.
        need(
            not (self.secret_key and self.keys_file),
            "keys_file",
            "set either GME_RECWATCH_SECRET_KEY or GME_RECWATCH_KEYS_FILE, not both: a key in "
            "the environment would stay valid after it is removed from the file (put every key "
            "in the file, `*=key` for all apps)",
        )
        need(
            self.port != self.admin_port or self.host != self.admin_host,
            "admin_port",
            "must differ from GME_RECWATCH_PORT: /metrics must never be served on the callback port",
        )
        need(
            self.callback_path.startswith("/") and " " not in self.callback_path,
            "callback_path",
            "must be an absolute URL path such as /callback",
        )
        need(
            self.callback_path.rstrip("/") not in ("/healthz", "/livez", ""),
            "callback_path",
            "must not be / or the liveness probe path",
        )
        need(
            not self.redis_url
            or self.redis_url.startswith(
                ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")
            ),
            "redis_url",
            "must start with redis://, rediss://, unix://, redis+cluster:// or rediss+cluster://",
        )
        need(
            not (self.redis_url and self.state_file),
            "state_file",
            "must be empty with GME_RECWATCH_REDIS_URL: the state lives in Redis",
        )
        # Retention counts from a segment's last event, and each deadline from an event no later
        # than that: a retention shorter than a deadline forgets the segment before the deadline
        # can report it (a recording would never be stuck, a missing upload never missing).
        deadlines = ("max_recording_seconds", "upload_grace_seconds", "reorder_window_seconds")
        short = [
            f"{env_name(n)}={getattr(self, n)}" for n in deadlines if self.retention_seconds < getattr(self, n)
        ]
        need(
            not short,
            "retention_seconds",
            f"must be at least {', '.join(short)}: a segment is forgotten this long after its "
            "last event, so a shorter retention drops it before that deadline can report it",
        )
        need(
            not self.cos_bucket or bool(BUCKET_NAME.match(self.cos_bucket)),
            "cos_bucket",
            _BY_NAME["cos_bucket"].metadata["rule"],
        )
        need(
            not self.cos_region or bool(_REGION.match(self.cos_region)),
            "cos_region",
            _BY_NAME["cos_region"].metadata["rule"],
        )
        need(
            bool(self.cos_region) or not (self.cos_bucket or self.cos_buckets_file),
            "cos_region",
            "must be set with GME_RECWATCH_COS_BUCKET or GME_RECWATCH_COS_BUCKETS_FILE",
        )
        need(
            not self.cos_endpoint or _is_http_url(self.cos_endpoint),
            "cos_endpoint",
            "must be an http:// or https:// URL such as https://cos.ap-guangzhou.myqcloud.com",
        )
        problem = key_template_problem(self.cos_key_template)
        need(problem is None, "cos_key_template", problem or "")
        # Settings that defeat the service, each refused with the reason.
        need(
            not 0 < self.replay_window_seconds < self.sender_retry_seconds,
            "replay_window_seconds",
            f"must be 0 (off) or at least GME_RECWATCH_SENDER_RETRY_SECONDS={self.sender_retry_seconds:g}: "
            "a retry carries its first Timestamp, so a shorter window rejects Tencent's own retries "
            "as stale and their events are lost",
        )
        need(
            self.redis_timeout_seconds < SENDER_TIMEOUT_SECONDS,
            "redis_timeout_seconds",
            f"must be below {SENDER_TIMEOUT_SECONDS:g}: Tencent gives up on a callback after "
            f"{SENDER_TIMEOUT_SECONDS:g} s, so a store answer slower than that is a 200 nobody "
            "receives (and a retry of a write that landed)",
        )
        shortest = min(deadlines, key=lambda n: getattr(self, n))
        need(
            self.sweep_interval_seconds <= getattr(self, shortest),
            "sweep_interval_seconds",
            f"must be at most {env_name(shortest)}={getattr(self, shortest)}: the sweep applies the "
            "deadlines, so a slower one reports every problem late by up to its interval",
        )
        need(
            self.cos_retry_max_seconds >= self.cos_retry_min_seconds,
            "cos_retry_max_seconds",
            f"must be at least GME_RECWATCH_COS_RETRY_MIN_SECONDS={self.cos_retry_min_seconds:g}: "
            "it bounds the same wait from above",
        )
        need(
            all(x.isdigit() for x in self.apps_without_start_callbacks.replace(" ", "").split(",") if x),
            "apps_without_start_callbacks",
            _BY_NAME["apps_without_start_callbacks"].metadata["rule"],
        )
        need(
            self.max_segments >= MIN_SEGMENTS,
            "max_segments",
            f"must be at least {MIN_SEGMENTS}: below it, capacity eviction forgets live segments "
            "as fast as they arrive and no deadline can ever report them",
        )
        return self

    @property
    def cos_enabled(self) -> bool:
        """True when a bucket is configured, for every app or some."""
        return bool(self.cos_bucket or self.cos_buckets_file)

    def lifecycle(self) -> lifecycle.Config:
        """What the lifecycle rules and the stores need of these settings."""
        return lifecycle.Config(
            max_recording_seconds=self.max_recording_seconds,
            upload_grace_seconds=self.upload_grace_seconds,
            reorder_window_seconds=self.reorder_window_seconds,
            retention_seconds=self.retention_seconds,
            max_segments=self.max_segments,
            max_apps=self.max_apps,
            check_in_cos=self.cos_enabled,
            tail_quiet_seconds=self.cos_tail_quiet_seconds,
        )

    @property
    def without_start(self) -> frozenset[int]:
        """:attr:`apps_without_start_callbacks`, as BizIDs."""
        return frozenset(int(x) for x in self.apps_without_start_callbacks.replace(" ", "").split(",") if x)

    def has_keys(self) -> bool:
        from .signature import parse_secret_list

        return bool(parse_secret_list(self.secret_key) or self.keys_file)

    def redacted(self) -> dict[str, Any]:
        """Settings as a dict for the start-up log line, secrets replaced."""
        out: dict[str, Any] = {}
        for f in fields():
            value = getattr(self, f.name)
            out[f.name] = ("<set>" if value else "<unset>") if f.metadata["secret"] else value
        out["redis_url"] = without_password(self.redis_url)
        return out


@dataclass(frozen=True, slots=True)
class Field:
    """One setting, as the CLI, the README table and the chart tests see it."""

    name: str
    default: Any
    type: type
    metadata: Mapping[str, Any]  # help, secret, choices, rule, env


def _describe(name: str, annotation: Any, default: Any) -> Field:
    base: Any = annotation
    metas: list[Meta] = []
    while get_origin(base) is Annotated:
        base, *more = get_args(base)
        metas = [m for m in more if isinstance(m, Meta)] + metas
    extra: dict[str, Any] = {}
    help_text = ""
    for m in metas:
        extra.update(m.extra or {})
        help_text = m.description or help_text
    choices = get_args(base) if get_origin(base) is Literal else ()
    kind = type(default)
    return Field(
        name,
        default,
        kind,
        {
            "help": help_text,
            "secret": extra.get("secret", False),
            "choices": choices,
            "rule": extra.get("rule", ""),
            "env": extra.get("env", ""),
        },
    )


_HINTS: Final = get_type_hints(Settings, include_extras=True)
_FIELDS: Final = tuple(
    _describe(name, _HINTS[name], default)
    for name, default in zip(Settings.__struct_fields__, Settings.__struct_defaults__, strict=True)
)
_BY_NAME: Final = {f.name: f for f in _FIELDS}


def fields() -> tuple[Field, ...]:
    return _FIELDS


def human_duration(seconds: float) -> str:
    """``21600`` -> ``6 h``, ``900`` -> ``15 min``, ``20`` -> ``20 s``: deadlines as people say them."""
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:g} {unit}"
    return f"{seconds:g} s"


def default_of(field_name: str) -> Any:
    """A setting's default outside demo mode."""
    return _BY_NAME[field_name].default


def env_name(field_name: str) -> str:
    """``GME_RECWATCH_<NAME>``, or the standard variable a field declares (Tencent Cloud's
    ``TENCENTCLOUD_SECRET_ID`` and ``TENCENTCLOUD_SECRET_KEY``)."""
    f = _BY_NAME.get(field_name)
    return f.metadata["env"] if f is not None and f.metadata["env"] else ENV_PREFIX + field_name.upper()


def key_template_problem(template: str) -> str | None:
    """Why ``template`` is not a usable COS object key template, or None when it is.

    Only bare placeholders are allowed: no attribute or index access, conversions or format
    specs, so a template can never reach into an object or raise while formatting a key.
    """
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        return f"is not a valid template ({exc})"
    names = []
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in COS_KEY_PLACEHOLDERS or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            return f"{shown} is not a placeholder; use " + ", ".join(
                "{" + p + "}" for p in COS_KEY_PLACEHOLDERS
            )
        names.append(name)
    if "file_name" not in names:
        return "must contain {file_name}: the callback's FileName is what tells one recording from another"
    if template.startswith("/"):
        return "must not start with /: COS object keys have no leading slash"
    return None


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in value


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _shown(name: str, value: Any) -> str:
    if name == "redis_url" and isinstance(value, str):
        return repr(without_password(value))
    return "<redacted>" if _BY_NAME[name].metadata["secret"] else repr(value)


def without_password(url: str) -> str:
    """A URL fit to log: any password in it replaced."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}<redacted>@{host}"))


_FIELD_IN_ERROR = re.compile(r"at `\$\.(\w+)`")


def _convert(values: dict[str, Any], *, strict: bool) -> Settings:
    """``values`` as :class:`Settings`, or a :class:`SettingsError` in words a user acts on."""
    try:
        return msgspec.convert(values, Settings, strict=strict)
    except msgspec.ValidationError as exc:
        found = _FIELD_IN_ERROR.search(str(exc))
        if found is None:  # not about one field: msgspec's own words
            raise SettingsError(str(exc)) from None
        f = _BY_NAME[found.group(1)]
        raise SettingsError(
            f"{env_name(f.name)}={_shown(f.name, values[f.name])}: {_requirement(f, values[f.name])}"
        ) from None


def _requirement(f: Field, value: Any) -> str:
    if f.metadata["choices"]:
        return "must be one of " + ", ".join(f.metadata["choices"])
    wanted = "an integer" if f.type is int else "a number" if f.type is float else None
    if wanted and not _is_a(f.type, value):
        return f"must be {wanted}"
    return f.metadata["rule"] or "is invalid"


def _is_a(kind: type, value: Any) -> bool:
    if isinstance(value, str):
        try:
            kind(value)
        except ValueError:
            return False
        return True
    return (
        isinstance(value, kind)
        and not isinstance(value, bool)
        and not (isinstance(value, float) and math.isnan(value))
    )


def _clean(f: Field, raw: str) -> str:
    """What a user typed, as the model expects it: trimmed (a secret is taken as typed),
    `1_000` as an integer, choices in lower case."""
    if f.metadata["secret"]:
        return raw
    raw = raw.strip()
    if f.type is int:
        return raw.replace("_", "")
    return raw.lower() if f.metadata["choices"] else raw


# GME_RECWATCH_* variables that are not settings, on purpose: the test suite and the image build
# read them (tests/conftest.py, tests/test_hostile.py, tests/e2e/test_image.py), never the
# service. A developer who exports one must still be able to start the service next to them.
TOOLING_VARIABLES: Final = frozenset(
    {
        "GME_RECWATCH_FIGURES",
        "GME_RECWATCH_FLOOD_CALLBACKS",
        "GME_RECWATCH_FLOOD_SEGMENTS",
        "GME_RECWATCH_IMAGE_CACHE",
        "GME_RECWATCH_DEBIAN_MIRROR",
    }
)


def edit_distance(a: str, b: str, limit: int) -> int:
    """Levenshtein distance of ``a`` and ``b``, or ``limit + 1`` once it is known to exceed it."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
        if min(row) > limit:
            return limit + 1
    return row[-1]


# How far (in edits, any case) a variable may be from the prefix or from a setting's variable and
# still be taken for a typo of it: one the service would otherwise ignore without a word, and run
# on a default (in memory instead of on Redis, say) while `--check` says the settings are valid.
TYPO_DISTANCE: Final = 2


def _near_miss(name: str, known: set[str]) -> str | None:
    """For a variable outside the prefix: the setting it looks like a typo of, or None."""
    upper = name.upper()
    distance, nearest = min((edit_distance(upper, k, TYPO_DISTANCE), k) for k in known)
    if distance <= TYPO_DISTANCE:
        return nearest
    n = len(ENV_PREFIX)
    for cut in range(n - TYPO_DISTANCE, n + TYPO_DISTANCE + 1):
        if edit_distance(upper[:cut], ENV_PREFIX, TYPO_DISTANCE) <= TYPO_DISTANCE:
            rest = upper[cut:].lstrip("_")
            suffixes = sorted(k[n:] for k in known if k.startswith(ENV_PREFIX))
            close = difflib.get_close_matches(rest, suffixes, n=1, cutoff=0.8)
            if close:  # (another tool's GME_RECWATCHER is not one of ours)
                return ENV_PREFIX + close[0]
    return None


def unknown_variable(name: str) -> str | None:
    """Why variable ``name`` stops the start, or None when it is a setting (or a tooling
    variable, or nothing like one). A mistyped setting would otherwise be silently ignored: a
    ``GME_RECWATCH_`` variable that is no setting, and any variable within
    :data:`TYPO_DISTANCE` edits (any case) of the prefix or of a setting's variable. The message
    names the variable and the closest setting, never the value (it may be a secret)."""
    if name in TOOLING_VARIABLES:
        return None
    known = {env_name(f.name) for f in _FIELDS}
    if name in known:
        return None
    if not name.startswith(ENV_PREFIX):
        near = _near_miss(name, known)
        if near is None:
            return None
        return f"{name} is not read (a typo?): did you mean {near}?"
    by_env = {ENV_PREFIX + f.name.upper(): env_name(f.name) for f in _FIELDS}
    if name in by_env:  # a setting read from a standard variable under its own name
        return f"{name} is not read: set {by_env[name]} instead"
    # Compared without the prefix, which every candidate shares and would make all look close.
    suffixes = sorted(k[len(ENV_PREFIX) :] for k in known if k.startswith(ENV_PREFIX))
    close = difflib.get_close_matches(name[len(ENV_PREFIX) :], suffixes, n=1, cutoff=0.6)
    hint = (
        f"did you mean {ENV_PREFIX}{close[0]}?" if close else "`gme-recwatch serve --help` lists the settings"
    )
    return f"{name} is not a setting: {hint}"


_MAY_BE_EMPTY: Final = ("secret_key", "keys_file", "state_file", "redis_url", "redis_password_file")


def load(
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, str | None] | None = None,
    *,
    demo: bool = False,
) -> Settings:
    """Build settings from environment variables, then CLI overrides (strings), and validate.
    ``demo``: :data:`DEMO_DEFAULTS` replace the defaults (what is set still wins)."""
    env = os.environ if env is None else env
    for name in sorted(env):
        problem = unknown_variable(name)
        if problem is not None:
            raise SettingsError(problem)
    values: dict[str, Any] = dict(DEMO_DEFAULTS) if demo else {}
    for f in _FIELDS:
        raw, source = env.get(env_name(f.name)), env_name(f.name)
        if overrides and overrides.get(f.name) is not None:
            raw, source = overrides[f.name], flag_name(f.name)
        if raw is not None and raw.strip() == "" and f.name not in _MAY_BE_EMPTY and default_of(f.name) != "":
            # Unset it for the default: an empty value is more often a template or a secret
            # that rendered to nothing than a wish for the default. (Where the default is empty
            # -- "off": no bucket, no state file -- empty is that value, as the chart renders it.)
            raise SettingsError(
                f"{source} is empty: give it a value, or unset it for the default "
                f"({_shown(f.name, default_of(f.name))})"
            )
        if raw is not None and (raw != "" or f.name in _MAY_BE_EMPTY):
            values[f.name] = _clean(f, raw)
    return _convert(values, strict=False).validate()
