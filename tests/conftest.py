"""Shared test helpers."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str) -> str:
    """Path of a system tool; skip with a clear reason when it is missing, fail under CI=true."""
    path = shutil.which(name)
    if path:
        return path
    reason = (
        f"`{name}` is not installed (Debian package `prometheus` provides prometheus and promtool;"
        f" run `make system-deps`)"
    )
    if in_ci():
        pytest.fail(f"{reason}; CI=true so this test must not skip", pytrace=False)
    pytest.skip(reason)
