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

from gateway.app import create_app
from gateway.settings import Settings


def set_nodelay(transport: asyncio.BaseTransport) -> bool:
    """Disable Nagle on a TCP transport; False for a transport without a TCP socket."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return True


class NoDelayHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, setting TCP_NODELAY as each connection is accepted."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        set_nodelay(transport)
        super().connection_made(transport)


def app_from_env() -> Any:
    """App factory for uvicorn's worker processes, which cannot receive Python objects."""
    return create_app(Settings.from_env())


def _options(log_level: str) -> dict[str, Any]:
    return {
        "loop": "uvloop",
        "http": NoDelayHttpToolsProtocol,
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
