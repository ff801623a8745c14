"""Runs both listeners in one process and one event loop, and shuts down gracefully.

On SIGTERM (or SIGINT) readiness drops at once, both listeners stop accepting connections,
requests in flight are answered (up to ``shutdown_timeout_seconds``), then the final state
snapshot is written and the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
from collections.abc import Callable, Generator
from typing import Any, Final

import uvicorn

from .app import build_apps
from .edge import guarded_protocol
from .service import Service
from .settings import without_password
from .stores import SharedStore, StoreUnavailable


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to :func:`run` (two servers share it)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class ListenError(RuntimeError):
    """A listener could not start (uvicorn has already logged why, e.g. the port is taken)."""


async def _serve(server: _Server) -> None:
    # uvicorn ends a failed start with SystemExit inside its task, which would escape the
    # event loop as "Task exception was never retrieved" before run() could say what failed.
    try:
        await server.serve()
    except SystemExit as exc:
        raise ListenError(f"uvicorn exited with {exc.code}") from None


def _config(
    app: Any,
    host: str,
    port: int,
    timeout: float,
    stack: str = "auto",
    protocol: type[asyncio.Protocol] | None = None,
    keepalive: float = 30,
) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        access_log=False,
        log_config=None,
        # "auto": httptools when installed (a dependency), else h11; see event_loop() for uvloop.
        http=protocol or ("h11" if stack == "python" else "auto"),
        server_header=False,
        timeout_graceful_shutdown=max(1, int(timeout)),
        # Tencent's sender keeps connections alive between callbacks.
        timeout_keep_alive=keepalive,  # type: ignore[arg-type]  # uvicorn takes a float too
    )


# Descriptors kept for everything but the listeners' connections: the store, COS, files.
RESERVED_DESCRIPTORS: Final = 64


def connection_caps(service: Service, nofile: int | None = None) -> tuple[int, int]:
    """(callback, admin) caps on open connections: the settings, lowered to fit the process's
    file limit so that a flood of one listener never leaves the other one unreachable."""
    s = service.settings
    if nofile is None:
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    callback, admin = s.max_connections, s.admin_max_connections
    if nofile != resource.RLIM_INFINITY and callback + admin + RESERVED_DESCRIPTORS > nofile:
        admin = max(1, min(admin, nofile // 8))
        callback = max(1, nofile - admin - RESERVED_DESCRIPTORS)
        service.log.warning(
            "connection_caps_lowered",
            file_limit=nofile,
            max_connections=callback,
            admin_max_connections=admin,
        )
    return callback, admin


def _configs(service: Service, apps: tuple[Any, Any]) -> list[uvicorn.Config]:
    """Both listeners' uvicorn configurations, each behind its own connection guard."""
    s = service.settings
    caps = connection_caps(service)
    listeners = (("callback", s.host, s.port), ("admin", s.admin_host, s.admin_port))
    return [
        _config(
            app,
            host,
            port,
            s.shutdown_timeout_seconds,
            s.http_stack,
            guarded_protocol(
                s.http_stack,
                name,
                service.metrics,
                max_header_bytes=s.max_header_bytes,
                max_header_count=s.max_header_count,
                header_timeout=s.header_timeout_seconds,
                max_connections=cap,
            ),
            s.keepalive_timeout_seconds,
        )
        for app, (name, host, port), cap in zip(apps, listeners, caps, strict=True)
    ]


