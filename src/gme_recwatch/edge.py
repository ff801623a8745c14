"""The connection guard in front of the HTTP parser, on both listeners.

uvicorn alone holds whatever a client sends before a request is complete: httptools buffers a
header line that never ends, there is no time limit on sending headers, and every connection is
accepted until the process runs out of file descriptors. Measured (docs/security.md): five
connections streaming header lines took the process from 85 to 649 MiB, and 1,100 slow-header
connections made both ports unreachable. The guard is a subclass of uvicorn's own protocol
that looks at the raw bytes of each request head before the parser does:

- a head (request line and headers) larger than ``max_header_bytes``, or with more than
  ``max_header_count`` lines, is answered 431 and the connection closed;
- a head not complete within ``header_timeout_seconds`` of the connection (or of the request's
  first byte on a kept-alive connection) is answered 408 and the connection closed;
- past ``max_connections`` open connections, the one that has waited longest for a request head
  (a slow or silent client, or an idle kept-alive one) is closed to make room, as nginx reuses
  its connections; when every connection is busy with a request, the new one is answered 503
  and closed at once. The descriptors in use stay bounded, the other listener (probes,
  /metrics) stays reachable, and a sender that sends its head at once is not crowded out by
  connections that never do;
- an idle kept-alive connection is closed after ``keepalive_timeout_seconds`` (uvicorn's timer).

Every refusal is counted in ``gme_recording_http_connections_refused_total{listener, reason}``;
open connections are ``gme_recording_http_connections{listener}``. Nothing here logs per
connection: a flood would otherwise become a log flood.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from uvicorn.protocols.http.h11_impl import H11Protocol

from .metrics import Metrics

_END_OF_HEAD: Final = (b"\r\n\r\n", b"\n\n")


def _answer(status: int, reason: str) -> bytes:
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(reason)}\r\nconnection: close\r\n\r\n{reason}"
    ).encode("ascii")


_TOO_LARGE: Final = _answer(431, "Request Header Fields Too Large")
_TIMEOUT: Final = _answer(408, "Request Timeout")
_BUSY: Final = _answer(503, "Service Unavailable")


def base_protocol(stack: str) -> type[asyncio.Protocol]:
    """uvicorn's protocol for the stack: httptools when installed (``auto``), else h11."""
    if stack != "python":
        try:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        except ImportError:  # no httptools wheel on this platform: h11, same behaviour
            pass
        else:
            return HttpToolsProtocol
    return H11Protocol


def guarded_protocol(
    stack: str,
    listener: str,
    metrics: Metrics,
    *,
    max_header_bytes: int,
    max_header_count: int,
    header_timeout: float,
    max_connections: int,
) -> type[asyncio.Protocol]:
    """A protocol class for one listener: uvicorn's, with the limits above in front of it."""
    base: Any = base_protocol(stack)
    refused = {
        reason: metrics.connections_refused.labels(listener, reason)
        for reason in ("too_many_connections", "header_too_large", "too_many_headers", "header_timeout")
    }
    gauge = metrics.connections_open.labels(listener)
    open_connections = [0]  # this listener's, shared by its connections (one event loop)
    # Connections waiting for a request head, oldest first (dicts keep insertion order).
    waiting: dict[Any, None] = {}

    class Guarded(base):  # type: ignore[misc]
        # Per connection: bytes and lines of the current head (None: not reading a head), the
        # tail of the previous chunk (a terminator may straddle two), the head's deadline.
        _head: int | None
        _lines: int
        _tail: bytes
        _timer: asyncio.TimerHandle | None
        _refused: bool
        _evicted: bool

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self._head, self._lines, self._tail, self._timer = 0, 0, b"", None
            self._refused = self._evicted = False
            if open_connections[0] >= max_connections:
                victim = next(iter(waiting), None)
                if victim is None:  # all busy with requests: refused before uvicorn knows of it
                    self._refused = True
                    refused["too_many_connections"].inc()
                    transport.write(_BUSY)  # type: ignore[attr-defined]
                    transport.close()
                    return
                victim._evict()
            open_connections[0] += 1
            waiting[self] = None
            gauge.inc()
            super().connection_made(transport)
            self._arm()  # a connection that never sends a byte is a slow head too

        def connection_lost(self, exc: Exception | None) -> None:
            if self._refused:
                return
            waiting.pop(self, None)
            if not self._evicted:
                open_connections[0] -= 1
            gauge.dec()
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._timer is None:
                self._timer = self.loop.call_later(header_timeout, self._head_timed_out)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _head_timed_out(self) -> None:
            self._timer = None
            if self._head is not None and not self.transport.is_closing():
                self._refuse("header_timeout", _TIMEOUT)

        def _evict(self) -> None:
            """Make room for a new connection: this one has waited longest for a head. It no
            longer counts as open (its descriptor goes with the close)."""
            waiting.pop(self, None)
            self._evicted = True
            open_connections[0] -= 1
            if self._head:  # a head begun and not finished: say why
                self._refuse("too_many_connections", _BUSY)
                return
            refused["too_many_connections"].inc()  # idle: closed as a keep-alive timeout would
            self._head = None
            self._disarm()
            self.transport.close()

        def _refuse(self, reason: str, answer: bytes) -> None:
            refused[reason].inc()
            self._head = None
            self._disarm()
            self.transport.write(answer)
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._head is not None:
                if not self._measure(data):
                    return
            super().data_received(data)

        def _measure(self, data: bytes) -> bool:
            """Count a chunk of the head against the limits; False when it was refused."""
            assert self._head is not None
            self._arm()
            seen = self._tail + data
            ends = [i + len(t) for t in _END_OF_HEAD if (i := seen.find(t)) >= 0]
            head = seen[: min(ends)] if ends else seen
            new = len(head) - len(self._tail)
            self._head += max(new, 0)
            self._lines += head.count(b"\n") - self._tail.count(b"\n")
            if self._head > max_header_bytes:
                self._refuse("header_too_large", _TOO_LARGE)
                return False
            # Newlines of the request line and of the blank line that ends the head are not headers.
            if self._lines > max_header_count + 2:
                self._refuse("too_many_headers", _TOO_LARGE)
                return False
            if ends:  # the head is complete: the body is the route's to limit
                self._head, self._tail = None, b""
                waiting.pop(self, None)
                self._disarm()
            else:
                self._tail = seen[-3:]
            return True

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # The next request's head starts here; its clock at its first byte (until then
            # the connection is idle, and the keep-alive timeout applies).
            self._head, self._lines, self._tail = 0, 0, b""
            self._disarm()
            if not self.transport.is_closing():
                waiting[self] = None  # idle now: the first to go when room is needed

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded
