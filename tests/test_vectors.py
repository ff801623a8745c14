"""The vendored signed vectors (tests/vectors/) against their source: the shared repository's
copy and the "Sample callback" on Tencent's page (../shared/spec/). The vectors themselves are
exercised by test_signature, test_events and test_hints."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from conftest import VECTORS, load_vectors, require_shared


def spec_sample(text: str) -> dict[str, Any]:
    """The JSON object under "Sample callback" on Tencent's page."""
    head = text.index("Sample callback")
    start = text.index("{", head)
    depth = 0
    for i, ch in enumerate(text[start:], start):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth == 0:
            return dict(json.loads(text[start : i + 1]))
    raise AssertionError("the sample callback's braces do not close")


def test_the_vendored_vectors_are_the_shared_ones_byte_for_byte() -> None:
    shared = require_shared() / "vectors" / "signed-callbacks.json"
    assert VECTORS.read_bytes() == shared.read_bytes(), (
        f"tests/vectors/ differs from {shared}: copy it again and update tests/vectors/README.md"
    )


def test_the_vendored_readme_names_the_copy_it_describes() -> None:
    readme = (VECTORS.parent / "README.md").read_text(encoding="utf-8")
    digests = re.findall(r"\b[0-9a-f]{64}\b", readme)
    assert digests == [hashlib.sha256(VECTORS.read_bytes()).hexdigest()]


def test_event1_is_the_spec_sample_callback() -> None:
    page = (require_shared() / "spec" / "tencent-gme-recording-callback.txt").read_text(encoding="utf-8")
    sample = spec_sample(page)
    event1 = next(v for v in load_vectors() if v["name"] == "event1")
    # The exact TaskID (beyond 2**53) survives: json parses it as an int on both sides.
    assert json.loads(event1["body"]) == sample
    assert sample["TaskID"] == 446946705284000000
