"""HMAC-SHA1 verification of callback signatures, keyrings and key rotation. No HTTP in here.

Tencent signs the exact body bytes with the app's SecretKey (UTF-8) and puts the digest in
the ``Signature`` header. The recording page does not say how the digest is encoded; GME's
other callbacks use Base64, so Base64 is what we expect, and hex (either case) is accepted
too. A 20-byte digest is 28 Base64 characters or 40 hex characters, so ``auto`` can tell
them apart by length without guessing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

FailureReason = Literal["missing", "mismatch", "unknown_app"]
WILDCARD = "*"
_HEX = re.compile(r"\A[0-9a-fA-F]{40}\Z")
_DIGEST_SIZE = hashlib.sha1().digest_size  # noqa: S324 - SHA-1 is what Tencent signs with


class SignatureError(Exception):
    """The callback's signature does not hold; ``reason`` is the metric label."""

    def __init__(self, reason: FailureReason) -> None:
        super().__init__(reason)
        self.reason: FailureReason = reason


class KeyringError(ValueError):
    """A keyring file or value could not be parsed; the message never contains key material."""


def sign(body: bytes, secret: str, encoding: Literal["base64", "hex"] = "base64") -> str:
    """The ``Signature`` header Tencent would send for ``body``: used by `send` and tests."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha1).digest()
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode("ascii")


def decode_signature(header: str, encoding: str) -> bytes | None:
    """The raw 20-byte digest from a header value, or None when it is not a well-formed one."""
    value = header.strip()
    if encoding in ("hex", "auto") and _HEX.match(value):
        return bytes.fromhex(value)
    if encoding in ("base64", "auto") and len(value) == 28:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
        return raw if len(raw) == _DIGEST_SIZE else None
    return None


@dataclass(frozen=True, slots=True)
class Keyring:
    """SecretKeys by BizID, plus keys valid for every app. Several keys per app = rotation."""

    default: tuple[bytes, ...] = ()
    per_app: Mapping[int, tuple[bytes, ...]] = field(default_factory=dict)

    def keys_for(self, biz_id: int | None) -> tuple[bytes, ...]:
        if biz_id is not None:
            specific = self.per_app.get(biz_id)
            if specific:
                return specific + self.default
        return self.default

    def __len__(self) -> int:
        return len(self.default) + sum(len(v) for v in self.per_app.values())

    def app_ids(self) -> list[int]:
        return sorted(self.per_app)

    def __repr__(self) -> str:  # never show key material, even in a traceback
        return f"Keyring(default={len(self.default)} keys, apps={self.app_ids()})"

    @classmethod
    def build(cls, default: Iterable[str] = (), per_app: Mapping[int, Iterable[str]] | None = None) -> Keyring:
        def enc(keys: Iterable[str]) -> tuple[bytes, ...]:
            return tuple(dict.fromkeys(k.encode("utf-8") for k in keys if k))

        return cls(enc(default), {int(b): enc(ks) for b, ks in (per_app or {}).items()})

    def merged(self, other: Keyring) -> Keyring:
        apps = {
            b: self.per_app.get(b, ()) + other.per_app.get(b, ())
            for b in set(self.per_app) | set(other.per_app)
        }
        return Keyring(self.default + other.default, apps)


def parse_secret_list(value: str) -> list[str]:
    """``GME_RECWATCH_SECRET_KEY``: one key, or several comma-separated during a rotation."""
    return [k.strip() for k in value.split(",") if k.strip()]


def parse_keys_file(text: str) -> Keyring:
    """Parse ``BizID=key`` / ``*=key`` lines; blank lines and ``#`` comments are ignored."""
    default: list[str] = []
    per_app: dict[int, list[str]] = {}
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        app, sep, key = line.partition("=")
        app, key = app.strip(), key.strip()
        if not sep or not key:
            raise KeyringError(f"line {n}: expected `BizID=key` or `*=key`")
        if app == WILDCARD:
            default.append(key)
        elif app.isascii() and app.isdigit():
            per_app.setdefault(int(app), []).append(key)
        else:
            raise KeyringError(f"line {n}: BizID must be digits or `*`")
    ring = Keyring.build(default, per_app)
    if len(ring) == 0:
        raise KeyringError("no keys in file")
    return ring


def verify(body: bytes, header: str | None, keys: Sequence[bytes], encoding: str) -> None:
    """Raise :class:`SignatureError` unless ``header`` is the HMAC-SHA1 of ``body`` under a key.

    Every candidate key is compared with :func:`hmac.compare_digest`, so the time taken does
    not depend on how many leading bytes of a forged signature were right.
    """
    if header is None or not header.strip():
        raise SignatureError("missing")
    if not keys:
        raise SignatureError("unknown_app")
    given = decode_signature(header, encoding)
    if given is None:
        raise SignatureError("mismatch")
    ok = False
    for key in keys:
        expected = hmac.new(key, body, hashlib.sha1).digest()
        ok |= hmac.compare_digest(expected, given)
    if not ok:
        raise SignatureError("mismatch")


class KeyringSource:
    """The live keyring: environment keys plus an optional file, reloaded when the file changes.

    Reloading happens from a background task (``maybe_reload``), never on the request path. A
    file that cannot be read or parsed keeps the previous keyring in force; that version of the
    file fails once (``maybe_reload`` raises), and is not read again until it changes.
    """

    def __init__(self, secret_key: str, keys_file: str) -> None:
        self._env = Keyring.build(parse_secret_list(secret_key))
        self._path = keys_file
        self._stamp: tuple[int, int, int] | None = None
        self._failed: tuple[int, int, int] | None = None  # the version that failed last
        self._file = Keyring()
        self.current = self._env
        if self._path:
            self.reload()

    @property
    def file_valid(self) -> bool:
        """False while the file as it is now could not be loaded (the previous keys are used)."""
        return self._failed is None

    def _file_stamp(self) -> tuple[int, int, int]:
        st = os.stat(self._path)
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def reload(self) -> None:
        """Read the keys file now; raise OSError/KeyringError and keep the old keys on failure."""
        stamp = self._file_stamp()
        with open(self._path, encoding="utf-8-sig") as fh:  # tolerate an editor's BOM
            ring = parse_keys_file(fh.read())
        self._file, self._stamp, self._failed = ring, stamp, None
        self.current = self._env.merged(ring)

    def maybe_reload(self) -> bool:
        """Reload if the file's identity, size or mtime changed; True when it was reloaded.
        Raises once per version that cannot be loaded (a missing file is one version)."""
        if not self._path:
            return False
        try:
            stamp = self._file_stamp()
        except OSError as exc:
            stamp = (-1, exc.errno or 0, 0)
            if stamp == self._failed:
                return False
            self._failed = stamp
            raise
        if stamp == self._stamp:
            self._failed = None  # back to the version in force
            return False
        if stamp == self._failed:
            return False
        try:
            self.reload()
        except (OSError, KeyringError, UnicodeDecodeError):
            self._failed = stamp
            raise
        return True
