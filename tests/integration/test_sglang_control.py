"""The SGLang backend's probes against workers as SGLang 0.5.23 really runs them.

The workers are the fixture server answering with the control fixtures generated from SGLang's
own code (``tests/contracts/sglang/fixtures/control/``), or the simulator; the last test runs a
whole gateway on workers started with SGLang's default flags.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiohttp
import httpx
from prometheus_client.parser import text_string_to_metric_families

from backends.http import Timeouts
from backends.sglang import SGLangBackend
from backends.sim import SimConfig, start_sim
from gateway.local_stack import start_local_stack
from tests.contracts.fixture_server import HEALTH_PATHS, Fixture, FixtureServer

CONTROL = Path(__file__).resolve().parents[1] / "contracts" / "sglang" / "fixtures" / "control"
CAPACITY = 862_315  # max_total_num_tokens in the server_info fixtures
KEY = "sk-worker-key"


def worker(routes: dict[str, str]) -> FixtureServer:
    """A fixture server answering each path with a control fixture; anything else is 404."""
    server = FixtureServer(pause_s=0)
    for path, name in routes.items():
        server.answer(path, Fixture.load(CONTROL, name))
    return server


@asynccontextmanager
async def backend(url: str, api_key: str | None = None) -> AsyncIterator[SGLangBackend]:
    async with aiohttp.ClientSession() as session, httpx.AsyncClient() as control:
        yield SGLangBackend("local/0", url, session, control, Timeouts(connect=5), api_key)


async def test_a_worker_without_metrics_gets_its_load_from_v1_loads() -> None:
    server = worker({"/server_info": "server_info_default.json", "/v1/loads": "loads.json"})
    with server.running() as url:
        async with backend(url) as sglang:
            first, second = await sglang.health(), await sglang.health()
    for health in (first, second):
        assert health.ok and (health.running, health.queued) == (3, 4)
        assert health.load_source == "loads" and health.reports_cached_tokens is False
        assert health.capacity_tokens == CAPACITY
    # /server_info said --enable-metrics is off: /metrics is not asked for a 404 every interval
    assert server.received("/metrics") == []


async def test_a_metrics_404_falls_back_to_v1_loads_and_is_not_asked_again() -> None:
    # an older worker: only the deprecated name, and no enable_metrics in what it says
    server = worker({"/v1/loads": "loads_all_sections.json"})
    server.answer("/get_server_info", Fixture(b'{"max_total_num_tokens": 1000, "version": "0.4.9"}'))
    with server.running() as url:
        async with backend(url) as sglang:
            for _ in range(3):
                health = await sglang.health()
                assert (health.running, health.queued, health.load_source) == (5, 5, "loads")
                assert health.capacity_tokens == 1000 and health.reports_cached_tokens is None
    assert len(server.received("/metrics")) == 1


async def test_a_priority_scheduling_worker_reads_its_queue_once() -> None:
    server = worker({"/server_info": "server_info_enabled.json", "/metrics": "metrics_priority.prom"})
    with server.running() as url:
        async with backend(url) as sglang:
            health = await sglang.health()
    assert (health.running, health.queued) == (3, 4)  # not (6, 8)
    assert health.load_source == "metrics" and health.reports_cached_tokens is True
    assert server.received("/v1/loads") == []


async def test_every_probe_but_health_carries_the_worker_key() -> None:
    server = worker({"/server_info": "server_info_enabled.json", "/metrics": "metrics.prom",
                     "/model_info": "model_info.json"})
    with server.running() as url:
        async with backend(url, api_key=KEY) as sglang:
            await sglang.health()
            await sglang.health()
            info = await sglang.model_info()
    assert info["served_model_name"] == "qwen-7b"
    probes = [r for r in server.requests if r.path not in HEALTH_PATHS]
    assert {r.path for r in probes} == {"/server_info", "/metrics", "/model_info"}
    assert all(r.headers.get("Authorization") == f"Bearer {KEY}" for r in probes), probes
    assert len(server.received("/health")) == 2


async def test_a_keyed_simulated_worker_refuses_no_probe() -> None:
    config = SimConfig(api_key=KEY, enable_metrics=True, capacity_tokens=4_321, zero_latency=True)
    sim = await start_sim(config)
    try:
        async with httpx.AsyncClient(base_url=sim.url) as http:
            refused = await http.get("/server_info")  # what a probe without the key gets
            assert refused.status_code == 401 and refused.json() == {"error": "Unauthorized"}
        failed_before = sim.engine.stats.failed
        async with backend(sim.url, api_key=KEY) as sglang:
            healths = [await sglang.health() for _ in range(3)]
            await sglang.model_info()
        assert sim.engine.stats.failed == failed_before  # no 401 at all
        assert all(h.capacity_tokens == 4_321 and h.load_source == "metrics" for h in healths)
    finally:
        await sim.aclose()


async def test_capacity_comes_from_server_info_and_aliases_only_for_older_workers() -> None:
    current = worker({"/server_info": "server_info_default.json", "/model_info": "model_info.json",
                      "/v1/loads": "loads.json"})
    older = worker({"/get_server_info": "server_info_default.json",
                    "/get_model_info": "model_info.json", "/v1/loads": "loads.json"})
    with current.running() as url:
        async with backend(url) as sglang:
            assert (await sglang.health()).capacity_tokens == CAPACITY
            assert (await sglang.model_info())["model_type"] == "qwen2"
    assert current.received("/get_server_info") == current.received("/get_model_info") == []
    with older.running() as url:
        async with backend(url) as sglang:
            assert (await sglang.health()).capacity_tokens == CAPACITY
            assert (await sglang.model_info())["model_type"] == "qwen2"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def captured(logger: str) -> Iterator[list[logging.LogRecord]]:
    """The warnings ``logger`` emits meanwhile, from any thread, whatever the log config."""
    handler = _Records()
    records = handler.records
    log = logging.getLogger(logger)
    log.addHandler(handler)
    try:
        yield records
    finally:
        log.removeHandler(handler)


def _capability(metrics_text: str) -> dict[tuple[str, str], float]:
    return {(s.labels["worker"], s.labels["capability"]): s.value
            for family in text_string_to_metric_families(metrics_text)
            if family.name == "switchyard_worker_capability" for s in family.samples}


async def test_a_default_flags_worker_shows_in_readyz_the_metric_and_one_warning() -> None:
    # SGLang's defaults: no --enable-cache-report, no --enable-metrics
    defaults = SimConfig(zero_latency=True)
    with captured("switchyard.sglang") as warnings, tempfile.TemporaryDirectory() as tmp:
        stack = await start_local_stack(Path(tmp), sim=defaults, sglang_workers=1)
        try:
            await asyncio.sleep(2.5)  # health_interval_s is 1: a few probes after the first
            async with httpx.AsyncClient(base_url=stack.url) as http:
                ready = (await http.get("/readyz")).json()
                scrape = (await http.get("/metrics")).text
        finally:
            await stack.aclose()
    assert ready["ready"] is True
    assert "local/0 reports no cached tokens" in ready["detail"]
    assert "--enable-metrics" in ready["detail"]
    assert _capability(scrape) == {("local/0", "cached_tokens"): 0.0, ("local/0", "metrics"): 0.0,
                                   ("local/0", "load"): 1.0}
    # logged when first seen, not at every one of the probes since
    messages = [record.getMessage() for record in warnings]
    assert len([m for m in messages if "no cached tokens" in m]) == 1, messages
    assert len([m for m in messages if "no /metrics" in m]) == 1, messages
