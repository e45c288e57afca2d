"""Run the app under uvicorn (uvloop + httptools): TCP_NODELAY on every client socket, and the
policy's connection bounds (``bounds.header_read_s``, ``keep_alive_s``, ``connections_per_address``).

Without TCP_NODELAY, Nagle's algorithm holds small SSE writes back until the previous one
is acknowledged, adding ~20-40 ms to time to first token (seen with SGLang's Rust router).
asyncio and uvloop set it today; this makes it explicit and tested, not an accident.

uvicorn has no timeout for reading a request's head: a client that opens a connection and
sends a partial request line, or a header a minute, holds a descriptor forever, and a
thousand of them lock every other client out (slowloris). ``GatewayHttpProtocol`` closes a
connection whose head is not complete within ``header_read_s`` and refuses connections over
``connections_per_address`` from one address; the server's sockets outlive policies, so
these three bounds are read from the policy file once, at start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from litestar import Litestar
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState
from uvicorn.supervisors import Multiprocess

from backends.errors import (
    HeadersTooLargeError,
    InvalidRequestError,
    RateLimitedError,
    RequestTimeoutError,
    SwitchyardError,
)
from gateway.app import create_app
from gateway.errors import error_body
from gateway.gc_tuning import tune_for_serving
from gateway.settings import Settings
from policies.bounds_config import BoundsConfig
from policies.loader import PolicyError, load_policy

log = logging.getLogger("switchyard.server")

BOUND_COUNTER = "switchyard.bound_exceeded"
"""Key of the lifespan state entry holding the bound counter (see ``ServedApp``)."""
_DEFAULTS = BoundsConfig()


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


@dataclass(frozen=True, slots=True)
class ServerBounds:
    """The connection bounds of ``policies.bounds_config.BoundsConfig``, fixed for a process."""

    header_read_s: float = _DEFAULTS.header_read_s
    keep_alive_s: float = _DEFAULTS.keep_alive_s
    connections_per_address: int = _DEFAULTS.connections_per_address

    @classmethod
    def of(cls, bounds: BoundsConfig) -> ServerBounds:
        return cls(bounds.header_read_s, bounds.keep_alive_s, bounds.connections_per_address)

    @classmethod
    def from_policy_file(cls, path: str | Path) -> ServerBounds:
        """The policy's bounds; the defaults if the file does not load (the app then stays
        unready and says why, and a later valid policy's connection bounds need a restart)."""
        try:
            return cls.of(load_policy(path).bounds)
        except (PolicyError, OSError) as exc:
            log.warning("connection bounds: the policy did not load (%s); using the defaults", exc)
            return cls()


class ConnectionGuard:
    """The connection bounds of one server process: open connections per client address,
    and the connections whose request head is late.

    A timer per request would cost a ``call_later`` and a ``cancel`` (1-5 µs); instead a
    connection waiting for a head is a dict entry with its deadline (~0.2 µs to add and
    drop), and one sweep, running only while some connection waits, closes the late ones
    every ``sweep_s``: a connection is closed between ``header_read_s`` and
    ``header_read_s + sweep_s`` after its head began.
    """

    def __init__(self, bounds: ServerBounds) -> None:
        self.bounds = bounds
        self.sweep_s = min(1.0, bounds.header_read_s / 4)
        self._open: dict[str, int] = {}
        self._waiting: dict[GatewayHttpProtocol, float] = {}
        self._sweep: asyncio.TimerHandle | None = None

    def admit(self, address: str) -> bool:
        """Count a new connection in; False (and not counted) if its address is at the cap."""
        count = self._open.get(address, 0)
        if self.bounds.connections_per_address and count >= self.bounds.connections_per_address:
            return False
        self._open[address] = count + 1
        return True

    def leave(self, address: str) -> None:
        """An admitted connection closed."""
        count = self._open.pop(address, 0) - 1
        if count > 0:
            self._open[address] = count

    def open_from(self, address: str) -> int:
        """Connections open from ``address`` now."""
        return self._open.get(address, 0)

    def await_head(self, protocol: GatewayHttpProtocol, loop: asyncio.AbstractEventLoop) -> None:
        """``protocol`` waits for a request head from now on (kept if it already waits)."""
        if protocol not in self._waiting:
            self._waiting[protocol] = loop.time() + self.bounds.header_read_s
            if self._sweep is None:
                self._sweep = loop.call_later(self.sweep_s, self._close_late, loop)

    def head_done(self, protocol: GatewayHttpProtocol) -> None:
        """The head arrived, or the connection is gone."""
        self._waiting.pop(protocol, None)

    def _close_late(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        late = [protocol for protocol, deadline in self._waiting.items() if deadline <= now]
        for protocol in late:
            del self._waiting[protocol]
            protocol.head_timed_out()
        self._sweep = loop.call_later(self.sweep_s, self._close_late, loop) if self._waiting else None


class GatewayConfig(uvicorn.Config):
    """uvicorn's configuration plus the connection bounds and their per-process guard.

    It is what the supervisor hands (pickled) to each worker process, so every process gets
    the bounds and a guard of its own.
    """

    def __init__(self, app: Any, *, bounds: ServerBounds | None = None, **options: Any) -> None:
        bounds = bounds or ServerBounds()
        super().__init__(app, timeout_keep_alive=bounds.keep_alive_s, **options)  # type: ignore[arg-type]
        self.bounds = bounds
        self.guard = ConnectionGuard(bounds)


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with changes at the socket level: TCP_NODELAY on each
    accepted connection, a bound on header size (431), OpenAI-shaped errors for requests the
    HTTP parser refuses (uvicorn answers those with its own text/plain body), and the
    connection bounds of ``GatewayConfig``: a request head must be complete within
    ``header_read_s`` (408, then closed), and an address over ``connections_per_address`` is
    answered 429 and closed. With a plain ``uvicorn.Config`` (no guard) those two are off.
    """

    def __init__(self, config: uvicorn.Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._guard: ConnectionGuard | None = getattr(config, "guard", None)
        self._address: str | None = None
        self._header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        set_nodelay(transport)
        super().connection_made(transport)
        guard = self._guard
        if guard is None:
            return
        if self.client is not None:
            if not guard.admit(self.client[0]):
                self._count_bound("connections_per_address")
                error = RateLimitedError("Too many connections from your address.", retry_after_s=1)
                transport.write(_error_response(429, b"Too Many Requests", error))
                transport.close()
                return
            self._address = self.client[0]
        # from the connection on: a client that connects and sends nothing is bounded too
        guard.await_head(self, self.loop)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._guard is not None:
            self._guard.head_done(self)
            if self._address is not None:
                self._guard.leave(self._address)
                self._address = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        if self._guard is not None:  # a later request on a kept-alive connection
            self._guard.await_head(self, self.loop)

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._guard is not None:
            self._guard.head_done(self)
        super().on_headers_complete()

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

    def head_timed_out(self) -> None:
        """Called by the guard: the request head did not complete within ``header_read_s``."""
        if self.transport is None or self.transport.is_closing():
            return
        self._count_bound("header_read_s")
        if self.cycle is not None and not self.cycle.response_complete:
            # a pipelined head stalls behind a response still going out: end after that one
            self.cycle.keep_alive = False
            return
        seconds = self._guard.bounds.header_read_s if self._guard else 0.0
        error = RequestTimeoutError(f"The request's headers did not arrive within {seconds:g}s.")
        self.transport.write(_error_response(408, b"Request Timeout", error))
        self.transport.close()

    def _count_bound(self, bound: str) -> None:
        counter = self.app_state.get(BOUND_COUNTER)
        if counter is not None:
            counter(bound)


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class ServedApp:
    """The gateway app as this module's servers run it, with one addition at start-up.

    uvicorn shares the ASGI lifespan ``state`` with every connection's protocol; on the
    lifespan event this puts the bound counter there (``BOUND_COUNTER``), so the bounds the
    protocol enforces count in ``switchyard_bound_exceeded_total`` like the upstream ones.
    """

    def __init__(self, app: Litestar) -> None:
        self.app = app
        metrics = app.state.gateway.telemetry.metrics
        self._count: Callable[[str], None] = lambda bound: metrics.child(metrics.bound_exceeded, bound).inc()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            scope.setdefault("state", {})[BOUND_COUNTER] = self._count
        await self.app(scope, receive, send)  # type: ignore[arg-type]


def app_from_env() -> Any:
    """App factory for the server's worker processes, which cannot receive Python objects."""
    app = create_app(Settings.from_env())
    tune_for_serving()  # this process now only serves: see gateway/gc_tuning.py
    return ServedApp(app)


def _options(log_level: str) -> dict[str, Any]:
    return {
        "loop": "uvloop",
        "http": GatewayHttpProtocol,
        "access_log": False,  # the gateway writes its own structured access line
        "log_level": log_level,
        "backlog": 4096,
    }


def uvicorn_config(app: Any, host: str, port: int, log_level: str = "warning",
                   bounds: ServerBounds | None = None) -> GatewayConfig:
    """The production server configuration for an app object run in this process."""
    served = ServedApp(app) if isinstance(app, Litestar) else app
    return GatewayConfig(served, host=host, port=port, bounds=bounds, **_options(log_level))


def serve(settings: Settings, host: str, port: int, workers: int, log_level: str = "info",
          server: str = "uvicorn") -> None:
    """Run until SIGINT/SIGTERM; ``workers`` > 1 runs processes sharing the port.

    uvicorn + uvloop + httptools is the default: in clean runs of bench/overhead it matched
    granian on non-streamed requests and led on streams (docs/performance.md), and its
    protocol sets TCP_NODELAY and the connection bounds. ``server="granian"`` is there to
    compare: it gets ``header_read_s`` (granian's own ``header_read_timeout``) but neither an
    idle keep-alive time nor a per-address cap, which granian does not offer. Worker
    processes build their app from ``SWITCHYARD_*`` variables (``app_from_env``), so the
    settings travel through the environment to them.
    """
    os.environ["SWITCHYARD_POLICY"] = str(settings.policy_path)
    os.environ["SWITCHYARD_MAX_BODY_BYTES"] = str(settings.max_body_bytes)
    if settings.classifier_path is not None:
        os.environ["SWITCHYARD_CLASSIFIER"] = str(settings.classifier_path)
    bounds = ServerBounds.from_policy_file(settings.policy_path)
    if server == "uvicorn":
        _run_uvicorn(GatewayConfig("gateway.server:app_from_env", factory=True, host=host, port=port,
                                   workers=workers, bounds=bounds, **_options(log_level)))
        return
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    Granian("gateway.server:app_from_env", address=host, port=port, interface=Interfaces.ASGI,
            factory=True, workers=workers, loop=Loops.uvloop, backlog=4096,
            http1_settings=HTTP1Settings(header_read_timeout=max(1, round(bounds.header_read_s * 1000))),
            log_level=LogLevels(log_level)).serve()


def _run_uvicorn(config: GatewayConfig) -> None:
    """``uvicorn.run`` for a config built here (``uvicorn.run`` builds its own ``Config``)."""
    server = uvicorn.Server(config)
    try:
        if config.workers > 1:
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        else:
            server.run()
    except KeyboardInterrupt:
        pass
    if config.workers == 1 and not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE
