"""Shared test helpers."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
# The project's `shared` repository (the protocol notes and the signed vectors), checked out
# beside this one in CI. Only tests/test_vectors.py reads it: the vectors are vendored under
# tests/vectors/, so a clone with nothing beside it runs the suite.
SHARED = ROOT.parent / "shared"
VECTORS = Path(__file__).resolve().parent / "vectors" / "signed-callbacks.json"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


# Hypothesis: how long an example or its generation takes on a loaded machine is never a finding
# here (a slow-generation health check once failed a CI run), so neither the deadline nor the
# too-slow health check applies. Under CI=true the examples are also derandomised: each run
# tries the same ones, so a run that passed passes again, and a failure prints the blob that
# reproduces it. Each property sets its own number of examples, sized for 2 cores (the whole
# suite in under 4 minutes there, `make test`). `--hypothesis-profile` picks another.
hypothesis_settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.register_profile(
    "ci", hypothesis_settings.get_profile("dev"), derandomize=True, database=None, print_blob=True
)
hypothesis_settings.load_profile("ci" if in_ci() else "dev")


_PACKAGES = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "redis-server": "redis-server",
    "redis-cli": "redis-tools",
    "wrk": "wrk",
    "buildah": "buildah",
    "debootstrap": "debootstrap",
    "prometheus-alertmanager": "prometheus-alertmanager",
}


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
    reason = f"`{name}` is not installed (Debian package `{_PACKAGES.get(name, name)}`; run `make system-deps`)"
    if in_ci():
        pytest.fail(f"{reason}; CI=true so this test must not skip", pytrace=False)
    pytest.skip(reason)


def load_vectors() -> list[dict[str, Any]]:
    """The signed test vectors, vendored in tests/vectors/ (a copy of ../shared/vectors/)."""
    return json.loads(VECTORS.read_text(encoding="utf-8"))


def require_shared() -> Path:
    """The ``shared`` checkout beside this one; skip when it is absent, fail under CI=true
    (CI checks it out beside the clone, so there a missing one is a broken workflow)."""
    if (SHARED / "vectors").is_dir() and (SHARED / "spec").is_dir():
        return SHARED
    reason = f"{SHARED} (the shared repository with spec/ and vectors/) is not beside this clone"
    if in_ci():
        pytest.fail(f"{reason}; CI=true so this test must not skip", pytrace=False)
    pytest.skip(reason)


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

# More rounds than any test's due segments need (the Redis store sweeps 500 a round).
MAX_SWEEP_ROUNDS = 1000


class SyncStore:
    """A store and its fake clock, driven from synchronous tests: every call runs the store's
    coroutine to completion on one event loop. The API is the store interface's, plus
    :meth:`recount`, which recomputes the gauges from the segments themselves."""

    def __init__(self, store: Any, clock: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.inner = store
        self.clock = clock
        self._loop = loop

    def run(self, coro: Any) -> Any:
        return self._loop.run_until_complete(coro)

    def record(self, ev: Any) -> Any:
        return self.run(self.inner.record(ev))

    def sweep(self, budget: int | None = None) -> list[Any]:
        """One round of at most ``budget`` due segments; every due segment when None.

        A sweep that still has work after :data:`MAX_SWEEP_ROUNDS` rounds fails the test: a
        deadline left in the past makes the service's sweep spin, and a test must say so, not
        hang."""
        out: list[Any] = []
        for _ in range(MAX_SWEEP_ROUNDS):
            done = self.run(self.inner.sweep(budget or 1_000_000))
            out += done.transitions
            if budget is not None or not done.more:
                return out
        raise AssertionError(
            f"the sweep still had work after {MAX_SWEEP_ROUNDS} rounds: a "
            "deadline was left in the past (the service's sweep would spin)"
        )

    def sweep_round(self, budget: int) -> Any:
        """One round of the sweep, as the service runs it: its transitions and ``more``."""
        return self.run(self.inner.sweep(budget))

    def stats(self) -> Any:
        return self.run(self.inner.stats())

    def segments(self, **kw: Any) -> list[Any]:
        return list(self.run(self.inner.segments(**kw)))

    def page(self, **kw: Any) -> Any:
        return self.run(self.inner.page(**kw))

    def register_apps(self, biz_ids: list[int]) -> None:
        self.run(self.inner.register_apps(biz_ids))

    def __len__(self) -> int:
        return int(self.run(self.inner.count()))

    def recount(self, stats: Any = None, views: list[Any] | None = None) -> Any:
        """The gauges recomputed from scratch from every segment the store lists.

        ``stats`` and ``views`` (every segment) may be ones the caller has just read, so that a
        check reads each once: a Redis store's listing walks its whole keyspace."""
        import dataclasses

        from gme_recwatch.events import MODE_NAMES
        from gme_recwatch.lifecycle import STATE_NAMES, State

        s = dataclasses.replace(stats if stats is not None else self.stats())
        labels = s.app_labels
        live = {State.RECORDING.label, State.STUCK.label}
        active: dict[tuple[str, str], int] = {(a, m): 0 for a in labels for m in MODE_NAMES}
        rooms: dict[str, set[tuple[int, str]]] = {a: set() for a in labels}
        stuck = dict.fromkeys(labels, 0)
        missing = dict.fromkeys(labels, 0)
        oldest: dict[str, float] = dict.fromkeys(labels, 0.0)
        by_state = dict.fromkeys(STATE_NAMES, 0)
        for v in self.segments(limit=10**9) if views is None else views:
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
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite tests/golden/ from what the code produces now (review the diff)",
    )


