"""HMAC-SHA1 verification, encodings, keyrings, the keys file and its reloading."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import load_vectors
from hypothesis import assume, given
from hypothesis import strategies as st

from gme_recwatch import signature
from gme_recwatch.signature import (
    Keyring,
    KeyringError,
    KeyringSource,
    SignatureError,
    decode_signature,
    parse_keys_file,
    parse_secret_list,
    sign,
    verify,
)

_real_compare_digest = hmac.compare_digest

VECTORS: list[dict[str, Any]] = load_vectors()
ENCODINGS = ("base64", "hex", "auto")

APP_A = 1400000000
APP_B = 1400000001
SECRET_A = "secret-of-app-a-0123456789"
SECRET_B = "secret-of-app-b-9876543210"


def _body(vector: dict[str, Any]) -> bytes:
    return str(vector["body"]).encode("utf-8")


def _key(vector: dict[str, Any]) -> bytes:
    return str(vector["secret"]).encode("utf-8")


def _reason(body: bytes, header: str | None, keys: tuple[bytes, ...] | list[bytes], encoding: str) -> str:
    with pytest.raises(SignatureError) as info:
        verify(body, header, keys, encoding)
    return info.value.reason


def _flip_byte(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


vector_params = pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])


# --- the shared test vectors -------------------------------------------------------------


def test_vectors_file_holds_every_documented_case() -> None:
    names = {v["name"] for v in VECTORS}
    assert {"event1", "event2", "event3", "pretty_printed_body", "utf8_ids"} <= names
    for v in VECTORS:
        assert len(v["signature_base64"]) == 28
        assert len(v["signature_hex"]) == 40


@vector_params
def test_vector_signatures_are_hmac_sha1_of_the_raw_body(vector: dict[str, Any]) -> None:
    digest = hmac.new(_key(vector), _body(vector), hashlib.sha1).digest()
    assert base64.b64encode(digest).decode() == vector["signature_base64"]
    assert digest.hex() == vector["signature_hex"]


@vector_params
@pytest.mark.parametrize("encoding", ["base64", "auto"])
def test_vector_base64_signature_is_accepted(vector: dict[str, Any], encoding: str) -> None:
    assert verify(_body(vector), vector["signature_base64"], [_key(vector)], encoding) is None


@vector_params
@pytest.mark.parametrize("encoding", ["hex", "auto"])
def test_vector_hex_signature_in_lower_case_is_accepted(vector: dict[str, Any], encoding: str) -> None:
    header = vector["signature_hex"].lower()
    assert verify(_body(vector), header, [_key(vector)], encoding) is None


@vector_params
@pytest.mark.parametrize("encoding", ["hex", "auto"])
def test_vector_hex_signature_in_upper_case_is_accepted(vector: dict[str, Any], encoding: str) -> None:
    header = vector["signature_hex"].upper()
    assert header != vector["signature_hex"]  # the vector really has letters to change
    assert verify(_body(vector), header, [_key(vector)], encoding) is None


@vector_params
def test_signature_with_surrounding_whitespace_is_accepted(vector: dict[str, Any]) -> None:
    header = "  " + vector["signature_base64"] + " \t"
    assert verify(_body(vector), header, [_key(vector)], "auto") is None


@vector_params
@pytest.mark.parametrize("kind", ["signature_base64", "signature_hex"])
def test_flipped_byte_anywhere_in_the_body_is_a_mismatch(vector: dict[str, Any], kind: str) -> None:
    body = _body(vector)
    for index in (0, len(body) // 2, len(body) - 1):
        assert _reason(_flip_byte(body, index), vector[kind], [_key(vector)], "auto") == "mismatch"


@vector_params
def test_one_extra_byte_after_the_body_is_a_mismatch(vector: dict[str, Any]) -> None:
    body = _body(vector) + b"\n"
    assert _reason(body, vector["signature_base64"], [_key(vector)], "auto") == "mismatch"


@vector_params
@pytest.mark.parametrize("index", [0, 7, 19])
def test_flipped_byte_in_the_base64_signature_is_a_mismatch(vector: dict[str, Any], index: int) -> None:
    digest = _flip_byte(base64.b64decode(vector["signature_base64"]), index)
    header = base64.b64encode(digest).decode()
    assert _reason(_body(vector), header, [_key(vector)], "auto") == "mismatch"


@vector_params
@pytest.mark.parametrize("index", [0, 7, 19])
def test_flipped_byte_in_the_hex_signature_is_a_mismatch(vector: dict[str, Any], index: int) -> None:
    header = _flip_byte(bytes.fromhex(vector["signature_hex"]), index).hex()
    assert _reason(_body(vector), header, [_key(vector)], "auto") == "mismatch"


@vector_params
def test_vector_signed_with_another_secret_is_a_mismatch(vector: dict[str, Any]) -> None:
    assert _reason(_body(vector), vector["signature_base64"], [b"not-the-secret"], "auto") == "mismatch"


@vector_params
def test_sign_reproduces_the_vector_signatures(vector: dict[str, Any]) -> None:
    assert sign(_body(vector), vector["secret"]) == vector["signature_base64"]
    assert sign(_body(vector), vector["secret"], "base64") == vector["signature_base64"]
    assert sign(_body(vector), vector["secret"], "hex") == vector["signature_hex"]


def test_sign_keys_with_the_utf8_bytes_of_the_secret() -> None:
    secret = "schlüssel-密钥"
    expected = hmac.new(secret.encode("utf-8"), b"{}", hashlib.sha1).digest()
    assert sign(b"{}", secret) == base64.b64encode(expected).decode()
    assert verify(b"{}", sign(b"{}", secret), [secret.encode("utf-8")], "auto") is None


# --- encoding settings --------------------------------------------------------------------


def test_hex_signature_is_rejected_when_encoding_is_base64() -> None:
    v = VECTORS[0]
    assert _reason(_body(v), v["signature_hex"], [_key(v)], "base64") == "mismatch"
    assert _reason(_body(v), v["signature_hex"].upper(), [_key(v)], "base64") == "mismatch"


def test_base64_signature_is_rejected_when_encoding_is_hex() -> None:
    v = VECTORS[0]
    assert _reason(_body(v), v["signature_base64"], [_key(v)], "hex") == "mismatch"


def test_unknown_encoding_setting_accepts_nothing() -> None:
    v = VECTORS[0]
    assert _reason(_body(v), v["signature_base64"], [_key(v)], "base32") == "mismatch"
    assert _reason(_body(v), v["signature_hex"], [_key(v)], "base32") == "mismatch"


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_decode_signature_returns_the_raw_20_byte_digest(encoding: str) -> None:
    v = VECTORS[0]
    raw = bytes.fromhex(v["signature_hex"])
    header = v["signature_hex"] if encoding == "hex" else v["signature_base64"]
    assert decode_signature(header, encoding) == raw


@pytest.mark.parametrize(
    "header",
    [
        "",
        "not a signature",
        "v9qCuSFMcUdeHoS+PRRs3kZZq+Y",  # 27 chars: padding stripped
        "v9qCuSFMcUdeHoS+PRRs3kZZq+Y==",  # 29 chars
        "v9qCuSFMcUdeHoS*PRRs3kZZq+Y=",  # not in the Base64 alphabet
        "bfda82b9214c71475e1e84be3d146cde4659abe",  # 39 hex chars
        "bfda82b9214c71475e1e84be3d146cde4659abe6a",  # 41 hex chars
        "gfda82b9214c71475e1e84be3d146cde4659abe6",  # 40 chars, one not hex
        "bfda82b9214c71475e1e84be3d146cde4659abe6\n00",  # newline inside
        base64.b64encode(b"\x00" * 21).decode()[:28],  # 28 chars but not a 20-byte digest
        base64.b64encode(b"\x00" * 32).decode(),  # a SHA-256-sized digest
    ],
)
def test_malformed_signature_header_decodes_to_none(header: str) -> None:
    assert decode_signature(header, "auto") is None


@pytest.mark.parametrize("header", ["garbage", "v9qCuSFMcUdeHoS*PRRs3kZZq+Y=", "x" * 40, "!"])
def test_malformed_signature_header_is_a_mismatch(header: str) -> None:
    v = VECTORS[0]
    assert _reason(_body(v), header, [_key(v)], "auto") == "mismatch"


# --- missing header, unknown app ---------------------------------------------------------


@pytest.mark.parametrize("header", [None, "", "   ", "\t\n"])
def test_missing_or_blank_signature_header_is_reported_as_missing(header: str | None) -> None:
    v = VECTORS[0]
    assert _reason(_body(v), header, [_key(v)], "auto") == "missing"


def test_missing_header_is_reported_as_missing_even_without_keys() -> None:
    assert _reason(b"{}", None, [], "auto") == "missing"


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_no_candidate_keys_is_reported_as_unknown_app(encoding: str) -> None:
    v = VECTORS[0]
    assert _reason(_body(v), v["signature_base64"], [], encoding) == "unknown_app"
    assert _reason(_body(v), v["signature_base64"], (), encoding) == "unknown_app"


def test_signature_error_carries_its_reason_as_the_message() -> None:
    err = SignatureError("mismatch")
    assert err.reason == "mismatch"
    assert str(err) == "mismatch"


# --- keyrings: rotation, per-app keys, default keys ---------------------------------------


@vector_params
def test_during_rotation_the_old_key_still_verifies(vector: dict[str, Any]) -> None:
    keys = [_key(vector), b"the-new-key"]
    assert verify(_body(vector), vector["signature_base64"], keys, "auto") is None


@vector_params
def test_during_rotation_the_new_key_verifies(vector: dict[str, Any]) -> None:
    keys = [b"the-old-key", _key(vector)]
    assert verify(_body(vector), vector["signature_base64"], keys, "auto") is None


def test_rotation_with_two_keys_for_one_app_in_the_keyring_accepts_either() -> None:
    ring = Keyring.build(per_app={APP_A: ["old-key", "new-key"]})
    body = b'{"BizID":1400000000}'
    for secret in ("old-key", "new-key"):
        assert verify(body, sign(body, secret), ring.keys_for(APP_A), "auto") is None
    assert _reason(body, sign(body, "third-key"), ring.keys_for(APP_A), "auto") == "mismatch"


def test_app_a_key_does_not_verify_app_b_callback() -> None:
    ring = Keyring.build(per_app={APP_A: [SECRET_A], APP_B: [SECRET_B]})
    body_b = b'{"BizID":1400000001}'
    assert _reason(body_b, sign(body_b, SECRET_A), ring.keys_for(APP_B), "auto") == "mismatch"
    assert verify(body_b, sign(body_b, SECRET_B), ring.keys_for(APP_B), "auto") is None


def test_per_app_keys_are_only_candidates_for_their_own_app() -> None:
    ring = Keyring.build(per_app={APP_A: [SECRET_A], APP_B: [SECRET_B]})
    assert ring.keys_for(APP_A) == (SECRET_A.encode(),)
    assert ring.keys_for(APP_B) == (SECRET_B.encode(),)


def test_app_without_keys_and_no_default_has_no_candidates() -> None:
    ring = Keyring.build(per_app={APP_A: [SECRET_A]})
    assert ring.keys_for(APP_B) == ()
    assert ring.keys_for(None) == ()
    body = b'{"BizID":1400000001}'
    assert _reason(body, sign(body, SECRET_A), ring.keys_for(APP_B), "auto") == "unknown_app"


@pytest.mark.parametrize("biz_id", [APP_A, APP_B, 0, 2**63 - 1, None])
def test_default_keys_apply_to_every_app(biz_id: int | None) -> None:
    ring = Keyring.build(default=["shared-key"])
    body = b'{"any":"body"}'
    assert ring.keys_for(biz_id) == (b"shared-key",)
    assert verify(body, sign(body, "shared-key"), ring.keys_for(biz_id), "auto") is None


def test_default_keys_also_apply_to_apps_with_their_own_keys() -> None:
    ring = Keyring.build(default=["shared-key"], per_app={APP_A: [SECRET_A]})
    assert ring.keys_for(APP_A) == (SECRET_A.encode(), b"shared-key")
    body = b"{}"
    assert verify(body, sign(body, "shared-key"), ring.keys_for(APP_A), "auto") is None
    assert verify(body, sign(body, SECRET_A), ring.keys_for(APP_A), "auto") is None


def test_keyring_build_drops_empty_and_duplicate_keys() -> None:
    ring = Keyring.build(default=["k", "", "k"], per_app={APP_A: ["a", "a", ""]})
    assert ring.default == (b"k",)
    assert ring.per_app[APP_A] == (b"a",)
    assert len(ring) == 2


def test_keyring_length_counts_default_and_per_app_keys() -> None:
    ring = Keyring.build(default=["d1", "d2"], per_app={APP_A: ["a"], APP_B: ["b1", "b2"]})
    assert len(ring) == 5
    assert len(Keyring()) == 0
    assert ring.app_ids() == [APP_A, APP_B]


def test_merged_keyring_holds_both_sides_keys() -> None:
    left = Keyring.build(default=["d1"], per_app={APP_A: ["a1"]})
    right = Keyring.build(default=["d2"], per_app={APP_A: ["a2"], APP_B: ["b"]})
    merged = left.merged(right)
    assert merged.default == (b"d1", b"d2")
    assert merged.keys_for(APP_A) == (b"a1", b"a2", b"d1", b"d2")
    assert merged.keys_for(APP_B) == (b"b", b"d1", b"d2")


def test_keyring_repr_never_shows_key_material() -> None:
    ring = Keyring.build(default=["default-secret-XYZ"], per_app={APP_A: ["app-secret-ABC"]})
    for text in (repr(ring), str(ring), f"{ring!r}", repr([ring])):
        assert "default-secret-XYZ" not in text
        assert "app-secret-ABC" not in text
    assert repr(ring) == f"Keyring(default=1 keys, apps=[{APP_A}])"


def test_parse_secret_list_splits_on_commas_and_strips() -> None:
    assert parse_secret_list("one") == ["one"]
    assert parse_secret_list(" old , new ,, ") == ["old", "new"]
    assert parse_secret_list("") == []
    assert parse_secret_list(" , ") == []


# --- keys file parsing ---------------------------------------------------------------------


def test_keys_file_with_app_and_default_keys_is_parsed() -> None:
    ring = parse_keys_file(f"{APP_A}={SECRET_A}\n*=shared\n")
    assert ring.per_app == {APP_A: (SECRET_A.encode(),)}
    assert ring.default == (b"shared",)


def test_keys_file_ignores_comments_and_blank_lines() -> None:
    text = "# keyring for gme-recwatch\n\n   \n  # indented comment\n1400000000=k1\n\n#*=not-a-key\n"
    ring = parse_keys_file(text)
    assert ring.per_app == {APP_A: (b"k1",)}
    assert ring.default == ()
    assert len(ring) == 1


def test_keys_file_allows_several_keys_per_app() -> None:
    ring = parse_keys_file(f"{APP_A}=old\n{APP_B}=b\n{APP_A}=new\n*=d1\n*=d2\n")
    assert ring.per_app[APP_A] == (b"old", b"new")
    assert ring.per_app[APP_B] == (b"b",)
    assert ring.default == (b"d1", b"d2")


def test_keys_file_strips_whitespace_around_app_and_key() -> None:
    ring = parse_keys_file(f"  {APP_A}  =  spaced-key  \r\n\t* = d \r\n")
    assert ring.per_app[APP_A] == (b"spaced-key",)
    assert ring.default == (b"d",)


def test_keys_file_key_may_itself_contain_equals_signs() -> None:
    ring = parse_keys_file(f"{APP_A}=YWJjZA==\n")
    assert ring.per_app[APP_A] == (b"YWJjZA==",)


def test_keys_file_keys_are_utf8_bytes_of_the_text() -> None:
    ring = parse_keys_file("*=密钥\n")
    assert ring.default == ("密钥".encode(),)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("1400000000 super-secret-value\n", 1),
        ("# ok\n1400000000=k\nsuper-secret-value\n", 3),
        ("\n\n1400000000=\n", 3),
        ("1400000000=   \n", 1),
        ("*=k\nabc=super-secret-value\n", 2),
        ("*=k\n-1=super-secret-value\n", 2),
        ("*=k\n=super-secret-value\n", 2),
        ("*=k\n1400000000x=super-secret-value\n", 2),
        ("*=k\n** =super-secret-value\n", 2),
    ],
)
def test_keys_file_error_names_the_line_and_never_the_key(text: str, line: int) -> None:
    with pytest.raises(KeyringError) as info:
        parse_keys_file(text)
    message = str(info.value)
    assert f"line {line}:" in message
    assert "super-secret-value" not in message
    assert "super-secret-value" not in repr(info.value)


def test_keys_file_error_for_non_ascii_digits_names_the_line_and_never_the_key() -> None:
    # str.isdigit() is true for superscripts, which int() then refuses.
    with pytest.raises(KeyringError) as info:
        parse_keys_file("*=k\n\u00b2=super-secret-value\n")
    assert "line 2:" in str(info.value)
    assert "super-secret-value" not in str(info.value)


@pytest.mark.parametrize("text", ["", "\n\n", "# only comments\n# here\n"])
def test_keys_file_without_any_key_is_an_error(text: str) -> None:
    with pytest.raises(KeyringError, match="no keys"):
        parse_keys_file(text)


def test_keyring_error_is_a_value_error() -> None:
    assert issubclass(KeyringError, ValueError)


# --- KeyringSource: env keys, file keys, reloading -------------------------------------------


def _write(path: Path, text: str, *, mtime_offset: int = 0) -> None:
    path.write_text(text, encoding="utf-8")
    st = path.stat()
    # Ensure the change is visible even on filesystems with a coarse mtime.
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + mtime_offset * 1_000_000_000))


def test_keyring_source_from_env_keys_only() -> None:
    src = KeyringSource("old, new", "")
    assert src.current.default == (b"old", b"new")
    assert src.current.per_app == {}
    assert src.maybe_reload() is False


def test_keyring_source_with_nothing_configured_is_empty() -> None:
    src = KeyringSource("", "")
    assert len(src.current) == 0
    assert src.current.keys_for(APP_A) == ()


def test_keyring_source_merges_env_and_file_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    _write(path, f"{APP_A}={SECRET_A}\n")
    src = KeyringSource("env-key", str(path))
    assert src.current.keys_for(APP_A) == (SECRET_A.encode(), b"env-key")
    assert src.current.keys_for(APP_B) == (b"env-key",)


def test_keyring_source_with_missing_file_raises_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        KeyringSource("", str(tmp_path / "absent"))


def test_keyring_source_with_invalid_file_raises_keyring_error(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    _write(path, "nonsense\n")
    with pytest.raises(KeyringError):
        KeyringSource("", str(path))


def test_unchanged_keys_file_is_not_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    _write(path, f"{APP_A}={SECRET_A}\n")
    src = KeyringSource("", str(path))
    before = src.current
    assert src.maybe_reload() is False
    assert src.maybe_reload() is False
    assert src.current is before


def test_changed_keys_file_is_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    _write(path, f"{APP_A}={SECRET_A}\n")
    src = KeyringSource("", str(path))
    body = b'{"BizID":1400000000}'
    assert verify(body, sign(body, SECRET_A), src.current.keys_for(APP_A), "auto") is None

    _write(path, f"{APP_A}=rotated-key\n{APP_B}={SECRET_B}\n", mtime_offset=5)
    assert src.maybe_reload() is True
    assert src.current.keys_for(APP_A) == (b"rotated-key",)
    assert src.current.keys_for(APP_B) == (SECRET_B.encode(),)
    assert _reason(body, sign(body, SECRET_A), src.current.keys_for(APP_A), "auto") == "mismatch"
    assert src.maybe_reload() is False


def test_keys_file_with_same_size_is_reloaded_when_its_mtime_changes(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    _write(path, f"{APP_A}=aaaa\n")
    src = KeyringSource("", str(path))
    _write(path, f"{APP_A}=bbbb\n", mtime_offset=5)
    assert src.maybe_reload() is True
    assert src.current.keys_for(APP_A) == (b"bbbb",)


def test_keys_file_replaced_by_rename_is_reloaded(tmp_path: Path) -> None:
    # Kubernetes updates a mounted Secret by swapping a symlinked directory: a new inode.
    path = tmp_path / "keys"
    _write(path, f"{APP_A}=aaaa\n")
    src = KeyringSource("", str(path))
    fresh = tmp_path / "keys.new"
    _write(fresh, f"{APP_A}=cccc\n", mtime_offset=5)
    os.replace(fresh, path)
    assert src.maybe_reload() is True
    assert src.current.keys_for(APP_A) == (b"cccc",)


def test_invalid_new_keys_file_raises_and_keeps_the_old_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    _write(path, f"{APP_A}={SECRET_A}\n")
    src = KeyringSource("env-key", str(path))
    before = src.current

    _write(path, "this line is broken-secret-material\n", mtime_offset=5)
    with pytest.raises(KeyringError) as info:
        src.maybe_reload()
    assert "broken-secret-material" not in str(info.value)
    assert src.current is before
    assert src.current.keys_for(APP_A) == (SECRET_A.encode(), b"env-key")

    # Still the same broken version: it failed once, and stays failed, without being read and
    # counted again at every check.
    assert src.file_valid is False
    assert src.maybe_reload() is False
    assert src.maybe_reload() is False
    assert src.current is before and src.file_valid is False
    # Another broken version fails again, once.
    _write(path, "still broken\n", mtime_offset=7)
    with pytest.raises(KeyringError):
        src.maybe_reload()
    assert src.maybe_reload() is False

    _write(path, f"{APP_A}=fixed\n", mtime_offset=10)
    assert src.maybe_reload() is True
    assert src.current.keys_for(APP_A) == (b"fixed", b"env-key")
    assert src.file_valid is True


def test_empty_new_keys_file_raises_and_keeps_the_old_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    _write(path, f"{APP_A}={SECRET_A}\n")
    src = KeyringSource("", str(path))
    _write(path, "", mtime_offset=5)
    with pytest.raises(KeyringError):
        src.maybe_reload()
    assert src.current.keys_for(APP_A) == (SECRET_A.encode(),)


def test_deleted_keys_file_raises_and_keeps_the_old_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    _write(path, f"{APP_A}={SECRET_A}\n")
    src = KeyringSource("", str(path))
    path.unlink()
    with pytest.raises(OSError):
        src.maybe_reload()
    assert src.maybe_reload() is False  # still missing: one failure, not one a poll
    assert src.current.keys_for(APP_A) == (SECRET_A.encode(),) and src.file_valid is False


def test_keyring_source_repr_of_current_never_shows_key_material(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    _write(path, f"{APP_A}={SECRET_A}\n")
    src = KeyringSource("env-secret-QQQ", str(path))
    assert SECRET_A not in repr(src.current)
    assert "env-secret-QQQ" not in repr(src.current)


# --- constant-time comparison -------------------------------------------------------------


class _CompareSpy:
    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bytes]] = []

    def __call__(self, a: bytes, b: bytes) -> bool:
        self.calls.append((a, b))
        return _real_compare_digest(a, b)


@pytest.fixture
def compare_spy(monkeypatch: pytest.MonkeyPatch) -> _CompareSpy:
    spy = _CompareSpy()
    monkeypatch.setattr(signature.hmac, "compare_digest", spy)
    return spy


@pytest.mark.parametrize("position", [0, 1, 2])
def test_every_candidate_key_is_compared_in_constant_time(compare_spy: _CompareSpy, position: int) -> None:
    v = VECTORS[0]
    keys = [b"other-1", b"other-2", b"other-3"]
    keys[position] = _key(v)
    verify(_body(v), v["signature_base64"], keys, "auto")
    # No early exit on the first match: the time does not reveal which key matched.
    assert len(compare_spy.calls) == len(keys)
    given = bytes.fromhex(v["signature_hex"])
    assert all(b == given for _, b in compare_spy.calls)
    assert [a for a, _ in compare_spy.calls] == [hmac.new(k, _body(v), hashlib.sha1).digest() for k in keys]


def test_failed_verification_also_compares_against_every_key(compare_spy: _CompareSpy) -> None:
    v = VECTORS[0]
    keys = [b"k1", b"k2", b"k3", b"k4"]
    assert _reason(_body(v), v["signature_base64"], keys, "auto") == "mismatch"
    assert len(compare_spy.calls) == 4


def test_single_key_is_compared_exactly_once(compare_spy: _CompareSpy) -> None:
    v = VECTORS[0]
    verify(_body(v), v["signature_hex"], [_key(v)], "auto")
    assert len(compare_spy.calls) == 1


def test_verify_never_compares_with_equality_operator(compare_spy: _CompareSpy) -> None:
    # If verify compared digests with ==, the spy would see no call at all for a match.
    v = VECTORS[1]
    verify(_body(v), v["signature_base64"], [_key(v)], "base64")
    assert compare_spy.calls


# --- properties -----------------------------------------------------------------------------

secrets = st.text(min_size=1, max_size=64)


@given(
    body=st.binary(max_size=2048), secret=secrets, other=secrets, encoding=st.sampled_from(["base64", "hex"])
)
def test_any_body_verifies_with_its_secret_and_not_with_another(
    body: bytes,
    secret: str,
    other: str,
    encoding: str,
) -> None:
    header = sign(body, secret, encoding)  # type: ignore[arg-type]
    verify(body, header, [secret.encode("utf-8")], encoding)
    verify(body, header, [secret.encode("utf-8")], "auto")
    assume(other != secret)
    with pytest.raises(SignatureError) as info:
        verify(body, header, [other.encode("utf-8")], encoding)
    assert info.value.reason == "mismatch"


@given(body=st.binary(max_size=512), secret=secrets)
def test_hex_signature_verifies_in_either_case(body: bytes, secret: str) -> None:
    header = sign(body, secret, "hex")
    key = [secret.encode("utf-8")]
    verify(body, header.upper(), key, "hex")
    verify(body, header.lower(), key, "auto")


@given(body=st.binary(max_size=512), secret=secrets, other_body=st.binary(max_size=512))
def test_signature_of_one_body_does_not_verify_another(body: bytes, secret: str, other_body: bytes) -> None:
    assume(body != other_body)
    with pytest.raises(SignatureError):
        verify(other_body, sign(body, secret), [secret.encode("utf-8")], "auto")


@given(header=st.text(max_size=80), encoding=st.sampled_from(ENCODINGS))
def test_arbitrary_header_never_raises_anything_but_signature_error(header: str, encoding: str) -> None:
    try:
        verify(b"{}", header, [b"key"], encoding)
    except SignatureError as exc:
        assert exc.reason in ("missing", "mismatch")
