"""Configuration from environment variables and CLI flags, validated once at start."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from gme_recwatch import settings as settings_mod
from gme_recwatch.settings import (
    ENV_PREFIX,
    TOOLING_VARIABLES,
    Settings,
    SettingsError,
    env_name,
    flag_name,
    load,
    unknown_variable,
)

SECRET = "very-secret-key-0123456789"
OTHER_SECRET = "second-secret-key-abcdef"


def _error(
    env: dict[str, str] | None = None, overrides: dict[str, str | None] | None = None, **fields: Any
) -> str:
    """The SettingsError message for ``env``/``overrides`` (via load) or ``fields`` (via validate)."""
    with pytest.raises(SettingsError) as info:
        if fields:
            Settings(**fields).validate()
        else:
            load(env or {}, overrides)
    return str(info.value)


# --- defaults ----------------------------------------------------------------------------


def test_defaults_are_valid() -> None:
    s = Settings()
    assert s.validate() is s


def test_empty_environment_gives_the_defaults() -> None:
    assert load({}) == Settings()


def test_defaults_suit_tencent_gme() -> None:
    s = Settings()
    assert (s.port, s.admin_port) == (8080, 8081)
    assert s.callback_path == "/callback"
    assert s.signature_encoding == "auto"
    assert s.secret_key == ""
    assert s.keys_file == ""
    assert s.retention_seconds >= s.upload_grace_seconds


def test_load_reads_os_environ_when_no_env_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GME_RECWATCH_PORT", "9123")
    monkeypatch.setenv("GME_RECWATCH_SECRET_KEY", SECRET)
    s = load()
    assert s.port == 9123
    assert s.secret_key == SECRET


def test_every_setting_has_help_and_a_matching_env_var_and_flag() -> None:
    for f in settings_mod.fields():
        assert f.metadata["help"].strip(), f.name
        if f.metadata["env"]:  # Tencent Cloud's own variables, read where tools expect them
            assert f.metadata["secret"] and env_name(f.name).startswith("TENCENTCLOUD_")
        else:
            assert env_name(f.name) == ENV_PREFIX + f.name.upper()
        assert flag_name(f.name) == "--" + f.name.replace("_", "-")
    assert env_name("admin_port") == "GME_RECWATCH_ADMIN_PORT"
    assert flag_name("admin_port") == "--admin-port"


# --- environment variables and CLI overrides ---------------------------------------------


@pytest.mark.parametrize(
    ("var", "raw", "field", "value"),
    [
        ("GME_RECWATCH_PORT", "9000", "port", 9000),
        ("GME_RECWATCH_ADMIN_PORT", "9001", "admin_port", 9001),
        ("GME_RECWATCH_HOST", "127.0.0.1", "host", "127.0.0.1"),
        ("GME_RECWATCH_ADMIN_HOST", "10.0.0.5", "admin_host", "10.0.0.5"),
        ("GME_RECWATCH_CALLBACK_PATH", "/gme/recording", "callback_path", "/gme/recording"),
        ("GME_RECWATCH_SIGNATURE_ENCODING", "hex", "signature_encoding", "hex"),
        ("GME_RECWATCH_SIGNATURE_ENCODING", "base64", "signature_encoding", "base64"),
        ("GME_RECWATCH_MAX_BODY_BYTES", "1024", "max_body_bytes", 1024),
        ("GME_RECWATCH_LOG_LEVEL", "warning", "log_level", "warning"),
        ("GME_RECWATCH_LOG_FORMAT", "json", "log_format", "json"),
        ("GME_RECWATCH_RETENTION_SECONDS", "172800", "retention_seconds", 172800),
        ("GME_RECWATCH_MAX_SEGMENTS", "1_000", "max_segments", 1000),
        ("GME_RECWATCH_SWEEP_INTERVAL_SECONDS", "0.25", "sweep_interval_seconds", 0.25),
        ("GME_RECWATCH_KEYS_FILE", "/etc/gme/keys", "keys_file", "/etc/gme/keys"),
        ("GME_RECWATCH_STATE_FILE", "/var/lib/gme/state", "state_file", "/var/lib/gme/state"),
        ("GME_RECWATCH_SECRET_KEY", SECRET, "secret_key", SECRET),
    ],
)
def test_environment_variable_overrides_the_default(var: str, raw: str, field: str, value: Any) -> None:
    s = load({var: raw})
    assert getattr(s, field) == value
    assert getattr(Settings(), field) != value
    assert type(getattr(s, field)) is type(getattr(Settings(), field))


def test_surrounding_whitespace_in_env_values_is_stripped() -> None:
    s = load({"GME_RECWATCH_PORT": " 9000\n", "GME_RECWATCH_LOG_LEVEL": " error "})
    assert s.port == 9000
    assert s.log_level == "error"


def test_variables_without_the_prefix_are_ignored() -> None:
    assert load({"PORT": "9999", "RECWATCH_PORT": "9998", "REDIS_URL": "redis://x"}).port == 8080


@pytest.mark.parametrize(
    ("name", "suggested"),
    [
        ("GME_RECWATH_REDIS_URL", "GME_RECWATCH_REDIS_URL"),  # a typo in the prefix
        ("GME_RECWACH_REDIS_URL", "GME_RECWATCH_REDIS_URL"),
        ("GMERECWATCH_REDIS_URL", "GME_RECWATCH_REDIS_URL"),
        ("gme_recwatch_redis_url", "GME_RECWATCH_REDIS_URL"),  # any case
        ("Gme_Recwatch_Port", "GME_RECWATCH_PORT"),
        ("GME-RECWATCH-STATE-FILE", "GME_RECWATCH_STATE_FILE"),
        ("TENCENTCLOUD_SECRETID", "TENCENTCLOUD_SECRET_ID"),  # a standard variable we read
    ],
)
def test_a_variable_a_few_edits_from_a_setting_is_refused_with_a_suggestion(name: str, suggested: str) -> None:
    """Ignored, it would leave the service on a default (in memory instead of on Redis) while
    `--check` says the settings are valid."""
    message = _error({name: "redis://127.0.0.1:6379/0"})
    assert message == f"{name} is not read (a typo?): did you mean {suggested}?"
    assert "127.0.0.1" not in message  # never the value


def test_an_empty_value_is_an_error_naming_the_default() -> None:
    assert _error({"GME_RECWATCH_PORT": ""}) == (
        "GME_RECWATCH_PORT is empty: give it a value, or unset it for the default (8080)"
    )
    assert _error({"GME_RECWATCH_LOG_LEVEL": "  "}).startswith("GME_RECWATCH_LOG_LEVEL is empty")
    assert _error(overrides={"host": ""}).startswith("--host is empty")
    # Where empty has a meaning of its own ("in memory", "no snapshots"), it is a value.
    s = load({"GME_RECWATCH_REDIS_URL": "", "GME_RECWATCH_STATE_FILE": ""})
    assert (s.redis_url, s.state_file) == ("", "")


def test_cli_override_beats_the_environment() -> None:
    env = {"GME_RECWATCH_PORT": "9000", "GME_RECWATCH_LOG_LEVEL": "error", "GME_RECWATCH_SECRET_KEY": SECRET}
    s = load(env, {"port": "9100", "log_level": "debug", "secret_key": OTHER_SECRET})
    assert s.port == 9100
    assert s.log_level == "debug"
    assert s.secret_key == OTHER_SECRET


def test_cli_override_of_none_keeps_the_environment_value() -> None:
    s = load({"GME_RECWATCH_PORT": "9000"}, {"port": None, "admin_port": None})
    assert s.port == 9000
    assert s.admin_port == 8081


def test_cli_override_applies_without_an_environment_value() -> None:
    assert load({}, {"admin_port": "9200"}).admin_port == 9200


def test_invalid_environment_value_is_rejected_when_no_cli_flag_is_given() -> None:
    assert "GME_RECWATCH_PORT" in _error({"GME_RECWATCH_PORT": "x"}, {"port": None})


def test_valid_cli_override_replaces_an_invalid_environment_value() -> None:
    assert load({"GME_RECWATCH_PORT": "not-a-port"}, {"port": "9000"}).port == 9000


def test_admin_port_may_equal_callback_port_on_different_hosts() -> None:
    s = load(
        {
            "GME_RECWATCH_HOST": "10.0.0.1",
            "GME_RECWATCH_ADMIN_HOST": "127.0.0.1",
            "GME_RECWATCH_ADMIN_PORT": "8080",
        }
    )
    assert s.port == s.admin_port == 8080


# --- invalid values name their environment variable ------------------------------------------


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("GME_RECWATCH_PORT", "0"),
        ("GME_RECWATCH_PORT", "-1"),
        ("GME_RECWATCH_PORT", "65536"),
        ("GME_RECWATCH_PORT", "100000"),
        ("GME_RECWATCH_ADMIN_PORT", "0"),
        ("GME_RECWATCH_ADMIN_PORT", "65536"),
    ],
)
def test_port_out_of_range_is_rejected_naming_the_variable(var: str, raw: str) -> None:
    message = _error({var: raw})
    assert message.startswith(var + "=")
    assert "1-65535" in message


@pytest.mark.parametrize("raw", ["http", "80.5", "8080a", "0x50", "eighty"])
@pytest.mark.parametrize("var", ["GME_RECWATCH_PORT", "GME_RECWATCH_ADMIN_PORT"])
def test_non_integer_port_is_rejected_naming_the_variable(var: str, raw: str) -> None:
    message = _error({var: raw})
    assert message.startswith(var + "=")
    assert "integer" in message
    assert repr(raw) in message


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("GME_RECWATCH_SWEEP_INTERVAL_SECONDS", "fast"),
        ("GME_RECWATCH_KEYS_RELOAD_SECONDS", "5s"),
    ],
)
def test_non_numeric_float_is_rejected_naming_the_variable(var: str, raw: str) -> None:
    message = _error({var: raw})
    assert message.startswith(var + "=")
    assert "number" in message


def test_admin_port_equal_to_callback_port_on_the_same_host_is_rejected() -> None:
    message = _error({"GME_RECWATCH_ADMIN_PORT": "8080"})
    assert "GME_RECWATCH_ADMIN_PORT" in message
    assert "GME_RECWATCH_PORT" in message


def test_admin_port_equal_to_callback_port_set_by_cli_is_rejected() -> None:
    message = _error(
        {"GME_RECWATCH_HOST": "127.0.0.1", "GME_RECWATCH_ADMIN_HOST": "127.0.0.1"},
        {"port": "9000", "admin_port": "9000"},
    )
    assert "GME_RECWATCH_ADMIN_PORT" in message


@pytest.mark.parametrize(
    "path", ["callback", "gme/callback", "", " /callback", "/call back", "http://example.com/callback"]
)
def test_callback_path_that_is_not_absolute_is_rejected(path: str) -> None:
    message = _error(callback_path=path)
    assert message.startswith("GME_RECWATCH_CALLBACK_PATH=")


@pytest.mark.parametrize("path", ["/healthz", "/healthz/", "/livez", "/", "//"])
def test_callback_path_on_a_probe_or_the_root_is_rejected(path: str) -> None:
    message = _error({"GME_RECWATCH_CALLBACK_PATH": path})
    assert message.startswith("GME_RECWATCH_CALLBACK_PATH=")


@pytest.mark.parametrize("path", ["/callback", "/gme/recording/callback", "/healthz-callback", "/cb/"])
def test_callback_path_that_is_absolute_and_not_a_probe_is_accepted(path: str) -> None:
    assert load({"GME_RECWATCH_CALLBACK_PATH": path}).callback_path == path


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("GME_RECWATCH_SIGNATURE_ENCODING", "base32"),
        ("GME_RECWATCH_SIGNATURE_ENCODING", "sha1"),
        ("GME_RECWATCH_LOG_LEVEL", "verbose"),
        ("GME_RECWATCH_LOG_LEVEL", "critical"),
        ("GME_RECWATCH_LOG_FORMAT", "xml"),
        ("GME_RECWATCH_ACCEPTED_LOG_LEVEL", "trace"),
    ],
)
def test_unknown_choice_is_rejected_naming_the_variable_and_the_choices(var: str, raw: str) -> None:
    message = _error({var: raw})
    assert message.startswith(var + "=")
    assert repr(raw) in message
    assert "must be one of" in message


def test_unknown_signature_encoding_lists_the_valid_encodings() -> None:
    message = _error({"GME_RECWATCH_SIGNATURE_ENCODING": "base32"})
    for choice in ("auto", "base64", "hex"):
        assert choice in message


def test_retention_shorter_than_upload_grace_is_rejected() -> None:
    message = _error({"GME_RECWATCH_RETENTION_SECONDS": "600", "GME_RECWATCH_UPLOAD_GRACE_SECONDS": "900"})
    assert message.startswith("GME_RECWATCH_RETENTION_SECONDS=")


def test_retention_shorter_than_reorder_window_is_rejected() -> None:
    message = _error({"GME_RECWATCH_RETENTION_SECONDS": "100", "GME_RECWATCH_UPLOAD_GRACE_SECONDS": "50"})
    assert message.startswith("GME_RECWATCH_RETENTION_SECONDS=")


def test_retention_equal_to_upload_grace_is_accepted() -> None:
    s = load(
        {
            "GME_RECWATCH_RETENTION_SECONDS": "900",
            "GME_RECWATCH_UPLOAD_GRACE_SECONDS": "900",
            "GME_RECWATCH_MAX_RECORDING_SECONDS": "600",
        }
    )
    assert s.retention_seconds == s.upload_grace_seconds == 900


def test_retention_shorter_than_the_maximum_recording_is_rejected_naming_both() -> None:
    """A recording would be forgotten before it could be stuck (#19.3): nothing reported."""
    message = _error({"GME_RECWATCH_RETENTION_SECONDS": "3600", "GME_RECWATCH_MAX_RECORDING_SECONDS": "7200"})
    assert message.startswith(
        "GME_RECWATCH_RETENTION_SECONDS=3600: must be at least GME_RECWATCH_MAX_RECORDING_SECONDS=7200: "
    )
    assert "UPLOAD_GRACE" not in message and "REORDER_WINDOW" not in message


def test_retention_shorter_than_several_deadlines_names_each() -> None:
    message = _error({"GME_RECWATCH_RETENTION_SECONDS": "100"})
    for name in ("MAX_RECORDING_SECONDS=21600", "UPLOAD_GRACE_SECONDS=900", "REORDER_WINDOW_SECONDS=120"):
        assert "GME_RECWATCH_" + name in message


def test_retention_equal_to_the_maximum_recording_is_accepted() -> None:
    s = load({"GME_RECWATCH_RETENTION_SECONDS": "21600"})
    assert s.retention_seconds == s.max_recording_seconds


def test_an_upload_grace_shorter_than_the_reorder_window_is_accepted() -> None:
    """Not contradictory: a completion's upload is missing at the grace whether or not its start
    came; its start is still awaited until the window ends (lifecycle.derive_state)."""
    s = load({"GME_RECWATCH_UPLOAD_GRACE_SECONDS": "60", "GME_RECWATCH_REORDER_WINDOW_SECONDS": "120"})
    assert s.upload_grace_seconds < s.reorder_window_seconds


@pytest.mark.parametrize("raw", ["0", "1023", "-1", str(16 * 1024 * 1024 + 1), "1000000000"])
def test_max_body_bytes_out_of_range_is_rejected(raw: str) -> None:
    message = _error({"GME_RECWATCH_MAX_BODY_BYTES": raw})
    assert message.startswith("GME_RECWATCH_MAX_BODY_BYTES=")


@pytest.mark.parametrize("raw", ["1024", str(16 * 1024 * 1024)])
def test_max_body_bytes_at_the_bounds_is_accepted(raw: str) -> None:
    assert load({"GME_RECWATCH_MAX_BODY_BYTES": raw}).max_body_bytes == int(raw)


@pytest.mark.parametrize(
    "name",
    [
        "max_recording_seconds",
        "upload_grace_seconds",
        "reorder_window_seconds",
        "retention_seconds",
        "snapshot_interval_seconds",
        "max_segments",
        "max_apps",
        "sweep_interval_seconds",
        "keys_reload_seconds",
        "shutdown_timeout_seconds",
    ],
)
@pytest.mark.parametrize("raw", ["0", "-5"])
def test_non_positive_duration_or_capacity_is_rejected(name: str, raw: str) -> None:
    message = _error({env_name(name): raw})
    assert message.startswith(env_name(name) + "=")


def test_negative_replay_window_is_rejected_and_zero_turns_it_off() -> None:
    assert _error({"GME_RECWATCH_REPLAY_WINDOW_SECONDS": "-1"}).startswith(
        "GME_RECWATCH_REPLAY_WINDOW_SECONDS="
    )
    assert load({"GME_RECWATCH_REPLAY_WINDOW_SECONDS": "0"}).replay_window_seconds == 0


def test_nan_interval_is_rejected() -> None:
    assert _error({"GME_RECWATCH_SWEEP_INTERVAL_SECONDS": "nan"}).startswith(
        "GME_RECWATCH_SWEEP_INTERVAL_SECONDS="
    )


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


# --- the secret never leaks ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "overrides"),
    [
        ({"GME_RECWATCH_PORT": "0"}, None),
        ({"GME_RECWATCH_PORT": "abc"}, None),
        ({"GME_RECWATCH_ADMIN_PORT": "8080"}, None),
        ({"GME_RECWATCH_CALLBACK_PATH": "/healthz"}, None),
        ({"GME_RECWATCH_LOG_LEVEL": "loud"}, None),
        ({}, {"signature_encoding": "base32"}),
        ({}, {"max_body_bytes": "1"}),
    ],
)
def test_secret_never_appears_in_a_settings_error(
    env: dict[str, str],
    overrides: dict[str, str] | None,
) -> None:
    env = {"GME_RECWATCH_SECRET_KEY": f"{SECRET},{OTHER_SECRET}", **env}
    message = _error(env, overrides)
    assert SECRET not in message
    assert OTHER_SECRET not in message


