"""The featureless floor: a Litestar pass-through proxy, one per upstream HTTP client.

No auth, no parsing, no routing: read the body, POST it upstream, return the upstream's bytes.
What one of these manages on one core is the most a gateway built on that client can hope
for, so the gateway's own cost is its distance from the aiohttp floor.

Run one: ``python -m bench.overhead.floor --client aiohttp --upstream http://127.0.0.1:30000``.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import httpx
import uvicorn
from litestar import Litestar, Request, Response, get, post

Forward = Callable[[bytes], Awaitable[tuple[int, bytes]]]
CLIENTS = ("httpx", "httpx_aiohttp", "aiohttp")
_CONNECTIONS = 100  # the same pool size for every client, so only the client differs
_HEADERS = {"content-type": "application/json"}


def _aiohttp_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=_CONNECTIONS),
                                 timeout=aiohttp.ClientTimeout(total=30))


@asynccontextmanager
async def open_forwarder(client: str, url: str) -> AsyncIterator[Forward]:
    """A function posting a body to ``url`` with ``client``; the client lives as long as the block."""
    if client == "aiohttp":
        async with _aiohttp_session() as session:
            async def via_aiohttp(body: bytes) -> tuple[int, bytes]:
                async with session.post(url, data=body, headers=_HEADERS) as response:
                    return response.status, await response.read()
            yield via_aiohttp
        return
    limits = httpx.Limits(max_connections=_CONNECTIONS, max_keepalive_connections=_CONNECTIONS)
    transport: httpx.AsyncBaseTransport
    if client == "httpx_aiohttp":
        from httpx_aiohttp import AiohttpTransport  # optional: only this floor needs it

        transport = AiohttpTransport(client=_aiohttp_session)
    else:
        transport = httpx.AsyncHTTPTransport(limits=limits)
    async with httpx.AsyncClient(transport=transport, limits=limits, timeout=30) as http:
        async def via_httpx(body: bytes) -> tuple[int, bytes]:
            response = await http.post(url, content=body, headers=_HEADERS)
            return response.status_code, response.content
        yield via_httpx


def create_floor_app(client: str, upstream: str) -> Litestar:
    """The proxy app: ``POST /v1/chat/completions`` forwarded as is, plus ``GET /health``."""
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_forwarder(client, upstream.rstrip("/") + "/v1/chat/completions") as forward:
            app.state.forward = forward
            yield

    @post("/v1/chat/completions", status_code=200)
    async def proxy(request: Request[Any, Any, Any]) -> Response[bytes]:
        forward: Forward = request.app.state.forward
        status, body = await forward(await request.body())
        return Response(body, status_code=status, media_type="application/json")

    @get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return Litestar(route_handlers=[proxy, health], lifespan=[lifespan], logging_config=None,
                    openapi_config=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", choices=CLIENTS, required=True)
    parser.add_argument("--upstream", required=True, help="base URL of the upstream")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # the same server settings as `switchyard serve`: uvloop, httptools, no access log
    uvicorn.run(create_floor_app(args.client, args.upstream), host="127.0.0.1", port=args.port,
                loop="uvloop", http="httptools", access_log=False, log_level="warning", backlog=4096)


if __name__ == "__main__":
    main()