# ------------------------------------------------------------------ pytest-xdist (make test)

# Modules whose tests share a module-scoped fixture, slowest first: under `make test` (pytest-xdist,
# ``--dist loadgroup``) each runs whole on one worker, so the fixture (the container image, a
# Prometheus, the rendered chart) is made once and the module's figures ($GME_RECWATCH_FIGURES)
# are written once, whole; and they are handed out first, so that none starts last and the image
# build (60-180 s) overlaps everything else. Every other test goes to whichever worker is free,
# the end-to-end ones (real processes, seconds each) before the rest.
XDIST_MODULE_GROUPS = (
    "tests/e2e/test_image.py",
    "tests/e2e/test_reliability.py",
    "tests/test_hostile.py",
    "tests/e2e/test_prometheus_replicas.py",
    "tests/e2e/test_prometheus_e2e.py",
    "tests/test_helm.py",
    "tests/test_stores_parity.py",
)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` (`make test`): a worker per core and one more. The end-to-end tests spend
    most of their time waiting on real processes (deadlines of seconds, Prometheus evaluating
    every second, a simulated sender's pace), so on 2 cores a third worker runs while two
    wait: the suite took 252 s with 2 workers, 182 s with 3 and 184 s with 4 (docs/development.md).
    PYTEST_XDIST_AUTO_NUM_WORKERS still wins."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # pytest-xdist reads it
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores + 1


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup``, plus :data:`XDIST_MODULE_GROUPS`. (xdist 3.8 groups ``xdist_group``
    marks by rewriting node ids, which pytest 9.2 no longer lets it do: pytest-xdist#1386. The
    modules are grouped here, in the controller, from their node ids.)"""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class ModuleGroups(LoadGroupScheduling):
        ordered = False

        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in XDIST_MODULE_GROUPS else str(super()._split_scope(nodeid))

        def _assign_work_unit(self, node: Any) -> None:
            if not self.ordered:  # the first assignment: the whole queue is known

                def rank(scope: str) -> tuple[int, int]:
                    if scope in XDIST_MODULE_GROUPS:
                        return 0, XDIST_MODULE_GROUPS.index(scope)
                    return (1 if scope.startswith("tests/e2e/") else 2), 0

                for scope in sorted(self.workqueue, key=rank, reverse=True):
                    self.workqueue.move_to_end(scope, last=False)
                self.ordered = True
            super()._assign_work_unit(node)

    return ModuleGroups(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A module that gains a module-scoped fixture and is not in :data:`XDIST_MODULE_GROUPS`
    would have its tests spread over the workers, and the fixture made on each: say so."""
    if not hasattr(config, "workerinput") or config.workerinput.get("workerid") != "gw0":
        return

    def module_scoped(item: pytest.Item) -> bool:
        info = getattr(item, "_fixtureinfo", None)
        return info is not None and any(d[-1].scope == "module" for d in info.name2fixturedefs.values())

    missing = sorted(
        {item.nodeid.split("::", 1)[0] for item in items if module_scoped(item)} - set(XDIST_MODULE_GROUPS)
    )
    for module in missing:
        warnings.warn(
            pytest.PytestWarning(
                f"{module} has a module-scoped fixture but is not in XDIST_MODULE_GROUPS "
                "(tests/conftest.py): under xdist its tests may run on several workers"
            ),
            stacklevel=1,
        )


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


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server of our own on a free loopback port, with its own directory."""

    def __init__(self, workdir: Path, *, appendonly: bool = False, cluster: bool = False) -> None:
        import subprocess

        self.binary = require_tool("redis-server")
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.cluster = cluster
        self._subprocess = subprocess
        self.proc: Any = None
        # Another process (an xdist worker's server, a service) may take the free port before
        # redis-server binds it: then it exits, and another port is tried.
        for attempt in range(3):
            self.port = _free_port()
            self.bus_port = _free_port()  # a cluster node's bus (not port + 10000: maybe taken)
            try:
                self.start()
                return
            except RuntimeError:
                if attempt == 2:
                    raise

    @property
    def args(self) -> list[str]:
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "always",
            "--daemonize",
            "no",
            "--logfile",
            str(self.dir / "redis.log"),
            *(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    str(self.bus_port),
                    "--cluster-config-file",
                    str(self.dir / "nodes.conf"),
                    "--cluster-node-timeout",
                    "2000",
                    "--repl-diskless-sync-delay",  # a replica syncs at once, not after 5 s
                    "0",
                ]
                if self.cluster
                else []
            ),
        ]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import socket
        import time

        self.proc = self._subprocess.Popen(self.args, stdout=self._subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        # Until our own process answers: a PONG while it has exited is someone else's server.
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG") and self.proc.poll() is None:
                        return
            except OSError:
                time.sleep(0.05)
        log = (self.dir / "redis.log").read_text() if (self.dir / "redis.log").exists() else ""
        self.kill()
        raise RuntimeError(f"redis-server did not start on port {self.port}: {log}")

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


class RedisClusterServers:
    """Six redis-servers of our own as a Redis Cluster of three masters with one replica each,
    made by `redis-cli --cluster create`, on free loopback ports."""

    def __init__(self, workdir: Path) -> None:
        import subprocess
        import time

        import redis as redis_sync

        cli = require_tool("redis-cli")
        self.nodes: list[RedisServer] = []
        try:
            self.nodes = [RedisServer(workdir / f"node{i}", cluster=True) for i in range(6)]
            subprocess.run(
                [
                    cli,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{n.port}" for n in self.nodes),
                    "--cluster-replicas",
                    "1",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            deadline = time.monotonic() + 30
            while not self._settled():
                assert time.monotonic() < deadline, "the cluster did not settle: " + repr(
                    [redis_sync.Redis(port=n.port).cluster("info") for n in self.nodes]
                )
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise

    def _settled(self) -> bool:
        """Every node sees the cluster ok, and every replica is in sync with its master."""
        for node in self.nodes:
            c = self.client(node)
            try:
                if c.cluster("info")["cluster_state"] != "ok":
                    return False
                info = c.info("replication")
                if info["role"] == "slave" and info.get("master_link_status") != "up":
                    return False
            finally:
                c.close()
        return True

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}/0"

    def client(self, node: RedisServer) -> Any:
        import redis as redis_sync

        return redis_sync.Redis(port=node.port, decode_responses=True)

    def by_port(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def node_id(self, node: RedisServer) -> str:
        c = self.client(node)
        try:
            return str(c.execute_command("CLUSTER", "MYID"))
        finally:
            c.close()

    def keyslot(self, key: str) -> int:
        c = self.client(self.nodes[0])
        try:
            return int(c.execute_command("CLUSTER", "KEYSLOT", key))
        finally:
            c.close()

    def master_of(self, slot: int) -> tuple[RedisServer, list[RedisServer]]:
        """The master serving `slot` now, and its replicas."""
        c = self.client(self.nodes[0])
        try:
            for start, end, master, *replicas in c.execute_command("CLUSTER", "SLOTS"):
                if int(start) <= slot <= int(end):
                    return self.by_port(int(master[1])), [self.by_port(int(r[1])) for r in replicas]
        finally:
            c.close()
        raise KeyError(slot)

    def masters(self) -> list[RedisServer]:
        out = []
        for node in self.nodes:
            c = self.client(node)
            try:
                if c.info("replication")["role"] == "master":
                    out.append(node)
            finally:
                c.close()
        return out

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


# ------------------------------------------------------------------ a real S3 server (moto)


class S3Server:
    """moto's S3 server as a process of our own on a free loopback port, enforcing SigV4 keys.

    Four IAM users exist: ``reader`` may HEAD and GET objects and HEAD buckets (what the COS
    checker needs), ``objects_only`` may not HEAD a bucket, ``writer`` may do anything (what the
    simulator and the tests' set-up need), ``nobody`` may do nothing. (moto calls the bucket
    HEAD ``s3:HeadBucket``; AWS and COS call it ``ListBucket`` and ``cos:HeadBucket``.)
    Authentication is switched on once they exist, so a wrong or unknown key gets a real 403.
    """

    REGION = "ap-guangzhou"

    def __init__(self, workdir: Path) -> None:
        import subprocess
        import sys
        import time

        import httpx

        self.log_path = workdir / "moto.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        # Another process (an xdist worker's server, a service) may take the free port before
        # moto binds it: then moto exits, and another port is tried.
        for attempt in range(3):
            self.port = _free_port()
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            deadline = time.monotonic() + 60
            while self.proc.poll() is None:
                try:
                    if httpx.get(self.url + "/moto-api/data.json", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto server did not start:\n{self.log_path.read_text()}")
                time.sleep(0.1)
            if self.proc.poll() is None:
                break
            if attempt == 2:
                raise RuntimeError(f"moto server exited:\n{self.log_path.read_text()}")
        iam = self._client("iam", "setup", "setup")
        self.keys: dict[str, tuple[str, str]] = {}
        policies = {
            "reader": ["s3:GetObject", "s3:ListBucket", "s3:HeadBucket"],
            "objects_only": ["s3:GetObject"],
            "writer": ["s3:*"],
            "nobody": [],
        }
        for user, actions in policies.items():
            iam.create_user(UserName=user)
            key = iam.create_access_key(UserName=user)["AccessKey"]
            self.keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
            if actions:
                iam.put_user_policy(
                    UserName=user,
                    PolicyName="s3",
                    PolicyDocument=json.dumps(
                        {
                            "Version": "2012-10-17",
                            "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
                        }
                    ),
                )
        httpx.post(self.url + "/moto-api/reset-auth", content=b"0", timeout=5).raise_for_status()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _client(self, service: str, key_id: str, secret: str) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=self.REGION,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}),
        )

    def s3(self, user: str = "writer") -> Any:
        """A synchronous boto3 S3 client acting as ``user``."""
        return self._client("s3", *self.keys[user])

    def bucket(self, name: str, objects: dict[str, bytes] | None = None) -> str:
        """Create a bucket (once) and put objects in it."""
        s3 = self.s3()
        try:
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": self.REGION})
        except s3.exceptions.BucketAlreadyOwnedByYou:
            pass
        for key, data in (objects or {}).items():
            s3.put_object(Bucket=name, Key=key, Body=data)
        return name

    def keys_of(self, bucket: str) -> list[str]:
        listed = self.s3().list_objects_v2(Bucket=bucket).get("Contents", [])
        return sorted(o["Key"] for o in listed)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except Exception:
                self.proc.kill()
                self.proc.wait(10)


class FailingProxy:
    """A plain HTTP proxy on a free loopback port in front of a server (moto's S3), for a COS
    outage: while ``failing``, every request is answered ``status`` (503 SlowDown: COS
    throttling) and counted in ``failed``; otherwise it is forwarded as it came, its Host header
    kept (SigV4 signs it), and counted in ``forwarded``."""

    def __init__(self, upstream: str, status: int = 503) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import httpx

        self.upstream, self.status = upstream, status
        self.failing = True
        self.failed = self.forwarded = 0
        self._lock = threading.Lock()
        client = httpx.Client(timeout=10)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy._lock:
                    failing = proxy.failing
                    if failing:
                        proxy.failed += 1
                    else:
                        proxy.forwarded += 1
                if failing:
                    error = b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"
                    self.send_response(proxy.status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(error)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(error)
                    return
                got = client.request(
                    self.command, proxy.upstream + self.path, headers=list(self.headers.items()), content=body
                )
                self.send_response(got.status_code)
                for name, value in got.headers.multi_items():
                    if name.lower() not in (
                        "transfer-encoding",
                        "connection",
                        "content-length",
                        "server",
                        "date",
                    ):
                        self.send_header(name, value)
                self.send_header("Content-Length", got.headers.get("content-length", str(len(got.content))))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(got.content)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._client = client
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()
