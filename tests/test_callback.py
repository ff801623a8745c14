"""How the callback listener answers each outcome (its HTTP behaviour end to end is in
test_app.py and test_hostile.py)."""

from __future__ import annotations

import json
from typing import get_args

import pytest

from gme_recwatch.callback import MESSAGES, STATUS, one_signature, reply
from gme_recwatch.intake import Accepted, Reason, Rejected
from gme_recwatch.lifecycle import Result

REASONS = [r for part in get_args(Reason) for r in get_args(part)]


def test_every_rejection_reason_has_a_status_and_a_message() -> None:
    assert sorted(STATUS) == sorted(MESSAGES) == sorted(REASONS)


@pytest.mark.parametrize("result", list(Result))
def test_every_accepted_result_is_answered_code_zero(result: Result) -> None:
    assert reply(Accepted(result)) == (200, b'{"code":0}')


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        ("missing", 401),
        ("mismatch", 401),
        ("unknown_app", 401),
        ("malformed", 400),
        ("stale", 400),
        ("too_large", 413),
    ],
)
def test_rejections_name_their_reason_with_a_4xx_that_tencent_does_not_retry(reason: str, status: int) -> None:
    code, body = reply(Rejected(reason, "why"))  # type: ignore[arg-type]
    assert code == status
    assert json.loads(body) == {"code": status, "error": reason, "message": MESSAGES[reason], "detail": "why"}


@pytest.mark.parametrize(
    ("values", "expected"), [([], None), (["a"], "a"), (["a", "a"], "a"), (["a", "b"], "!")]
)
def test_repeated_signature_headers_count_only_when_they_agree(values: list[str], expected: str | None) -> None:
    assert one_signature(values) == expected