def test_the_keys_are_the_fields_marked_secret() -> None:
    secret_fields = [f.name for f in settings_mod.fields() if f.metadata["secret"]]
    assert secret_fields == ["secret_key", "cos_secret_id", "cos_secret_key"]


def test_redacted_settings_hide_the_secret() -> None:
    s = load({"GME_RECWATCH_SECRET_KEY": f"{SECRET},{OTHER_SECRET}"})
    out = s.redacted()
    assert out["secret_key"] == "<set>"
    text = repr(out) + str(out)
    assert SECRET not in text
    assert OTHER_SECRET not in text


def test_redacted_settings_say_when_the_secret_is_unset() -> None:
    assert Settings().redacted()["secret_key"] == "<unset>"


def test_redacted_settings_keep_every_other_value() -> None:
    s = load({"GME_RECWATCH_PORT": "9000", "GME_RECWATCH_KEYS_FILE": "/etc/keys"})
    out = s.redacted()
    assert set(out) == {f.name for f in settings_mod.fields()}
    assert out["port"] == 9000
    assert out["keys_file"] == "/etc/keys"
    for f in settings_mod.fields():
        if not f.metadata["secret"]:
            assert out[f.name] == getattr(s, f.name)


def test_repr_of_settings_never_shows_the_secret() -> None:
    # Settings objects end up in tracebacks and debug logs; the Keyring already hides its keys.
    s = Settings(secret_key=SECRET)
    assert SECRET not in repr(s)
    assert SECRET not in str(s)


