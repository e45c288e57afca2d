"""A real aiohttp server on 127.0.0.1 at a free port: the upstream of a test, on real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web


async def start_app(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve ``app``; its runner (``cleanup()`` it) and base URL, without a trailing slash."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def drip(request: web.Request, piece: bytes, every_s: float, *,
               headers: dict[str, str] | None = None) -> web.StreamResponse:
    """Headers at once, then ``piece`` every ``every_s`` until the client goes away."""
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    try:
        while True:
            await response.write(piece)
            await asyncio.sleep(every_s)
    except (ConnectionError, asyncio.CancelledError):
        pass
    return response


def huge_chunked(sent: list[int]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A handler sending 25 MB chunked (no length announced), one entry in ``sent`` per 64 KB
    written: a test sees how much went out before its client closed the connection."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        try:
            for _ in range(400):
                await response.write(b"x" * 64 * 1024)
                sent.append(1)
        except ConnectionError:
            pass
        return response

    return handler
