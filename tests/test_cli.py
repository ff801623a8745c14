"""The command line: `serve` refuses bad configuration before it listens, `send` signs what it
sends. (`serve` running for real is in tests/e2e/test_serve.py, `simulate` in test_simulate.py.)"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import msgspec
import pytest

from gme_recwatch import cli
from gme_recwatch import settings as settings_mod
from gme_recwatch.events import decode
from gme_recwatch.signature import SignatureError, verify

SECRET = "cli-test-secret"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("GME_RECWATCH_"):
            monkeypatch.delenv(name)


def test_every_setting_but_the_secret_has_a_serve_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    text = capsys.readouterr().out
    for f in settings_mod.fields():
        flag = settings_mod.flag_name(f.name)
        assert (flag in text) is not f.metadata["secret"], flag


def test_serve_refuses_an_invalid_setting_naming_its_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GME_RECWATCH_SECRET_KEY", SECRET)
    assert cli.main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "GME_RECWATCH_PORT='0'" in err and "1-65535" in err
    assert SECRET not in err


def test_serve_refuses_a_mistyped_variable_naming_the_closest_setting(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GME_RECWATCH_SECRET_KEY", SECRET)
    monkeypatch.setenv("GME_RECWATCH_MAX_RECORDING_SECONS", "60")
    assert cli.main(["serve", "--check"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "gme-recwatch: invalid configuration: GME_RECWATCH_MAX_RECORDING_SECONS is "
        "not a setting: did you mean GME_RECWATCH_MAX_RECORDING_SECONDS?\n"
    )


def test_serve_without_any_key_says_how_to_configure_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "GME_RECWATCH_SECRET_KEY" in err and "GME_RECWATCH_KEYS_FILE" in err


def test_serve_with_an_unreadable_keys_file_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    assert cli.main(["serve", "--keys-file", str(tmp_path / "absent")]) == 2
    assert "cannot load GME_RECWATCH_KEYS_FILE" in capsys.readouterr().err


def test_serve_with_an_unreadable_cos_file_says_which_setting(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("GME_RECWATCH_SECRET_KEY", SECRET)
    assert (
        cli.main(
            [
                "serve",
                "--cos-bucket",
                "gme-records-1250000000",
                "--cos-region",
                "ap-guangzhou",
                "--cos-credentials-file",
                str(tmp_path / "absent"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "invalid COS configuration" in err and "GME_RECWATCH_COS_CREDENTIALS_FILE" in err
    assert "KEYS_FILE" not in err


def test_serve_check_accepts_a_valid_configuration_without_listening_or_writing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """`serve --check` builds what a start builds and exits 0, but never listens (its ports are
    taken here, which a real start refuses) and never writes (no snapshot appears)."""
    monkeypatch.setenv("GME_RECWATCH_SECRET_KEY", SECRET)
    state = tmp_path / "state" / "state.snapshot"
    state.parent.mkdir()
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = str(held.getsockname()[1])
        assert (
            cli.main(
                [
                    "serve",
                    "--check",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    port,
                    "--admin-host",
                    "127.0.0.1",
                    "--admin-port",
                    port,
                    "--state-file",
                    str(state),
                ]
            )
            == 2
        )  # same host and port: refused
        assert (
            cli.main(["serve", "--check", "--host", "127.0.0.1", "--port", port, "--state-file", str(state)])
            == 0
        )
    assert "the configuration is valid" in capsys.readouterr().out
    assert list(state.parent.iterdir()) == []


def test_serve_check_without_a_key_fails_like_serve(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", "--check"]) == 2
    assert "no SecretKey configured" in capsys.readouterr().err


def test_send_without_a_secret_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["send"]) == 2
    assert "--secret" in capsys.readouterr().err


class _Receiver(BaseHTTPRequestHandler):
    got: ClassVar[list[tuple[bytes, str | None]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Receiver.got.append((body, self.headers.get("Signature")))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"code":0}')

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Receiver.got = []
    yield f"http://127.0.0.1:{server.server_address[1]}/callback"
    server.shutdown()


@pytest.mark.parametrize("encoding", ["base64", "hex"])
def test_send_posts_a_callback_signed_with_the_secret(
    receiver: str, encoding: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        cli.main(
            [
                "send",
                "--url",
                receiver,
                "--secret",
                SECRET,
                "--event",
                "completed",
                "--room-id",
                "room-9",
                "--encoding",
                encoding,
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith("200 ")
    ((body, signature),) = _Receiver.got
    verify(body, signature, [SECRET.encode()], encoding)
    ev = decode(body)
    assert (ev.event_type, ev.room_id) == (2, "room-9")  # type: ignore[union-attr]
    assert json.loads(body)["Detail"]["FileName"].endswith("_audio.mp3")


def test_send_signs_with_the_keys_file_key_of_its_biz_id(receiver: str, tmp_path: Any) -> None:
    keys = tmp_path / "keyring"
    keys.write_text("1400000001=app-one-key\n*=every-app-key\n")
    assert cli.main(["send", "--url", receiver, "--keys-file", str(keys), "--biz-id", "1400000001"]) == 0
    assert cli.main(["send", "--url", receiver, "--keys-file", str(keys), "--biz-id", "1400000002"]) == 0
    (one, one_sig), (other, other_sig) = _Receiver.got
    verify(one, one_sig, [b"app-one-key"], "base64")
    verify(other, other_sig, [b"every-app-key"], "base64")
    with pytest.raises(SignatureError):  # the app's own key, not the one for every app
        verify(one, one_sig, [b"every-app-key"], "base64")


def test_make_send_signs_with_gme_recwatch_keys_file(receiver: str, tmp_path: Any) -> None:
    """`make send` beside a service started with a keys file: the key of BIZ_ID, not the demo key."""
    keys = tmp_path / "keyring"
    keys.write_text("1400000000=from-the-file\n")
    r = make_send(receiver, f"GME_RECWATCH_KEYS_FILE={keys}")
    ((body, sig),) = _Receiver.got
    verify(body, sig, [b"from-the-file"], "base64")
    assert "from-the-file" not in r.stdout + r.stderr


def test_send_to_nobody_exits_1_and_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert cli.main(["send", "--url", f"http://127.0.0.1:{port}/", "--secret", SECRET, "--timeout", "2"]) == 1
    assert "ConnectError" in capsys.readouterr().err


# ------------------------------------------------------------------ serve --check --online


def _online(env: dict[str, str]) -> Any:
    """`gme-recwatch serve --check --online` as a process of its own, with only ``env``."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    base = {k: v for k, v in os.environ.items() if not k.startswith(("GME_RECWATCH_", "TENCENTCLOUD_"))}
    exe = str(Path(sys.executable).with_name("gme-recwatch"))
    # A key or a keys file, never both (the service refuses both).
    key = {} if "GME_RECWATCH_KEYS_FILE" in env else {"GME_RECWATCH_SECRET_KEY": SECRET}
    return subprocess.run(
        [exe, "serve", "--check", "--online"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **key, **env},
    )


