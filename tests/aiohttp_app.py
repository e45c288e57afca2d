"""A real aiohttp server on 127.0.0.1 at a free port: the upstream of a test, on real sockets."""

from __future__ import annotations

from aiohttp import web


async def start_app(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve ``app``; its runner (``cleanup()`` it) and base URL, without a trailing slash."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"
