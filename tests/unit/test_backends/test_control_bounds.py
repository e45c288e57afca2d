"""Control-plane reads are bounded like data-plane answers: a worker whose ``/server_info`` or
``/metrics`` never ends, or is huge, fails its probe within the deadline instead of holding it
(and the gateway's memory) for as long as it keeps sending. Real sockets, real httpx."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from backends import discovery
from backends.control_http import ControlBodyTooLarge, bounded_lines, control_get
from backends.discovery_config import KubernetesDiscoveryConfig
from backends.http import Timeouts, open_session
from backends.sglang import SGLangBackend
from tests.aiohttp_app import drip, huge_chunked, start_app

KIB, MIB = 1024, 1024 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _drip(request: web.Request) -> web.StreamResponse:
    return await drip(request, b" ", 0.05)  # a byte every 50 ms: httpx's read timeout never fires


async def _serve(routes: dict[str, Handler]) -> tuple[web.AppRunner, str]:
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    return await start_app(app)


async def test_a_body_that_never_ends_fails_at_the_deadline() -> None:
    runner, url = await _serve({"/metrics": _drip})
    try:
        async with httpx.AsyncClient() as client:
            started = time.monotonic()
            with pytest.raises(httpx.ReadTimeout):
                await control_get(client, url + "/metrics", deadline=0.5, max_bytes=MIB)
            assert time.monotonic() - started < 3  # each byte came well within httpx's read timeout
    finally:
        await runner.cleanup()


async def test_a_body_over_the_bound_stops_being_read_at_the_bound() -> None:
    sent: list[int] = []

    async def announced(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"{}" + b" " * (2 * MIB))

    runner, url = await _serve({"/server_info": huge_chunked(sent), "/model_info": announced})
    try:
        async with httpx.AsyncClient() as client:
            with pytest.raises(ControlBodyTooLarge):
                await control_get(client, url + "/server_info", deadline=10, max_bytes=MIB)
            with pytest.raises(ControlBodyTooLarge, match="announced"):
                await control_get(client, url + "/model_info", deadline=10, max_bytes=MIB)
        await asyncio.sleep(0.2)
        assert len(sent) < 200  # the connection was closed: the worker could not send it all
    finally:
        await runner.cleanup()


async def test_a_body_under_its_bounds_is_read_whole() -> None:
    async def info(request: web.Request) -> web.StreamResponse:
        assert request.headers["accept-encoding"] == "identity"  # never inflated a read at a time
        return web.json_response({"max_total_num_tokens": 4096})

    runner, url = await _serve({"/server_info": info})
    try:
        async with httpx.AsyncClient() as client:
            answer = await control_get(client, url + "/server_info", deadline=5, max_bytes=KIB)
        assert answer.status_code == 200 and answer.json() == {"max_total_num_tokens": 4096}
    finally:
        await runner.cleanup()


async def test_a_worker_dripping_its_info_and_metrics_is_still_probed_within_the_deadlines() -> None:
    async def health(request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    async def loads(request: web.Request) -> web.StreamResponse:
        return web.json_response({"loads": [{"num_running_reqs": 2, "num_waiting_reqs": 1}]})

    runner, url = await _serve({"/health": health, "/server_info": _drip, "/metrics": _drip, "/v1/loads": loads})
    session = open_session()
    try:
        async with httpx.AsyncClient() as control:
            worker = SGLangBackend("pool/0", url, session, control, Timeouts(connect=0.5, first_byte=2.0))
            started = time.monotonic()
            health_ = await worker.health()
            assert time.monotonic() - started < 4  # two dripping reads, 0.5 s each, then /v1/loads
        assert health_.ok and health_.load_source == "loads" and (health_.running, health_.queued) == (2, 1)
    finally:
        await session.close()
        await runner.cleanup()


async def _chunks(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def test_lines_are_split_across_reads_and_bounded_each() -> None:
    lines = [line async for line in bounded_lines(_chunks(b'{"a"', b': 1}\n{"b": 2}\n\n{"c"', b": 3}"), 16)]
    assert lines == [b'{"a": 1}', b'{"b": 2}', b"", b'{"c": 3}']
    with pytest.raises(ControlBodyTooLarge):
        [line async for line in bounded_lines(_chunks(b"x" * 10, b"x" * 10, b"\n"), 16)]  # no newline in time
    with pytest.raises(ControlBodyTooLarge):
        [line async for line in bounded_lines(_chunks(b"x" * 20 + b"\nok\n"), 16)]  # one read, one long line


async def test_a_kubernetes_list_that_never_ends_fails_at_its_deadline_and_an_endless_event_at_its_bound(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = "/apis/discovery.k8s.io/v1/namespaces/llm/endpointslices"

    async def api(request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "true":
            return await _drip(request)  # a list that never completes
        return await drip(request, b"x" * 64 * KIB, 0.01)  # a watch event that never ends its line

    monkeypatch.setattr(discovery, "LIST_DEADLINE_S", 0.5)
    monkeypatch.setattr(discovery, "EVENT_BYTES", MIB)
    runner, url = await _serve({path: api})
    config = KubernetesDiscoveryConfig(type="kubernetes", service="sglang-headless", namespace="llm", api_url=url,
                                       token_path=str(tmp_path / "none"), ca_path=str(tmp_path / "none"))
    source = discovery.KubernetesDiscovery(config)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(10.0, read=None)) as client:
            started = time.monotonic()
            with pytest.raises(httpx.ReadTimeout):
                await source._list(client)
            with pytest.raises(ControlBodyTooLarge):
                async for _ in source._follow(client, "1"):
                    pass
            assert time.monotonic() - started < 5
    finally:
        await runner.cleanup()
