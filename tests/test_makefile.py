"""`make run` installs the service's dependencies only, `make test` and `make lint` the dev
group too; in either order, and the stamps that say so never lie.

uv is replaced by a script that records how it was called (``UV=``, as a user may set it), so
the Makefile's logic is tested without installing anything; that a `--no-dev --inexact` sync
really leaves the dev group in place is uv's documented behaviour, measured in BENCHMARKS.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    for name in ("Makefile", "pyproject.toml", "uv.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    uv = tmp_path / "fake-uv"
    # Records its arguments, and makes the venv directory a sync would.
    uv.write_text('#!/bin/sh\necho "$*" >> "$(dirname "$0")/uv-calls"\nmkdir -p .venv/bin\n')
    uv.chmod(0o755)
    return tmp_path


def make(checkout: Path, *targets: str) -> list[str]:
    """Run make targets that only install; return the uv calls they made."""
    calls = checkout / "uv-calls"
    calls.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    r = subprocess.run(
        ["make", "-s", "-C", str(checkout), f"UV={checkout / 'fake-uv'}", *targets],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return calls.read_text().splitlines() if calls.exists() else []


def stamps(checkout: Path) -> set[str]:
    return {p.name for p in (checkout / ".venv/bin").glob(".*")}


def test_run_installs_the_runtime_only_then_test_adds_the_dev_group(checkout: Path) -> None:
    (call,) = make(checkout, "venv-runtime")
    assert "--no-dev" in call and "--inexact" in call  # `make run` after `make test` removes nothing
    assert "--compile-bytecode" not in call  # a first `make run` is not kept waiting for it
    assert stamps(checkout) == {".runtime"}
    (call,) = make(checkout, "venv")
    assert "sync --locked" in call and "--no-dev" not in call and "--inexact" not in call
    assert "--compile-bytecode" in call  # every test's `serve` starts from bytecode
    assert stamps(checkout) == {".runtime", ".dev"}
    assert make(checkout, "venv-runtime") == [] and make(checkout, "venv") == []


def test_test_first_then_run_installs_nothing_more(checkout: Path) -> None:
    assert len(make(checkout, "venv")) == 1
    assert stamps(checkout) == {".runtime", ".dev"}  # the dev sync holds the runtime too
    assert make(checkout, "venv-runtime") == []


def test_a_changed_lock_makes_both_sync_again(checkout: Path) -> None:
    make(checkout, "venv")
    lock = checkout / "uv.lock"
    later = lock.stat().st_mtime + 10
    os.utime(lock, (later, later))
    assert len(make(checkout, "venv-runtime")) == 1
    assert len(make(checkout, "venv")) == 1


@pytest.mark.parametrize(
    ("target", "needs"), [("run", ".runtime"), ("send", ".runtime"), ("test", ".dev"), ("lint", ".dev")]
)
def test_each_target_depends_on_the_install_it_needs(target: str, needs: str) -> None:
    r = subprocess.run(
        ["make", "-C", str(ROOT), "-p", "-n", "--no-builtin-rules", "-q", "clean"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    rules = r.stdout
    line = next(x for x in rules.splitlines() if x.startswith(f"{target}:"))
    wanted = "venv-runtime" if needs == ".runtime" else "venv"
    assert line.split(":", 1)[1].split() == [wanted], line
