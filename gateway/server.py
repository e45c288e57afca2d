"""Run the app under uvicorn (uvloop + httptools), with TCP_NODELAY on every client socket.

Without TCP_NODELAY, Nagle's algorithm holds small SSE writes back until the previous one
is acknowledged, adding ~20-40 ms to time to first token (seen with SGLang's Rust router).
asyncio and uvloop set it today; this makes it explicit and tested, not an accident.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from backends.errors import HeadersTooLargeError, InvalidRequestError, SwitchyardError
from gateway.app import create_app
from gateway.errors import error_body
from gateway.gc_tuning import tune_for_serving
from gateway.settings import Settings


def set_nodelay(transport: asyncio.BaseTransport) -> bool:
    """Disable Nagle on a TCP transport; False for a transport without a TCP socket."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return True


MAX_HEADER_BYTES = 64 * 1024
"""Request line and headers together; past it the request gets 431 (uvicorn sets no limit)."""


def _error_response(status: int, reason: bytes, error: SwitchyardError) -> bytes:
    body = error_body(error)
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % (status, reason, len(body))) + body


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with three changes at the socket level: TCP_NODELAY on each
    accepted connection, a bound on header size (431), and OpenAI-shaped errors for requests
    the HTTP parser refuses (uvicorn answers those with its own text/plain body)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        set_nodelay(transport)
        super().connection_made(transport)
        self._header_bytes = 0

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_HEADER_BYTES:
            # an exception in a parser callback stops httptools, which uvicorn answers through
            # send_400_response: the flag turns that answer into a 431
            raise HeadersTooLargeError(f"The request's headers are larger than {MAX_HEADER_BYTES} bytes.")

    def send_400_response(self, msg: str) -> None:
        if self._header_bytes > MAX_HEADER_BYTES:
            error: SwitchyardError = HeadersTooLargeError(
                f"The request's headers are larger than {MAX_HEADER_BYTES} bytes.")
            self.transport.write(_error_response(431, b"Request Header Fields Too Large", error))
        else:
            error = InvalidRequestError("The request is not valid HTTP/1.1.")
            self.transport.write(_error_response(400, b"Bad Request", error))
        self.transport.close()


def app_from_env() -> Any:
    """App factory for the server's worker processes, which cannot receive Python objects."""
    app = create_app(Settings.from_env())
    tune_for_serving()  # this process now only serves: see gateway/gc_tuning.py
    return app


def _options(log_level: str) -> dict[str, Any]:
    return {
        "loop": "uvloop",
        "http": GatewayHttpProtocol,
        "access_log": False,  # the gateway writes its own structured access line
        "log_level": log_level,
        "backlog": 4096,
        "timeout_keep_alive": 75,
    }


def uvicorn_config(app: Any, host: str, port: int, log_level: str = "warning") -> uvicorn.Config:
    """The production server configuration for an app object run in this process."""
    return uvicorn.Config(app, host=host, port=port, **_options(log_level))


def serve(settings: Settings, host: str, port: int, workers: int, log_level: str = "info",
          server: str = "uvicorn") -> None:
    """Run until SIGINT/SIGTERM; ``workers`` > 1 runs processes sharing the port.

    uvicorn + uvloop + httptools is the default: in clean runs of bench/overhead it matched
    granian on non-streamed requests and led on streams (docs/performance.md), and its
    protocol sets TCP_NODELAY explicitly. ``server="granian"`` is there to compare. Worker
    processes build their app from ``SWITCHYARD_*`` variables (``app_from_env``), so the
    settings travel through the environment to them.
    """
    os.environ["SWITCHYARD_POLICY"] = str(settings.policy_path)
    os.environ["SWITCHYARD_MAX_BODY_BYTES"] = str(settings.max_body_bytes)
    if settings.classifier_path is not None:
        os.environ["SWITCHYARD_CLASSIFIER"] = str(settings.classifier_path)
    if server == "uvicorn":
        uvicorn.run("gateway.server:app_from_env", factory=True, host=host, port=port,
                    workers=workers, **_options(log_level))
        return
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels

    Granian("gateway.server:app_from_env", address=host, port=port, interface=Interfaces.ASGI,
            factory=True, workers=workers, loop=Loops.uvloop, backlog=4096,
            log_level=LogLevels(log_level)).serve()
