"""The one place where errors become HTTP: every failure leaves in OpenAI's shape."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from backends.errors import (
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    RequestTooLargeError,
    SwitchyardError,
)

log = logging.getLogger("switchyard.gateway")
_ENCODER = msgspec.json.Encoder()

# Litestar raises its own exceptions for routing and body limits; map them by status.
_LITESTAR_STATUS: dict[int, type[SwitchyardError]] = {
    404: NotFoundError,
    405: MethodNotAllowedError,
    413: RequestTooLargeError,
}


def error_payload(error: SwitchyardError) -> dict[str, dict[str, str | None]]:
    """``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {
        "message": error.message,
        "type": error.error_type,
        "param": error.param,
        "code": error.code,
    }}


def error_body(error: SwitchyardError) -> bytes:
    return _ENCODER.encode(error_payload(error))


REQUEST_ID_STATE = "switchyard_request_id"
"""Where a door leaves the request id on ``request.state``, so its errors carry it too."""
DOOR_STATE = "switchyard_door"
"""Where a request's door leaves its error renderer on ``request.state``: its errors leave in
the door's shape (OpenAI's by default)."""
PATH_ERRORS_STATE = "switchyard_path_errors"
"""On ``app.state``: error renderers by path, for errors raised before a door's handler runs
(a method the route does not allow)."""


def error_response(error: SwitchyardError, request_id: str | None = None,
                   render: Callable[[SwitchyardError], bytes] = error_body) -> Response[bytes]:
    """The error in the door's shape, with ``x-request-id`` as OpenAI's own errors carry it."""
    headers = {**error.headers, "x-request-id": request_id} if request_id else error.headers
    return Response(render(error), status_code=error.status_code,
                    media_type="application/json", headers=headers)


def _render(request: Request[Any, Any, Any]) -> Callable[[SwitchyardError], bytes]:
    door_render: Callable[[SwitchyardError], bytes] | None = request.state.get(DOOR_STATE)
    if door_render is not None:
        return door_render
    by_path: dict[str, Callable[[SwitchyardError], bytes]] = request.app.state.get(PATH_ERRORS_STATE) or {}
    render: Callable[[SwitchyardError], bytes] = by_path.get(request.url.path, error_body)
    return render


def request_id_of(request: Request[Any, Any, Any]) -> str:
    """The id the door gave this request, or a fresh one for a request no door took."""
    known = request.state.get(REQUEST_ID_STATE)
    return known if isinstance(known, str) else os.urandom(16).hex()


def handle_switchyard_error(request: Request[Any, Any, Any], exc: SwitchyardError) -> Response[bytes]:
    if exc.status_code >= 500:
        log.warning("request failed: %s (%s)", exc.message, exc.code)
    return error_response(exc, request_id_of(request), _render(request))


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    cls = _LITESTAR_STATUS.get(exc.status_code)
    request_id, render = request_id_of(request), _render(request)
    if cls is not None:
        messages = {404: "Unknown route.", 405: "Method not allowed on this route.",
                    413: "Request body is larger than the gateway accepts."}
        return error_response(cls(messages[exc.status_code]), request_id, render)
    if exc.status_code < 500:
        return error_response(InvalidRequestError(str(exc.detail)), request_id, render)
    log.error("unexpected HTTP exception: %s", exc.detail)
    return error_response(SwitchyardError("The gateway failed; the error was logged."), request_id, render)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    # a bug of ours: log it in full, tell the client as little as possible
    log.exception("unhandled error", exc_info=exc)
    return error_response(SwitchyardError("The gateway failed; the error was logged."), request_id_of(request),
                          _render(request))


EXCEPTION_HANDLERS: dict[int | type[Exception], Any] = {
    SwitchyardError: handle_switchyard_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
