"""Shared test helpers."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

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


def load_vectors() -> list[dict[str, Any]]:
    """The signed test vectors shipped in ../shared/vectors/."""
    return json.loads((SHARED / "vectors" / "signed-callbacks.json").read_text(encoding="utf-8"))


def metric_value(exposition: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` in a /metrics text whose labels include `labels`."""
    total, found = 0.0, False
    for fam in text_string_to_metric_families(exposition):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
                found = True
    if not found:
        raise KeyError(f"no sample {name}{labels}")
    return total


def figures_writer(module: str, figures: dict[str, Any]) -> Iterator[None]:
    """Body of a module fixture that appends `figures` as JSON to $GME_RECWATCH_FIGURES."""
    yield
    path = os.environ.get("GME_RECWATCH_FIGURES")
    if path and figures:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"module": module, **figures}) + "\n")
