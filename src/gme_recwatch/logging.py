"""structlog set-up: JSON lines in containers, readable console output on a terminal.

Every log line, ours or a library's through the stdlib bridge, passes :func:`redact`, which
drops fields that could carry a secret, a signature or a raw body. Our own code never puts
them there in the first place; the processor is the second lock on the door.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from opentelemetry import trace

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_SENSITIVE = frozenset(
    {
        "signature",
        "secret",
        "secret_key",
        "key",
        "keys",
        "body",
        "raw_body",
        "authorization",
        "headers",
        "password",
        "token",
    }
)


QUIET_LOGGERS = ("botocore", "aiobotocore", "aiohttp", "s3transfer", "urllib3")


def level_number(name: str) -> int:
    return _LEVELS[name]


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event_dict.pop("color_message", None)  # uvicorn's ANSI-coloured duplicate of `event`
    for name in _SENSITIVE.intersection(event_dict):
        event_dict[name] = "[redacted]"
    return event_dict


def add_trace_ids(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict["trace_id"] = format(ctx.trace_id, "032x")
        event_dict["span_id"] = format(ctx.span_id, "016x")
    return event_dict


def configure(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    """Configure structlog and route stdlib logging (uvicorn, litestar) through it."""
    stream = stream or sys.stdout
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False) if fmt == "console" else structlog.processors.JSONRenderer()
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_ids,
        redact,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level_number(level)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_number(level))
    # Library loggers propagate to the root handler above instead of printing on their own.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "litestar"):
        lib = logging.getLogger(name)
        lib.handlers[:] = []
        lib.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    # The COS client's debug lines print request headers, the API key's id in Authorization
    # among them, as plain text that `redact` cannot see: they stay quiet at every level.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level_number(level), logging.WARNING))


def get_logger(name: str = "gme_recwatch") -> Any:
    return structlog.get_logger(name)
