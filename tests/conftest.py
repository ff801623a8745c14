"""Shared test helpers."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


_PACKAGES = {"prometheus": "prometheus", "promtool": "prometheus", "redis-server": "redis-server",
             "redis-cli": "redis-tools", "wrk": "wrk", "buildah": "buildah",
             "debootstrap": "debootstrap", "prometheus-alertmanager": "prometheus-alertmanager"}


def load_script(path: Path) -> Any:
    """A script outside the package (dashboards/rules.py, tools/...) as a module, loaded once."""
    name = "script_" + path.stem.replace("-", "_")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while it loads
        spec.loader.exec_module(module)
    return sys.modules[name]


def require_tool(name: str) -> str:
    """Path of a system tool; skip with a clear reason when it is missing, fail under CI=true."""
    path = shutil.which(name)
    if path:
        return path
    reason = (
        f"`{name}` is not installed (Debian package `{_PACKAGES.get(name, name)}`;"
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


# ------------------------------------------------------------------ a real redis-server

class RedisServer:
    """A redis-server of our own on a free loopback port, with its own directory."""

    def __init__(self, workdir: Path, *, appendonly: bool = False) -> None:
        import socket
        import subprocess

        self.binary = require_tool("redis-server")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                     "--dir", str(self.dir), "--save", "", "--appendonly",
                     "yes" if appendonly else "no", "--appendfsync", "always",
                     "--daemonize", "no", "--logfile", str(self.dir / "redis.log")]
        self._subprocess = subprocess
        self.proc: Any = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import socket
        import time

        self.proc = self._subprocess.Popen(self.args, stdout=self._subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start: {(self.dir / 'redis.log').read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def used_memory(self) -> int:
        import redis as redis_sync

        info = redis_sync.Redis(port=self.port).info("memory")
        return int(info["used_memory"])


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()
