from __future__ import annotations

import asyncio
import socket

from gateway.server import GatewayHttpProtocol, set_nodelay, uvicorn_config


async def test_set_nodelay_on_an_accepted_socket() -> None:
    seen: list[int] = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)  # start from Nagle on
            assert set_nodelay(transport)
            seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Probe, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(100):
        if seen:
            break
        await asyncio.sleep(0.01)
    writer.close()
    server.close()
    assert seen == [1]


def test_the_server_uses_the_nodelay_protocol() -> None:
    config = uvicorn_config(object(), "127.0.0.1", 0)
    assert config.http is GatewayHttpProtocol
    assert config.loop == "uvloop"
