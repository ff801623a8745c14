"""Configuration from environment variables and CLI flags, validated once at start.

Every setting is a field of :class:`Settings` with its environment variable, CLI flag and
one-line help in the field metadata. The README's configuration table is checked against
this module by ``tests/test_settings.py``, so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from . import lifecycle

ENV_PREFIX = "GME_RECWATCH_"

SignatureEncoding = Literal["auto", "base64", "hex"]
LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]

_LOG_LEVELS = ("debug", "info", "warning", "error")


class SettingsError(ValueError):
    """A setting has an invalid value; the message names the environment variable."""


def _setting(default: Any, help: str, *, secret: bool = False, choices: tuple[str, ...] = ()) -> Any:
    # repr=False for secrets: tracebacks rendered with locals (rich, in console mode) show reprs.
    return field(default=default, repr=not secret,
                 metadata={"help": help, "secret": secret, "choices": choices})


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service can be told. Defaults suit Tencent GME; see the README for why."""

    secret_key: str = _setting(
        "",
        "SecretKey (the GME console's permission key) for every app; several, comma-separated, "
        "are all accepted during a rotation.",
        secret=True,
    )
    keys_file: str = _setting(
        "",
        "Path of a keyring file (e.g. a mounted Kubernetes Secret): lines of `BizID=key` or "
        "`*=key`; reloaded when it changes.",
    )
    host: str = _setting("0.0.0.0", "Address of the callback listener (the only internet-facing one).")
    port: int = _setting(8080, "Port of the callback listener.")
    admin_host: str = _setting("0.0.0.0", "Address of the admin listener (/metrics, probes, API).")
    admin_port: int = _setting(8081, "Port of the admin listener; keep it inside the cluster.")
    callback_path: str = _setting("/callback", "Path Tencent POSTs callbacks to (the URL in the GME console).")
    signature_encoding: str = _setting(
        "auto",
        "Encoding of the Signature header: `base64`, `hex`, or `auto` (either, by its length).",
        choices=("auto", "base64", "hex"),
    )
    max_body_bytes: int = _setting(65536, "Largest callback body accepted; enforced while it streams in.")
    replay_window_seconds: int = _setting(
        0,
        "Reject verified callbacks whose Timestamp is further than this from now as `stale`; 0 = off.",
    )
    log_level: str = _setting("info", "Log level: debug, info, warning or error.", choices=_LOG_LEVELS)
    log_format: str = _setting(
        "auto",
        "Log format: `json`, `console`, or `auto` (console on a terminal, JSON otherwise).",
        choices=("auto", "json", "console"),
    )
    accepted_log_level: str = _setting(
        "debug",
        "Level of the log line for each accepted callback.",
        choices=_LOG_LEVELS,
    )
    max_recording_seconds: int = _setting(
        21600, "A segment still recording after this long is `stuck` (default 6 h)."
    )
    upload_grace_seconds: int = _setting(
        900, "A completed segment with no upload after this long is `upload_missing` (default 15 min)."
    )
    reorder_window_seconds: int = _setting(
        120,
        "How long a completed/uploaded event waits for its start before the start counts as lost "
        "(`orphan`); covers Tencent's ~1 min of retries.",
    )
    retention_seconds: int = _setting(
        86400, "Every segment is forgotten this long after its last event (default 24 h)."
    )
    max_segments: int = _setting(
        1_000_000, "Capacity of the tracker; past it, terminal segments are evicted first, then the oldest."
    )
    max_apps: int = _setting(
        50, "Distinct BizIDs given their own `app_id` label value; further apps are reported as `other`."
    )
    state_file: str = _setting(
        "", "Where to snapshot tracker state so a restart keeps it; empty = no snapshots."
    )
    snapshot_interval_seconds: int = _setting(
        30, "How often the state snapshot is written (also on shutdown)."
    )
    sweep_interval_seconds: float = _setting(1.0, "Resolution of the deadline sweep.")
    keys_reload_seconds: float = _setting(5.0, "How often the keyring file is checked for changes.")
    shutdown_timeout_seconds: float = _setting(
        10.0, "On SIGTERM, how long in-flight requests get to finish."
    )

    def validate(self) -> Settings:
        """Check ranges and choices; raise :class:`SettingsError` naming the variable."""

        def need(cond: bool, name: str, what: str) -> None:
            if not cond:
                value = getattr(self, name)
                shown = "<redacted>" if _meta(name)["secret"] else repr(value)
                raise SettingsError(f"{env_name(name)}={shown}: {what}")

        for name in ("port", "admin_port"):
            need(1 <= getattr(self, name) <= 65535, name, "must be a port number 1-65535")
        need(self.port != self.admin_port or self.host != self.admin_host, "admin_port",
             "must differ from GME_RECWATCH_PORT: /metrics must never be served on the callback port")
        need(self.callback_path.startswith("/") and " " not in self.callback_path, "callback_path",
             "must be an absolute URL path such as /callback")
        need(self.callback_path.rstrip("/") not in ("/healthz", "/livez", ""), "callback_path",
             "must not be / or the liveness probe path")
        need(1024 <= self.max_body_bytes <= 16 * 1024 * 1024, "max_body_bytes", "must be 1024..16777216")
        need(self.replay_window_seconds >= 0, "replay_window_seconds", "must be >= 0 (0 turns it off)")
        for name in ("max_recording_seconds", "upload_grace_seconds", "reorder_window_seconds",
                     "retention_seconds", "snapshot_interval_seconds"):
            need(getattr(self, name) > 0, name, "must be > 0")
        need(self.retention_seconds >= max(self.upload_grace_seconds, self.reorder_window_seconds),
             "retention_seconds", "must be at least the upload grace and the reorder window")
        need(self.max_segments >= 1, "max_segments", "must be >= 1")
        need(self.max_apps >= 1, "max_apps", "must be >= 1")
        for name in ("sweep_interval_seconds", "keys_reload_seconds", "shutdown_timeout_seconds"):
            need(getattr(self, name) > 0, name, "must be > 0")
        for name in ("signature_encoding", "log_level", "log_format", "accepted_log_level"):
            choices = _meta(name)["choices"]
            need(getattr(self, name) in choices, name, "must be one of " + ", ".join(choices))
        return self

    def lifecycle(self) -> lifecycle.Config:
        """What the lifecycle rules and the stores need of these settings."""
        return lifecycle.Config(
            max_recording_seconds=self.max_recording_seconds,
            upload_grace_seconds=self.upload_grace_seconds,
            reorder_window_seconds=self.reorder_window_seconds,
            retention_seconds=self.retention_seconds,
            max_segments=self.max_segments,
            max_apps=self.max_apps,
        )

    def has_keys(self) -> bool:
        from .signature import parse_secret_list

        return bool(parse_secret_list(self.secret_key) or self.keys_file)

    def redacted(self) -> dict[str, Any]:
        """Settings as a dict for the start-up log line, secrets replaced."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = ("<set>" if value else "<unset>") if f.metadata["secret"] else value
        return out


def _meta(name: str) -> Mapping[str, Any]:
    return {f.name: f.metadata for f in dataclasses.fields(Settings)}[name]


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def fields() -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(Settings)


def _convert(f: dataclasses.Field[Any], raw: str) -> Any:
    kind = type(f.default)
    try:
        if kind is int:
            return int(raw.strip().replace("_", ""))
        if kind is float:
            return float(raw.strip())
    except ValueError:
        what = "an integer" if kind is int else "a number"
        shown = "<redacted>" if f.metadata["secret"] else repr(raw)
        raise SettingsError(f"{env_name(f.name)}={shown}: must be {what}") from None
    if f.metadata["choices"]:
        return raw.strip().lower()
    return raw.strip() if f.name != "secret_key" else raw


def load(env: Mapping[str, str] | None = None, overrides: Mapping[str, str | None] | None = None) -> Settings:
    """Build settings from environment variables, then CLI overrides (strings), and validate."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f in fields():
        raw = env.get(env_name(f.name))
        if overrides and overrides.get(f.name) is not None:
            raw = overrides[f.name]
        if raw is not None and (raw != "" or f.name in ("secret_key", "keys_file", "state_file")):
            values[f.name] = _convert(f, raw)
    return Settings(**values).validate()
