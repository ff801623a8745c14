"""Signature hints: each misconfiguration is recognised as itself, nothing secret is said, and
the diagnosis stays rare under a flood."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import pytest
from conftest import load_vectors

from gme_recwatch.clock import FakeClock
from gme_recwatch.hints import (
    HINT_KINDS,
    HINTS_BURST,
    MAX_OTHER_KEYS,
    POST_PREFIX,
    Hint,
    SignatureDoctor,
    diagnose,
)
from gme_recwatch.signature import Keyring, SignatureError, sign, verify

APP = 1400000000
OTHER = 1400000001
KEY = "hint-key-of-app-0123456789"
OTHER_KEY = "hint-key-of-other-app-987654"
BODY = (
    b'{"BizID":1400000000,"RoomID":"100","UserID":"999","TaskID":446946705284000000,'
    b'"RecordMode":1,"Timestamp":1675930605,"EventType":1,'
    b'"Detail":{"SeqNo":0,"FileName":"a.mp3"}}'
)
RING = Keyring.build(per_app={APP: [KEY], OTHER: [OTHER_KEY]})


def sha256_b64(key: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()


def sha256_hex(key: str, body: bytes) -> str:
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def rejected(header: str, ring: Keyring = RING, encoding: str = "auto", biz: int | None = APP) -> None:
    """The premise of every hint: the service itself rejects this header."""
    with pytest.raises(SignatureError):
        verify(BODY, header, ring.keys_for(biz), encoding)


def hint_for(
    header: str, *, ring: Keyring = RING, encoding: str = "auto", biz: int | None = APP
) -> Hint | None:
    rejected(header, ring, encoding, biz)
    return diagnose(BODY, header, ring, biz, encoding)


# ------------------------------------------------------------------------------- one per hint


def test_a_hex_digest_under_base64_encoding_is_explained_as_hex_encoding() -> None:
    hint = hint_for(sign(BODY, KEY, "hex"), encoding="base64")
    assert hint is not None and hint.kind == "hex_encoding" and hint.deviations == ("hex_encoding",)
    assert "set GME_RECWATCH_SIGNATURE_ENCODING=auto" in hint.fix
    assert "would verify with hex encoding" in hint.fix


def test_an_upper_case_hex_digest_is_explained_as_hex_encoding_too() -> None:
    hint = hint_for(sign(BODY, KEY, "hex").upper(), encoding="base64")
    assert hint is not None and hint.kind == "hex_encoding"


def test_a_base64_digest_under_hex_encoding_is_explained_as_base64_encoding() -> None:
    hint = hint_for(sign(BODY, KEY, "base64"), encoding="hex")
    assert hint is not None and hint.kind == "base64_encoding"
    assert "would verify with Base64 encoding" in hint.fix
    assert "GME_RECWATCH_SIGNATURE_ENCODING=auto" in hint.fix


@pytest.mark.parametrize("header", [sha256_b64(KEY, BODY), sha256_hex(KEY, BODY)], ids=["base64", "hex"])
@pytest.mark.parametrize("encoding", ["auto", "base64", "hex"])
def test_an_hmac_sha256_digest_is_explained_as_sha256(header: str, encoding: str) -> None:
    hint = hint_for(header, encoding=encoding)
    assert hint is not None and hint.kind == "sha256" and hint.deviations == ("sha256",)
    assert "HMAC-SHA256" in hint.fix and "sign with HMAC-SHA1" in hint.fix


def test_a_digest_of_post_plus_body_is_explained_as_the_moderation_rule() -> None:
    hint = hint_for(sign(b"POST" + BODY, KEY))
    assert hint is not None and hint.kind == "post_prefix" and hint.deviations == ("post_prefix",)
    assert '"POST" + body' in hint.fix and "moderation" in hint.fix


def test_the_post_prefix_is_the_four_bytes_post_and_nothing_between() -> None:
    assert POST_PREFIX == b"POST"
    for near_miss in (b"POST " + BODY, b"POST\n" + BODY, b"post" + BODY):
        assert hint_for(sign(near_miss, KEY)) is None


@pytest.mark.parametrize("suffix", ["\n", "\r\n", " "], ids=["lf", "crlf", "space"])
def test_a_sender_key_with_trailing_whitespace_is_explained_as_key_whitespace(suffix: str) -> None:
    hint = hint_for(sign(BODY, KEY + suffix))
    assert hint is not None and hint.kind == "key_whitespace"
    assert "strip the key where the sender reads it" in hint.fix


def test_a_configured_key_with_whitespace_is_explained_as_key_whitespace() -> None:
    # Keys from the environment and the keys file are stripped; one built directly may not be.
    ring = Keyring.build(per_app={APP: [f"  {KEY}\n"]})
    hint = hint_for(sign(BODY, KEY), ring=ring)
    assert hint is not None and hint.kind == "key_whitespace"
    assert f"configured for BizID {APP} has surrounding whitespace" in hint.fix


def test_a_key_of_another_app_is_explained_with_both_bizids() -> None:
    hint = hint_for(sign(BODY, OTHER_KEY))
    assert hint is not None and hint.kind == "other_app_key" and hint.key_biz_id == OTHER
    assert f"configured for BizID {OTHER}" in hint.fix and f"BizID {APP}" in hint.fix


def test_an_app_without_keys_signed_with_another_app_s_key_says_which_line_to_add() -> None:
    ring = Keyring.build(per_app={OTHER: [OTHER_KEY]})
    assert ring.keys_for(APP) == ()  # the intake rejects this as unknown_app
    hint = hint_for(sign(BODY, OTHER_KEY), ring=ring)
    assert hint is not None and hint.kind == "other_app_key" and hint.key_biz_id == OTHER
    assert f"no SecretKey is configured for BizID {APP}" in hint.fix
    assert f"`{APP}=<that key>`" in hint.fix


# ------------------------------------------------------------------------------- combinations


def test_two_deviations_at_once_are_both_named_and_the_label_is_the_first() -> None:
    hint = hint_for(sign(BODY, OTHER_KEY, "hex"), encoding="base64")
    assert hint is not None
    assert hint.deviations == ("other_app_key", "hex_encoding") and hint.kind == "other_app_key"
    assert f"BizID {OTHER}" in hint.fix and "GME_RECWATCH_SIGNATURE_ENCODING=auto" in hint.fix


def test_post_prefix_under_sha256_is_named_as_both() -> None:
    hint = hint_for(sha256_b64(KEY, b"POST" + BODY))
    assert hint is not None and hint.deviations == ("post_prefix", "sha256")


def test_the_simplest_explanation_wins_when_two_would_do() -> None:
    # The same key configured for both apps: no need to blame the other app's key.
    ring = Keyring.build(per_app={APP: [KEY], OTHER: [KEY]})
    hint = hint_for(sign(BODY, KEY, "hex"), ring=ring, encoding="base64")
    assert hint is not None and hint.deviations == ("hex_encoding",)


def test_default_keys_are_candidates_like_the_app_s_own() -> None:
    ring = Keyring.build(default=[KEY])
    hint = hint_for(sign(BODY, KEY, "hex"), ring=ring, encoding="base64", biz=None)
    assert hint is not None and hint.kind == "hex_encoding"


# ------------------------------------------------------------------------------- no hint


@pytest.mark.parametrize(
    "header",
    [
        sign(BODY, "an-unrelated-key"),
        sign(BODY, "an-unrelated-key", "hex"),
        sha256_b64("an-unrelated-key", BODY),
        sign(BODY + b" ", KEY),
        "not a signature at all",
        "",
        "=" * 28,
        "g" * 40,
    ],
    ids=[
        "other-key-b64",
        "other-key-hex",
        "other-key-sha256",
        "other-body",
        "words",
        "empty",
        "padding",
        "not-hex",
    ],
)
def test_a_signature_no_misconfiguration_explains_gets_no_hint(header: str) -> None:
    assert diagnose(BODY, header, RING, APP, "auto") is None


def test_a_signature_that_verifies_as_configured_gets_no_hint() -> None:
    assert diagnose(BODY, sign(BODY, KEY), RING, APP, "auto") is None


def test_an_empty_keyring_explains_nothing() -> None:
    assert diagnose(BODY, sign(BODY, KEY, "hex"), Keyring(), APP, "base64") is None


def test_other_apps_keys_tried_are_bounded() -> None:
    many = {OTHER + i: [f"key-{i}"] for i in range(MAX_OTHER_KEYS + 10)}
    ring = Keyring.build(per_app={APP: [KEY], **many})
    first, beyond = sorted(many)[0], sorted(many)[-1]
    assert diagnose(BODY, sign(BODY, many[first][0]), ring, APP, "auto") is not None
    assert diagnose(BODY, sign(BODY, many[beyond][0]), ring, APP, "auto") is None


@pytest.mark.parametrize("vector", load_vectors(), ids=lambda v: v["name"])
def test_every_shipped_vector_s_hex_signature_under_base64_is_a_hex_hint(vector: dict[str, Any]) -> None:
    body = vector["body"].encode()
    ring = Keyring.build([vector["secret"]])
    hint = diagnose(body, vector["signature_hex"], ring, None, "base64")
    assert hint is not None and hint.kind == "hex_encoding"


# ------------------------------------------------------------------------------- nothing secret


def _every_hint() -> list[tuple[str, Hint]]:
    ring = Keyring.build(per_app={APP: [f" {KEY} "], OTHER: [OTHER_KEY]})
    headers = {
        "hex": (sign(BODY, KEY, "hex"), "base64"),
        "b64": (sign(BODY, KEY), "hex"),
        "sha256": (sha256_b64(KEY, BODY), "auto"),
        "post": (sign(b"POST" + BODY, f" {KEY} "), "auto"),
        "ws": (sign(BODY, KEY), "auto"),
        "other": (sign(BODY, OTHER_KEY, "hex"), "base64"),
    }
    out = []
    for header, encoding in headers.values():
        hint = diagnose(BODY, header, ring, APP, encoding)
        assert hint is not None
        out.append((header, hint))
    return out


def test_every_hint_kind_is_reachable_and_none_repeats() -> None:
    kinds = {k for _, hint in _every_hint() for k in hint.deviations}
    assert kinds == set(HINT_KINDS)


def test_no_hint_carries_key_material_or_the_signature() -> None:
    for header, hint in _every_hint():
        text = repr(hint) + hint.fix
        for secret in (KEY, OTHER_KEY, header, header.lower(), header.upper()):
            assert secret not in text


# ------------------------------------------------------------------------------- the doctor


def doctor(clock: FakeClock, per_second: float = 2.0) -> SignatureDoctor:
    return SignatureDoctor(per_second, clock.monotonic)


def test_the_doctor_diagnoses_a_burst_then_at_most_its_rate() -> None:
    clock = FakeClock()
    d = doctor(clock)
    header = sign(BODY, KEY, "hex")
    done = [d.examine(BODY, header, RING, APP, "base64") for _ in range(1000)]
    assert sum(x is not None for x in done) == HINTS_BURST
    clock.advance(10.0)
    done = [d.examine(BODY, header, RING, APP, "base64") for _ in range(1000)]
    assert sum(x is not None for x in done) == HINTS_BURST  # 20 tokens due, the burst caps them
    clock.advance(0.5)
    assert d.examine(BODY, header, RING, APP, "base64") is not None  # one token a half second
    assert d.examine(BODY, header, RING, APP, "base64") is None


def test_over_a_minute_of_flood_the_doctor_runs_rate_times_sixty_plus_burst_times() -> None:
    clock = FakeClock()
    d = doctor(clock, per_second=3.0)
    ran = 0
    for _ in range(60_000):  # a bad signature every millisecond
        ran += d.examine(BODY, "forged", RING, APP, "auto") is not None
        clock.advance(0.001)
    assert 3 * 60 <= ran <= 3 * 60 + HINTS_BURST


def test_one_log_line_per_hint_and_app_a_minute_with_the_repeats_it_held_back() -> None:
    clock = FakeClock()
    d = doctor(clock, per_second=100.0)
    header = sign(BODY, KEY, "hex")
    first = d.examine(BODY, header, RING, APP, "base64")
    assert first is not None and first.log and first.repeats == 0 and first.biz_id == APP
    for _ in range(4):
        clock.advance(1.0)
        again = d.examine(BODY, header, RING, APP, "base64")
        assert again is not None and again.hint == first.hint and not again.log
    clock.advance(60.0)
    later = d.examine(BODY, header, RING, APP, "base64")
    assert later is not None and later.log and later.repeats == 4


def test_another_hint_or_another_app_gets_its_own_line() -> None:
    clock = FakeClock()
    d = doctor(clock, per_second=100.0)
    hexed = d.examine(BODY, sign(BODY, KEY, "hex"), RING, APP, "base64")
    other = d.examine(BODY, sign(BODY, OTHER_KEY), RING, APP, "base64")
    body2 = BODY.replace(b"1400000000", b"1400000007")
    third = d.examine(body2, sign(body2, KEY, "hex"), Keyring.build([KEY]), None, "base64")
    assert all(x is not None and x.log for x in (hexed, other, third))
    assert third is not None and third.biz_id == 1400000007  # peeked when not given


def test_a_diagnosis_without_a_hint_is_not_a_skip() -> None:
    d = doctor(FakeClock())
    found = d.examine(BODY, sign(BODY, "unrelated"), RING, APP, "auto")
    assert found is not None and found.hint is None and not found.log


def test_the_doctor_remembers_a_bounded_number_of_apps() -> None:
    clock = FakeClock()
    d = doctor(clock, per_second=1e9)
    ring = Keyring.build([KEY])
    for i in range(5000):  # BizIDs are claims: a forger can vary them freely
        clock.advance(0.001)
        body = BODY.replace(b"1400000000", str(1500000000 + i).encode())
        assert d.examine(body, sign(body, KEY, "hex"), ring, None, "base64") is not None
    assert len(d._logged) <= 1024
