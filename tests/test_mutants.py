"""tools/mutants.py, the mutation check of the rules: its list fits the code, and a run is judged
by how it failed (the mutants themselves run in `make mutants`, not here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT, load_script

mutants = load_script(ROOT / "tools" / "mutants.py")


def test_every_mutant_changes_text_found_exactly_once_in_its_file() -> None:
    assert mutants.check_mutants() == []


def test_both_copies_of_the_rules_are_mutated_alike() -> None:
    ids = {m.id for m in mutants.MUTANTS}
    assert len(ids) >= 28
    for i in ids:
        twin = i.replace("py-", "lua-", 1) if i.startswith("py-") else i.replace("lua-", "py-", 1)
        assert twin in ids, f"{i} has no twin in the other language"
    for m in mutants.MUTANTS:
        assert m.old != m.new and m.tests
        for t in m.tests:
            assert (ROOT / t).is_file(), t


def _report(tmp_path: Path, body: str) -> Path:
    junit = tmp_path / "junit.xml"
    junit.write_text(f"<testsuites><testsuite>{body}</testsuite></testsuites>", encoding="utf-8")
    return junit


@pytest.mark.parametrize(
    ("code", "body", "verdict"),
    [
        (0, "", "survived"),
        (None, "", "timeout"),  # past the hard limit, killed
        (1, '<testcase classname="t" name="a"><failure message="assert 1 == 2"/></testcase>', "killed"),
        (
            1,
            '<testcase classname="t" name="a"><failure message="Failed: Timeout &gt;60.0s"/></testcase>',
            "timeout",
        ),  # pytest-timeout: a hang is not a kill
        (1, '<testcase classname="t" name="a"><error message="fixture failed"/></testcase>', "error"),
        (2, '<testcase classname="t" name="a"><failure message="x"/></testcase>', "error"),
        (4, "", "error"),
    ],
)
def test_a_run_is_killed_only_by_a_failing_assertion(
    tmp_path: Path, code: int | None, body: str, verdict: str
) -> None:
    assert mutants.judge(code, _report(tmp_path, body))[0] == verdict


def test_a_run_without_a_report_is_an_error(tmp_path: Path) -> None:
    assert mutants.judge(1, tmp_path / "missing.xml")[0] == "error"