# --- has_keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret_key", "keys_file", "expected"),
    [
        ("", "", False),
        ("   ", "", False),
        (SECRET, "", True),
        (f"{SECRET},{OTHER_SECRET}", "", True),
        ("", "/etc/gme/keys", True),
        (SECRET, "/etc/gme/keys", True),
    ],
)
def test_has_keys_is_true_when_a_secret_or_keys_file_is_configured(
    secret_key: str,
    keys_file: str,
    expected: bool,
) -> None:
    assert Settings(secret_key=secret_key, keys_file=keys_file).has_keys() is expected


def test_has_keys_via_environment() -> None:
    assert load({}).has_keys() is False
    assert load({"GME_RECWATCH_SECRET_KEY": SECRET}).has_keys() is True
    assert load({"GME_RECWATCH_KEYS_FILE": "/etc/gme/keys"}).has_keys() is True


@pytest.mark.parametrize("secret_key", [",", " , ", ",,,", "\t,\n"])
def test_has_keys_is_false_when_the_secret_list_holds_no_key(secret_key: str) -> None:
    # `serve` refuses to start without keys; a list of only separators is no keys at all
    # (parse_secret_list gives []), so the service would start and reject every callback.
    assert Settings(secret_key=secret_key).has_keys() is False


# --- the shared store ----------------------------------------------------------------------


