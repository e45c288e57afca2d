"""The featureless floor: a Litestar pass-through proxy, one per upstream HTTP client.

No auth, no parsing, no routing: read the body, POST it upstream, return the upstream's bytes.
What one of these manages on one core is the most a gateway built on that client can hope
for, so the gateway's own cost is its distance from the aiohttp floor. With the aiohttp
client, a body asking for a stream (``"stream": true``, found as bytes) gets the upstream's
bytes relayed as they arrive, so a streamed request's time to first token has a floor too
(``bench.overhead.alone``).

Run one: ``python -m bench.overhead.floor --client aiohttp --upstream http://127.0.0.1:30000``.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import httpx
import uvicorn
from litestar import Litestar, Request, Response, get, post
from litestar.response import Stream

Forward = Callable[[bytes], Awaitable[tuple[int, bytes]]]
CLIENTS = ("httpx", "httpx_aiohttp", "aiohttp")
_CONNECTIONS = 100  # the same pool size for every client, so only the client differs
_HEADERS = {"content-type": "application/json"}
_STREAMED = re.compile(rb'"stream"\s*:\s*true')


def _aiohttp_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=_CONNECTIONS),
                                 timeout=aiohttp.ClientTimeout(total=30))


@asynccontextmanager
async def open_forwarder(client: str, url: str) -> AsyncIterator[tuple[Forward, aiohttp.ClientSession | None]]:
    """A function posting a body to ``url`` with ``client``, and the aiohttp session that relays
    streams (``None`` for the httpx clients); both live as long as the block."""
    if client == "aiohttp":
        async with _aiohttp_session() as session:
            async def via_aiohttp(body: bytes) -> tuple[int, bytes]:
                async with session.post(url, data=body, headers=_HEADERS) as response:
                    return response.status, await response.read()
            yield via_aiohttp, session
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
        yield via_httpx, None


def create_floor_app(client: str, upstream: str) -> Litestar:
    """The proxy app: ``POST /v1/chat/completions`` forwarded as is, plus ``GET /health``."""
    url = upstream.rstrip("/") + "/v1/chat/completions"

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_forwarder(client, url) as (forward, streams):
            app.state.forward, app.state.streams = forward, streams
            yield

    @post("/v1/chat/completions", status_code=200)
    async def proxy(request: Request[Any, Any, Any]) -> Response[bytes]:
        body = await request.body()
        streams: aiohttp.ClientSession | None = request.app.state.streams
        if streams is not None and _STREAMED.search(body):
            return await _relay(streams, url, body)
        forward: Forward = request.app.state.forward
        status, answer = await forward(body)
        return Response(answer, status_code=status, media_type="application/json")

    @get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return Litestar(route_handlers=[proxy, health], lifespan=[lifespan], logging_config=None,
                    openapi_config=None)


async def _relay(session: aiohttp.ClientSession, url: str, body: bytes) -> Response[bytes]:
    """The upstream's streamed body, each piece passed on as it arrives."""
    response = await session.post(url, data=body, headers=_HEADERS)

    async def pieces() -> AsyncIterator[bytes]:
        async with response:
            async for piece in response.content.iter_any():
                yield piece

    stream = Stream(pieces(), status_code=response.status,
                    media_type=response.headers.get("content-type", "text/event-stream"))
    return stream  # type: ignore[return-value]  # a Response whose body is an iterator


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
