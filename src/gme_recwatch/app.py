"""Both listeners' ASGI apps, instrumented: the callback listener (:mod:`.callback`), the only
one exposed to the internet, and the admin listener (:mod:`.admin`)."""

from __future__ import annotations

from litestar.types import ASGIApp

from .admin import build_admin_app
from .callback import build_callback_app
from .instrument import instrument
from .service import Service


def build_apps(service: Service) -> tuple[ASGIApp, ASGIApp]:
    return (
        instrument(build_callback_app(service), service.metrics, "callback"),
        instrument(build_admin_app(service), service.metrics, "admin"),
    )