def test_a_password_in_the_redis_url_is_never_shown() -> None:
    s = load({"GME_RECWATCH_REDIS_URL": "rediss://app:hunter2@redis.internal:6380/1"})
    assert s.redis_url == "rediss://app:hunter2@redis.internal:6380/1"
    shown = repr(s) + str(s.redacted())
    assert "hunter2" not in shown
    assert "rediss://app:<redacted>@redis.internal:6380/1" in shown
    message = _error(
        {"GME_RECWATCH_REDIS_URL": "rediss://:hunter2@h/0", "GME_RECWATCH_STATE_FILE": "/var/lib/state"}
    )
    assert "hunter2" not in message


@pytest.mark.parametrize("url", ["redis://localhost:6379/0", "rediss://h:6380", "unix:///run/redis.sock"])
def test_redis_urls_of_the_three_kinds_are_accepted(url: str) -> None:
    assert load({"GME_RECWATCH_REDIS_URL": url}).redis_url == url


def test_a_redis_url_of_another_scheme_is_refused_naming_the_variable() -> None:
    assert _error({"GME_RECWATCH_REDIS_URL": "http://redis:6379"}).startswith("GME_RECWATCH_REDIS_URL=")


def test_a_redis_url_and_a_state_file_exclude_each_other() -> None:
    message = _error({"GME_RECWATCH_REDIS_URL": "redis://r:6379", "GME_RECWATCH_STATE_FILE": "/s"})
    assert message.startswith("GME_RECWATCH_STATE_FILE=") and "Redis" in message


# --- COS -----------------------------------------------------------------------------------

COS = {"GME_RECWATCH_COS_BUCKET": "gme-records-1250000000", "GME_RECWATCH_COS_REGION": "ap-guangzhou"}


def test_cos_is_off_unless_a_bucket_is_configured() -> None:
    assert not load({}).cos_enabled
    assert load(COS).cos_enabled
    assert load(
        {"GME_RECWATCH_COS_BUCKETS_FILE": "/etc/buckets", "GME_RECWATCH_COS_REGION": "ap-guangzhou"}
    ).cos_enabled


def test_cos_credentials_come_from_tencent_cloud_s_standard_variables() -> None:
    s = load({**COS, "TENCENTCLOUD_SECRET_ID": "AKIDexample", "TENCENTCLOUD_SECRET_KEY": "sk-1"})
    assert (s.cos_secret_id, s.cos_secret_key) == ("AKIDexample", "sk-1")
    assert env_name("cos_secret_id") == "TENCENTCLOUD_SECRET_ID"
    assert env_name("cos_secret_key") == "TENCENTCLOUD_SECRET_KEY"
    with pytest.raises(SettingsError) as err:  # under our prefix it would be ignored: refused
        load({"GME_RECWATCH_COS_SECRET_KEY": "sk-typed-here"})
    assert str(err.value) == ("GME_RECWATCH_COS_SECRET_KEY is not read: set TENCENTCLOUD_SECRET_KEY instead")


