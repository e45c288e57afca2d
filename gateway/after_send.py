"""Work a request leaves until its response has gone out.

A JSON answer's bookkeeping (its telemetry record's metrics, spans and access line; the
selector's note of what the worker now caches) changes nothing the client receives, yet done
before the response it was on every request's path: tens to ~150 us of a production request
(docs/performance.md; most visible when requests are far apart). A handler hands such work to
``run_after_send``; the ``after_send`` middleware runs it once the app has returned, which is
after the body was written, or when writing it failed, so it is never skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from litestar import Request
from litestar.types import ASGIApp, Receive, Scope, Send

__all__ = ["after_send", "run_after_send"]

_STATE = "switchyard_after_send"
log = logging.getLogger("switchyard.gateway")


def run_after_send(request: Request[Any, Any, Any], work: Callable[[], None]) -> None:
    """Run ``work`` once ``request``'s response is sent (or could not be), after any work
    handed over before it."""
    request.state.setdefault(_STATE, []).append(work)


def after_send(app: ASGIApp) -> ASGIApp:
    """The middleware running what a handler left with ``run_after_send``."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        finally:
            for work in scope.get("state", {}).pop(_STATE, ()):
                try:
                    work()
                except Exception:  # the answer is out: a bookkeeping fault must not become a 500
                    log.exception("after-send work failed")

    return middleware