def _cos_env(s3: Any, bucket: str, tmp_path: Any, user: str = "reader") -> dict[str, str]:
    creds = tmp_path / "cos-credentials"
    key_id, secret = s3.keys[user]
    creds.write_text(f"[default]\nsecret_id = {key_id}\nsecret_key = {secret}\n")
    return {
        "GME_RECWATCH_COS_BUCKET": bucket,
        "GME_RECWATCH_COS_REGION": s3.REGION,
        "GME_RECWATCH_COS_ENDPOINT": s3.url,
        "GME_RECWATCH_COS_CREDENTIALS_FILE": str(creds),
    }


def test_serve_check_online_counts_one_key_and_one_app_in_the_singular(tmp_path: Any) -> None:
    keys = tmp_path / "keyring"
    keys.write_text("1400000001=only-key\n")
    r = _online({"GME_RECWATCH_KEYS_FILE": str(keys)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "  keys      : 1 SecretKey; 1 app with keys of their own (1400000001)" in r.stdout.splitlines()


def test_serve_check_online_names_an_unreachable_redis_and_fails() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    r = _online(
        {
            "GME_RECWATCH_REDIS_URL": f"redis://:pw-never-shown@127.0.0.1:{port}/0",
            "GME_RECWATCH_REDIS_TIMEOUT_SECONDS": "0.5",
        }
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"online check failed: store redis://:<redacted>@127.0.0.1:{port}/0: ConnectionError" in r.stderr
    assert "pw-never-shown" not in r.stdout + r.stderr and SECRET not in r.stdout + r.stderr


def test_serve_check_online_against_a_redis_cluster_names_the_slot_and_writes_nothing(
    redis_cluster: Any,
) -> None:
    import redis as redis_sync

    prefix = f"online-{uuid.uuid4().hex[:8]}:"
    tagged = "{" + prefix[:-1] + "}:"
    r = _online({"GME_RECWATCH_REDIS_URL": redis_cluster.url, "GME_RECWATCH_REDIS_PREFIX": prefix})
    assert r.returncode == 0, r.stdout + r.stderr
    slot = redis_cluster.keyslot(tagged + "t")
    store_line = next(line for line in r.stdout.splitlines() if line.startswith("  store "))
    assert "(Redis 7" in store_line and f"cluster slot {slot}, prefix '{tagged}', 0 segments" in store_line
    master, _ = redis_cluster.master_of(slot)
    assert redis_sync.Redis(port=master.port).keys(tagged + "*") == []  # wrote nothing


def test_serve_check_online_names_a_missing_bucket_and_fails(
    s3_server: Any, redis_server: Any, tmp_path: Any
) -> None:
    missing = f"gme-records-absent-{uuid.uuid4().hex[:8]}"
    r = _online({"GME_RECWATCH_REDIS_URL": redis_server.url, **_cos_env(s3_server, missing, tmp_path)})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "store     : redis://" in r.stdout  # what passed before it
    assert f"online check failed: COS bucket {missing!r} does not exist at {s3_server.url}" in r.stderr
    secret = s3_server.keys["reader"][1]
    assert secret not in r.stdout + r.stderr


def test_serve_check_online_prints_one_summary_and_exits_0_when_everything_answers(
    s3_server: Any, redis_server: Any, tmp_path: Any
) -> None:
    bucket = s3_server.bucket(f"gme-records-{uuid.uuid4().hex[:8]}")
    keys = tmp_path / "keys"
    keys.write_text("1400000001=k1\n1400000002=k2\n*=k3\n")
    prefix = f"online-{uuid.uuid4().hex[:8]}:"
    r = _online(
        {
            "GME_RECWATCH_REDIS_URL": redis_server.url,
            "GME_RECWATCH_REDIS_PREFIX": prefix,
            "GME_RECWATCH_KEYS_FILE": str(keys),
            **_cos_env(s3_server, bucket, tmp_path),
        }
    )
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].endswith(": online check")
    assert lines[1].startswith(f"  store     : {redis_server.url} (Redis 7") or lines[1].startswith(
        f"  store     : {redis_server.url} (Valkey"
    )
    tagged = "{" + prefix[:-1] + "}:"  # the prefix as the store's hash tag
    assert lines[1].endswith(f"prefix '{tagged}', 0 segments, never used (no epoch marker yet))")
    assert lines.pop(2).startswith("  store     : warning: AOF is off")  # the tests' Redis has none
    assert lines[2] == (
        "  keys      : 3 SecretKeys; 2 apps with keys of their own "
        "(1400000001, 1400000002); a key for every app"
    )
    assert lines[3] == (f"  COS       : {bucket} in ap-guangzhou at {s3_server.url}, with a key: reachable")
    assert lines[4] == (
        "  deadlines : stuck after 21600 s, upload missing after 900 s, start "
        "lost after 120 s, forgotten after 86400 s"
    )
    import redis as redis_sync

    assert redis_sync.Redis.from_url(redis_server.url).keys(tagged + "*") == []  # wrote nothing


# --------------------------------------------------------------------------- the first try


def test_serve_help_names_the_key_variable_and_the_keys_file(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    text = capsys.readouterr().out
    assert "GME_RECWATCH_SECRET_KEY" in text and "GME_RECWATCH_KEYS_FILE" in text
    assert "TENCENTCLOUD_SECRET_ID" in text


def test_a_key_and_a_keys_file_together_are_refused_naming_both(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("*=file-key\n")
    monkeypatch.setenv("GME_RECWATCH_SECRET_KEY", SECRET)
    assert cli.main(["serve", "--check", "--keys-file", str(keys)]) == 2
    err = capsys.readouterr().err
    assert "GME_RECWATCH_SECRET_KEY" in err and "GME_RECWATCH_KEYS_FILE" in err
    assert SECRET not in err and "file-key" not in err


def test_demo_mode_uses_the_built_in_demo_key_only_when_none_is_set(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", "--check"]) == 2
    assert cli.main(["serve", "--check", "--demo"]) == 0
    assert "the configuration is valid" in capsys.readouterr().out


def test_demo_defaults_give_way_to_what_is_set() -> None:
    demo = settings_mod.load(env={}, demo=True)
    assert (demo.max_recording_seconds, demo.upload_grace_seconds, demo.reorder_window_seconds) == (20, 10, 10)
    assert settings_mod.load(env={}).max_recording_seconds == 21600
    env = {"GME_RECWATCH_MAX_RECORDING_SECONDS": "600"}
    assert settings_mod.load(env=env, demo=True).max_recording_seconds == 600
    flag = settings_mod.load(env=env, overrides={"upload_grace_seconds": "30"}, demo=True)
    assert (flag.max_recording_seconds, flag.upload_grace_seconds) == (600, 30)


def test_the_demo_banner_shows_the_key_only_when_it_is_the_built_in_one() -> None:
    demo = cli.demo_banner(settings_mod.Settings(secret_key=settings_mod.DEMO_KEY))
    assert f"demo key     : {settings_mod.DEMO_KEY}" in demo
    assert "stuck after 6 h recording" in demo  # the deadlines in force are printed
    real = cli.demo_banner(settings_mod.Settings(secret_key="my-real-key,my-old-key"))
    assert "my-real-key" not in real and "my-old-key" not in real and "demo key" not in real
    assert "GME_RECWATCH_SECRET_KEY (not shown)" in real
    ring = cli.demo_banner(settings_mod.Settings(keys_file="/etc/keys"))
    assert "from /etc/keys (not shown)" in ring and "demo key" not in ring


def test_the_demo_listens_on_this_machine_only_unless_told_otherwise() -> None:
    demo = settings_mod.load(env={}, demo=True)
    assert (demo.host, demo.admin_host) == ("127.0.0.1", "127.0.0.1")
    assert "listening on : 127.0.0.1 and 127.0.0.1 only" in cli.demo_banner(
        msgspec.structs.replace(demo, secret_key=settings_mod.DEMO_KEY)
    )
    opened = settings_mod.load(env={"GME_RECWATCH_HOST": "0.0.0.0"}, demo=True)
    assert (opened.host, opened.admin_host) == ("0.0.0.0", "127.0.0.1")
    assert "reachable from other machines" in cli.demo_banner(opened)
    assert settings_mod.load(env={"GME_RECWATCH_SECRET_KEY": "k"}).host == "0.0.0.0"  # not a demo


def test_the_demo_banner_follows_a_moved_port() -> None:
    text = cli.demo_banner(
        settings_mod.Settings(secret_key=settings_mod.DEMO_KEY, port=9090, callback_path="/gme")
    )
    assert "make send GME_RECWATCH_PORT=9090 GME_RECWATCH_CALLBACK_PATH=/gme" in text
    assert "send --url http://127.0.0.1:9090/gme" in text
    plain = cli.demo_banner(settings_mod.Settings(secret_key=settings_mod.DEMO_KEY))
    assert "make send   #" in plain


def test_make_send_follows_a_moved_port_with_the_demo_key(receiver: str) -> None:
    """`make send GME_RECWATCH_PORT=...`, as the banner says it, reaches that port, signed with
    the key `serve --demo` uses."""
    import re

    from conftest import ROOT

    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^DEMO_KEY \?= (\S+)$", makefile, re.M)[1] == settings_mod.DEMO_KEY  # type: ignore[index]
    make_send(receiver)
    ((body, sig),) = _Receiver.got
    verify(body, sig, [settings_mod.DEMO_KEY.encode()], "base64")


def make_send(receiver: str, *variables: str) -> Any:
    """`make send GME_RECWATCH_PORT=<the receiver's> <variables>` with no GME_RECWATCH_* in the
    environment, through this venv; it must exit 0."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from conftest import ROOT

    port = receiver.split(":")[2].split("/")[0]
    venv = Path(sys.executable).parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("GME_RECWATCH_")}
    r = subprocess.run(
        [
            *("make", "-s", "-C", str(ROOT), "-o", f"{venv}/bin/.runtime", "send", f"VENV={venv}"),
            *(f"GME_RECWATCH_PORT={port}", *variables),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return r


def test_serve_check_online_refuses_an_evicting_redis_and_warns_without_aof(tmp_path: Any) -> None:
    """allkeys-* evicts segments, tallies and the epoch marker at random without a word: refused.
    noeviction (a full Redis refuses writes: a 503, retried) and volatile-* (of our keys only the
    COS lookup notes have a TTL) are accepted; AOF off is a warning of its own line."""
    import redis as sync_redis
    from conftest import RedisServer

    server = RedisServer(tmp_path / "redis")
    try:
        client = sync_redis.Redis.from_url(server.url)
        client.config_set("maxmemory-policy", "allkeys-lru")
        refused = _online({"GME_RECWATCH_REDIS_URL": server.url})
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "maxmemory-policy allkeys-lru evicts keys when Redis is full" in refused.stderr
        assert "set maxmemory-policy noeviction" in refused.stderr
        for policy in ("noeviction", "volatile-lru"):
            client.config_set("maxmemory-policy", policy)
            ok = _online({"GME_RECWATCH_REDIS_URL": server.url})
            assert ok.returncode == 0, ok.stdout + ok.stderr
            assert "  store     : warning: AOF is off (appendonly no)" in ok.stdout
        client.config_set("appendonly", "yes")
        ok = _online({"GME_RECWATCH_REDIS_URL": server.url})
        assert ok.returncode == 0 and "warning" not in ok.stdout, ok.stdout
        client.close()
    finally:
        server.stop()