def test_cos_credentials_never_show_in_repr_or_the_start_up_line() -> None:
    s = load({**COS, "TENCENTCLOUD_SECRET_ID": "AKIDvisible", "TENCENTCLOUD_SECRET_KEY": "sk-visible"})
    shown = repr(s) + str(s) + repr(s.redacted())
    assert "AKIDvisible" not in shown and "sk-visible" not in shown
    assert s.redacted()["cos_secret_key"] == "<set>"


def test_a_cos_bucket_needs_a_region() -> None:
    with pytest.raises(SettingsError, match="GME_RECWATCH_COS_REGION='': must be set"):
        load({"GME_RECWATCH_COS_BUCKET": "gme-records-1250000000"})


@pytest.mark.parametrize("bucket", ["Gme-Records", "ab", "gme_records", "-gme", "a" * 64])
def test_a_cos_bucket_that_is_no_bucket_name_is_refused(bucket: str) -> None:
    with pytest.raises(SettingsError, match=r"GME_RECWATCH_COS_BUCKET=.*bucket name"):
        load({**COS, "GME_RECWATCH_COS_BUCKET": bucket})


@pytest.mark.parametrize("region", ["AP-Guangzhou", "ap guangzhou", "ap_guangzhou"])
def test_a_region_that_is_no_region_name_is_refused(region: str) -> None:
    with pytest.raises(SettingsError, match="GME_RECWATCH_COS_REGION"):
        load({**COS, "GME_RECWATCH_COS_REGION": region})


@pytest.mark.parametrize("endpoint", ["cos.ap-guangzhou.myqcloud.com", "ftp://x", "http://"])
def test_a_cos_endpoint_must_be_an_http_url(endpoint: str) -> None:
    with pytest.raises(SettingsError, match=r"GME_RECWATCH_COS_ENDPOINT.*http"):
        load({**COS, "GME_RECWATCH_COS_ENDPOINT": endpoint})


@pytest.mark.parametrize(
    "template",
    ["{file_name}", "recordings/{biz_id}/{file_name}", "{room_id}/{user_id}/{task_id}-{seq_no}/{file_name}"],
)
def test_key_templates_with_known_placeholders_are_accepted(template: str) -> None:
    assert load({"GME_RECWATCH_COS_KEY_TEMPLATE": template}).cos_key_template == template


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("{biz_id}.mp3", "must contain {file_name}"),
        ("{file_name.__class__}", "is not a placeholder"),
        ("{file_name!r}", "is not a placeholder"),
        ("{seq_no:04d}/{file_name}", "is not a placeholder"),
        ("{bucket}/{file_name}", "{bucket} is not a placeholder"),
        ("{}{file_name}", "is not a placeholder"),
        ("{file_name", "not a valid template"),
        ("/{file_name}", "no leading slash"),
    ],
)
def test_a_key_template_with_anything_else_is_refused_saying_why(template: str, words: str) -> None:
    with pytest.raises(SettingsError) as info:
        load({"GME_RECWATCH_COS_KEY_TEMPLATE": template})
    assert "GME_RECWATCH_COS_KEY_TEMPLATE" in str(info.value) and words in str(info.value)


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("GME_RECWATCH_COS_MAX_CONCURRENCY", "0"),
        ("GME_RECWATCH_COS_MAX_CONCURRENCY", "257"),
        ("GME_RECWATCH_COS_REQUESTS_PER_SECOND", "0"),
        ("GME_RECWATCH_COS_TIMEOUT_SECONDS", "-1"),
        ("GME_RECWATCH_SIGNATURE_HINTS_PER_SECOND", "-1"),
        ("GME_RECWATCH_COS_ADDRESSING_STYLE", "dns"),
    ],
)
def test_cos_and_hint_limits_out_of_range_are_refused(var: str, raw: str) -> None:
    with pytest.raises(SettingsError, match=var):
        load({var: raw})


def test_a_mistyped_setting_stops_the_start_naming_it_and_the_closest_setting() -> None:
    with pytest.raises(SettingsError) as err:
        load({"GME_RECWATCH_MAX_RECORDING_SECONS": "60"})
    assert str(err.value) == (
        "GME_RECWATCH_MAX_RECORDING_SECONS is not a setting: did you mean GME_RECWATCH_MAX_RECORDING_SECONDS?"
    )
    with pytest.raises(SettingsError) as err:
        load({"GME_RECWATCH_REDIS_PASSWORD": "hunter2"})
    assert "GME_RECWATCH_REDIS_PASSWORD_FILE" in str(err.value)
    assert "hunter2" not in str(err.value)  # the value may be a secret: never shown
    with pytest.raises(SettingsError) as err:
        load({"GME_RECWATCH_ZZZ": "1"})
    assert str(err.value) == (
        "GME_RECWATCH_ZZZ is not a setting: `gme-recwatch serve --help` lists the settings"
    )


