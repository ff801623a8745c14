"""The baseline for the ingest benchmark: a Litestar app that only reads the body and answers 200.

Served by exactly the uvicorn settings `gme-recwatch serve` uses (``server._config``, and its
event loop for the chosen stack), so the difference from the full service is verification,
tracking, metrics, tracing and logging. Under granian: `granian --interface asgi bare_app:app`.

    .venv/bin/python benchmarks/bare_app.py --port 18080 [--stack auto|python]
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import uvicorn
from litestar import Litestar, MediaType, Request, Response, get, post

from gme_recwatch.server import _config, event_loop_factory

_OK = b'{"code":0}'


@post("/callback", status_code=200)
async def callback(request: Request[Any, Any, Any]) -> Response[bytes]:
    await request.body()
    return Response(_OK, status_code=200, media_type=MediaType.JSON)


@get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


app = Litestar(
    route_handlers=[callback, healthz], openapi_config=None, logging_config=None, request_max_body_size=65536
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18080)
    p.add_argument("--stack", default="auto", choices=("auto", "python"))
    args = p.parse_args()
    server = uvicorn.Server(_config(app, args.host, args.port, 10.0, args.stack))
    with asyncio.Runner(loop_factory=event_loop_factory(args.stack)) as runner:
        runner.run(server.serve())


if __name__ == "__main__":
    main()
