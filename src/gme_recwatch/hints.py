"""Why a signature did not verify: the misconfigurations that would explain it. No HTTP here.

The first wiring of a new app often fails on the signature, and a bare ``mismatch`` says
nothing about why. After a callback is rejected (``mismatch`` or ``unknown_app``; a missing
header needs no explaining), :func:`diagnose` tries what a misconfiguration on either side
would produce and, if one of them reproduces the header, names the fix:

========================  ===================================================================
hint                      the header verifies ...
========================  ===================================================================
``other_app_key``         with a key the keyring holds for another BizID
``key_whitespace``        with a configured key stripped of surrounding whitespace, or with
                          one plus a trailing newline / CRLF / space (a key read from a file)
``post_prefix``           over ``"POST" + body``: the rule of GME's voice-moderation callbacks
                          (Tencent's page "回调说明", product 607/64861: ``Signature =
                          Base64(HMAC-SHA1(strContent, SecretKey))``, ``strContent`` = "POST+body
                          的整个 JSON 内容"), read as the four ASCII bytes ``POST`` followed by
                          the raw body, nothing between. ``../shared/spec`` is silent on it.
``sha256``                as HMAC-SHA256 (TRTC's callbacks), in Base64 or hex
``hex_encoding``          as hex, while ``GME_RECWATCH_SIGNATURE_ENCODING=base64``
``base64_encoding``       as Base64, while ``GME_RECWATCH_SIGNATURE_ENCODING=hex``
========================  ===================================================================

Deviations combine (another app's key *and* hex, say): the match with the fewest deviations
wins, and its label is the first of them in the order above; the fix names each.

The callback stays rejected: a hint explains, it never accepts. A hint names BizIDs and
settings, never a key, a digest or the Signature. Trying every candidate costs a few hundred
HMACs, so :class:`SignatureDoctor` runs the diagnosis at most a few times a second (a token
bucket) and logs one line per hint and app a minute; a flood of forged signatures costs a
bounded, small share of a core.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final, Literal, get_args

from . import events
from .ratelimit import TokenBucket
from .signature import Keyring

HintKind = Literal[
    "other_app_key", "key_whitespace", "post_prefix", "sha256", "hex_encoding", "base64_encoding"
]
HINT_KINDS: Final[tuple[str, ...]] = get_args(HintKind)
POST_PREFIX: Final = b"POST"
# Suffixes a key read from a file or typed into a shell picks up on the sender's side.
_SENDER_SUFFIXES: Final = (b"\n", b"\r\n", b" ")
MAX_OTHER_KEYS: Final = 256  # other apps' keys tried at most: bounds the work per diagnosis
_HEX: Final = re.compile(r"\A(?:[0-9a-fA-F]{40}|[0-9a-fA-F]{64})\Z")
_ALGORITHMS: Final = {None: hashlib.sha1, "sha256": hashlib.sha256}
_ACCEPTS: Final = {"auto": ("base64", "hex"), "base64": ("base64",), "hex": ("hex",)}


@dataclass(frozen=True, slots=True)
class Hint:
    """A misconfiguration that explains a rejected signature, and what to change."""

    kind: HintKind
    """The metric label: the first of ``deviations`` in :data:`HINT_KINDS` order."""
    deviations: tuple[HintKind, ...]
    """Everything that differs from what this service verified, in :data:`HINT_KINDS` order."""
    fix: str
    """What to change, in words: settings and BizIDs, never key material."""
    key_biz_id: int | None = None
    """With ``other_app_key``: the BizID whose configured key verifies the callback."""


@dataclass(frozen=True, slots=True)
class _Key:
    key: bytes
    deviation: HintKind | None = None
    other_biz_id: int | None = None
    configured_has_whitespace: bool = False


def _header_digests(header: str) -> list[tuple[str, bytes]]:
    """Every (encoding, raw digest) the header could be: SHA-1 or SHA-256, Base64 or hex."""
    value = header.strip()
    out: list[tuple[str, bytes]] = []
    if _HEX.match(value):
        out.append(("hex", bytes.fromhex(value)))
    if len(value) in (28, 44):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) in (20, 32):
            out.append(("base64", raw))
    return out


def _candidate_keys(ring: Keyring, biz_id: int | None) -> Iterator[_Key]:
    own = ring.keys_for(biz_id)
    for k in own:
        yield _Key(k)
    for k in own:
        if k.strip() != k:
            yield _Key(k.strip(), "key_whitespace", configured_has_whitespace=True)
        for suffix in _SENDER_SUFFIXES:
            yield _Key(k + suffix, "key_whitespace")
    tried = set(own)
    budget = MAX_OTHER_KEYS
    for other in sorted(ring.per_app):
        if other == biz_id:
            continue
        for k in ring.per_app[other]:
            if k in tried or budget <= 0:
                continue
            tried.add(k)
            budget -= 1
            yield _Key(k, "other_app_key", other_biz_id=other)


def diagnose(body: bytes, header: str, ring: Keyring, biz_id: int | None, encoding: str) -> Hint | None:
    """The misconfiguration that reproduces ``header`` for ``body``, or None.

    ``biz_id`` is the BizID the body claims (unverified), ``encoding`` the configured
    ``signature_encoding``. Deterministic: the same inputs give the same hint.
    """
    digests = _header_digests(header)
    if not digests:
        return None
    accepted = _ACCEPTS.get(encoding, ())
    messages: tuple[tuple[bytes, HintKind | None], ...] = ((body, None), (POST_PREFIX + body, "post_prefix"))
    best: tuple[tuple[int, tuple[int, ...]], _Key, tuple[HintKind, ...]] | None = None
    for cand in _candidate_keys(ring, biz_id):
        for message, msg_dev in messages:
            for algo_dev, algo in _ALGORITHMS.items():
                mac = hmac.new(cand.key, message, algo).digest()
                for enc, raw in digests:
                    if len(raw) != len(mac) or not hmac.compare_digest(raw, mac):
                        continue
                    devs: set[HintKind] = {d for d in (cand.deviation, msg_dev) if d}
                    if algo_dev == "sha256":
                        devs.add("sha256")
                    elif enc not in accepted:
                        devs.add("hex_encoding" if enc == "hex" else "base64_encoding")
                    if not devs:
                        continue  # it verifies as configured: the keyring changed meanwhile
                    ordered = tuple(k for k in get_args(HintKind) if k in devs)
                    rank = (len(ordered), tuple(HINT_KINDS.index(k) for k in ordered))
                    if best is None or rank < best[0]:
                        best = (rank, cand, ordered)
    if best is None:
        return None
    _, cand, ordered = best
    fixes = [_fix(k, cand, biz_id, encoding, bool(ring.keys_for(biz_id))) for k in ordered]
    return Hint(ordered[0], ordered, "; and ".join(fixes), cand.other_biz_id)


def _fix(kind: HintKind, cand: _Key, biz_id: int | None, encoding: str, has_own_keys: bool) -> str:
    app = f"BizID {biz_id}" if biz_id is not None else "the callback's BizID"
    if kind == "other_app_key":
        if not has_own_keys:
            return (
                f"no SecretKey is configured for {app}, and the Signature verifies with the "
                f"key configured for BizID {cand.other_biz_id}: add a line "
                f"`{biz_id if biz_id is not None else '<BizID>'}=<that key>` to the keys "
                "file, or check which app the sender signs for"
            )
        return (
            f"the Signature verifies with the key configured for BizID {cand.other_biz_id}, "
            f"not with {app}'s: the keys file pairs a key with the wrong BizID, or the sender "
            "uses another app's SecretKey"
        )
    if kind == "key_whitespace":
        if cand.configured_has_whitespace:
            return (
                f"the SecretKey configured for {app} has surrounding whitespace that the "
                "sender's lacks: remove it from GME_RECWATCH_SECRET_KEY or the keys file"
            )
        return (
            "the sender signs with the SecretKey plus trailing whitespace (a newline or "
            "space, e.g. a key read from a file): strip the key where the sender reads it"
        )
    if kind == "post_prefix":
        return (
            'the sender signs "POST" + body, the rule of GME\'s voice-moderation callbacks; '
            "recording callbacks sign the body alone: sign the body alone, and send "
            "moderation callbacks to their own receiver"
        )
    if kind == "sha256":
        return (
            "the sender signs with HMAC-SHA256 (TRTC's rule); GME recording callbacks are "
            "HMAC-SHA1 and no setting accepts SHA-256: sign with HMAC-SHA1"
        )
    if kind == "hex_encoding":
        return (
            f"would verify with hex encoding, but GME_RECWATCH_SIGNATURE_ENCODING={encoding} "
            "accepts only Base64: set GME_RECWATCH_SIGNATURE_ENCODING=auto"
        )
    return (
        f"would verify with Base64 encoding, but GME_RECWATCH_SIGNATURE_ENCODING={encoding} "
        "accepts only hex: set GME_RECWATCH_SIGNATURE_ENCODING=auto"
    )


# ------------------------------------------------------------------------- rate and log limits


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """What :meth:`SignatureDoctor.examine` found, and whether to log it now."""

    hint: Hint | None
    log: bool = False
    """True for the first sighting of this hint for this app within the log interval."""
    repeats: int = 0
    """Sightings of the same hint for the same app since its last log line, not logged."""
    biz_id: int | None = None
    """The BizID the body claims (unverified)."""


HINTS_BURST: Final = 5  # diagnoses allowed back to back before the rate applies
HINT_LOG_INTERVAL: Final = 60.0  # seconds between two log lines of one hint for one app
_MAX_REMEMBERED: Final = 1024  # (hint, app) pairs remembered for the log interval; BizIDs are claims


class SignatureDoctor:
    """Runs :func:`diagnose` at most ``per_second`` times a second (bursts of
    :data:`HINTS_BURST`), and says when a hint is worth a log line."""

    def __init__(
        self,
        per_second: float,
        monotonic: Callable[[], float],
        *,
        burst: int = HINTS_BURST,
        log_interval: float = HINT_LOG_INTERVAL,
    ) -> None:
        self._bucket = TokenBucket(per_second, burst, monotonic)
        self._monotonic = monotonic
        self._log_interval = log_interval
        self._logged: dict[tuple[HintKind, int | None, int | None], tuple[float, int]] = {}

    def examine(
        self, body: bytes, header: str, ring: Keyring, biz_id: int | None, encoding: str
    ) -> Diagnosis | None:
        """The diagnosis of one rejected callback, or None when over the rate (skipped)."""
        if not self._bucket.try_take():
            return None
        if biz_id is None:
            biz_id = events.peek_biz_id(body)
        hint = diagnose(body, header, ring, biz_id, encoding)
        if hint is None:
            return Diagnosis(None, biz_id=biz_id)
        now = self._monotonic()
        ident = (hint.kind, biz_id, hint.key_biz_id)
        seen = self._logged.get(ident)
        if seen is not None and now - seen[0] < self._log_interval:
            self._logged[ident] = (seen[0], seen[1] + 1)
            return Diagnosis(hint, biz_id=biz_id)
        if len(self._logged) >= _MAX_REMEMBERED:
            self._logged.clear()
        self._logged[ident] = (now, 0)
        return Diagnosis(hint, log=True, repeats=seen[1] if seen else 0, biz_id=biz_id)