def test_the_test_suite_s_own_variables_and_other_prefixes_do_not_stop_the_start() -> None:
    assert TOOLING_VARIABLES == {
        "GME_RECWATCH_FIGURES",
        "GME_RECWATCH_FLOOD_CALLBACKS",
        "GME_RECWATCH_FLOOD_SEGMENTS",
        "GME_RECWATCH_IMAGE_CACHE",
        "GME_RECWATCH_DEBIAN_MIRROR",
    }
    load({name: "x" for name in TOOLING_VARIABLES} | {"GME_RECWATCHER": "x", "OTHER": "x"})


def test_every_gme_recwatch_variable_the_repository_uses_is_a_setting_or_a_tooling_one() -> None:
    """The Makefile, the chart, the CLI, the tests and the docs: a variable they name that the
    service would refuse is a bug in one of them (or a tooling variable to list)."""
    root = Path(__file__).resolve().parent.parent
    found: dict[str, str] = {}
    for path in [
        root / "Makefile",
        *root.glob("helm/**/*"),
        *root.glob("src/**/*.py"),
        *root.glob("tests/**/*.py"),
        *root.glob("docs/*.md"),
        root / "README.md",
    ]:
        if path.is_file():
            for name in re.findall(r"GME_RECWATCH_[A-Z0-9_]*[A-Z0-9]", path.read_text()):
                found.setdefault(name, str(path.relative_to(root)))
    refused = {
        name: where
        for name, where in found.items()
        if unknown_variable(name) is not None
        and name
        not in (
            "GME_RECWATCH_MAX_RECORDING_SECONS",
            "GME_RECWATCH_ZZZ",
            "GME_RECWATCH_REDIS_PASSWORD",
            "GME_RECWATCH_COS_SECRET_KEY",
            "GME_RECWATCH_COS_SECRET_ID",
        )
    }
    assert refused == {}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"GME_RECWATCH_REPLAY_WINDOW_SECONDS": "30"},
            "GME_RECWATCH_REPLAY_WINDOW_SECONDS=30: must be 0 (off) or at least "
            "GME_RECWATCH_SENDER_RETRY_SECONDS=60: a retry carries its first Timestamp",
        ),
        (
            {"GME_RECWATCH_REDIS_TIMEOUT_SECONDS": "5"},
            "GME_RECWATCH_REDIS_TIMEOUT_SECONDS=5.0: must be below 5: Tencent gives up",
        ),
        (
            {"GME_RECWATCH_SWEEP_INTERVAL_SECONDS": "86400"},
            "GME_RECWATCH_SWEEP_INTERVAL_SECONDS=86400.0: must be at most "
            "GME_RECWATCH_REORDER_WINDOW_SECONDS=120: the sweep applies the deadlines",
        ),
        (
            {"GME_RECWATCH_MAX_SEGMENTS": "1"},
            "GME_RECWATCH_MAX_SEGMENTS=1: must be at least 100: below it, capacity eviction",
        ),
    ],
)
def test_settings_that_defeat_the_service_are_refused_with_the_reason(
    env: dict[str, str], message: str
) -> None:
    assert _error(env).startswith(message)


def test_the_contradictions_stop_where_the_settings_still_work() -> None:
    s = load(
        {
            "GME_RECWATCH_REPLAY_WINDOW_SECONDS": "60",
            "GME_RECWATCH_REDIS_TIMEOUT_SECONDS": "4.9",
            "GME_RECWATCH_SWEEP_INTERVAL_SECONDS": "120",
            "GME_RECWATCH_MAX_SEGMENTS": "100",
        }
    )
    assert (s.replay_window_seconds, s.redis_timeout_seconds, s.sweep_interval_seconds, s.max_segments) == (
        60,
        4.9,
        120.0,
        100,
    )
    assert load({}, demo=True).validate()  # the demo's short deadlines still fit the sweep
