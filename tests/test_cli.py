"""The command line: `serve` refuses bad configuration before it listens, `send` signs what it
sends. (`serve` running for real is in tests/e2e/test_serve.py, `simulate` in test_simulate.py.)"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import pytest

from gme_recwatch import cli
from gme_recwatch import settings as settings_mod
from gme_recwatch.events import decode
from gme_recwatch.signature import verify

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
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GME_RECWATCH_SECRET_KEY", SECRET)
    assert cli.main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "GME_RECWATCH_PORT='0'" in err and "1-65535" in err
    assert SECRET not in err


def test_serve_refuses_a_mistyped_variable_naming_the_closest_setting(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GME_RECWATCH_SECRET_KEY", SECRET)
    monkeypatch.setenv("GME_RECWATCH_MAX_RECORDING_SECONS", "60")
    assert cli.main(["serve", "--check"]) == 2
    err = capsys.readouterr().err
    assert err == ("gme-recwatch: invalid configuration: GME_RECWATCH_MAX_RECORDING_SECONS is "
                   "not a setting: did you mean GME_RECWATCH_MAX_RECORDING_SECONDS?\n")


def test_serve_without_any_key_says_how_to_configure_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "GME_RECWATCH_SECRET_KEY" in err and "GME_RECWATCH_KEYS_FILE" in err


def test_serve_with_an_unreadable_keys_file_says_so(capsys: pytest.CaptureFixture[str],
                                                    tmp_path: Any) -> None:
    assert cli.main(["serve", "--keys-file", str(tmp_path / "absent")]) == 2
    assert "cannot load GME_RECWATCH_KEYS_FILE" in capsys.readouterr().err


def test_serve_with_an_unreadable_cos_file_says_which_setting(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("GME_RECWATCH_SECRET_KEY", SECRET)
    assert cli.main(["serve", "--cos-bucket", "gme-records-1250000000", "--cos-region",
                     "ap-guangzhou", "--cos-credentials-file", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    assert "invalid COS configuration" in err and "GME_RECWATCH_COS_CREDENTIALS_FILE" in err
    assert "KEYS_FILE" not in err


def test_serve_check_accepts_a_valid_configuration_without_listening_or_writing(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """`serve --check` builds what a start builds and exits 0, but never listens (its ports are
    taken here, which a real start refuses) and never writes (no snapshot appears)."""
    monkeypatch.setenv("GME_RECWATCH_SECRET_KEY", SECRET)
    state = tmp_path / "state" / "state.snapshot"
    state.parent.mkdir()
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = str(held.getsockname()[1])
        assert cli.main(["serve", "--check", "--host", "127.0.0.1", "--port", port,
                         "--admin-host", "127.0.0.1", "--admin-port", port,
                         "--state-file", str(state)]) == 2  # same host and port: refused
        assert cli.main(["serve", "--check", "--host", "127.0.0.1", "--port", port,
                         "--state-file", str(state)]) == 0
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
def test_send_posts_a_callback_signed_with_the_secret(receiver: str, encoding: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["send", "--url", receiver, "--secret", SECRET, "--event", "completed",
                     "--room-id", "room-9", "--encoding", encoding]) == 0
    assert capsys.readouterr().out.startswith("200 ")
    ((body, signature),) = _Receiver.got
    verify(body, signature, [SECRET.encode()], encoding)
    ev = decode(body)
    assert (ev.event_type, ev.room_id) == (2, "room-9")  # type: ignore[union-attr]
    assert json.loads(body)["Detail"]["FileName"].endswith("_audio.mp3")


def test_send_to_nobody_exits_1_and_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert cli.main(["send", "--url", f"http://127.0.0.1:{port}/", "--secret", SECRET,
                     "--timeout", "2"]) == 1
    assert "ConnectError" in capsys.readouterr().err
