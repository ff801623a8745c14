"""Shared test helpers."""

from __future__ import annotations

import asyncio
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


# ------------------------------------------------------------------ stores, driven synchronously

class Tracked:
    """A store and its fake clock, driven from synchronous tests: every call runs the store's
    coroutine to completion on one event loop. The API is the store interface's, plus
    :meth:`recount`, which recomputes the gauges from the segments themselves."""

    def __init__(self, store: Any, clock: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.clock = clock
        self._loop = loop

    def run(self, coro: Any) -> Any:
        return self._loop.run_until_complete(coro)

    def record(self, ev: Any) -> Any:
        return self.run(self.store.record(ev))

    def sweep(self, budget: int | None = None) -> list[Any]:
        """One round of at most ``budget`` due segments; every due segment when None."""
        out: list[Any] = []
        while True:
            done = self.run(self.store.sweep(budget or 1_000_000))
            out += done.transitions
            if budget is not None or not done.more:
                return out

    def sweep_round(self, budget: int) -> Any:
        """One round of the sweep, as the service runs it: its transitions and ``more``."""
        return self.run(self.store.sweep(budget))

    def stats(self) -> Any:
        return self.run(self.store.stats())

    def segments(self, **kw: Any) -> list[Any]:
        return list(self.run(self.store.segments(**kw)))

    def register_apps(self, biz_ids: list[int]) -> None:
        self.run(self.store.register_apps(biz_ids))

    def __len__(self) -> int:
        return int(self.run(self.store.count()))

    def recount(self) -> Any:
        """The gauges recomputed from scratch from every segment the store lists."""
        from gme_recwatch.events import MODE_NAMES
        from gme_recwatch.lifecycle import STATE_NAMES, State

        s = self.stats()
        labels = s.app_labels
        live = {State.RECORDING.label, State.STUCK.label}
        active: dict[tuple[str, str], int] = {(a, m): 0 for a in labels for m in MODE_NAMES}
        rooms: dict[str, set[tuple[int, str]]] = {a: set() for a in labels}
        stuck = dict.fromkeys(labels, 0)
        missing = dict.fromkeys(labels, 0)
        oldest: dict[str, float] = dict.fromkeys(labels, 0.0)
        by_state = dict.fromkeys(STATE_NAMES, 0)
        for v in self.segments(limit=10**9):
            by_state[v.state] += 1
            if v.state in live:
                active[(v.app_id, v.record_mode)] += 1
                rooms[v.app_id].add((v.biz_id, v.room_id))
                ts = v.started_at or 0.0
                oldest[v.app_id] = ts if not oldest[v.app_id] else min(oldest[v.app_id], ts)
            stuck[v.app_id] += v.state == State.STUCK.label
            missing[v.app_id] += v.state == State.UPLOAD_MISSING.label
        s.active_recordings, s.by_state, s.stuck, s.missing_uploads = active, by_state, stuck, missing
        s.active_rooms = {a: len(r) for a, r in rooms.items()}
        s.oldest_start = oldest
        return s


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true",
                     help="rewrite tests/golden/ from what the code produces now (review the diff)")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Whatever a test does to structlog and the root logger is undone after it, so no test
    logs into a stream another test closed (pytest-randomly runs them in any order)."""
    import logging

    import structlog

    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)