def event_loop_factory(stack: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop for the `auto` stack when uvloop is installed; None: asyncio's own."""
    if stack == "python":
        return None
    try:
        import uvloop
    except ImportError:  # a platform without uvloop wheels: asyncio, same behaviour, slower
        return None
    return uvloop.new_event_loop


def check(service: Service) -> None:
    """Build what :func:`run` builds before it listens (both apps, both listeners' uvicorn
    configuration, the event loop) without listening or touching the state: `serve --check`.
    It imports every module a start imports (tests/e2e/test_image.py runs it in the image)."""
    s = service.settings
    for config in _configs(service, build_apps(service)):
        config.load()
    factory = event_loop_factory(s.http_stack)
    if factory is not None:
        factory().close()


async def check_online(service: Service) -> tuple[list[str], str | None]:
    """`serve --check --online`: what the configuration reaches, looked at for real -- the store
    (connect, authenticate, version, scripts load), every COS bucket (HEAD, with the configured
    key), the keys -- without writing anything. (summary lines, what failed or None)."""
    s = service.settings
    lines: list[str] = []
    store = service.store
    if isinstance(store, SharedStore):
        try:
            described = await store.check_online()
        except StoreUnavailable as exc:
            return lines, f"store {without_password(s.redis_url)}: {exc}"
        finally:
            await store.close()
        first, *warnings = described.split("\n")
        lines.append(f"store     : {without_password(s.redis_url)} ({first})")
        lines += [f"store     : {w}" for w in warnings]
    else:
        lines.append(
            "store     : this process's memory"
            + (f", snapshots to {s.state_file}" if s.state_file else ", no snapshots")
        )
    ring = service.keys.current
    apps = ring.app_ids()
    lines.append(
        f"keys      : {len(ring)} SecretKey{'' if len(ring) == 1 else 's'}; "
        f"{len(apps)} app{'' if len(apps) == 1 else 's'} with keys of their own"
        + (f" ({', '.join(map(str, apps))})" if apps else "")
        + ("; a key for every app" if ring.keys_for(None) else "")
    )
    if service.reconciler is None:
        lines.append("COS       : no bucket (no lookups)")
    else:
        checker = service.reconciler.checker
        cfg = checker.config
        buckets = sorted({b for b in (cfg.default_bucket, *cfg.buckets.values()) if b})
        await checker.open()
        try:
            for bucket in buckets:
                problem = await checker.bucket_problem(bucket)
                if problem is not None:
                    return lines, f"COS {problem}"
        finally:
            await checker.close()
        lines.append(
            f"COS       : {', '.join(buckets)} in {cfg.region} at {cfg.endpoint_url}, "
            f"{'with a key' if cfg.credentials else 'anonymous'}: reachable"
        )
    lines.append(
        f"deadlines : stuck after {s.max_recording_seconds} s, upload missing after "
        f"{s.upload_grace_seconds} s, start lost after {s.reorder_window_seconds} s, "
        f"forgotten after {s.retention_seconds} s"
    )
    return lines, None


async def run(service: Service) -> None:
    s = service.settings
    callback_app, admin_app = build_apps(service)
    listeners = [(callback_app, s.host, s.port), (admin_app, s.admin_host, s.admin_port)]
    servers = [_Server(config) for config in _configs(service, (callback_app, admin_app))]
    await service.start()  # before anything listens: ready means the state is back
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(_serve(srv)) for srv in servers]
    while not all(srv.started for srv in servers):
        failed = [f"{host}:{port}" for t, (_, host, port) in zip(tasks, listeners, strict=True) if t.done()]
        if failed:  # e.g. a port already in use: name that one only
            for srv in servers:
                srv.should_exit = True
            await asyncio.gather(*tasks, return_exceptions=True)
            names = {s.port: "GME_RECWATCH_PORT", s.admin_port: "GME_RECWATCH_ADMIN_PORT"}
            raise SystemExit(
                "could not listen on "
                + " and ".join(f"{addr} ({names.get(int(addr.rsplit(':', 1)[1]), 'port')})" for addr in failed)
                + "; move the listeners with GME_RECWATCH_PORT and GME_RECWATCH_ADMIN_PORT"
            )
        await asyncio.sleep(0.02)
    service.start_background()
    service.log.info(
        "started",
        callback=f"http://{s.host}:{s.port}{s.callback_path}",
        admin=f"http://{s.admin_host}:{s.admin_port}",
        segments=service.readiness().segments,  # never a store round trip: it may be down
        settings=s.redacted(),
    )
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    service.log.info("stopping")
    service.ready = False
    for srv in servers:
        srv.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)
    stopper.cancel()
    await service.stop()
    service.log.info("stopped")
